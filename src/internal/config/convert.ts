/**
 * Converting an evaluated expression to a key's type (Stalwart's `TryFrom<Variable>`, §2.5 of the reference), with
 * the reason when it cannot be done. The same converters judge constant values at load and computed values per
 * delivery, so a value that loads is a value that would have been used.
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { isIPv4, isIPv6 } from "node:net"
import { Constant, type Value } from "../../Expression.js"
import { type IpStrategy, type TlsPolicy, ipStrategies } from "../../Settings.js"
import * as dnsName from "../dnsName.js"
import { DURATION_SYNTAX, parseDuration } from "../duration.js"
import { render } from "./describe.js"

/** @internal */
export interface Converter<A> {
  /** What the key accepts, as it reads after "expected". */
  readonly expected: string
  /** Right: the converted value. Left: why this value is refused (a clause, may be empty). */
  readonly convert: (value: Value) => Either.Either<A, string>
}

/** Why a string cannot be an EHLO name, or null when it can: the one host-name check (internal/dnsName). */
export const hostnameProblem = dnsName.hostnameProblem

/** @internal */
export const hostname: Converter<string> = {
  expected: "a host name (letters, digits, hyphens and dots; at most 255 characters and 63 per label)",
  convert: (value) => {
    if (typeof value !== "string") {
      return Either.left("a host name is a string; in an expression write it quoted, e.g. \"'mx.example.org'\"")
    }
    const problem = hostnameProblem(value)
    return problem === null ? Either.right(value) : Either.left(problem)
  }
}

const STRATEGIES: ReadonlyArray<IpStrategy> = ipStrategies

/** Bare constant or string (case-insensitive), as Stalwart accepts both. */
export const ipStrategy: Converter<IpStrategy> = {
  expected: "one of ipv4_only, ipv6_only, ipv6_then_ipv4, ipv4_then_ipv6",
  convert: (value) => {
    const name = value instanceof Constant ? value.name : typeof value === "string" ? value.toLowerCase() : null
    const found = STRATEGIES.find((s) => s === name)
    return found === undefined ? Either.left("") : Either.right(found)
  }
}

const TLS_CONSTANTS: { readonly [name: string]: TlsPolicy } = {
  optional: "optional",
  require: "require",
  required: "require",
  disable: "disable",
  disabled: "disable",
  none: "disable"
}

/**
 * Constants only, as in Stalwart: a quoted `'require'` is refused rather than guessed at. `false` is the integer 0,
 * which Stalwart reads as disable.
 */
export const tlsPolicy: Converter<TlsPolicy> = {
  expected: "one of the bare constants optional, require (required), disable (disabled, none, false)",
  convert: (value) => {
    if (value instanceof Constant) {
      const policy = TLS_CONSTANTS[value.name]
      return policy === undefined ? Either.left("") : Either.right(policy)
    }
    if (value === 0) return Either.right("disable")
    if (typeof value === "string" && TLS_CONSTANTS[value.toLowerCase()] !== undefined) {
      return Either.left(`a quoted string is not a policy; write the bare constant ${value.toLowerCase()}`)
    }
    return Either.left("")
  }
}

/** Integers 1/0 (what `true`/`false` are). Stricter than Stalwart's to_bool, which takes any string as true. */
export const boolean: Converter<boolean> = {
  expected: "true or false",
  convert: (value) => typeof value === "number" ? Either.right(value !== 0) : Either.left("")
}

/** Integer, float (truncated, as Stalwart does: `/` always yields a float) or numeric string; at least 1. */
export const positiveInteger: Converter<number> = {
  expected: "a positive integer",
  convert: (value) => {
    const n = typeof value === "number"
      ? value
      : typeof value === "string" && /^\s*[+-]?[0-9]+(\.[0-9]+)?\s*$/.test(value)
      ? Number(value)
      : Number.NaN
    if (Number.isNaN(n)) return Either.left("")
    const truncated = Math.trunc(n)
    if (truncated < 1) return Either.left("it is not at least 1")
    if (!Number.isSafeInteger(truncated)) return Either.left("it is too large")
    return Either.right(truncated)
  }
}

const millisOrString = (value: Value): Either.Either<Duration.Duration, string> => {
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value <= 0) return Either.left("a duration must be greater than zero")
    return Either.right(Duration.millis(value))
  }
  if (typeof value === "string") return parseDuration(value)
  return Either.left("")
}

/** Integer milliseconds (what `5m` is inside an expression) or a duration string; > 0. */
export const duration: Converter<Duration.Duration> = {
  expected: DURATION_SYNTAX,
  convert: millisOrString
}

/** A duration, or false (0) for strictly sequential attempts. */
export const attemptDelay: Converter<Option.Option<Duration.Duration>> = {
  expected: `${DURATION_SYNTAX}, or false for one attempt at a time`,
  convert: (value) => value === 0 ? Either.right(Option.none()) : Either.map(millisOrString(value), Option.some)
}

/**
 * Stalwart's `into_array`: a list is its items, a non-empty scalar a one-element list, "" the empty list. One bad
 * element refuses the whole list (never a partial bind list).
 */
const ipList = (family: 4 | 6): Converter<ReadonlyArray<string>> => ({
  expected: `a list of IPv${family} addresses`,
  convert: (value) => {
    const items: ReadonlyArray<Value> = Array.isArray(value) ? value : value === "" ? [] : [value as Value]
    const problems: Array<string> = []
    const out: Array<string> = []
    items.forEach((item, i) => {
      const problem = ipProblem(item, family)
      if (problem === null) out.push(item as string)
      else problems.push(`element ${i + 1} (${render(item)}) ${problem}`)
    })
    return problems.length === 0 ? Either.right(out) : Either.left(problems.join("; "))
  }
})

/** Why an element cannot be in the source list of that family, or null. */
export const ipProblem = (item: Value, family: 4 | 6): string | null => {
  if (typeof item !== "string") return "is not a string"
  if (family === 4 ? isIPv4(item) : isIPv6(item)) return null
  if (family === 4 && isIPv6(item)) return "is an IPv6 address in the v4 list"
  if (family === 6 && isIPv4(item)) return "is an IPv4 address in the v6 list"
  return `is not an IPv${family} address`
}

/** @internal */
export const ipv4List = ipList(4)
/** @internal */
export const ipv6List = ipList(6)

/**
 * A list of durations (`[2m, 5m]` in an expression, which is milliseconds; a duration string): Stalwart's
 * `into_array`, a scalar being a one-element list and "" the empty one. `min` is how many it needs.
 *
 * @internal
 */
export const durationList = (min: 0 | 1): Converter<ReadonlyArray<Duration.Duration>> => ({
  expected: `a list of durations${min === 1 ? ", at least one" : ""} (e.g. "[2m, 5m, 1h]"; each ${DURATION_SYNTAX})`,
  convert: (value) => {
    const items: ReadonlyArray<Value> = Array.isArray(value) ? value : value === "" ? [] : [value as Value]
    if (items.length < min) return Either.left("at least one is needed")
    const out: Array<Duration.Duration> = []
    const problems: Array<string> = []
    items.forEach((item, i) => {
      const d = millisOrString(item)
      if (Either.isRight(d)) out.push(d.right)
      else problems.push(`element ${i + 1} (${render(item)})${d.left === "" ? " is not a duration" : `: ${d.left}`}`)
    })
    return problems.length === 0 ? Either.right(out) : Either.left(problems.join("; "))
  }
})

/** A positive number of attempts, or false (0): none, the schedule expires by its TTL. @internal */
export const maxAttempts: Converter<Option.Option<number>> = {
  expected: "a positive integer, or false to expire by the TTL (expire)",
  convert: (value) => value === 0 ? Either.right(Option.none()) : Either.map(positiveInteger.convert(value), Option.some)
}
