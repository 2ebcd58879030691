/**
 * `MtaSts.resolve`: the TXT lookup, the fetch and the cache put together into one outcome for the report.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import { Dns } from "../../Dns.js"
import { isStsRecord, normalizeName, type Policy, selectRecord } from "../../MtaStsPolicy.js"
import { type Entry, PolicyCache } from "../../PolicyCache.js"
import type { TlsPolicy } from "../../Settings.js"
import * as TransportError from "../../TransportError.js"
import { fetchPolicy, PolicyFetcher } from "./fetcher.js"

/**
 * Where the policy in an outcome came from: a cached one confirmed by an unchanged TXT id (or kept because the TXT
 * lookup or refresh failed while it was still within `max_age`), a fresh fetch, or a cached one past its `max_age`
 * kept because the refresh failed.
 *
 * @internal
 */
export type Source = "cache" | "fetched" | "stale-cache"

/**
 * - `disabled`: `tls.mta-sts = disable`, nothing looked up;
 * - `none`: no `_mta-sts` TXT record starting with `v=STSv1` (NXDOMAIN, no TXT data, or only other TXT records);
 * - `invalid`: several `v=STSv1` records, or a malformed one (the RFC treats this as no policy);
 * - `failed`: the TXT lookup, the fetch or the parse failed, or the lookup timed out;
 * - `found`: a policy applies.
 *
 * @internal
 */
export type Status = "disabled" | "none" | "invalid" | "failed" | "found"

/**
 * The result of `resolve`, plain data for the report. `warning` says what went wrong when a lookup failed but
 * delivery goes on (mode `optional`, or a cached policy kept); `error` is that failure.
 *
 * @internal
 */
export interface Outcome {
  readonly domain: string
  readonly status: Status
  readonly policy: Policy | null
  readonly source: Source | null
  readonly id: string | null
  readonly warning: string | null
  readonly error: TransportError.TransportError | null
}

/**
 * @internal
 */
export interface ResolveOptions {
  /** The value of `tls.mta-sts`. */
  readonly mode: TlsPolicy
  /** The value of `timeouts.mta-sts`: the TXT lookup and the fetch together. */
  readonly timeout: Duration.DurationInput
  /** The HTTPS port of the policy host; 443 unless testing. */
  readonly port?: number | undefined
  /** Extra trusted CAs (PEM) for the policy fetch, on top of the system ones. */
  readonly ca?: ReadonlyArray<string> | undefined
  /** The parent of the `MtaSts.resolve` span; the current span when absent. */
  readonly parent?: Tracer.AnySpan | undefined
}

type Live =
  | { readonly _tag: "Unchanged"; readonly entry: Entry }
  | { readonly _tag: "Fetched"; readonly id: string; readonly policy: Policy }
  | { readonly _tag: "Absent"; readonly status: "none" | "invalid"; readonly reason: string }

const lookupLive = (
  domain: string,
  fresh: Option.Option<Entry>,
  options: ResolveOptions
): Effect.Effect<Live, TransportError.TransportError, Dns | PolicyFetcher> =>
  Effect.gen(function*() {
    const dns = yield* Dns
    const txtName = `_mta-sts.${domain}`
    const records = yield* dns.txt(txtName).pipe(
      Effect.map(Option.some),
      Effect.catchTag("DnsError", (error) =>
        error.reason === "Temporary"
          ? Effect.fail(
            TransportError.make("mta-sts", "dns", `TXT lookup of ${txtName} failed: ${error.message}`)
          )
          : Effect.succeed(Option.none()))
    )
    if (Option.isNone(records)) {
      return { _tag: "Absent", status: "none", reason: `no TXT record at ${txtName}` } as const
    }
    // Other TXT records at the name (there is no rule against them) say nothing about MTA-STS.
    if (!records.value.some((record) => isStsRecord(record))) {
      return { _tag: "Absent", status: "none", reason: `no v=STSv1 TXT record at ${txtName}` } as const
    }
    const record = selectRecord(records.value)
    if (Either.isLeft(record)) {
      return { _tag: "Absent", status: "invalid", reason: `${txtName}: ${record.left.message}` } as const
    }
    const id = record.right.id
    if (Option.isSome(fresh) && fresh.value.id === id) return { _tag: "Unchanged", entry: fresh.value } as const
    const policy = yield* fetchPolicy(domain, { port: options.port, ca: options.ca })
    return { _tag: "Fetched", id, policy } as const
  })

const outcome = (
  domain: string,
  fields: Partial<Omit<Outcome, "domain" | "status">> & { readonly status: Status }
): Outcome => ({
  domain,
  status: fields.status,
  policy: fields.policy ?? null,
  source: fields.source ?? null,
  id: fields.id ?? null,
  warning: fields.warning ?? null,
  error: fields.error ?? null
})

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
 * @internal
 */
export const resolve = (
  domain: string,
  options: ResolveOptions
): Effect.Effect<Outcome, TransportError.TransportError, Dns | PolicyCache | PolicyFetcher> =>
  // A span of its own, current inside so that the policy fetch's HTTP spans nest under it; under `parent` when given.
  Effect.withSpan(resolveIn(domain, options), "MtaSts.resolve", {
    captureStackTrace: false,
    ...(options.parent === undefined ? {} : { parent: options.parent })
  })

const resolveIn = Effect.fnUntraced(function*(domain: string, options: ResolveOptions) {
  const name = normalizeName(domain)
  if (options.mode === "disable") return outcome(name, { status: "disabled" })
  const cache = yield* PolicyCache
  const cached = yield* cache.get(name)
  const now = yield* Clock.currentTimeMillis
  const fresh = Option.filter(cached, (entry) => now < entry.fetchedAt + entry.policy.maxAge * 1000)
  const live = yield* lookupLive(name, fresh, options).pipe(
    Effect.timeoutFail({
      duration: options.timeout,
      onTimeout: () => TransportError.timeout("mta-sts", options.timeout)
    }),
    Effect.either
  )
  if (Either.isRight(live)) {
    const result = live.right
    switch (result._tag) {
      case "Unchanged": {
        const entry = result.entry
        return outcome(name, { status: "found", policy: entry.policy, source: "cache", id: entry.id })
      }
      case "Fetched": {
        const fetchedAt = yield* Clock.currentTimeMillis
        yield* cache.set(name, { id: result.id, policy: result.policy, fetchedAt })
        return outcome(name, { status: "found", policy: result.policy, source: "fetched", id: result.id })
      }
      case "Absent": {
        // RFC 8461 §3.1: a vanished or broken TXT record alone does not remove a policy still within its max_age.
        if (Option.isSome(fresh)) {
          return outcome(name, {
            status: "found",
            policy: fresh.value.policy,
            source: "cache",
            id: fresh.value.id,
            warning: `MTA-STS for ${name}: ${result.reason}; using the cached policy (id ${fresh.value.id}) until it expires`
          })
        }
        if (options.mode === "require") {
          return yield* Effect.fail(TransportError.make(
            "mta-sts",
            "policy",
            `MTA-STS is required but ${name} publishes no valid policy (${result.reason})`,
            true
          ))
        }
        return outcome(name, {
          status: result.status,
          warning: result.status === "invalid" ? `MTA-STS for ${name} ignored: ${result.reason}` : null
        })
      }
    }
  }
  const error = live.left
  if (Option.isSome(cached)) {
    const entry = cached.value
    const stale = Option.isNone(fresh)
    return outcome(name, {
      status: "found",
      policy: entry.policy,
      source: stale ? "stale-cache" : "cache",
      id: entry.id,
      warning: `MTA-STS refresh for ${name} failed (${error.message}); using the cached policy (id ${entry.id}${
        stale ? ", past its max_age" : ""
      })`,
      error
    })
  }
  if (options.mode === "require") return yield* Effect.fail(error)
  return outcome(name, {
    status: "failed",
    warning: `MTA-STS lookup for ${name} failed, delivering without a policy: ${error.message}`,
    error
  })
})
