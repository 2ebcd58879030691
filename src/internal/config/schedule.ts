/**
 * The delivery schedules in the three layouts (Stalwart's `[queue.schedule]` of v0.7–v0.12, `[queue.strategy]
 * schedule` naming a `[queue.schedule.<name>]` of v0.13–v0.15, `MtaOutboundStrategy.schedule` naming an
 * `MtaDeliverySchedule` of v0.16): loading them into the model, evaluating the schedule of a recipient, and writing
 * them in another layout (`convert`). The keys, their spellings and defaults are `SCHEDULE_KEYS` of the key table.
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type { CompileOptions, Variables } from "../../Expression.js"
import type { DeliverySchedule } from "../../Settings.js"
import { formatDuration } from "../duration.js"
import { describeToml } from "./describe.js"
import * as Keys from "./keys.js"
import * as Layouts from "./layouts.js"
import type { Segment } from "./locate.js"
import * as Model from "./model.js"
import { plainValue } from "./plain.js"
import { build, type RawIssue } from "./setting.js"

const isTable = Layouts.isTable

/** Stalwart's retry list. @internal */
export const DEFAULT_RETRY: ReadonlyArray<Duration.Duration> = Keys.SCHEDULE_KEYS.retry.fallback

/**
 * The schedule Stalwart uses where none is configured: v0.7–v0.12's defaults, and v0.13+'s `get_queue_or_default` for
 * the name `default` or a computed name no schedule has (a five-day TTL, where named schedules default to three days).
 *
 * @internal
 */
export const FALLBACK_SCHEDULE: DeliverySchedule = {
  name: "default",
  retry: DEFAULT_RETRY,
  notify: Keys.SCHEDULE_KEYS.notify.fallback,
  expiry: { _tag: "Ttl", ttl: Keys.SCHEDULE_KEYS.expire.fallback }
}

/** The schedule's evaluation: the schedule and what could not be used on the way (a computed value, a name). @internal */
export interface ScheduleEvaluation {
  readonly settings: DeliverySchedule
  readonly warnings: ReadonlyArray<string>
}

/**
 * Stalwart v0.13+'s default schedule selector without its first branch (`is_local_domain('*', rcpt_domain)` →
 * `'local'`: a transport has no local domains): notifications and reports on their own schedules, the rest `remote`.
 *
 * @internal
 */
export const DEFAULT_SELECTOR = [
  { if: "source == 'dsn'", then: "'dsn'" },
  { if: "source == 'report'", then: "'report'" },
  { else: "'remote'" }
]

/** The schedules v0.13+ creates at first boot, which a file may redefine; and `default`, Stalwart's fallback. */
const BUILT_IN: ReadonlyArray<readonly [string, Keys.ScheduleValues]> = [
  ["remote", {
    retry: DEFAULT_RETRY,
    notify: [Duration.days(1), Duration.days(3)],
    expire: Duration.days(3),
    maxAttempts: Option.none()
  }],
  ["local", {
    retry: DEFAULT_RETRY,
    notify: [Duration.days(1), Duration.days(3)],
    expire: Duration.days(3),
    maxAttempts: Option.none()
  }],
  ["dsn", {
    retry: [Duration.minutes(15), Duration.minutes(30), Duration.hours(1), Duration.hours(2)],
    notify: [],
    expire: Duration.days(3),
    maxAttempts: Option.some(10)
  }],
  ["report", {
    retry: [Duration.minutes(30), Duration.hours(1), Duration.hours(2)],
    notify: [],
    expire: Duration.days(3),
    maxAttempts: Option.some(8)
  }]
]

/** The names a schedule selector may give without the file defining them. @internal */
export const BUILT_IN_NAMES: ReadonlyArray<string> = [...BUILT_IN.map(([name]) => name), "default"]

const constant = <A>(key: string, value: A): Keys.Setting<A> => {
  const evaluated: Keys.Evaluated<A> = { value, warning: null }
  return { key, stage: "domain", evaluate: () => evaluated }
}

const constantSelector = (key: string, name: string): Model.Selector => ({
  setting: constant(key, name),
  raw: undefined,
  origin: null,
  constant: name
})

/** The model's schedule part. @internal */
export interface Schedules {
  readonly scheduleSelector: Model.Selector
  readonly schedules: ReadonlyMap<string, Model.ScheduleDefinition>
}

const PATH = ["queue", "schedule"] as const

/** A key's default in a layout. @internal */
export const fallbackOf = <N extends Keys.ScheduleName>(name: N, layout: Keys.Layout): Keys.ScheduleValues[N] => {
  const spec = Keys.SCHEDULE_KEYS[name] as Keys.ScheduleKeySpec<Keys.ScheduleValues[N]>
  return layout === "outbound"
    ? spec.fallback
    : layout === "json"
    ? spec.jsonFallback
    : spec.strategiesFallback ?? spec.fallback
}

/** A key's spelling in a layout. @internal */
export const spelling = (name: Keys.ScheduleName, layout: Keys.Layout): string => {
  const spec = Keys.SCHEDULE_KEYS[name]
  return layout === "outbound" ? spec.path : layout === "strategies" ? spec.strategies : spec.json
}

/**
 * `[queue.schedule]` of v0.7–v0.12: `retry`, `notify`, `expire` (and this library's `max-attempts`), each a value,
 * an expression or an if-list of the schedule variables; one schedule, named `default`.
 *
 * @internal
 */
export const loadOutbound = (table: unknown, options: CompileOptions, issues: Array<RawIssue>): Schedules => {
  const values: { [N in Keys.ScheduleName]?: Model.Valued<unknown> } = {}
  const known = Keys.SCHEDULE_NAMES.map((n) => Keys.SCHEDULE_KEYS[n].path)
  if (table !== undefined && !isTable(table)) {
    issues.push({
      path: PATH,
      problem: "not a table",
      found: describeToml(table),
      expected: `a table of ${known.join(", ")}`
    })
  } else if (isTable(table)) {
    for (const [k, v] of Object.entries(table)) {
      if (known.includes(k)) continue
      issues.push(
        isTable(v)
          ? {
            path: [...PATH, k],
            problem: "a named schedule ([queue.schedule.<name>]) belongs to Stalwart v0.13–v0.15's layout; beside " +
              "[queue.outbound], [queue.schedule] holds the one schedule's keys",
            found: `the table queue.schedule.${k}`,
            expected: `one of ${known.join(", ")}`
          }
          : {
            path: [...PATH, k],
            problem: `unknown key${Layouts.didYouMean(k, known)}`,
            found: `the key ${JSON.stringify(k)}`,
            expected: `one of ${known.join(", ")}`
          }
      )
    }
    for (const name of Keys.SCHEDULE_NAMES) {
      const spec = Keys.SCHEDULE_KEYS[name] as Keys.ScheduleKeySpec<unknown>
      const raw = table[spec.path]
      if (raw === undefined) continue
      const keyPath = [...PATH, spec.path]
      const built = build(spec, spec.fallback, keyPath, raw, options)
      issues.push(...built.issues)
      values[name] = { setting: built.setting, raw, origin: keyPath }
    }
  }
  const definition: Model.ScheduleDefinition = {
    name: "default",
    origin: table === undefined ? null : [...PATH],
    values: values as Model.ScheduleDefinition["values"]
  }
  return {
    scheduleSelector: constantSelector("queue.schedule (the one schedule of this layout)", "default"),
    schedules: new Map([["default", definition]])
  }
}

/** The fields of a named schedule a layout has besides the keys, which are read and carried or skipped. */
const OWN_FIELDS: { readonly [L in "strategies" | "json"]: ReadonlyArray<string> } = {
  strategies: ["queue-name", "description"],
  // `queueId` names the virtual queue (an MtaVirtualQueue's id): read, resolved to its name and carried.
  json: ["name", "id", "description", "expiry", "queueId"]
}

const INTERVALS_SHAPE = "{ \"@type\": \"Default\" } or { \"@type\": \"Custom\", \"intervals\": { \"0\": { \"duration\": <ms> }, … } }"

/** v0.16's `MtaDeliveryScheduleIntervalsOrDefault` as a list of milliseconds, `"default"`, or `null` after an issue. */
const intervalsOf = (raw: unknown, path: ReadonlyArray<Segment>, issues: Array<RawIssue>): Array<unknown> | "default" | null => {
  const type = isTable(raw) ? raw["@type"] : undefined
  const fields = isTable(raw) ? Object.keys(raw).filter((k) => k !== "@type") : []
  if (type === "Default" && fields.length === 0) return "default"
  const intervals = isTable(raw) ? raw["intervals"] : undefined
  if (type !== "Custom" || fields.some((k) => k !== "intervals") || !isTable(intervals)) {
    issues.push({
      path: type === "Custom" && fields.some((k) => k !== "intervals")
        ? [...path, fields.find((k) => k !== "intervals")!]
        : path,
      problem: "not a list of intervals",
      found: describeToml(raw),
      expected: INTERVALS_SHAPE
    })
    return null
  }
  const entries = Object.entries(intervals).sort(([a], [b]) => Number(a) - Number(b))
  const out: Array<unknown> = []
  for (const [index, item] of entries) {
    const duration = isTable(item) && Object.keys(item).length === 1 ? item["duration"] : undefined
    if (!/^[0-9]+$/.test(index) || duration === undefined) {
      issues.push({
        path: [...path, "intervals", index],
        problem: "not an interval",
        found: describeToml(item),
        expected: "\"<n>\": { \"duration\": <ms> }"
      })
      return null
    }
    out.push(duration)
  }
  return out
}

/**
 * One `[queue.schedule.<name>]` table (v0.13–v0.15) or `MtaDeliverySchedule` object (v0.16), checked as Stalwart
 * does: `retry` at least one wait (required in TOML), `expire` or `max-attempts` but not both (JSON: `expiry` of type
 * `Ttl` or `Attempts`); every problem reported.
 *
 * @internal
 */
export const readNamed = (
  layout: "strategies" | "json",
  name: string,
  raw: unknown,
  path: ReadonlyArray<Segment>,
  issues: Array<RawIssue>
): Model.ScheduleDefinition | null => {
  const json = layout === "json"
  if (!isTable(raw)) {
    issues.push({ path, problem: "not a table", found: describeToml(raw), expected: "a delivery schedule" })
    return null
  }
  const keyName = (n: Keys.ScheduleName) =>
    json
      ? `MtaDeliverySchedule.${Keys.SCHEDULE_KEYS[n].json}`
      : `queue.schedule.${name}.${Keys.SCHEDULE_KEYS[n].strategies}`
  const values: { [N in Keys.ScheduleName]?: Model.Valued<unknown> } = {}
  const fields: Array<{ key: string; raw: unknown; path: ReadonlyArray<Segment> }> = json
    ? Object.entries(raw).map(([key, v]) => ({ key, raw: v, path: [...path, key] }))
    : Layouts.fields(raw, path)
  const names = Keys.SCHEDULE_NAMES.filter((n) => !json || !Keys.SCHEDULE_KEYS[n].json.startsWith("expiry."))
  const known = [...names.map((n) => spelling(n, layout)), ...OWN_FIELDS[layout]]
  const read = (n: Keys.ScheduleName, f: { raw: unknown; path: ReadonlyArray<Segment> }) => {
    const spec = Keys.SCHEDULE_KEYS[n] as Keys.ScheduleKeySpec<unknown>
    const value = plainValue(layout, spec, f.raw)
    if (Either.isLeft(value)) issues.push({ path: f.path, ...value.left })
    else values[n] = { setting: constant(keyName(n), value.right), raw: f.raw, origin: f.path }
  }
  let queueName: Model.Valued<string> | undefined
  let queueId: Model.ScheduleDefinition["queueId"]
  for (const f of fields) {
    const n = names.find((n) => spelling(n, layout) === f.key)
    if (json && (n === "retry" || n === "notify")) {
      // v0.16's MtaDeliveryScheduleIntervalsOrDefault: `{ "@type": "Default" }` (the default list) or
      // `{ "@type": "Custom", "intervals": { "0": { "duration": <ms> }, … } }`.
      const intervals = intervalsOf(f.raw, f.path, issues)
      if (intervals !== null && intervals !== "default") read(n, { raw: intervals, path: f.path })
    } else if (n !== undefined) {
      read(n, f)
    } else if (json && f.key === "queueId") {
      queueId = { raw: f.raw, origin: f.path }
    } else if (!json && f.key === "queue-name") {
      // Stalwart's QueueName (1 to 8 bytes) here too, not only in [queue.virtual]: a name Stalwart refuses must not
      // load here and then fail when convert writes it out as a virtual queue.
      if (typeof f.raw === "string" && queueNameProblem(f.raw) === null) {
        queueName = { setting: constant(`queue.schedule.${name}.queue-name`, f.raw), raw: f.raw, origin: f.path }
      } else {
        issues.push({
          path: f.path,
          problem: typeof f.raw === "string" ? queueNameProblem(f.raw)! : "wrong type of value",
          found: describeToml(f.raw),
          expected: "a virtual queue's name of 1 to 8 bytes"
        })
      }
    } else if (json && f.key === "expiry") {
      const expiry = f.raw
      const types = ["Ttl", "Attempts"]
      const type = isTable(expiry) ? expiry["@type"] : undefined
      if (!isTable(expiry) || typeof type !== "string" || !types.includes(type)) {
        issues.push({
          path: isTable(expiry) ? [...f.path, "@type"] : f.path,
          problem: isTable(expiry) ? "unknown expiry type" : "not an object",
          found: describeToml(isTable(expiry) ? type : expiry),
          expected: "{ \"@type\": \"Ttl\", \"expire\": <ms> } or { \"@type\": \"Attempts\", \"maxAttempts\": <n> }"
        })
        continue
      }
      const field = type === "Ttl" ? "expire" : "maxAttempts"
      for (const k of Object.keys(expiry)) {
        if (k !== "@type" && k !== field) {
          issues.push({
            path: [...f.path, k],
            problem: `unknown field of a ${type} expiry${Layouts.didYouMean(k, [field])}`,
            found: `the field ${JSON.stringify(k)}`,
            expected: field
          })
        }
      }
      if (type === "Ttl") {
        if (expiry["expire"] !== undefined) read("expire", { raw: expiry["expire"], path: [...f.path, "expire"] })
      } else {
        const given = expiry["maxAttempts"]
        // v0.16: an Attempts expiry without a number is five attempts.
        if (given === undefined) {
          values.maxAttempts = { setting: constant(keyName("maxAttempts"), Option.some(5)), raw: 5, origin: f.path }
        } else read("maxAttempts", { raw: given, path: [...f.path, "maxAttempts"] })
      }
    } else if (!OWN_FIELDS[layout].includes(f.key)) {
      issues.push({
        path: f.path,
        problem: `unknown ${json ? "field" : "key"}${Layouts.didYouMean(f.key, known)}`,
        found: `the ${json ? "field" : "key"} ${JSON.stringify(f.key)}`,
        expected: `one of ${known.join(", ")}`
      })
    }
  }
  if (!json) {
    if (!fields.some((f) => f.key === "retry")) {
      issues.push({
        path,
        problem: "a schedule needs retry, at least one wait",
        found: "no retry",
        expected: "retry = [\"2m\", \"5m\", \"10m\", …]"
      })
    }
    const expire = fields.find((f) => f.key === "expire")
    const attempts = fields.find((f) => f.key === "max-attempts")
    if (expire !== undefined && attempts !== undefined) {
      issues.push({
        path: attempts.path,
        problem: "expire and max-attempts together: a schedule expires by one of them",
        found: "both",
        expected: "expire (a time to live) or max-attempts (a number of attempts), not both"
      })
    }
  }
  // With its issues (the load fails), the name is still known: the selector's check does not report it again.
  return { name, origin: path, values: values as Model.ScheduleDefinition["values"], queueName, queueId }
}

/** Stalwart's `QueueName`: 1 to 8 bytes. */
const queueNameProblem = (name: string): string | null =>
  name.length === 0 || new TextEncoder().encode(name).length > 8 ? "a virtual queue's name is 1 to 8 bytes" : null

/**
 * The virtual queues of the strategies layout (`[queue.virtual.<name>] threads-per-node`, required there) or of
 * v0.16 (`MtaVirtualQueue` objects `{ name, threadsPerNode, description }`, each with its id: its `id` field, its key
 * in an object of objects, or its place in a list). Returns them by name, and the names by id (JSON).
 *
 * @internal
 */
export const readVirtualQueues = (
  layout: "strategies" | "json",
  items: ReadonlyArray<readonly [id: string, raw: unknown, path: ReadonlyArray<Segment>]>,
  issues: Array<RawIssue>
): { readonly queues: Map<string, Model.VirtualQueue>; readonly ids: Map<string, string> } => {
  const json = layout === "json"
  const queues = new Map<string, Model.VirtualQueue>()
  const ids = new Map<string, string>()
  const threadsKey = json ? "threadsPerNode" : "threads-per-node"
  const known = json ? ["id", "name", "description", threadsKey] : [threadsKey]
  for (const [id, raw, path] of items) {
    if (!isTable(raw)) {
      issues.push({ path, problem: "not a table", found: describeToml(raw), expected: "a virtual queue" })
      continue
    }
    const name = json ? raw["name"] : path[path.length - 1]
    if (typeof name !== "string" || queueNameProblem(name) !== null) {
      issues.push({
        path: json ? [...path, "name"] : path,
        problem: typeof name === "string" ? queueNameProblem(name)! : "every virtual queue needs a name",
        found: describeToml(name),
        expected: "a name of 1 to 8 bytes"
      })
      continue
    }
    for (const k of Object.keys(raw)) {
      if (!known.includes(k)) {
        issues.push({
          path: [...path, k],
          problem: `unknown ${json ? "field" : "key"}${Layouts.didYouMean(k, known)}`,
          found: `the ${json ? "field" : "key"} ${JSON.stringify(k)}`,
          expected: `one of ${known.join(", ")}`
        })
      }
    }
    const threads = raw[threadsKey]
    if (threads === undefined ? !json : !(Number.isSafeInteger(Number(threads)) && Number(threads) >= 1)) {
      issues.push({
        path: threads === undefined ? path : [...path, threadsKey],
        problem: threads === undefined ? `a virtual queue needs ${threadsKey}` : "it is not a whole number of 1 or more",
        found: describeToml(threads),
        expected: `${threadsKey} = <threads>`
      })
      continue
    }
    queues.set(name, { name, threads: threads === undefined ? null : Number(threads), origin: path })
    ids.set(json && raw["id"] !== undefined ? String(raw["id"]) : id, name)
  }
  return { queues, ids }
}

/**
 * The virtual queues Stalwart v0.16 creates at first boot when there are none, by id (`crates/common/src/manager/
 * defaults.rs`): what a schedule's `queueId` refers to in a file that defines no `MtaVirtualQueue` of its own.
 */
const FIRST_BOOT_QUEUES: ReadonlyMap<string, string> = new Map([["0", "local"], ["1", "remote"], ["2", "dsn"], ["3", "report"]])

/**
 * v0.16: each schedule's `queueId` resolved to its `MtaVirtualQueue`'s name: the file's objects, or, in a file that
 * defines none, the queues Stalwart creates at first boot. An id neither has refers to a queue in the server's
 * registry this file does not show: a warning, and its name unknown (`convert` writes `default`).
 *
 * @internal
 */
export const resolveQueueIds = (
  schedules: Map<string, Model.ScheduleDefinition>,
  ids: ReadonlyMap<string, string>,
  warnings: Array<string>
) => {
  const known = ids.size === 0 ? FIRST_BOOT_QUEUES : ids
  for (const [name, definition] of schedules) {
    const queueId = definition.queueId
    if (queueId === undefined) continue
    const queue = typeof queueId.raw === "string" || typeof queueId.raw === "number"
      ? known.get(String(queueId.raw))
      : undefined
    if (queue === undefined) {
      warnings.push(
        `MtaDeliverySchedule ${name}.queueId: ${JSON.stringify(queueId.raw)} is the id of no MtaVirtualQueue of this ` +
          `file${ids.size === 0 ? " nor of Stalwart's first boot (0 local, 1 remote, 2 dsn, 3 report)" : ""}; ` +
          "its queue's name is unknown (convert writes \"default\")"
      )
      continue
    }
    schedules.set(name, {
      ...definition,
      queueName: { setting: constant(`MtaDeliverySchedule ${name}.queueId`, queue), raw: queue, origin: queueId.origin }
    })
  }
}

/** Adds the built-in schedules a file does not define. @internal */
export const withBuiltIns = (schedules: Map<string, Model.ScheduleDefinition>, layout: "strategies" | "json") => {
  for (const [name, v] of BUILT_IN) {
    if (schedules.has(name)) continue
    const values: { [N in Keys.ScheduleName]?: Model.Valued<unknown> } = {}
    for (const n of Keys.SCHEDULE_NAMES) {
      if (n === "expire" && Option.isSome(v.maxAttempts)) continue
      if (n === "maxAttempts" && Option.isNone(v.maxAttempts)) continue
      const key = layout === "json"
        ? `MtaDeliverySchedule ${name}.${Keys.SCHEDULE_KEYS[n].json}`
        : `queue.schedule.${name}.${Keys.SCHEDULE_KEYS[n].strategies}`
      values[n] = { setting: constant(key, v[n]), raw: undefined, origin: null }
    }
    schedules.set(name, { name, origin: null, values: values as Model.ScheduleDefinition["values"] })
  }
}

/**
 * The schedule selector of v0.13+ (`[queue.strategy] schedule`, `MtaOutboundStrategy.schedule` as the TOML if-list
 * it stands for); Stalwart's default without the local-domain branch when absent.
 *
 * @internal
 */
export const selector = (
  expression: unknown,
  path: ReadonlyArray<string>,
  options: CompileOptions,
  schedules: ReadonlyMap<string, Model.ScheduleDefinition>,
  issues: Array<RawIssue>
): Model.Selector => {
  const known = [...new Set([...schedules.keys(), ...BUILT_IN_NAMES])]
  if (expression === undefined) {
    return Layouts.selector("schedule", path, DEFAULT_SELECTOR, null, "default", options, known, issues)
  }
  return Layouts.selector("schedule", path, expression, path, "default", options, known, issues)
}

/**
 * The schedule of a recipient: the selector's name, then the schedule's values (each evaluated, in the `outbound`
 * layout, with the recipient's variables; the layout's default where absent or unusable). A name no schedule has is
 * Stalwart's fallback (`FALLBACK_SCHEDULE`), with a warning unless the name is `default`.
 *
 * @internal
 */
export const evaluate = (
  model: Pick<Model.Model, "layout" | "scheduleSelector" | "schedules">,
  variables: Variables
): ScheduleEvaluation => {
  const warnings: Array<string> = []
  const chosen = model.scheduleSelector.setting.evaluate(variables)
  if (chosen.warning !== null) warnings.push(chosen.warning)
  const definition = model.schedules.get(chosen.value)
  if (definition === undefined) {
    if (chosen.value !== "default") {
      warnings.push(
        `${model.scheduleSelector.setting.key}: no schedule is named ${JSON.stringify(chosen.value)}; used Stalwart's ` +
          "default schedule (retry 2m … 2h, notify 1d and 3d, expire 5d) instead"
      )
    }
    return { settings: FALLBACK_SCHEDULE, warnings }
  }
  const get = <N extends Keys.ScheduleName>(n: N): Keys.ScheduleValues[N] => {
    const valued = definition.values[n] as Model.Valued<Keys.ScheduleValues[N]> | undefined
    if (valued === undefined) return fallbackOf(n, model.layout)
    const evaluated = valued.setting.evaluate(variables)
    if (evaluated.warning !== null && !warnings.includes(evaluated.warning)) warnings.push(evaluated.warning)
    return evaluated.value
  }
  const maxAttempts = get("maxAttempts")
  return {
    settings: {
      name: definition.name,
      retry: get("retry"),
      notify: get("notify"),
      expiry: Option.isSome(maxAttempts)
        ? { _tag: "Attempts", maxAttempts: maxAttempts.value }
        : { _tag: "Ttl", ttl: get("expire") }
    },
    warnings
  }
}

/**
 * The name of the schedule `evaluate` gives, without evaluating its values: what a delivery's plan shows, on every
 * message's path.
 *
 * @internal
 */
export const nameOf = (model: Pick<Model.Model, "scheduleSelector" | "schedules">, variables: Variables): string =>
  model.schedules.get(model.scheduleSelector.setting.evaluate(variables).value)?.name ?? FALLBACK_SCHEDULE.name

/** A schedule's constant values (its defaults where absent), for `convert` and `show`. @internal */
export const constantValues = (
  layout: Keys.Layout,
  definition: Model.ScheduleDefinition | undefined
): Keys.ScheduleValues => {
  if (definition === undefined) {
    return {
      retry: FALLBACK_SCHEDULE.retry,
      notify: FALLBACK_SCHEDULE.notify,
      expire: Keys.SCHEDULE_KEYS.expire.fallback,
      maxAttempts: Option.none()
    }
  }
  const get = <N extends Keys.ScheduleName>(n: N): Keys.ScheduleValues[N] =>
    (definition.values[n] as Model.Valued<Keys.ScheduleValues[N]> | undefined)?.setting.evaluate({}).value ??
      fallbackOf(n, layout)
  return { retry: get("retry"), notify: get("notify"), expire: get("expire"), maxAttempts: get("maxAttempts") }
}

// --- convert ------------------------------------------------------------------------------------------------------

/** A selector's branches with the literal names they give, or null when it computes a name. */
type Branch = { readonly if: string | null; readonly name: string }

const branchesOf = (selector: Model.Selector): ReadonlyArray<Branch> | null => {
  const literal = (raw: unknown): string | null => {
    if (typeof raw !== "string") return null
    const match = /^\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*$/.exec(raw)
    return match === null ? null : match[1] ?? match[2]!
  }
  if (selector.raw === undefined) return [{ if: null, name: selector.constant ?? "default" }]
  const single = literal(selector.raw)
  if (single !== null) return [{ if: null, name: single }]
  if (!Array.isArray(selector.raw)) return null
  const out: Array<Branch> = []
  for (const item of selector.raw as ReadonlyArray<{ readonly [k: string]: unknown }>) {
    const name = literal(item["then"] ?? item["else"])
    if (name === null) return null
    out.push({ if: item["if"] === undefined ? null : String(item["if"]), name })
  }
  // An if-list ends at its first else.
  const end = out.findIndex((b) => b.if === null)
  return end === -1 ? out : out.slice(0, end + 1)
}

/** A value as the expression source of `[queue.schedule]`. */
const expressionSource = (name: Keys.ScheduleName, value: unknown): string => {
  switch (name) {
    case "retry":
    case "notify":
      return `[${(value as ReadonlyArray<Duration.Duration>).map(formatDuration).join(", ")}]`
    case "expire":
      return formatDuration(value as Duration.Duration)
    case "maxAttempts":
      return Option.match(value as Option.Option<number>, { onNone: () => "false", onSome: String })
  }
}


const same = (a: unknown, b: unknown): boolean => {
  if (Duration.isDuration(a) && Duration.isDuration(b)) return Duration.toMillis(a) === Duration.toMillis(b)
  if (Option.isOption(a) && Option.isOption(b)) {
    return Option.isNone(a) ? Option.isNone(b) : Option.isSome(b) && same(a.value, b.value)
  }
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]))
  return a === b
}

/**
 * The schedules of a `strategies` or `json` model as `[queue.schedule]` keys of the `outbound` layout: each key an
 * if-list over the selector's branches (or one value where they agree), `max-attempts` where a schedule expires by
 * attempts. A selector that computes a name converts only when every schedule agrees on every key.
 *
 * @internal
 */
export const toOutbound = (model: Model.Model, problems: Array<RawIssue>): Array<readonly [string, unknown]> => {
  const entries: Array<readonly [string, unknown]> = []
  const branches = branchesOf(model.scheduleSelector)
  const valuesOf = (name: string) => constantValues(model.layout, model.schedules.get(name))
  for (const n of Keys.SCHEDULE_NAMES) {
    const spec = Keys.SCHEDULE_KEYS[n] as Keys.ScheduleKeySpec<unknown>
    const write = (value: unknown) => {
      if (same(value, spec.fallback)) return
      // max-attempts as TOML writes it (a number, or false); the others as expressions.
      const written = n === "maxAttempts"
        ? Option.getOrElse(value as Option.Option<number>, () => false)
        : expressionSource(n, value)
      entries.push([spec.path, written])
    }
    if (branches === null) {
      const all = [...[...model.schedules.keys()].map(valuesOf), valuesOf("")].map((v) => v[n])
      if (all.every((v) => same(v, all[0]))) {
        write(all[0])
        continue
      }
      problems.push({
        path: model.scheduleSelector.origin ?? [],
        problem: `the schedule selector computes a schedule name, and ${spelling(n, model.layout)} differs between ` +
          "schedules: [queue.schedule] can only hold it as an if-list of literal cases",
        found: `the expression ${JSON.stringify(model.scheduleSelector.raw)}`,
        expected: "an if-list whose branches give literal names ('name')"
      })
      break
    }
    const values = branches.map((b) => valuesOf(b.name)[n])
    if (values.every((v) => same(v, values[0]))) {
      write(values[values.length - 1])
      continue
    }
    entries.push([
      spec.path,
      branches.map((b, i) => {
        const then = expressionSource(n, values[i])
        return b.if === null ? { else: then } : { if: b.if, then }
      })
    ])
  }
  return entries
}

/** A list of waits as v0.16 writes one (`MtaDeliveryScheduleIntervals`), every wait given. */
const customIntervals = (waits: ReadonlyArray<Duration.Duration>) => ({
  "@type": "Custom",
  intervals: Object.fromEntries(waits.map((d, i) => [String(i), { duration: Duration.toMillis(d) }]))
})

/**
 * A schedule's fields in a named layout: every key written, so that no layout's default decides. `queue`: its virtual
 * queue, the name (`queue-name`, which v0.13–v0.15 require) or in JSON the id of its `MtaVirtualQueue` (`queueId`).
 */
const namedFields = (
  values: Keys.ScheduleValues,
  json: boolean,
  queue: string | number
): Array<readonly [string, unknown]> => {
  const { maxAttempts } = values
  const spec = (n: Keys.ScheduleName) => Keys.SCHEDULE_KEYS[n] as Keys.ScheduleKeySpec<unknown>
  if (json) {
    return [
      ["queueId", queue],
      ["retry", customIntervals(values.retry)],
      ["notify", customIntervals(values.notify)],
      [
        "expiry",
        Option.isSome(maxAttempts)
          ? { "@type": "Attempts", maxAttempts: maxAttempts.value }
          : { "@type": "Ttl", expire: Duration.toMillis(values.expire) }
      ]
    ]
  }
  return [
    ["queue-name", queue],
    ["retry", values.retry.map(formatDuration)],
    ["notify", values.notify.map(formatDuration)],
    Option.isSome(maxAttempts)
      ? [spec("maxAttempts").strategies, maxAttempts.value]
      : [spec("expire").strategies, formatDuration(values.expire)]
  ]
}

/**
 * The virtual queue of a schedule that names none (the `outbound` layout's one schedule): Stalwart's `default`,
 * the one queue v0.13–v0.15 accept without a `[queue.virtual]` table.
 */
const DEFAULT_QUEUE = "default"

/**
 * The schedules of a model in the `strategies` or `json` layout: the selector (when the file has one; an `outbound`
 * file's is `'default'`), the schedules the file defines, every key written, each with its virtual queue, and the
 * virtual queues to write: the file's, and any a schedule names that the file does not define (in JSON every queue a
 * schedule names is an object, `default` included; in TOML `default` needs no table). An `outbound` file's schedule
 * must be plain values.
 *
 * @internal
 */
export const toNamed = (
  model: Model.Model,
  json: boolean,
  problems: Array<RawIssue>,
  isConstantRaw: (raw: unknown) => boolean
): {
  readonly selector: unknown
  readonly schedules: ReadonlyArray<readonly [string, Array<readonly [string, unknown]>]>
  readonly virtualQueues: ReadonlyArray<{ readonly name: string; readonly threads: number | null }>
} => {
  const queues = [...(model.virtualQueues?.values() ?? [])].map(({ name, threads }) => ({ name, threads }))
  /** The queue as the target writes it: its name in TOML, its object's id (its place in the list) in JSON. */
  const queueOf = (name: string): string | number => {
    let at = queues.findIndex((q) => q.name === name)
    if (at < 0 && (json || name !== DEFAULT_QUEUE)) at = queues.push({ name, threads: null }) - 1
    return json ? at : name
  }
  if (model.layout === "outbound") {
    const definition = model.schedules.get("default")
    // Written even when the file has no [queue.schedule]: v0.13+'s defaults (3 days; notifications on their own
    // schedule) are not v0.7–v0.12's (5 days).
    if (definition === undefined) return { selector: undefined, schedules: [], virtualQueues: [] }
    let ok = true
    for (const n of Keys.SCHEDULE_NAMES) {
      const valued = definition.values[n] as Model.Valued<unknown> | undefined
      if (valued !== undefined && !isConstantRaw(valued.raw)) {
        ok = false
        problems.push({
          path: valued.origin ?? [],
          problem: "an expression: the target layout holds plain values in named schedules, chosen by " +
            "[queue.strategy] schedule; write one schedule per case and select it there",
          found: `the expression ${JSON.stringify(valued.raw)}`,
          expected: "a plain value"
        })
      }
    }
    if (!ok) return { selector: undefined, schedules: [], virtualQueues: [] }
    const schedules = [["default", namedFields(constantValues("outbound", definition), json, queueOf(DEFAULT_QUEUE))] as const]
    return { selector: "'default'", schedules, virtualQueues: queues }
  }
  const schedules = [...model.schedules.values()].filter((d) => d.origin !== null).map((d) =>
    [
      d.name,
      namedFields(constantValues(model.layout, d), json, queueOf(d.queueName?.setting.evaluate({}).value ?? DEFAULT_QUEUE))
    ] as const
  )
  return {
    selector: model.scheduleSelector.origin === null ? undefined : model.scheduleSelector.raw,
    schedules,
    virtualQueues: queues
  }
}
