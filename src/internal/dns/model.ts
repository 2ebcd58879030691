/**
 * The DNS service's vocabulary: records, answers, the error, the tag. A leaf under `Dns.ts`, so that the cache, the
 * live layer and the test layer can build on it without importing the public module that re-exports them.
 *
 * @internal
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"

/** @internal */
export interface MxRecord {
  readonly exchange: string
  readonly priority: number
}

/**
 * A TLSA record (RFC 6698 §2.1): the certificate usage, the selector, the matching type and the association data
 * in lowercase hex.
 *
 * @internal
 */
export interface TlsaRecord {
  readonly usage: number
  readonly selector: number
  readonly matchingType: number
  readonly data: string
}

/** @internal */
export type RRType = "MX" | "A" | "AAAA" | "TXT" | "TLSA"

/**
 * The record shape each query type yields: TXT records are the record's character-strings joined.
 *
 * @internal
 */
export interface RecordOf {
  readonly MX: MxRecord
  readonly A: string
  readonly AAAA: string
  readonly TXT: string
  readonly TLSA: TlsaRecord
}

/**
 * Records with the time they may be kept, in seconds; `null` when the source does not know it, in which case a cache
 * applies its default.
 *
 * @internal
 */
export interface Answer<T extends RRType> {
  readonly records: ReadonlyArray<RecordOf[T]>
  readonly ttl: number | null
  /**
   * The resolver validated the RRset with DNSSEC (it set the AD bit): `false` for an unsigned (insecure) zone, and
   * from any source that cannot tell.
   */
  readonly secure: boolean
}

/**
 * One lookup of any type, with its TTL.
 *
 * @internal
 */
export type Answerer = <T extends RRType>(rrtype: T, name: string) => Effect.Effect<Answer<T>, DnsError>

/**
 * A query in callback form, the shape `node:dns` has: `done` is called once with the error or the answer, unless the
 * returned canceller runs first, after which it is never called. The resolver cache builds one `Effect.async` per
 * miss on it (its canceller both cancels the query and hands the lookup over to the waiters), where wrapping an
 * `Answerer` would cost an interruption region of its own per query.
 *
 * @internal
 */
export type Resolve = (
  rrtype: RRType,
  name: string,
  done: (error: DnsError | null, answer: Answer<RRType> | null) => void
) => () => void

/**
 * `NotFound` is NXDOMAIN (the name does not exist), `NoData` is a name that exists without records of the type,
 * `Temporary` is everything a retry may cure: SERVFAIL, REFUSED, a timeout, a network error. `dnssec` is
 * `"secure"` on a NotFound/NoData the resolver validated (an authenticated denial, the AD bit), `"bogus"` on a
 * Temporary failure the resolver said was a validation failure (RFC 8914's extended error); absent otherwise.
 *
 * @internal
 */
export class DnsError extends Data.TaggedError("DnsError")<{
  readonly reason: "NotFound" | "NoData" | "Temporary"
  readonly name: string
  readonly rrtype: RRType
  readonly message: string
  readonly dnssec?: "secure" | "bogus" | undefined
}> {}

/** @internal */
export class Dns extends Context.Tag("effect-smtp-transport/Dns")<Dns, Dns.Service>() {}

/** @internal */
export declare namespace Dns {
  /** @internal */
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
 * Resolver cache settings. Defaults: `maxEntries` 10000, `defaultTtl` 5 minutes (for answers without a TTL: a
 * hand-written `Dns`, a test zone without one), `maxTtl` 1 hour (caps every TTL, positive and negative), `negativeTtl` 1 minute
 * (NXDOMAIN and NODATA, RFC 2308; the SOA that would give the zone's own value is not read).
 *
 * @internal
 */
export interface CacheOptions {
  readonly maxEntries?: number | undefined
  readonly defaultTtl?: Duration.DurationInput | undefined
  readonly maxTtl?: Duration.DurationInput | undefined
  readonly negativeTtl?: Duration.DurationInput | undefined
}

/** @internal */
export const fromAnswerer = (answer: Answerer): Dns.Service => ({
  mx: (domain) => Effect.map(answer("MX", domain), (a) => a.records),
  a: (host) => Effect.map(answer("A", host), (a) => a.records),
  aaaa: (host) => Effect.map(answer("AAAA", host), (a) => a.records),
  txt: (name) => Effect.map(answer("TXT", name), (a) => a.records),
  answer
})

/** @internal */
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
      case "TLSA":
        // A service without `answer` cannot say whether anything validated, so it has no DANE to offer either.
        return Effect.fail(
          new DnsError({ reason: "NoData", name, rrtype, message: `${rrtype} ${name}: no records of that type` })
        )
    }
  }
  return <T extends RRType>(rrtype: T, name: string) =>
    Effect.map(
      records(rrtype, name),
      (rs): Answer<T> => ({ records: rs as ReadonlyArray<RecordOf[T]>, ttl: null, secure: false })
    )
}

/**
 * The failure of a query that got no answer within its budget, the same from every layer.
 *
 * @internal
 */
export const noAnswer = (rrtype: RRType, name: string, limit: Duration.Duration): DnsError =>
  new DnsError({
    reason: "Temporary",
    name,
    rrtype,
    message: `${rrtype} ${name}: no answer within ${Duration.format(limit)}`
  })

/** @internal */
export const timeoutAnswerer = (answer: Answerer, duration: Duration.DurationInput): Answerer => {
  const limit = Duration.decode(duration)
  return (rrtype, name) =>
    Effect.timeoutFail(answer(rrtype, name), { duration: limit, onTimeout: () => noAnswer(rrtype, name, limit) })
}
