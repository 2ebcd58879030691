/**
 * Plain values: what the named strategies of the `strategies` layout (TOML values) and the registry objects of the
 * `json` layout (JSON values) hold, read into a key's type by the same converters that judge expression results.
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import { Constant, type Value } from "../../Expression.js"
import type { IpStrategy } from "../../Settings.js"
import { parseDuration } from "../duration.js"
import { describeToml } from "./describe.js"
import type { KeySpec, Layout } from "./keys.js"

/** Why a plain value cannot be used. @internal */
export interface PlainProblem {
  readonly problem: string
  readonly found: string
  readonly expected: string
}

/** v0.16's `ipLookupStrategy` names. @internal */
export const JSON_IP_STRATEGY: { readonly [name: string]: IpStrategy } = {
  v4ThenV6: "ipv4_then_ipv6",
  v6ThenV4: "ipv6_then_ipv4",
  v4Only: "ipv4_only",
  v6Only: "ipv6_only"
}

const TLS_WORDS = ["optional", "require", "required", "disable", "disabled", "none", "false"]

/**
 * One plain value → the key's type. `sourceIp` lists are read by the layouts (one list of both families); the other
 * kinds are here.
 *
 * @internal
 */
export const plainValue = (
  layout: Exclude<Layout, "outbound">,
  spec: Pick<KeySpec<unknown>, "kind" | "converter">,
  raw: unknown
): Either.Either<unknown, PlainProblem> => {
  const { converter } = spec
  const json = layout === "json"
  const expected = json ? jsonExpected(spec) : tomlExpected(spec)
  const fail = (problem: string) => Either.left({ problem, found: describeToml(raw), expected })
  const convert = (value: Value): Either.Either<unknown, PlainProblem> =>
    Either.mapLeft(converter.convert(value), (why) => ({
      problem: why === "" ? "wrong value" : `wrong value (${why})`,
      found: describeToml(raw),
      expected
    }))
  switch (spec.kind) {
    case "hostname":
      return typeof raw === "string" ? convert(raw) : fail("wrong type of value")
    case "strategy":
      if (typeof raw !== "string") return fail("wrong type of value")
      if (json) return raw in JSON_IP_STRATEGY ? Either.right(JSON_IP_STRATEGY[raw]) : fail("wrong value")
      return convert(raw)
    case "count":
      if (typeof raw === "number" && Number.isInteger(raw)) return convert(raw)
      if (!json && typeof raw === "string" && /^[0-9]+$/.test(raw)) return convert(Number(raw))
      return fail("wrong type of value")
    case "duration":
    case "delay": {
      if (spec.kind === "delay" && raw === false) return convert(0)
      if (typeof raw === "number" && Number.isInteger(raw)) {
        return raw > 0 ? Either.right(wrap(spec, Duration.millis(raw))) : fail("a duration must be greater than zero")
      }
      if (!json && typeof raw === "string") {
        return Either.match(parseDuration(raw), {
          onLeft: (why) => fail(`malformed duration (${why})`),
          onRight: (d) => Either.right(wrap(spec, d))
        })
      }
      return fail("wrong type of value")
    }
    case "tls":
      if (raw === false && !json) return Either.right("disable")
      if (typeof raw !== "string") return fail("wrong type of value")
      if (json) return ["optional", "require", "disable"].includes(raw) ? Either.right(raw) : fail("wrong value")
      return TLS_WORDS.includes(raw.toLowerCase()) ? convert(new Constant(raw.toLowerCase())) : fail("wrong value")
    case "bool":
      if (typeof raw === "boolean") return Either.right(raw)
      if (!json && (raw === "true" || raw === "false")) return Either.right(raw === "true")
      return fail("wrong type of value")
    case "attempts":
      // A named schedule's max-attempts is a number (false, "by the TTL", is [queue.schedule]'s alone).
      if (typeof raw === "number" && Number.isInteger(raw)) return raw >= 1 ? convert(raw) : fail("it is not at least 1")
      if (!json && typeof raw === "string" && /^[0-9]+$/.test(raw)) return convert(Number(raw))
      return fail("wrong type of value")
    case "durations": {
      if (!Array.isArray(raw)) return fail("wrong type of value")
      const items: Array<Value> = []
      for (const item of raw) {
        if (typeof item === "number" && Number.isInteger(item)) {
          if (item <= 0) return fail("a duration must be greater than zero")
          items.push(item)
        } else if (!json && typeof item === "string") {
          const d = parseDuration(item)
          if (Either.isLeft(d)) return fail(`malformed duration ${JSON.stringify(item)} (${d.left})`)
          items.push(Duration.toMillis(d.right))
        } else return fail("wrong type of value")
      }
      return convert(items)
    }
    case "ipv4":
    case "ipv6":
      return fail("wrong type of value")
  }
}

const wrap = (spec: Pick<KeySpec<unknown>, "kind" | "converter">, d: Duration.Duration): unknown =>
  spec.kind === "delay" ? Either.getOrThrow(spec.converter.convert(Duration.toMillis(d))) : d

const tomlExpected = (spec: Pick<KeySpec<unknown>, "kind" | "converter">): string => {
  switch (spec.kind) {
    case "durations":
      return "a list of durations (e.g. [\"2m\", \"5m\", \"1h\"])"
    case "attempts":
      return "a positive integer"
    case "strategy":
      return "one of the strings \"ipv4_only\", \"ipv6_only\", \"ipv4_then_ipv6\", \"ipv6_then_ipv4\""
    case "tls":
      return "one of the strings \"optional\", \"require\" (\"required\"), \"disable\" (\"disabled\", \"none\", false)"
    case "count":
      return "a positive integer"
    case "bool":
      return "true or false"
    default:
      return spec.converter.expected
  }
}

const jsonExpected = (spec: Pick<KeySpec<unknown>, "kind" | "converter">): string => {
  switch (spec.kind) {
    case "durations":
      return "a list of numbers of milliseconds, each greater than zero"
    case "attempts":
      return "a positive integer"
    case "strategy":
      return `one of ${Object.keys(JSON_IP_STRATEGY).map((s) => JSON.stringify(s)).join(", ")}`
    case "tls":
      return "one of \"optional\", \"require\", \"disable\""
    case "duration":
      return "a number of milliseconds, greater than zero"
    case "delay":
      return "a number of milliseconds greater than zero, or false for one attempt at a time"
    case "count":
      return "a positive integer"
    case "bool":
      return "true or false"
    default:
      return spec.converter.expected
  }
}
