/**
 * Outbound limiters in Stalwart's two syntaxes: `[queue.limiter.outbound.<id>]` (v0.11.4+) and `[[queue.throttle]]`
 * (v0.7–v0.11.3). Each has `key` (a variable name or a list of them), `concurrency`, `rate` (`"100/1s"`), `match`
 * (an expression) and `enable`. Every field is checked: an unknown one, a key outside the six variables, a rate
 * that does not parse, or a limiter that limits nothing is an error naming its place.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import { compile, type CompileOptions } from "../../Expression.js"
import type { Key, OutboundLimiter, Rate } from "../../Limiter.js"
import { keys as limiterKeys } from "../../Limiter.js"
import type { Stage } from "../../Settings.js"
import { parseDuration } from "../duration.js"
import { describeToml } from "./describe.js"
import { STAGE_VARIABLES } from "./keys.js"
import type { Segment } from "./locate.js"
import type { RawIssue } from "./setting.js"

const FIELDS = ["key", "concurrency", "rate", "match", "enable"] as const

const isTable = (raw: unknown): raw is { readonly [key: string]: unknown } =>
  typeof raw === "object" && raw !== null && !Array.isArray(raw) && !(raw instanceof Date)

const STAGE_ORDER: ReadonlyArray<Stage> = ["domain", "host", "connection"]

/** The stage a variable is first known at. */
const stageOf = (variable: string): Stage =>
  STAGE_VARIABLES.domain.includes(variable) ? "domain" : STAGE_VARIABLES.host.includes(variable) ? "host" : "connection"

const later = (a: Stage, b: Stage): Stage => (STAGE_ORDER.indexOf(a) >= STAGE_ORDER.indexOf(b) ? a : b)

/** `"100/1s"` → 100 per second. @internal */
export const parseRate = (text: string): Either.Either<Rate, string> => {
  const match = /^\s*([0-9]+)\s*\/\s*(.+)$/.exec(text)
  if (match === null) return Either.left("it is not <count>/<period>")
  const count = Number(match[1])
  if (!Number.isSafeInteger(count) || count < 1) return Either.left("the count must be a whole number of 1 or more")
  return Either.flatMap(
    parseDuration(match[2]!),
    (period) =>
      Duration.toMillis(period) <= 0
        ? Either.left("the period must be longer than zero")
        : Either.right({ count, period })
  )
}

const one = (
  id: string,
  path: ReadonlyArray<Segment>,
  raw: unknown,
  options: CompileOptions,
  issues: Array<RawIssue>
): OutboundLimiter | null => {
  const issue = (at: ReadonlyArray<Segment>, problem: string, found: string, expected: string) =>
    issues.push({ path: at, problem, found, expected, column: 1 })
  if (!isTable(raw)) {
    issue(path, "not a table", describeToml(raw), `a table with the keys ${FIELDS.join(", ")}`)
    return null
  }
  const before = issues.length
  for (const field of Object.keys(raw)) {
    if (!(FIELDS as ReadonlyArray<string>).includes(field)) {
      issue([...path, field], "unknown key", `the key ${JSON.stringify(field)}`, `one of ${FIELDS.join(", ")}`)
    }
  }
  const enable = raw["enable"] ?? true
  if (typeof enable !== "boolean") issue([...path, "enable"], "not a boolean", describeToml(enable), "true or false")

  const rawKey = raw["key"] ?? []
  const keyList = typeof rawKey === "string" ? [rawKey] : rawKey
  const key: Array<Key> = []
  if (!Array.isArray(keyList)) {
    issue([...path, "key"], "not a key list", describeToml(rawKey), `a list of ${limiterKeys.join(", ")}`)
  } else {
    keyList.forEach((k: unknown, i) => {
      if (typeof k === "string" && (limiterKeys as ReadonlyArray<string>).includes(k)) key.push(k as Key)
      else {
        issue(
          typeof rawKey === "string" ? [...path, "key"] : [...path, "key", i],
          "not a limiter key",
          describeToml(k),
          `one of ${limiterKeys.join(", ")}`
        )
      }
    })
  }

  let concurrency: number | null = null
  if (raw["concurrency"] !== undefined) {
    const c = raw["concurrency"]
    if (typeof c === "number" && Number.isSafeInteger(c) && c >= 1) concurrency = c
    else issue([...path, "concurrency"], "not a concurrency", describeToml(c), "a whole number of 1 or more")
  }

  let rate: Rate | null = null
  if (raw["rate"] !== undefined) {
    const r = raw["rate"]
    const parsed = typeof r === "string" ? parseRate(r) : Either.left("it is not a string")
    if (Either.isRight(parsed)) rate = parsed.right
    else issue([...path, "rate"], `not a rate (${parsed.left})`, describeToml(r), "\"<count>/<period>\", e.g. \"100/1s\"")
  }
  if (raw["concurrency"] === undefined && raw["rate"] === undefined) {
    issue(path, "a limiter that limits nothing", "neither concurrency nor rate", "concurrency, rate or both")
  }

  let stage: Stage = "domain"
  for (const k of key) stage = later(stage, stageOf(k))
  let match: OutboundLimiter["match"] = null
  if (raw["match"] !== undefined) {
    const m = raw["match"]
    if (typeof m !== "string") {
      issue([...path, "match"], "not an expression", describeToml(m), "an expression as a string")
    } else {
      const compiled = compile(m, options)
      if (Either.isLeft(compiled)) {
        issues.push({
          path: [...path, "match"],
          problem: `not a valid expression (${compiled.left.message})`,
          found: JSON.stringify(m),
          expected: "an expression",
          column: compiled.left.column
        })
      } else {
        const unknown = Array.from(compiled.right.variables).filter((v) => !STAGE_VARIABLES.connection.includes(v))
        if (unknown.length > 0) {
          issue(
            [...path, "match"],
            "reads variables a limiter cannot know",
            unknown.join(", "),
            `variables among ${STAGE_VARIABLES.connection.join(", ")}`
          )
        } else {
          match = compiled.right
          for (const v of compiled.right.variables) stage = later(stage, stageOf(v))
        }
      }
    }
  }
  if (issues.length > before || enable === false) return null
  return { id, key, concurrency, rate, match, stage }
}

/**
 * The limiters of a parsed TOML document, in file order (the v0.11.4+ tables, then the throttles), and the issues
 * met. A limiter with `enable = false` is left out.
 *
 * @internal
 */
export const parseLimiters = (
  root: unknown,
  options: CompileOptions
): { readonly limiters: ReadonlyArray<OutboundLimiter>; readonly issues: ReadonlyArray<RawIssue> } => {
  const issues: Array<RawIssue> = []
  const limiters: Array<OutboundLimiter> = []
  const queue = isTable(root) ? root["queue"] : undefined
  if (!isTable(queue)) return { limiters, issues }
  const limiter = queue["limiter"]
  if (limiter !== undefined) {
    const outbound = isTable(limiter) ? limiter["outbound"] : undefined
    if (!isTable(limiter)) {
      issues.push({ path: ["queue", "limiter"], problem: "not a table", found: describeToml(limiter), expected: "a table" })
    } else if (outbound !== undefined && !isTable(outbound)) {
      issues.push({
        path: ["queue", "limiter", "outbound"],
        problem: "not a table",
        found: describeToml(outbound),
        expected: "a table of limiters, [queue.limiter.outbound.<id>]"
      })
    } else if (isTable(outbound)) {
      for (const [id, raw] of Object.entries(outbound)) {
        const parsed = one(id, ["queue", "limiter", "outbound", id], raw, options, issues)
        if (parsed !== null) limiters.push(parsed)
      }
    }
  }
  const throttle = queue["throttle"]
  if (throttle !== undefined) {
    if (!Array.isArray(throttle)) {
      issues.push({
        path: ["queue", "throttle"],
        problem: "not an array of tables",
        found: describeToml(throttle),
        expected: "[[queue.throttle]] tables"
      })
    } else {
      throttle.forEach((raw: unknown, i) => {
        const parsed = one(`throttle[${i}]`, ["queue", "throttle", i], raw, options, issues)
        if (parsed !== null) limiters.push(parsed)
      })
    }
  }
  return { limiters, issues }
}
