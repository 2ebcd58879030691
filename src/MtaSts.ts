/**
 * SMTP MTA Strict Transport Security (RFC 8461): discover a domain's policy through its `_mta-sts` TXT record, fetch
 * it over verified HTTPS, parse it, cache it, and answer the two questions delivery asks of it: may this MX host be
 * used, and must TLS be verified.
 *
 * The lookup is `resolve`; the pipeline then calls `hostAllowed` for each MX host and `enforced` to know whether a
 * mismatch or a TLS failure is fatal.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { domainToASCII } from "node:url"
import { Dns } from "./Dns.js"
import { readCapped } from "./internal/mtaSts/body.js"
import * as NodeFetcher from "./internal/mtaSts/nodeFetcher.js"
import type { TlsPolicy } from "./Settings.js"
import { type Entry, PolicyCache } from "./PolicyCache.js"
import * as TransportError from "./TransportError.js"

// -----------------------------------------------------------------------------
// Policy
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 */
export type Mode = "enforce" | "testing" | "none"

/**
 * A parsed policy (RFC 8461 §3.2). `mx` holds the patterns normalised to lowercase A-labels without a trailing dot;
 * `maxAge` is in seconds.
 *
 * @since 0.1.0
 */
export interface Policy {
  readonly version: "STSv1"
  readonly mode: Mode
  readonly mx: ReadonlyArray<string>
  readonly maxAge: number
}

/**
 * The largest policy body accepted, in bytes (RFC 8461 §3.3 lets senders cap it; 64 KiB is far above any real one).
 *
 * @since 0.1.0
 */
export const MAX_POLICY_BYTES = 65_536

/**
 * The largest `max_age` the RFC allows (about one year).
 *
 * @since 0.1.0
 */
export const MAX_AGE_LIMIT = 31_557_600

/**
 * Why a policy body or a TXT record is not valid. `line` is 1-based, for policy bodies.
 *
 * @since 0.1.0
 */
export class PolicyError extends Data.TaggedError("MtaStsPolicyError")<{
  readonly message: string
  readonly line: number | null
}> {}

const keyPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/
// Field values exclude control characters (RFC 8461 §3.2 sts-policy-vchar), which also rejects a lone CR.
const controlPattern = /[\x00-\x08\x0a-\x1f\x7f]/
const labelPattern = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

/**
 * A host name as MTA-STS compares it: lowercase A-labels, no trailing dot.
 *
 * @since 0.1.0
 */
export const normalizeName = (name: string): string => {
  const trimmed = name.trim().replace(/\.$/, "").toLowerCase()
  if (/^[\x00-\x7f]*$/.test(trimmed)) return trimmed
  const ascii = domainToASCII(trimmed)
  return ascii === "" ? trimmed : ascii
}

const isDomain = (name: string): boolean =>
  name.length > 0 && name.length <= 253 && name.split(".").every((label) => labelPattern.test(label))

const normalizePattern = (value: string): Option.Option<string> => {
  const wildcard = value.startsWith("*.")
  const name = normalizeName(wildcard ? value.slice(2) : value)
  return isDomain(name) ? Option.some(wildcard ? `*.${name}` : name) : Option.none()
}

/**
 * Parses a policy body (RFC 8461 §3.2). Lines end with LF or CRLF; blank lines are skipped; unknown keys are ignored;
 * for a repeated key other than `mx` the first one counts. `version`, `mode` and `max_age` are required, and at least
 * one `mx` unless the mode is `none`. Keys and the `version`/`mode` values are case-sensitive, as the RFC's ABNF says.
 *
 * @since 0.1.0
 */
export const parse = (text: string): Either.Either<Policy, PolicyError> => {
  if (new TextEncoder().encode(text).length > MAX_POLICY_BYTES) {
    return Either.left(new PolicyError({ message: `policy larger than ${MAX_POLICY_BYTES} bytes`, line: null }))
  }
  let version: string | undefined
  let mode: string | undefined
  let maxAge: string | undefined
  let modeLine = 0
  let maxAgeLine = 0
  const mx: Array<string> = []
  // A byte-order mark is not part of the first key; some editors add one.
  const lines = (text.startsWith("\uFEFF") ? text.slice(1) : text).split(/\r?\n/)
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index]!
    const number = index + 1
    if (line.trim() === "") continue
    const colon = line.indexOf(":")
    const key = colon < 0 ? "" : line.slice(0, colon).trim()
    if (colon < 0 || !keyPattern.test(key)) {
      return Either.left(new PolicyError({ message: `line ${number} is not a "key: value" field`, line: number }))
    }
    const value = line.slice(colon + 1).trim()
    if (controlPattern.test(value)) {
      return Either.left(new PolicyError({ message: `line ${number} contains a control character`, line: number }))
    }
    switch (key) {
      case "version": {
        if (version === undefined) {
          if (value !== "STSv1") {
            return Either.left(
              new PolicyError({ message: `unsupported version "${value}" (expected STSv1)`, line: number })
            )
          }
          version = value
        }
        break
      }
      case "mode": {
        if (mode === undefined) {
          mode = value
          modeLine = number
        }
        break
      }
      case "max_age": {
        if (maxAge === undefined) {
          maxAge = value
          maxAgeLine = number
        }
        break
      }
      case "mx": {
        const pattern = normalizePattern(value)
        if (Option.isNone(pattern)) {
          return Either.left(new PolicyError({ message: `invalid mx pattern "${value}"`, line: number }))
        }
        mx.push(pattern.value)
        break
      }
    }
  }
  if (version === undefined) return Either.left(new PolicyError({ message: "missing version", line: null }))
  if (mode === undefined) return Either.left(new PolicyError({ message: "missing mode", line: null }))
  if (mode !== "enforce" && mode !== "testing" && mode !== "none") {
    return Either.left(
      new PolicyError({ message: `invalid mode "${mode}" (expected enforce, testing or none)`, line: modeLine })
    )
  }
  if (maxAge === undefined) return Either.left(new PolicyError({ message: "missing max_age", line: null }))
  if (!/^[0-9]{1,10}$/.test(maxAge) || Number(maxAge) > MAX_AGE_LIMIT) {
    return Either.left(
      new PolicyError({ message: `invalid max_age "${maxAge}" (0 to ${MAX_AGE_LIMIT} seconds)`, line: maxAgeLine })
    )
  }
  if (mx.length === 0 && mode !== "none") {
    return Either.left(new PolicyError({ message: `mode ${mode} without any mx pattern`, line: null }))
  }
  return Either.right({ version: "STSv1", mode, mx, maxAge: Number(maxAge) })
}

/**
 * Whether an MX host name matches one pattern: an exact name, or `*.suffix` standing for exactly one more label
 * (`*.example.com` matches `mx.example.com`, not `example.com` nor `a.b.example.com`). Case and a trailing dot are
 * ignored on both sides.
 *
 * @since 0.1.0
 */
export const matchesPattern = (pattern: string, mxHost: string): boolean => {
  const host = normalizeName(mxHost)
  if (pattern.startsWith("*.")) {
    const suffix = `.${normalizeName(pattern.slice(2))}`
    if (!host.endsWith(suffix)) return false
    const label = host.slice(0, host.length - suffix.length)
    return label.length > 0 && !label.includes(".")
  }
  return host === normalizeName(pattern)
}

/**
 * Whether an MX host name matches any of the policy's patterns (whatever its mode).
 *
 * @since 0.1.0
 */
export const matches = (policy: Policy, mxHost: string): boolean =>
  policy.mx.some((pattern) => matchesPattern(pattern, mxHost))

/**
 * Whether the policy lets the pipeline use this MX host: always with no policy or mode `none`, otherwise only when a
 * pattern matches. Under `testing` a `false` is to be recorded, not enforced (see `enforced`).
 *
 * @since 0.1.0
 */
export const hostAllowed = (policy: Policy | null, mxHost: string): boolean =>
  policy === null || policy.mode === "none" || matches(policy, mxHost)

/**
 * Whether the policy must be enforced: MX hosts outside it dropped, and verified TLS with no plaintext fallback.
 *
 * @since 0.1.0
 */
export const enforced = (policy: Policy | null): boolean => policy !== null && policy.mode === "enforce"

// -----------------------------------------------------------------------------
// TXT record
// -----------------------------------------------------------------------------

/**
 * A valid `_mta-sts` TXT record (RFC 8461 §3.1).
 *
 * @since 0.1.0
 */
export interface TxtRecord {
  readonly id: string
}

const recordPrefix = /^v=STSv1[ \t]*(?:;|$)/
const extensionValue = /^[\x21-\x3a\x3c\x3e-\x7e]+$/

/**
 * Parses one TXT record: `v=STSv1` first, then `;`-separated `name=value` fields, an `id` of 1 to 32 letters and
 * digits among them (the first one counts), and an optional trailing `;`.
 *
 * @since 0.1.0
 */
export const parseRecord = (text: string): Either.Either<TxtRecord, PolicyError> => {
  const invalid = (message: string) => Either.left(new PolicyError({ message, line: null }))
  const fields = text.split(";").map((field) => field.replace(/^[ \t]+|[ \t]+$/g, ""))
  if (fields[0] !== "v=STSv1") return invalid(`TXT record does not start with v=STSv1: "${text}"`)
  let id: string | undefined
  for (let index = 1; index < fields.length; index++) {
    const field = fields[index]!
    if (field === "" && index === fields.length - 1) break
    const equals = field.indexOf("=")
    const name = equals < 0 ? "" : field.slice(0, equals)
    const value = field.slice(equals + 1)
    if (equals < 0 || !keyPattern.test(name) || !extensionValue.test(value)) {
      return invalid(`malformed field "${field}" in TXT record "${text}"`)
    }
    if (name === "id" && id === undefined) {
      if (!/^[A-Za-z0-9]{1,32}$/.test(value)) return invalid(`invalid id "${value}" in TXT record "${text}"`)
      id = value
    }
  }
  return id === undefined ? invalid(`no id in TXT record "${text}"`) : Either.right({ id })
}

/**
 * What the TXT records of `_mta-sts.<domain>` say: records not starting with `v=STSv1` are discarded; exactly one must
 * remain and be valid (RFC 8461 §3.1), otherwise the domain has no available policy.
 *
 * @since 0.1.0
 */
export const selectRecord = (records: ReadonlyArray<string>): Either.Either<TxtRecord, PolicyError> => {
  const candidates = records.filter((record) => recordPrefix.test(record))
  if (candidates.length === 0) {
    return Either.left(new PolicyError({ message: "no TXT record starts with v=STSv1", line: null }))
  }
  if (candidates.length > 1) {
    return Either.left(
      new PolicyError({ message: `${candidates.length} TXT records start with v=STSv1 (exactly one allowed)`, line: null })
    )
  }
  return parseRecord(candidates[0]!)
}

// -----------------------------------------------------------------------------
// Fetching
// -----------------------------------------------------------------------------

/**
 * One policy fetch: `url` is `https://<host>[:port]/.well-known/mta-sts.txt`, `ca` the extra trusted CAs (PEM) on top
 * of the system ones.
 *
 * @since 0.1.0
 */
export interface FetchRequest {
  readonly domain: string
  readonly host: string
  readonly port: number
  readonly url: string
  readonly ca: ReadonlyArray<string>
}

/**
 * The raw answer; the checks on it (status, media type, size) are made by `fetchPolicy`, the same for every fetcher.
 *
 * @since 0.1.0
 */
export interface FetchResponse {
  readonly status: number
  /** The Content-Type header, `null` when absent. */
  readonly contentType: string | null
  readonly body: Stream.Stream<Uint8Array, TransportError.TransportError>
}

/**
 * The HTTPS transport behind policy fetches. The response must not outlive the scope (the connection is released
 * when it closes), and a redirect must be returned as it is, never followed.
 *
 * @since 0.1.0
 */
export class PolicyFetcher extends Context.Tag("effect-smtp-transport/MtaSts/PolicyFetcher")<
  PolicyFetcher,
  {
    readonly fetch: (
      request: FetchRequest
    ) => Effect.Effect<FetchResponse, TransportError.TransportError, Scope.Scope>
  }
>() {}

/**
 * The Node fetcher: @effect/platform's HttpClient over `node:https`, the host name resolved through the `Dns`
 * service (so a configured resolver applies), the certificate verified against the system CAs plus `ca`, no
 * redirects followed. A fresh agent per fetch, so no connection or TLS session outlives it.
 *
 * @since 0.1.0
 */
export const layer = (options?: { readonly ca?: ReadonlyArray<string> | undefined }): Layer.Layer<
  PolicyFetcher,
  never,
  Dns
> =>
  Layer.effect(
    PolicyFetcher,
    Effect.map(Dns, (dns) => PolicyFetcher.of({ fetch: NodeFetcher.make(dns, options?.ca ?? []) }))
  )

/**
 * What an in-memory fetcher answers.
 *
 * @since 0.1.0
 */
export interface TestResponse {
  /** Default 200. */
  readonly status?: number
  /** Default `"text/plain"`; `null` sends none. */
  readonly contentType?: string | null
  readonly body?: string | Uint8Array | Stream.Stream<Uint8Array, TransportError.TransportError>
}

/**
 * An in-memory fetcher: `handler` answers each request; it may `Effect.sleep` to act slow under TestClock.
 *
 * @since 0.1.0
 */
export const layerTest = (
  handler: (request: FetchRequest) => Effect.Effect<TestResponse, TransportError.TransportError>
): Layer.Layer<PolicyFetcher> =>
  Layer.succeed(
    PolicyFetcher,
    PolicyFetcher.of({
      fetch: (request) =>
        Effect.map(handler(request), (response): FetchResponse => {
          const body = response.body ?? ""
          return {
            status: response.status ?? 200,
            contentType: response.contentType === undefined ? "text/plain" : response.contentType,
            body: typeof body === "string"
              ? Stream.make(new TextEncoder().encode(body))
              : body instanceof Uint8Array
              ? Stream.make(body)
              : body
          }
        })
    })
  )

const isTextPlain = (contentType: string | null): boolean =>
  contentType !== null && contentType.split(";")[0]!.trim().toLowerCase() === "text/plain"

/**
 * The URL of a domain's policy.
 *
 * @since 0.1.0
 */
export const policyUrl = (domain: string, port = 443): string =>
  `https://mta-sts.${normalizeName(domain)}${port === 443 ? "" : `:${port}`}/.well-known/mta-sts.txt`

/**
 * Fetches and parses a domain's policy: only a 200 answer with media type `text/plain` and at most
 * `MAX_POLICY_BYTES` is read; a 3xx is a failure like any other status. Every failure is a temporary
 * `TransportError` of phase `mta-sts`: kind `policy` for an invalid body, `protocol` for HTTP-level refusals, or the
 * transport's own kind (`tls`, `dns`, `refused`, …).
 *
 * @since 0.1.0
 */
export const fetchPolicy = (
  domain: string,
  options?: { readonly port?: number | undefined; readonly ca?: ReadonlyArray<string> | undefined }
): Effect.Effect<Policy, TransportError.TransportError, PolicyFetcher> =>
  Effect.scoped(Effect.gen(function*() {
    const name = normalizeName(domain)
    const port = options?.port ?? 443
    const url = policyUrl(name, port)
    const fetcher = yield* PolicyFetcher
    const response = yield* fetcher.fetch({ domain: name, host: `mta-sts.${name}`, port, url, ca: options?.ca ?? [] })
    if (response.status !== 200) {
      const redirect = response.status >= 300 && response.status < 400 ? " (redirects are not followed)" : ""
      return yield* Effect.fail(
        TransportError.make("mta-sts", "protocol", `${url} answered HTTP ${response.status}${redirect}`)
      )
    }
    if (!isTextPlain(response.contentType)) {
      return yield* Effect.fail(TransportError.make(
        "mta-sts",
        "protocol",
        `${url} answered media type ${response.contentType ?? "(none)"}, not text/plain`
      ))
    }
    const bytes = yield* readCapped(
      response.body,
      MAX_POLICY_BYTES,
      (received) =>
        TransportError.make(
          "mta-sts",
          "protocol",
          `${url} sent a body over ${MAX_POLICY_BYTES} bytes (stopped after ${received})`
        )
    )
    return yield* Either.mapLeft(
      parse(new TextDecoder().decode(bytes)),
      (error) => TransportError.make("mta-sts", "policy", `invalid policy at ${url}: ${error.message}`)
    )
  }))

// -----------------------------------------------------------------------------
// Resolution
// -----------------------------------------------------------------------------

/**
 * Where the policy in an outcome came from: a cached one confirmed by an unchanged TXT id (or kept because the TXT
 * lookup or refresh failed while it was still within `max_age`), a fresh fetch, or a cached one past its `max_age`
 * kept because the refresh failed.
 *
 * @since 0.1.0
 */
export type Source = "cache" | "fetched" | "stale-cache"

/**
 * - `disabled`: `tls.mta-sts = disable`, nothing looked up;
 * - `none`: no `_mta-sts` TXT record starting with `v=STSv1` (NXDOMAIN, no TXT data, or only other TXT records);
 * - `invalid`: several `v=STSv1` records, or a malformed one (the RFC treats this as no policy);
 * - `failed`: the TXT lookup, the fetch or the parse failed, or the lookup timed out;
 * - `found`: a policy applies.
 *
 * @since 0.1.0
 */
export type Status = "disabled" | "none" | "invalid" | "failed" | "found"

/**
 * The result of `resolve`, plain data for the report. `warning` says what went wrong when a lookup failed but
 * delivery goes on (mode `optional`, or a cached policy kept); `error` is that failure.
 *
 * @since 0.1.0
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
 * @since 0.1.0
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
    if (!records.value.some((record) => recordPrefix.test(record))) {
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
 * @since 0.1.0
 */
export const resolve: (
  domain: string,
  options: ResolveOptions
) => Effect.Effect<Outcome, TransportError.TransportError, Dns | PolicyCache | PolicyFetcher> = Effect.fn(
  "MtaSts.resolve"
)(function*(domain: string, options: ResolveOptions) {
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
