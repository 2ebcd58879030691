/**
 * The in-memory zones behind `Dns.layerTest`: every wait (a name's delay, the per-query deadline) and every cache
 * expiry is on Effect's Clock, so TestClock drives them.
 *
 * @internal
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as dnsName from "../dnsName.js"
import * as cache from "./cache.js"
import {
  type Answer,
  type Answerer,
  type CacheOptions,
  Dns,
  DnsError,
  fromAnswerer,
  type MxRecord,
  type RecordOf,
  type RRType,
  timeoutAnswerer,
  type TlsaRecord
} from "./model.js"

/** @internal */
export type Rdata<A> = ReadonlyArray<A> | "NXDOMAIN" | "NODATA" | "SERVFAIL"

/** @internal */
export interface Zone {
  readonly mx?: Rdata<MxRecord> | undefined
  readonly a?: Rdata<string> | undefined
  readonly aaaa?: Rdata<string> | undefined
  readonly txt?: Rdata<string> | undefined
  readonly tlsa?: Rdata<TlsaRecord> | undefined
  /**
   * What a validating resolver would say of the name's RRsets: `secure` answers (and NXDOMAIN/NODATA) are
   * authenticated, `bogus` fails every query of the name as a validating resolver does (SERVFAIL, with RFC 8914's
   * "DNSSEC Bogus"). Absent: `insecure`.
   */
  readonly dnssec?: "secure" | "insecure" | "bogus" | undefined
  /** Every query of the name fails with this code, whatever its type. */
  readonly rcode?: "NXDOMAIN" | "SERVFAIL" | undefined
  /** Seconds, for every answer of the name. Absent: no TTL (a cache uses its default). */
  readonly ttl?: number | undefined
  /** Each query of the name waits this long before answering; `Duration.infinity` never answers. */
  readonly delay?: Duration.DurationInput | undefined
}

/** @internal */
export type Zones = { readonly [name: string]: Zone }

/** @internal */
export interface Query {
  readonly rrtype: RRType
  readonly name: string
}

/** @internal */
export class TestDns extends Context.Tag("effect-smtp-transport/TestDns")<TestDns, {
  readonly queries: Effect.Effect<ReadonlyArray<Query>>
  readonly reset: Effect.Effect<void>
}>() {}

/** @internal */
export interface TestOptions {
  /** A per-query deadline, as the live layer has (none by default). */
  readonly timeout?: Duration.DurationInput | undefined
  /** A resolver cache in front of the zones, as the live layer has (none by default, so every lookup is a query). */
  readonly cache?: CacheOptions | undefined
}

const zoneField = { MX: "mx", A: "a", AAAA: "aaaa", TXT: "txt", TLSA: "tlsa" } as const

const zoneAnswer = <T extends RRType>(
  zone: Zone | undefined,
  rrtype: T,
  name: string
): Effect.Effect<Answer<T>, DnsError> => {
  const secure = zone?.dnssec === "secure"
  const fail = (reason: DnsError["reason"], label: string) =>
    Effect.fail(
      new DnsError({
        reason,
        name,
        rrtype,
        message: `${rrtype} ${name}: ${label}`,
        ...(secure && reason !== "Temporary" ? { dnssec: "secure" as const } : {})
      })
    )
  if (zone === undefined || zone.rcode === "NXDOMAIN") return fail("NotFound", "no such domain")
  if (zone.rcode === "SERVFAIL") return fail("Temporary", "ESERVFAIL")
  if (zone.dnssec === "bogus") {
    return Effect.fail(
      new DnsError({ reason: "Temporary", name, rrtype, message: `${rrtype} ${name}: ESERVFAIL (DNSSEC bogus)`, dnssec: "bogus" })
    )
  }
  const data = zone[zoneField[rrtype]] as Rdata<RecordOf[T]> | undefined
  if (data === undefined || data === "NODATA") return fail("NoData", "no records of that type")
  if (data === "NXDOMAIN") return fail("NotFound", "no such domain")
  if (data === "SERVFAIL") return fail("Temporary", "ESERVFAIL")
  return Effect.succeed({ records: data, ttl: zone.ttl ?? null, secure })
}

/** @internal */
export const layer = (zones: Zones, options: TestOptions = {}): Layer.Layer<Dns | TestDns> => {
  const byName = new Map(Object.entries(zones).map(([name, zone]) => [dnsName.normalize(name), zone]))
  return Layer.effectContext(Effect.sync(() => {
    const log: Array<Query> = []
    const zoneAnswerer: Answerer = (rrtype, raw) =>
      Effect.suspend(() => {
        const name = dnsName.normalize(raw)
        log.push({ rrtype, name })
        const zone = byName.get(name)
        const answer = zoneAnswer(zone, rrtype, name)
        return zone?.delay === undefined ? answer : Effect.zipRight(Effect.sleep(zone.delay), answer)
      })
    const timed = options.timeout === undefined ? zoneAnswerer : timeoutAnswerer(zoneAnswerer, options.timeout)
    const service = options.cache === undefined ? fromAnswerer(timed) : cache.make(timed, options.cache)
    return Context.make(Dns, service).pipe(
      Context.add(TestDns, {
        queries: Effect.sync(() => [...log]),
        reset: Effect.sync(() => {
          log.length = 0
        })
      })
    )
  }))
}
