/**
 * DNS as a service: the lookups the transport needs (MX, A, AAAA, TXT, and TLSA through `answer`), each answer with
 * its TTL and its DNSSEC status (whether the resolver validated it: the AD bit), a live layer that queries a
 * recursive resolver over UDP and TCP, an in-memory layer for tests (zones marked secure, insecure or bogus), and a
 * resolver cache that both can sit behind.
 *
 * DNSSEC. The library validates nothing itself: as Postfix does, it trusts the AD bit of the resolver it is given,
 * which must be a trusted validating resolver on a trusted path (a local unbound on loopback). DANE (`Dane`) builds
 * on that status.
 *
 * Timing. Code above this service sees one behaviour in production and under TestClock: a lookup answers, fails, or
 * fails `Temporary` with "no answer within <timeout>" once its budget is spent, and interrupting it abandons it
 * (`layer` says when the live layer's query stops being sent). The test layer keeps the budget with
 * `Effect.timeoutFail` on Effect's Clock (and a name's delay with `Effect.sleep`), so TestClock drives it. The live
 * layer talks to a real server in real time anyway, so it keeps the budget with a native timer armed with the query:
 * no fiber, no Clock (measured with the earlier c-ares layer: a quarter of the run-loop steps of `Effect.timeoutFail`
 * and no fork, see docs/performance.md). Cache entries expire on `Clock.currentTimeMillis` in every layer; a miss on
 * the live layer is one `Effect.async` with no fiber forked.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as cache from "./internal/dns/cache.js"
import * as live from "./internal/dns/live.js"
import * as model from "./internal/dns/model.js"
import * as test from "./internal/dns/test.js"

// -----------------------------------------------------------------------------
// Models
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export type MxRecord = model.MxRecord

/**
 * A TLSA record (RFC 6698): usage, selector, matching type, association data in lowercase hex.
 *
 * @since 0.2.0
 * @category models
 */
export type TlsaRecord = model.TlsaRecord

/**
 * @since 0.1.0
 * @category models
 */
export type RRType = model.RRType

/**
 * The record shape each query type yields: TXT records are the record's character-strings joined.
 *
 * @since 0.1.0
 * @category models
 */
export type RecordOf = model.RecordOf

/**
 * Records with the time they may be kept, in seconds (`null` when the source does not know it, in which case a cache
 * applies its default), and whether the resolver validated them with DNSSEC (`secure`, its AD bit).
 *
 * @since 0.1.0
 * @category models
 */
export type Answer<T extends RRType> = model.Answer<T>

/**
 * One lookup of any type, with its TTL.
 *
 * @since 0.1.0
 * @category models
 */
export type Answerer = model.Answerer

export {
  /**
   * The service's tag; `Dns.Service` has `mx`, `a`, `aaaa`, `txt` and, optionally, the TTL-aware `answer`.
   *
   * @since 0.1.0
   * @category models
   */
  Dns,
  /**
   * `NotFound` is NXDOMAIN (the name does not exist), `NoData` is a name that exists without records of the type,
   * `Temporary` is everything a retry may cure: SERVFAIL, REFUSED, a timeout, a network error. `dnssec` is
   * `"secure"` on an authenticated denial, `"bogus"` on a validation failure the resolver reported (a `Temporary`).
   *
   * @since 0.1.0
   * @category models
   */
  DnsError
} from "./internal/dns/model.js"

/**
 * Builds the four lookups from one TTL-aware lookup.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromAnswerer: (answer: Answerer) => model.Dns.Service = model.fromAnswerer

/**
 * The TTL-aware lookup of any service; for a service without one, its answers carry no TTL, are never `secure`,
 * and TLSA answers NODATA (so DANE never applies through it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const toAnswerer: (service: model.Dns.Service) => Answerer = model.toAnswerer

// -----------------------------------------------------------------------------
// Cache and timeout wrappers
// -----------------------------------------------------------------------------

/**
 * Resolver cache settings. Defaults: `maxEntries` 10000, `defaultTtl` 5 minutes (for answers without a TTL: a
 * hand-written `Dns`, a test zone without one), `maxTtl` 1 hour (caps every TTL, positive and negative), `negativeTtl` 1 minute
 * (NXDOMAIN and NODATA, RFC 2308; the SOA that would give the zone's own value is not read).
 *
 * @since 0.1.0
 * @category models
 */
export type CacheOptions = model.CacheOptions

/**
 * A cache in front of any `Dns`: answers kept for their TTL (capped), NXDOMAIN/NODATA kept for the negative TTL,
 * temporary failures never kept, concurrent identical lookups coalesced into one query, the least recently used
 * entry evicted beyond `maxEntries`. The first caller of a lookup runs the query; the others wait for its answer. If
 * that caller is interrupted, its query is interrupted with it and one of the waiters runs the query again.
 *
 * @since 0.1.0
 * @category layers
 */
export const cached = (options?: CacheOptions): Layer.Layer<model.Dns, never, model.Dns> =>
  Layer.effect(model.Dns, Effect.map(model.Dns, (service) => cache.make(model.toAnswerer(service), options)))

/**
 * Bounds every query of an answerer by `duration` on Effect's Clock; the query is interrupted (and, on the live
 * layer, cancelled) when the time is up, and the lookup fails with a `Temporary` error.
 *
 * @since 0.1.0
 * @category combinators
 */
export const timeoutAnswerer: (answer: Answerer, duration: Duration.DurationInput) => Answerer = model.timeoutAnswerer

/**
 * A per-query deadline in front of any `Dns`, on Effect's Clock.
 *
 * @since 0.1.0
 * @category layers
 */
export const withTimeout = (duration: Duration.DurationInput): Layer.Layer<model.Dns, never, model.Dns> =>
  Layer.effect(
    model.Dns,
    Effect.map(model.Dns, (service) => model.fromAnswerer(model.timeoutAnswerer(model.toAnswerer(service), duration)))
  )

// -----------------------------------------------------------------------------
// Live layer
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface LayerOptions {
  /**
   * Recursive resolvers, optionally with a port: `"127.0.0.1:5353"`, `"[::1]:5353"`; for DANE, a trusted validating
   * one (its AD bit is trusted). Default: the system's (`/etc/resolv.conf`).
   */
  readonly servers?: ReadonlyArray<string> | undefined
  /** The whole query's budget, retransmissions included. Default 5 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
  /** How many times the query is sent within the budget. Default 2. */
  readonly tries?: number | undefined
  /** The resolver cache (on by default); `false` turns it off. */
  readonly cache?: CacheOptions | false | undefined
}

/**
 * The live resolver, the resolver cache in front unless `cache: false`. Each query is a DNS message of our own
 * (`dns-packet`) with the DO bit set and a random id, over UDP from a socket shared by the queries in flight (a fresh
 * source port every 100 queries, closed when idle), sent `tries` times within the budget to the servers in turn, and
 * asked again over TCP when the answer is truncated; only an answer from a server it was sent to, with its id and
 * question, is heard. A lookup whose budget runs out fails at once; an interrupted one stops at once: nothing more is
 * sent for it, and the other queries on its socket are not disturbed.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: LayerOptions = {}): Layer.Layer<model.Dns> =>
  Layer.sync(model.Dns, () => {
    const query = live.make(options)
    return options.cache === false ? model.fromAnswerer(live.answererOf(query)) : cache.make({ query }, options.cache)
  })

// -----------------------------------------------------------------------------
// Test layer
// -----------------------------------------------------------------------------

/**
 * What a zone holds for one type: records, or a failure. An empty array is answered as it is (a `Dns` may do that);
 * a real server's empty answer is `"NODATA"`.
 *
 * @since 0.1.0
 * @category testing
 */
export type Rdata<A> = test.Rdata<A>

/**
 * One name's records. A type that is absent answers NODATA; a name that is absent from the zones answers NXDOMAIN.
 * `rcode` fails every query of the name; `ttl` (seconds) goes on every answer (absent: no TTL); `delay` holds each
 * answer back on Effect's Clock (`Duration.infinity` never answers). `dnssec` is what a validating resolver would say
 * of the name: `secure` answers and denials carry the AD bit, `bogus` fails every query `Temporary` (SERVFAIL with
 * "DNSSEC bogus"), absent is `insecure`. `tlsa` holds TLSA records.
 *
 * @since 0.1.0
 * @category testing
 */
export type Zone = test.Zone

/**
 * Zones by name (case and a trailing dot do not matter).
 *
 * @since 0.1.0
 * @category testing
 */
export type Zones = test.Zones

/**
 * A query as a server sees it: the name normalised (lowercase, no trailing dot).
 *
 * @since 0.1.0
 * @category testing
 */
export type Query = test.Query

export {
  /**
   * The test layer's query log: every query that reached the zones (below any cache), in order.
   *
   * @since 0.1.0
   * @category testing
   */
  TestDns
} from "./internal/dns/test.js"

/**
 * `timeout`: a per-query deadline, as the live layer has (none by default); `cache`: a resolver cache in front of
 * the zones, as the live layer has (none by default, so every lookup is a query).
 *
 * @since 0.1.0
 * @category testing
 */
export type TestOptions = test.TestOptions

/**
 * In-memory zones. Queries are logged when they start (read them through `TestDns`), then wait the name's delay on
 * Effect's Clock, then answer.
 *
 * @since 0.1.0
 * @category testing
 */
export const layerTest: (zones: Zones, options?: TestOptions) => Layer.Layer<model.Dns | test.TestDns> = test.layer
