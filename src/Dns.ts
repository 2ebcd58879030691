/**
 * DNS as a service: the four lookups the transport needs (MX, A, AAAA, TXT), a live layer on `node:dns`, an
 * in-memory layer for tests, and a resolver cache that both can sit behind.
 *
 * Every wait goes through Effect's Clock: the live layer's query deadlines are kept by one sleeper fiber on it, the
 * test layer's per-name delay is an `Effect.sleep`, `withTimeout` is an `Effect.timeoutFail`, and cache entries expire
 * on `Clock.currentTimeMillis`, so TestClock drives them all.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { promises as NodeDns } from "node:dns"
import { DeadlineTimer } from "./internal/deadlineTimer.js"
import * as dnsCache from "./internal/dnsCache.js"
import * as dnsName from "./internal/dnsName.js"
import * as scopeFinalizer from "./internal/scopeFinalizer.js"

/**
 * @since 0.1.0
 */
export interface MxRecord {
  readonly exchange: string
  readonly priority: number
}

/**
 * @since 0.1.0
 */
export type RRType = "MX" | "A" | "AAAA" | "TXT"

/**
 * The record shape each query type yields: TXT records are the record's character-strings joined.
 *
 * @since 0.1.0
 */
export interface RecordOf {
  readonly MX: MxRecord
  readonly A: string
  readonly AAAA: string
  readonly TXT: string
}

/**
 * Records with the time they may be kept, in seconds; `null` when the source does not know it (Node reports no TTL
 * for MX and TXT), in which case a cache applies its default.
 *
 * @since 0.1.0
 */
export interface Answer<T extends RRType> {
  readonly records: ReadonlyArray<RecordOf[T]>
  readonly ttl: number | null
}

/**
 * One lookup of any type, with its TTL.
 *
 * @since 0.1.0
 */
export type Answerer = <T extends RRType>(rrtype: T, name: string) => Effect.Effect<Answer<T>, DnsError>

/**
 * `NotFound` is NXDOMAIN (the name does not exist), `NoData` is a name that exists without records of the type,
 * `Temporary` is everything a retry may cure: SERVFAIL, REFUSED, a timeout, a network error.
 *
 * @since 0.1.0
 */
export class DnsError extends Data.TaggedError("DnsError")<{
  readonly reason: "NotFound" | "NoData" | "Temporary"
  readonly name: string
  readonly rrtype: RRType
  readonly message: string
}> {}

/**
 * @since 0.1.0
 */
export class Dns extends Context.Tag("effect-smtp-transport/Dns")<Dns, Dns.Service>() {}

/**
 * @since 0.1.0
 */
export declare namespace Dns {
  /**
   * @since 0.1.0
   */
  export interface Service {
    readonly mx: (domain: string) => Effect.Effect<ReadonlyArray<MxRecord>, DnsError>
    readonly a: (host: string) => Effect.Effect<ReadonlyArray<string>, DnsError>
    readonly aaaa: (host: string) => Effect.Effect<ReadonlyArray<string>, DnsError>
    /** Each TXT record's character-strings joined into one string. */
    readonly txt: (name: string) => Effect.Effect<ReadonlyArray<string>, DnsError>
    /**
     * The same lookups with their TTL. Optional so that a hand-written `Dns` needs only the four methods above; a
     * cache over a service without it uses its default TTL.
     */
    readonly answer?: Answerer | undefined
  }
}

/**
 * Builds the four lookups from one TTL-aware lookup.
 *
 * @since 0.1.0
 */
export const fromAnswerer = (answer: Answerer): Dns.Service => ({
  mx: (domain) => Effect.map(answer("MX", domain), (a) => a.records),
  a: (host) => Effect.map(answer("A", host), (a) => a.records),
  aaaa: (host) => Effect.map(answer("AAAA", host), (a) => a.records),
  txt: (name) => Effect.map(answer("TXT", name), (a) => a.records),
  answer
})

/**
 * The TTL-aware lookup of any service; for a service without one, its answers carry no TTL.
 *
 * @since 0.1.0
 */
export const toAnswerer = (service: Dns.Service): Answerer => {
  if (service.answer !== undefined) return service.answer
  const records = (rrtype: RRType, name: string): Effect.Effect<ReadonlyArray<unknown>, DnsError> => {
    switch (rrtype) {
      case "MX":
        return service.mx(name)
      case "A":
        return service.a(name)
      case "AAAA":
        return service.aaaa(name)
      case "TXT":
        return service.txt(name)
    }
  }
  return <T extends RRType>(rrtype: T, name: string) =>
    Effect.map(records(rrtype, name), (rs): Answer<T> => ({ records: rs as ReadonlyArray<RecordOf[T]>, ttl: null }))
}

// -----------------------------------------------------------------------------
// Cache and timeout wrappers
// -----------------------------------------------------------------------------

/**
 * Resolver cache settings. Defaults: `maxEntries` 10000, `defaultTtl` 5 minutes (for answers without a TTL: Node
 * reports none for MX and TXT), `maxTtl` 1 hour (caps every TTL, positive and negative), `negativeTtl` 1 minute
 * (NXDOMAIN and NODATA, RFC 2308; Node does not expose the SOA that would give the zone's own value).
 *
 * @since 0.1.0
 */
export interface CacheOptions {
  readonly maxEntries?: number | undefined
  readonly defaultTtl?: Duration.DurationInput | undefined
  readonly maxTtl?: Duration.DurationInput | undefined
  readonly negativeTtl?: Duration.DurationInput | undefined
}

/**
 * A cache in front of any `Dns`: answers kept for their TTL (capped), NXDOMAIN/NODATA kept for the negative TTL,
 * temporary failures never kept, concurrent identical lookups coalesced into one query, the least recently used
 * entry evicted beyond `maxEntries`. A query whose every waiter was interrupted is interrupted too.
 *
 * @since 0.1.0
 */
export const cached = (options?: CacheOptions): Layer.Layer<Dns, never, Dns> =>
  Layer.scoped(
    Dns,
    Effect.flatMap(Dns, (service) => Effect.map(dnsCache.make(toAnswerer(service), options), fromAnswerer))
  )

/**
 * Bounds every query of an answerer by `duration` on Effect's Clock; the query is interrupted (and, on the live
 * layer, cancelled) when the time is up, and the lookup fails with a `Temporary` error.
 *
 * @since 0.1.0
 */
export const timeoutAnswerer = (answer: Answerer, duration: Duration.DurationInput): Answerer => {
  const limit = Duration.decode(duration)
  return (rrtype, name) =>
    Effect.timeoutFail(answer(rrtype, name), { duration: limit, onTimeout: () => noAnswer(rrtype, name, limit) })
}

const noAnswer = (rrtype: RRType, name: string, limit: Duration.Duration) =>
  new DnsError({
    reason: "Temporary",
    name,
    rrtype,
    message: `${rrtype} ${name}: no answer within ${Duration.format(limit)}`
  })

/**
 * A per-query deadline in front of any `Dns`.
 *
 * @since 0.1.0
 */
export const withTimeout = (duration: Duration.DurationInput): Layer.Layer<Dns, never, Dns> =>
  Layer.effect(Dns, Effect.map(Dns, (service) => fromAnswerer(timeoutAnswerer(toAnswerer(service), duration))))

// -----------------------------------------------------------------------------
// Live layer
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 */
export interface LayerOptions {
  /** Name servers, optionally with a port: `"127.0.0.1:5353"`, `"[::1]:5353"`. Default: the system's. */
  readonly servers?: ReadonlyArray<string> | undefined
  /** The whole query's budget, retransmissions included, on Effect's Clock. Default 5 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
  /** How many times the query is sent within the budget (every `timeout / tries`). Default 2. */
  readonly tries?: number | undefined
  /** The resolver cache (on by default); `false` turns it off. */
  readonly cache?: CacheOptions | false | undefined
}

const temporaryCodes = new Set([
  "ESERVFAIL",
  "EREFUSED",
  "ETIMEOUT",
  "ECONNREFUSED",
  "EBADRESP",
  "EFORMERR",
  "ENOTIMP",
  "EEOF",
  "EFILE",
  "ENOMEM",
  "EDESTRUCTION",
  "ECANCELLED"
])

const fromNodeError = (error: unknown, rrtype: RRType, name: string): DnsError => {
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "UNKNOWN"
  const detail = error instanceof Error ? error.message : String(error)
  // A malformed name can never resolve, so it is as final as NXDOMAIN.
  const reason = code === "ENOTFOUND" || code === "EBADNAME"
    ? "NotFound"
    : code === "ENODATA"
    ? "NoData"
    : "Temporary"
  const label = code === "EBADNAME"
    ? "malformed name"
    : reason === "NotFound"
    ? "no such domain"
    : reason === "NoData"
    ? "no records of that type"
    : temporaryCodes.has(code)
    ? code
    : detail
  return new DnsError({ reason, name, rrtype, message: `${rrtype} ${name}: ${label}` })
}

const minTtl = (records: ReadonlyArray<{ readonly ttl: number }>): number | null =>
  records.length === 0 ? null : Math.min(...records.map((r) => r.ttl))

const query = async (
  resolver: NodeDns.Resolver,
  rrtype: RRType,
  name: string
): Promise<Answer<RRType>> => {
  switch (rrtype) {
    case "MX": {
      const records = await resolver.resolveMx(name)
      return { records: records.map((r) => ({ exchange: r.exchange, priority: r.priority })), ttl: null }
    }
    case "A":
    case "AAAA": {
      const records = rrtype === "A"
        ? await resolver.resolve4(name, { ttl: true })
        : await resolver.resolve6(name, { ttl: true })
      return { records: records.map((r) => r.address), ttl: minTtl(records) }
    }
    case "TXT": {
      const records = await resolver.resolveTxt(name)
      return { records: records.map((chunks) => chunks.join("")), ttl: null }
    }
  }
}

// Enough idle resolvers for the queries a busy transport has in flight (up to two per delivery under way): each is
// a c-ares channel with its own socket, and making one per query cost more than the query.
const maxIdleResolvers = 256

/**
 * Queries through c-ares. `Resolver.cancel()` cancels every outstanding query of a resolver, so each query borrows a
 * resolver of its own from a pool: interrupting one lookup never cancels another.
 *
 * The query's deadline is an entry of the layer's `timer` rather than an `Effect.timeoutFail` (two forked fibers per
 * query): when it passes, the query is cancelled and the lookup fails as `timeoutAnswerer` would fail it.
 */
const nodeAnswerer = (options: LayerOptions, timer: DeadlineTimer): Answerer => {
  const tries = Math.max(1, Math.floor(options.tries ?? 2))
  const limit = Duration.decode(options.timeout ?? "5 seconds")
  const budget = Duration.toMillis(limit)
  // c-ares retransmits on its own interval; -1 keeps its default when there is no finite budget to divide.
  const perTry = Number.isFinite(budget) ? Math.max(1, Math.floor(budget / tries)) : -1
  const servers = options.servers === undefined ? undefined : [...options.servers]
  const idle: Array<NodeDns.Resolver> = []
  const acquire = (): NodeDns.Resolver => {
    const reused = idle.pop()
    if (reused !== undefined) return reused
    const resolver = new NodeDns.Resolver({ timeout: perTry, tries })
    if (servers !== undefined) resolver.setServers(servers)
    return resolver
  }
  const release = (resolver: NodeDns.Resolver) => {
    if (idle.length < maxIdleResolvers) idle.push(resolver)
  }
  if (servers !== undefined) release(acquire()) // an invalid server address fails here, at layer construction
  return <T extends RRType>(rrtype: T, name: string) =>
    Effect.clockWith((clock) =>
      Effect.suspend(() => {
        let expire: (() => void) | null = null
        // The deadline passed before the query was sent (the fiber yielded in between).
        let expiredEarly = false
        const [entry, start] = Number.isFinite(budget)
          ? timer.schedule(clock, clock.unsafeCurrentTimeMillis() + budget, () => {
            if (expire === null) expiredEarly = true
            else expire()
          })
          : [null, Effect.void]
        const lookup = Effect.async<Answer<T>, DnsError>((resume) => {
          if (expiredEarly) return resume(Effect.fail(noAnswer(rrtype, name, limit)))
          const resolver = acquire()
          // Answered, timed out or interrupted: a later outcome is that of the cancelled query, and only frees its
          // resolver.
          let settled = false
          const done = (outcome: Effect.Effect<Answer<T>, DnsError>) => {
            release(resolver)
            if (settled) return
            settled = true
            if (entry !== null) timer.cancel(entry)
            resume(outcome)
          }
          query(resolver, rrtype, name).then(
            (answer) => done(Effect.succeed(answer as Answer<T>)),
            (error: unknown) => done(Effect.fail(fromNodeError(error, rrtype, name)))
          )
          expire = () => {
            if (settled) return
            settled = true
            resolver.cancel()
            resume(Effect.fail(noAnswer(rrtype, name, limit)))
          }
          return Effect.sync(() => {
            if (entry !== null) timer.cancel(entry)
            if (settled) return
            settled = true
            resolver.cancel()
          })
        })
        return Effect.zipRight(start, lookup)
      })
    )
}

/**
 * The live resolver on `node:dns` (c-ares): per-query deadline on Effect's Clock, cancellation on interruption, and
 * the resolver cache in front unless `cache: false`.
 *
 * @since 0.1.0
 */
export const layer = (options: LayerOptions = {}): Layer.Layer<Dns> =>
  Layer.scoped(
    Dns,
    Effect.gen(function*() {
      const timer = new DeadlineTimer()
      yield* scopeFinalizer.add(() => Effect.sync(() => timer.close()))
      const live = nodeAnswerer(options, timer)
      const answer = options.cache === false ? live : yield* dnsCache.make(live, options.cache)
      return fromAnswerer(answer)
    })
  )

// -----------------------------------------------------------------------------
// Test layer
// -----------------------------------------------------------------------------

/**
 * What a zone holds for one type: records, or a failure. An empty array is answered as it is (a `Dns` may do that);
 * a real server's empty answer is `"NODATA"`.
 *
 * @since 0.1.0
 */
export type Rdata<A> = ReadonlyArray<A> | "NXDOMAIN" | "NODATA" | "SERVFAIL"

/**
 * One name's records. A type that is absent answers NODATA; a name that is absent from the zones answers NXDOMAIN.
 *
 * @since 0.1.0
 */
export interface Zone {
  readonly mx?: Rdata<MxRecord> | undefined
  readonly a?: Rdata<string> | undefined
  readonly aaaa?: Rdata<string> | undefined
  readonly txt?: Rdata<string> | undefined
  /** Every query of the name fails with this code, whatever its type. */
  readonly rcode?: "NXDOMAIN" | "SERVFAIL" | undefined
  /** Seconds, for every answer of the name. Absent: no TTL (a cache uses its default). */
  readonly ttl?: number | undefined
  /** Each query of the name waits this long before answering; `Duration.infinity` never answers. */
  readonly delay?: Duration.DurationInput | undefined
}

/**
 * Zones by name (case and a trailing dot do not matter).
 *
 * @since 0.1.0
 */
export type Zones = { readonly [name: string]: Zone }

/**
 * A query as a server sees it: the name normalised (lowercase, no trailing dot).
 *
 * @since 0.1.0
 */
export interface Query {
  readonly rrtype: RRType
  readonly name: string
}

/**
 * The test layer's query log: every query that reached the zones (below any cache), in order.
 *
 * @since 0.1.0
 */
export class TestDns extends Context.Tag("effect-smtp-transport/TestDns")<TestDns, {
  readonly queries: Effect.Effect<ReadonlyArray<Query>>
  readonly reset: Effect.Effect<void>
}>() {}

/**
 * @since 0.1.0
 */
export interface TestOptions {
  /** A per-query deadline, as the live layer has (none by default). */
  readonly timeout?: Duration.DurationInput | undefined
  /** A resolver cache in front of the zones, as the live layer has (none by default, so every lookup is a query). */
  readonly cache?: CacheOptions | undefined
}

const zoneField = { MX: "mx", A: "a", AAAA: "aaaa", TXT: "txt" } as const

const zoneAnswer = <T extends RRType>(zone: Zone | undefined, rrtype: T, name: string): Effect.Effect<Answer<T>, DnsError> => {
  const fail = (reason: DnsError["reason"], label: string) =>
    Effect.fail(new DnsError({ reason, name, rrtype, message: `${rrtype} ${name}: ${label}` }))
  if (zone === undefined || zone.rcode === "NXDOMAIN") return fail("NotFound", "no such domain")
  if (zone.rcode === "SERVFAIL") return fail("Temporary", "ESERVFAIL")
  const data = zone[zoneField[rrtype]] as Rdata<RecordOf[T]> | undefined
  if (data === undefined || data === "NODATA") return fail("NoData", "no records of that type")
  if (data === "NXDOMAIN") return fail("NotFound", "no such domain")
  if (data === "SERVFAIL") return fail("Temporary", "ESERVFAIL")
  return Effect.succeed({ records: data, ttl: zone.ttl ?? null })
}

/**
 * In-memory zones. Queries are logged when they start (read them through `TestDns`), then wait the name's delay on
 * Effect's Clock, then answer.
 *
 * @since 0.1.0
 */
export const layerTest = (zones: Zones, options: TestOptions = {}): Layer.Layer<Dns | TestDns> => {
  const byName = new Map(Object.entries(zones).map(([name, zone]) => [dnsName.normalize(name), zone]))
  return Layer.scopedContext(Effect.gen(function*() {
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
    const answer = options.cache === undefined ? timed : yield* dnsCache.make(timed, options.cache)
    return Context.make(Dns, fromAnswerer(answer)).pipe(
      Context.add(TestDns, {
        queries: Effect.sync(() => [...log]),
        reset: Effect.sync(() => {
          log.length = 0
        })
      })
    )
  }))
}
