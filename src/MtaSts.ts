/**
 * SMTP MTA Strict Transport Security (RFC 8461): discover a domain's policy through its `_mta-sts` TXT record, fetch
 * it over verified HTTPS, parse it, cache it, and answer the two questions delivery asks of it: may this MX host be
 * used, and must TLS be verified.
 *
 * The lookup is `resolve`; the pipeline then calls `hostAllowed` for each MX host and `enforced` to know whether a
 * mismatch or a TLS failure is fatal. The pure policy model lives in `MtaStsPolicy` (re-exported here), the store in
 * `PolicyCache`, the HTTPS transport behind `PolicyFetcher`; this module puts them together.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Dns } from "./Dns.js"
import * as fetcher from "./internal/mtaSts/fetcher.js"
import * as NodeFetcher from "./internal/mtaSts/nodeFetcher.js"
import * as internal from "./internal/mtaSts/resolve.js"
import type * as MtaStsPolicy from "./MtaStsPolicy.js"
import type { PolicyCache } from "./PolicyCache.js"
import type * as TransportError from "./TransportError.js"

// -----------------------------------------------------------------------------
// Policy
// -----------------------------------------------------------------------------

// The policy model, documented in `MtaStsPolicy`, re-exported so that one import serves the MTA-STS lookup.
export {
  /**
   * `MtaStsPolicy.enforced`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  enforced,
  /**
   * `MtaStsPolicy.hostAllowed`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  hostAllowed,
  /**
   * `MtaStsPolicy.isStsRecord`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  isStsRecord,
  /**
   * `MtaStsPolicy.MAX_AGE_LIMIT`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  MAX_AGE_LIMIT,
  /**
   * `MtaStsPolicy.MAX_POLICY_BYTES`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  MAX_POLICY_BYTES,
  /**
   * `MtaStsPolicy.matches`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  matches,
  /**
   * `MtaStsPolicy.matchesPattern`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  matchesPattern,
  /**
   * `MtaStsPolicy.normalizeName`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  normalizeName,
  /**
   * `MtaStsPolicy.parse`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  parse,
  /**
   * `MtaStsPolicy.parseRecord`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  parseRecord,
  /**
   * `MtaStsPolicy.PolicyError`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  PolicyError,
  /**
   * `MtaStsPolicy.policyUrl`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  policyUrl,
  /**
   * `MtaStsPolicy.selectRecord`, re-exported: the policy model is documented there.
   *
   * @since 0.1.0
   * @category policy
   */
  selectRecord
} from "./MtaStsPolicy.js"

/**
 * `MtaStsPolicy.Mode`, re-exported: the policy model is documented there.
 *
 * @since 0.1.0
 * @category policy
 */
export type Mode = MtaStsPolicy.Mode

/**
 * `MtaStsPolicy.Policy`, re-exported: the policy model is documented there.
 *
 * @since 0.1.0
 * @category policy
 */
export type Policy = MtaStsPolicy.Policy

/**
 * `MtaStsPolicy.TxtRecord`, re-exported: the policy model is documented there.
 *
 * @since 0.1.0
 * @category policy
 */
export type TxtRecord = MtaStsPolicy.TxtRecord

// -----------------------------------------------------------------------------
// Fetching
// -----------------------------------------------------------------------------

/**
 * One policy fetch: `url` is `https://<host>[:port]/.well-known/mta-sts.txt`, `ca` the extra trusted CAs (PEM) on top
 * of the system ones.
 *
 * @since 0.1.0
 * @category fetching
 */
export type FetchRequest = fetcher.FetchRequest

/**
 * The raw answer: `status`, the Content-Type header (`null` when absent) and the body; the checks on it (status,
 * media type, size) are made by `fetchPolicy`, the same for every fetcher.
 *
 * @since 0.1.0
 * @category fetching
 */
export type FetchResponse = fetcher.FetchResponse

export {
  /**
   * The HTTPS transport behind policy fetches. The response must not outlive the scope (the connection is released
   * when it closes), and a redirect must be returned as it is, never followed.
   *
   * @since 0.1.0
   * @category fetching
   */
  PolicyFetcher
} from "./internal/mtaSts/fetcher.js"

/**
 * The Node fetcher: @effect/platform's HttpClient over `node:https`, the host name resolved through the `Dns`
 * service (so a configured resolver applies), the certificate verified against the system CAs plus `ca`, no
 * redirects followed. A fresh agent per fetch, so no connection or TLS session outlives it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options?: { readonly ca?: ReadonlyArray<string> | undefined }): Layer.Layer<
  fetcher.PolicyFetcher,
  never,
  Dns
> =>
  Layer.effect(
    fetcher.PolicyFetcher,
    Effect.map(Dns, (dns) => fetcher.PolicyFetcher.of({ fetch: NodeFetcher.make(dns, options?.ca ?? []) }))
  )

/**
 * What an in-memory fetcher answers: `status` (default 200), `contentType` (default `"text/plain"`; `null` sends
 * none), `body`.
 *
 * @since 0.1.0
 * @category testing
 */
export type TestResponse = fetcher.TestResponse

/**
 * An in-memory fetcher: `handler` answers each request; it may `Effect.sleep` to act slow under TestClock.
 *
 * @since 0.1.0
 * @category testing
 */
export const layerTest: (
  handler: (request: FetchRequest) => Effect.Effect<TestResponse, TransportError.TransportError>
) => Layer.Layer<fetcher.PolicyFetcher> = fetcher.layerTest

/**
 * Fetches and parses a domain's policy: only a 200 answer with media type `text/plain` and at most
 * `MAX_POLICY_BYTES` is read; a 3xx is a failure like any other status. Every failure is a temporary
 * `TransportError` of phase `mta-sts`: kind `policy` for an invalid body, `protocol` for HTTP-level refusals, or the
 * transport's own kind (`tls`, `dns`, `refused`, …).
 *
 * @since 0.1.0
 * @category fetching
 */
export const fetchPolicy: (
  domain: string,
  options?: { readonly port?: number | undefined; readonly ca?: ReadonlyArray<string> | undefined }
) => Effect.Effect<Policy, TransportError.TransportError, fetcher.PolicyFetcher> = fetcher.fetchPolicy

// -----------------------------------------------------------------------------
// Resolution
// -----------------------------------------------------------------------------

/**
 * Where the policy in an outcome came from: a cached one confirmed by an unchanged TXT id (or kept because the TXT
 * lookup or refresh failed while it was still within `max_age`), a fresh fetch, or a cached one past its `max_age`
 * kept because the refresh failed.
 *
 * @since 0.1.0
 * @category resolution
 */
export type Source = internal.Source

/**
 * - `disabled`: `tls.mta-sts = disable`, nothing looked up;
 * - `none`: no `_mta-sts` TXT record starting with `v=STSv1` (NXDOMAIN, no TXT data, or only other TXT records);
 * - `invalid`: several `v=STSv1` records, or a malformed one (the RFC treats this as no policy);
 * - `failed`: the TXT lookup, the fetch or the parse failed, or the lookup timed out;
 * - `found`: a policy applies.
 *
 * @since 0.1.0
 * @category resolution
 */
export type Status = internal.Status

/**
 * The result of `resolve`, plain data for the report: `domain`, `status`, `policy`, `source`, the TXT `id`;
 * `warning` says what went wrong when a lookup failed but delivery goes on (mode `optional`, or a cached policy
 * kept); `error` is that failure.
 *
 * @since 0.1.0
 * @category resolution
 */
export type Outcome = internal.Outcome

/**
 * `mode`: the value of `tls.mta-sts`; `timeout`: the value of `timeouts.mta-sts` (the TXT lookup and the fetch
 * together); `port`: the HTTPS port of the policy host (443 unless testing); `ca`: extra trusted CAs (PEM) for the
 * fetch, on top of the system ones.
 *
 * @since 0.1.0
 * @category resolution
 */
export type ResolveOptions = internal.ResolveOptions

/**
 * Looks up the policy of a recipient domain, as `tls.mta-sts` asks:
 *
 * - `disable`: nothing is looked up (status `disabled`);
 * - `optional`: a missing, invalid or unreachable policy gives `policy: null` (with a warning unless the domain simply
 *   publishes none);
 * - `require`: no policy published (no TXT record, or no valid one) is a permanent failure of kind `policy`; a failed
 *   or timed-out lookup or fetch, or an invalid policy body, is a temporary one.
 *
 * The TXT record is always queried. A cached policy within its `max_age` and with the same `id` is used without a
 * fetch; otherwise the policy is fetched and cached. When the lookup or the refresh fails and a cached policy exists,
 * even past its `max_age`, that policy is used and the failure becomes a warning (RFC 8461 §3.3, §10.2). The TXT query
 * and the fetch run together under `timeout`; running past it is a temporary `TransportError` of phase `mta-sts` and
 * kind `timeout`.
 *
 * @since 0.1.0
 * @category resolution
 */
export const resolve: (
  domain: string,
  options: ResolveOptions
) => Effect.Effect<Outcome, TransportError.TransportError, Dns | PolicyCache | fetcher.PolicyFetcher> =
  internal.resolve
