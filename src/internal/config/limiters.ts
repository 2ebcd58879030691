/**
 * Outbound limiters in Stalwart's three syntaxes: `[queue.limiter.outbound.<id>]` (v0.11.4–v0.15), `[[queue.throttle]]`
 * (v0.7–v0.11.3) and v0.16's `MtaOutboundThrottle` registry objects. Each has `key` (a variable name or a list of
 * them; in JSON a set of camelCase names), `concurrency`, `rate` (`"100/1s"`; in JSON `{ count, period }` with the
 * period in milliseconds), `match` (an expression or an if-list) and `enable`. Every field is checked: an unknown
 * one, a key outside the six variables, a rate that does not parse, or a limiter that limits nothing is an error
 * naming its place.
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Toml from "smol-toml"
import { compile, compileIfBlock, type CompileOptions, type Expression } from "../../Expression.js"
import type { Key, OutboundLimiter, Rate } from "../../Limiter.js"
import { keys as limiterKeys } from "../../Limiter.js"
import type { Stage } from "../../Limiter.js"
import { formatDuration, parseDuration } from "../duration.js"
import { describeToml } from "./describe.js"
import { STAGE_VARIABLES } from "./keys.js"
import type { Segment } from "./locate.js"
import type { RawIssue } from "./setting.js"

const FIELDS = ["key", "concurrency", "rate", "match", "enable"] as const

const isTable = (raw: unknown): raw is { readonly [key: string]: unknown } =>
  typeof raw === "object" && raw !== null && !Array.isArray(raw) && !(raw instanceof Date)

const STAGE_ORDER: ReadonlyArray<Stage> = ["message", "domain", "host", "connection"]

/** The variables a domain group adds to its message's: its recipient and domain. */
const GROUP_VARIABLES: ReadonlyArray<string> = ["rcpt", "rcpt_domain"]

/** The stage a variable is first known at. */
const stageOf = (variable: string): Stage =>
  GROUP_VARIABLES.includes(variable)
    ? "domain"
    : STAGE_VARIABLES.domain.includes(variable)
    ? "message"
    : STAGE_VARIABLES.host.includes(variable)
    ? "host"
    : "connection"

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

/**
 * The stage where every variable of the key and of `match` is known: where the limiter is checked. As Stalwart sorts
 * its outbound limiters (`QueueRateLimiters::parse_outbound`): `mx`, `remote_ip` or `local_ip` in the key or the
 * match, per host or connection; else `rcpt_domain`, per domain group; else (`sender`, `sender_domain`, or no key)
 * once per message, before its recipients are grouped.
 */
const stageOfLimiter = (key: ReadonlyArray<Key>, match: Expression | null): Stage => {
  let stage: Stage = "message"
  for (const k of key) stage = later(stage, stageOf(k))
  for (const v of match?.variables ?? []) stage = later(stage, stageOf(v))
  return stage
}

const isBranch = (raw: unknown): raw is { readonly if: string; readonly then: string } =>
  isTable(raw) && Object.keys(raw).length === 2 && typeof raw["if"] === "string" && typeof raw["then"] === "string"

/**
 * `match`: an expression, or (as any of Stalwart's expressions may be) an if-list `[{ if, then }, …, { else }]`.
 * It may read the variables known once a connection's addresses are (`remote_ip`, `local_ip`) and before.
 */
const compileMatch = (
  raw: unknown,
  path: ReadonlyArray<Segment>,
  options: CompileOptions,
  issues: Array<RawIssue>
): Expression | null => {
  const issue = (at: ReadonlyArray<Segment>, problem: string, found: string, expected: string, column = 1) =>
    issues.push({ path: at, problem, found, expected, column })
  let compiled: Either.Either<Expression, string>
  if (typeof raw === "string") {
    compiled = Either.mapLeft(compile(raw, options), (error) => {
      issue(path, `not a valid expression (${error.message})`, JSON.stringify(raw), "an expression", error.column)
      return ""
    })
  } else if (Array.isArray(raw) && raw.length > 0) {
    const last = raw[raw.length - 1]
    const branches = raw.slice(0, -1)
    const otherwise = isTable(last) && Object.keys(last).length === 1 ? last["else"] : undefined
    const bad = branches.findIndex((b) => !isBranch(b))
    if (bad >= 0 || typeof otherwise !== "string") {
      issue(
        bad >= 0 ? [...path, bad] : [...path, raw.length - 1],
        "not an if-list",
        describeToml(bad >= 0 ? branches[bad] : last),
        "{ if = \"<condition>\", then = \"<expression>\" } entries and a last { else = \"<expression>\" }"
      )
      return null
    }
    const block = compileIfBlock(branches as ReadonlyArray<{ if: string; then: string }>, otherwise, options)
    compiled = Either.mapLeft(block, (errors) => {
      for (const { branch, error, field } of errors) {
        issue(
          field === "else" ? [...path, branches.length, "else"] : [...path, branch, field],
          `not a valid expression (${error.message})`,
          JSON.stringify(field === "else" ? otherwise : (branches[branch] as { [k: string]: string })[field]),
          "an expression",
          error.column
        )
      }
      return ""
    })
  } else {
    issue(path, "not an expression", describeToml(raw), "an expression as a string, or an if-list")
    return null
  }
  if (Either.isLeft(compiled)) return null
  const unknown = Array.from(compiled.right.variables).filter((v) => !STAGE_VARIABLES.connection.includes(v))
  if (unknown.length > 0) {
    const known = STAGE_VARIABLES.connection.join(", ")
    issue(path, "reads variables a limiter cannot know", unknown.join(", "), `variables among ${known}`)
    return null
  }
  return compiled.right
}

/** Every field is a known one (each unknown one an issue); `enable`, true when absent. */
const checkFields = (
  raw: { readonly [key: string]: unknown },
  path: ReadonlyArray<Segment>,
  known: ReadonlyArray<string>,
  word: "key" | "field",
  issue: (at: ReadonlyArray<Segment>, problem: string, found: string, expected: string) => void
): unknown => {
  for (const field of Object.keys(raw)) {
    if (!known.includes(field)) {
      issue([...path, field], `unknown ${word}`, `the ${word} ${JSON.stringify(field)}`, `one of ${known.join(", ")}`)
    }
  }
  const enable = raw["enable"] ?? true
  if (typeof enable !== "boolean") issue([...path, "enable"], "not a boolean", describeToml(enable), "true or false")
  return enable
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
  const enable = checkFields(raw, path, FIELDS, "key", issue)

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

  const match = raw["match"] === undefined ? null : compileMatch(raw["match"], [...path, "match"], options, issues)
  if (issues.length > before || enable === false) return null
  return { id, key, concurrency, rate, match, stage: stageOfLimiter(key, match), origin: path }
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

/** v0.16's spelling of each key variable (`MtaOutboundThrottleKey`). */
const JSON_KEYS: { readonly [json: string]: Key } = {
  mx: "mx",
  remoteIp: "remote_ip",
  localIp: "local_ip",
  sender: "sender",
  senderDomain: "sender_domain",
  rcptDomain: "rcpt_domain"
}

const jsonKeyOf = (key: Key): string => Object.keys(JSON_KEYS).find((k) => JSON_KEYS[k] === key)!

/**
 * An if-list (or a plain expression) as v0.16 writes an Expression: `{ match: { "0": { if, then } }, else }`.
 *
 * @internal
 */
export const jsonExpression = (raw: unknown): unknown => {
  if (!Array.isArray(raw)) return { else: raw }
  const items = raw as ReadonlyArray<{ readonly [k: string]: unknown }>
  return {
    match: Object.fromEntries(
      items.filter((i) => "if" in i).map((i, n) => [String(n), { if: i["if"], then: i["then"] }])
    ),
    else: items.find((i) => "else" in i)?.["else"]
  }
}

/** A limiter's `match` as written: its source, or the if-list an if-block was compiled from (its source is TOML). */
const matchRaw = (match: Expression): unknown =>
  match.source.startsWith("[") ? (Toml.parse(`match = ${match.source}`) as { match: unknown }).match : match.source

/** A limiter's fields as a `[queue.limiter.outbound.<id>]` table holds them. @internal */
export const tomlFields = (l: OutboundLimiter): ReadonlyArray<readonly [string, unknown]> => [
  ["key", l.key],
  ...(l.concurrency === null ? [] : [["concurrency", l.concurrency] as const]),
  ...(l.rate === null ? [] : [["rate", `${l.rate.count}/${formatDuration(l.rate.period)}`] as const]),
  ...(l.match === null ? [] : [["match", matchRaw(l.match)] as const])
]

/** A limiter as a v0.16 `MtaOutboundThrottle` object; `concurrency` is this library's field there. @internal */
export const jsonObject = (l: OutboundLimiter): { readonly [field: string]: unknown } => ({
  description: l.id,
  key: Object.fromEntries(l.key.map((k) => [jsonKeyOf(k), true])),
  ...(l.rate === null ? {} : { rate: { count: l.rate.count, period: Duration.toMillis(l.rate.period) } }),
  ...(l.concurrency === null ? {} : { concurrency: l.concurrency }),
  ...(l.match === null ? {} : { match: jsonExpression(matchRaw(l.match)) })
})

// `concurrency` is this library's: v0.16's throttles have a rate only (Stalwart dropped outbound concurrency limits).
const JSON_FIELDS = ["enable", "description", "key", "match", "rate", "concurrency"] as const

const oneJson = (
  index: number | string,
  raw: unknown,
  options: CompileOptions,
  expression: (raw: unknown, path: ReadonlyArray<Segment>) => unknown,
  issues: Array<RawIssue>
): OutboundLimiter | null => {
  const path: ReadonlyArray<Segment> = ["MtaOutboundThrottle", index]
  const issue = (at: ReadonlyArray<Segment>, problem: string, found: string, expected: string) =>
    issues.push({ path: at, problem, found, expected })
  if (!isTable(raw)) {
    issue(path, "not an object", describeToml(raw), `an object with the fields ${JSON_FIELDS.join(", ")}`)
    return null
  }
  const before = issues.length
  const enable = checkFields(raw, path, JSON_FIELDS, "field", issue)
  const description = raw["description"]
  if (description !== undefined && typeof description !== "string") {
    issue([...path, "description"], "not a string", describeToml(description), "a string")
  }
  const key: Array<Key> = []
  const rawKey = raw["key"] ?? {}
  if (!isTable(rawKey)) {
    const names = Object.keys(JSON_KEYS).join(", ")
    issue([...path, "key"], "not a set of keys", describeToml(rawKey), `{ "mx": true, … } with keys among ${names}`)
  } else {
    for (const [name, on] of Object.entries(rawKey)) {
      const k = JSON_KEYS[name]
      if (k === undefined) {
        const names = Object.keys(JSON_KEYS).join(", ")
        issue([...path, "key", name], "not a limiter key", `the key ${JSON.stringify(name)}`, `one of ${names}`)
      } else if (on !== true) {
        issue([...path, "key", name], "not true", describeToml(on), "true (a set lists its members with true)")
      } else key.push(k)
    }
  }
  let rate: Rate | null = null
  if (raw["rate"] !== undefined) {
    const r = raw["rate"]
    const count = isTable(r) ? r["count"] : undefined
    const period = isTable(r) ? r["period"] : undefined
    if (!isTable(r) || Object.keys(r).some((k) => k !== "count" && k !== "period")) {
      issue([...path, "rate"], "not a rate", describeToml(r), "{ \"count\": <messages>, \"period\": <milliseconds> }")
    } else if (typeof count !== "number" || !Number.isSafeInteger(count) || count < 1) {
      issue([...path, "rate", "count"], "not a count", describeToml(count), "a whole number of 1 or more")
    } else if (typeof period !== "number" || !Number.isSafeInteger(period) || period < 1) {
      const expected = "a whole number of milliseconds, 1 or more"
      issue([...path, "rate", "period"], "not a period", describeToml(period), expected)
    } else rate = { count, period: Duration.millis(period) }
  }
  let concurrency: number | null = null
  if (raw["concurrency"] !== undefined) {
    const c = raw["concurrency"]
    if (typeof c === "number" && Number.isSafeInteger(c) && c >= 1) concurrency = c
    else issue([...path, "concurrency"], "not a concurrency", describeToml(c), "a whole number of 1 or more")
  }
  if (raw["rate"] === undefined && raw["concurrency"] === undefined) {
    issue(path, "a limiter that limits nothing", "neither rate nor concurrency", "rate (or this library's concurrency)")
  }
  let match: Expression | null = null
  if (raw["match"] !== undefined) {
    const converted = expression(raw["match"], [...path, "match"])
    if (converted !== undefined) match = compileMatch(converted, [...path, "match"], options, issues)
  }
  if (issues.length > before || enable === false) return null
  const id = typeof description === "string" && description !== "" ? description : `MtaOutboundThrottle[${index}]`
  return { id, key, concurrency, rate, match, stage: stageOfLimiter(key, match), origin: path }
}

/**
 * The limiters of a v0.16 JSON document: its `MtaOutboundThrottle` objects, a list (or an object keyed by id) as the
 * other registry objects are. `expression` turns v0.16's `{ match, else }` into the if-list the TOML layouts write.
 *
 * @internal
 */
export const parseJsonLimiters = (
  root: { readonly [key: string]: unknown },
  options: CompileOptions,
  expression: (raw: unknown, path: ReadonlyArray<Segment>) => unknown
): { readonly limiters: ReadonlyArray<OutboundLimiter>; readonly issues: ReadonlyArray<RawIssue> } => {
  const issues: Array<RawIssue> = []
  const limiters: Array<OutboundLimiter> = []
  const list = root["MtaOutboundThrottle"]
  if (list === undefined) return { limiters, issues }
  const items = Array.isArray(list)
    ? list.map((v, i) => [i, v] as const)
    : isTable(list)
    ? Object.entries(list)
    : null
  if (items === null) {
    issues.push({
      path: ["MtaOutboundThrottle"],
      problem: "not a list of objects",
      found: describeToml(list),
      expected: "a list of MtaOutboundThrottle objects"
    })
    return { limiters, issues }
  }
  for (const [index, raw] of items) {
    const parsed = oneJson(index, raw, options, expression, issues)
    // The id names the limiter's counts: two with one description must not share them.
    if (parsed !== null) {
      limiters.push(limiters.some((l) => l.id === parsed.id) ? { ...parsed, id: `${parsed.id} [${index}]` } : parsed)
    }
  }
  return { limiters, issues }
}
