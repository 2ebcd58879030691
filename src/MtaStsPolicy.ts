/**
 * The MTA-STS policy model (RFC 8461), pure: the policy and its parser, the `_mta-sts` TXT record and its parser,
 * and the questions delivery asks of a policy (may this MX host be used, must TLS be verified). No Effect service,
 * no I/O: the lookup, the fetch and the cache are `MtaSts.resolve`, `MtaSts.PolicyFetcher` and `PolicyCache`.
 *
 * @since 0.2.0
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as dnsName from "./internal/dnsName.js"

// -----------------------------------------------------------------------------
// Policy
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export type Mode = "enforce" | "testing" | "none"

/**
 * A parsed policy (RFC 8461 §3.2). `mx` holds the patterns normalised to lowercase A-labels without a trailing dot;
 * `maxAge` is in seconds.
 *
 * @since 0.1.0
 * @category models
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
 * @category constants
 */
export const MAX_POLICY_BYTES = 65_536

/**
 * The largest `max_age` the RFC allows (about one year).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_AGE_LIMIT = 31_557_600

/**
 * Why a policy body or a TXT record is not valid. `line` is 1-based, for policy bodies.
 *
 * @since 0.1.0
 * @category errors
 */
export class PolicyError extends Data.TaggedError("MtaStsPolicyError")<{
  readonly message: string
  readonly line: number | null
}> {}

const keyPattern = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/
// Field values exclude control characters (RFC 8461 §3.2 sts-policy-vchar), which also rejects a lone CR.
const controlPattern = /[\x00-\x08\x0a-\x1f\x7f]/

/**
 * A host name as MTA-STS compares it: lowercase A-labels, no trailing dot.
 *
 * @since 0.1.0
 * @category utils
 */
export const normalizeName = (name: string): string => {
  const trimmed = name.trim().replace(/\.$/, "").toLowerCase()
  if (/^[\x00-\x7f]*$/.test(trimmed)) return trimmed
  return dnsName.toAscii(trimmed) ?? trimmed
}

// RFC 8461 §3.2 limits an mx pattern's domain to 253 characters, below a host name's 255.
const isDomain = (name: string): boolean => name.length <= 253 && dnsName.hostnameProblem(name) === null

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
 * @category parsing
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
 * @category predicates
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
 * @category predicates
 */
export const matches = (policy: Policy, mxHost: string): boolean =>
  policy.mx.some((pattern) => matchesPattern(pattern, mxHost))

/**
 * Whether the policy lets the pipeline use this MX host: always with no policy or mode `none`, otherwise only when a
 * pattern matches. Under `testing` a `false` is to be recorded, not enforced (see `enforced`).
 *
 * @example
 * ```ts
 * import { Either } from "effect"
 * import * as MtaStsPolicy from "effect-smtp-transport/MtaStsPolicy"
 *
 * const policy = Either.getOrThrow(MtaStsPolicy.parse("version: STSv1\nmode: enforce\nmx: *.example.net\nmax_age: 86400\n"))
 * assert.ok(MtaStsPolicy.hostAllowed(policy, "mx1.example.net"))
 * assert.ok(!MtaStsPolicy.hostAllowed(policy, "mx.attacker.test"))
 * assert.ok(!MtaStsPolicy.hostAllowed(policy, "a.b.example.net")) // a wildcard covers one label
 * assert.ok(MtaStsPolicy.hostAllowed(null, "mx.attacker.test")) // no policy: any host
 * ```
 *
 * @since 0.1.0
 * @category predicates
 */
export const hostAllowed = (policy: Policy | null, mxHost: string): boolean =>
  policy === null || policy.mode === "none" || matches(policy, mxHost)

/**
 * Whether the policy must be enforced: MX hosts outside it dropped, and verified TLS with no plaintext fallback.
 *
 * @since 0.1.0
 * @category predicates
 */
export const enforced = (policy: Policy | null): boolean => policy !== null && policy.mode === "enforce"

// -----------------------------------------------------------------------------
// TXT record
// -----------------------------------------------------------------------------

/**
 * A valid `_mta-sts` TXT record (RFC 8461 §3.1).
 *
 * @since 0.1.0
 * @category models
 */
export interface TxtRecord {
  readonly id: string
}

const recordPrefix = /^v=STSv1[ \t]*(?:;|$)/

/**
 * Whether a TXT record is an MTA-STS one (starts with `v=STSv1`); other TXT records at the name say nothing about
 * MTA-STS.
 *
 * @since 0.2.0
 * @category parsing
 */
export const isStsRecord = (text: string): boolean => recordPrefix.test(text)
const extensionValue = /^[\x21-\x3a\x3c\x3e-\x7e]+$/

/**
 * Parses one TXT record: `v=STSv1` first, then `;`-separated `name=value` fields, an `id` of 1 to 32 letters and
 * digits among them (the first one counts), and an optional trailing `;`.
 *
 * @since 0.1.0
 * @category parsing
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
 * @category parsing
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

/**
 * The URL of a domain's policy.
 *
 * @since 0.1.0
 * @category utils
 */
export const policyUrl = (domain: string, port = 443): string =>
  `https://mta-sts.${normalizeName(domain)}${port === 443 ? "" : `:${port}`}/.well-known/mta-sts.txt`
