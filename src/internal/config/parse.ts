/**
 * Loading Stalwart's outbound configuration in any of its three layouts into the one model
 * (`internal/config/model`): TOML (v0.7–v0.12 `[queue.outbound]`, v0.13–v0.15 strategies) or JSON (v0.16 registry
 * objects) → the model and the per-key settings derived from it, or every problem found.
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as os from "node:os"
import { isIP } from "node:net"
import type { CompileOptions, Value, Variables } from "../../Expression.js"
import { hostnameProblem } from "./convert.js"
import { describe, describeToml } from "./describe.js"
import { ConfigError, type ConfigIssue } from "./error.js"
import * as Keys from "./keys.js"
import * as Layouts from "./layouts.js"
import { parseJsonLimiters, parseLimiters } from "./limiters.js"
import { makeJsonLocator, makeLocator, type Position, type Segment } from "./locate.js"
import * as Model from "./model.js"
import * as Sections from "./sections.js"
import * as Relays from "./relays.js"
import * as Schedule from "./schedule.js"
import { build, type RawIssue } from "./setting.js"
import { parseToml } from "./toml.js"
import type { OutboundLimiter } from "../../Limiter.js"

/** The loaded configuration: the settings derived from the model, the model, the file and the load-time notes. @internal */
export type Loaded = Keys.ConfigSettings & {
  readonly route: Relays.RouteSetting
  readonly layout: Keys.Layout
  readonly model: Model.Model
  readonly file: string | null
  readonly warnings: ReadonlyArray<string>
  /** Stalwart settings found in the file that a transport does not use, once each. */
  readonly notUsed: ReadonlyArray<string>
  /** The outbound limiters, `[queue.limiter.outbound.<id>]` and `[[queue.throttle]]`, in file order. */
  readonly limiters: ReadonlyArray<OutboundLimiter>
  /** The delivery schedule of a recipient (`OutboundConfig.Config.schedule`). */
  readonly schedule: (variables: Variables) => Schedule.ScheduleEvaluation
}

const SECTION = ["queue", "outbound"] as const

const isTable = Layouts.isTable

const at = (root: unknown, path: ReadonlyArray<string>): unknown => {
  let node = root
  for (const segment of path) {
    if (!isTable(node) || !Object.hasOwn(node, segment)) return undefined
    node = node[segment]
  }
  return node
}

/** `queue.outbound.ip-strategy[1].then` */
const formatPath = (path: ReadonlyArray<Segment>): string =>
  path.reduce<string>(
    (out, s) => typeof s === "number" ? `${out}[${s}]` : out === "" ? s : `${out}.${s}`,
    ""
  )

/** @internal */
export const issueOf = (raw: RawIssue, position: Position | null): ConfigIssue => {
  const path = formatPath(raw.path)
  return {
    path,
    found: raw.found,
    expected: raw.expected,
    message: `${path === "" ? "" : `${path}: `}${raw.problem}: found ${raw.found}; expected ${raw.expected}`,
    line: position?.line ?? null,
    column: position?.column ?? null
  }
}

// The shape of the section: tables and which keys they may hold. Leaves are `Unknown` here because each key's value
// (plain, expression, if-list) is read by its own decoder, which can say more than a schema mismatch would.
const leaf = Schema.optionalWith(Schema.Unknown, { exact: true })
const table = (keys: ReadonlyArray<string>) => Schema.Struct(Object.fromEntries(keys.map((k) => [k, leaf])))
/** The tables below `queue.outbound` (`source-ip`, `limits`, `timeouts`, `tls`), from the key table. */
const GROUPS = Keys.TABLES[""]!.filter((k) => Keys.TABLES[k] !== undefined)
const Section = Schema.Struct(Object.fromEntries(Keys.TABLES[""]!.map((k) => [
  k,
  Keys.TABLES[k] === undefined ? leaf : Schema.optionalWith(table(Keys.TABLES[k]!), { exact: true })
])))
const decodeSection = Schema.decodeUnknownEither(Section, { errors: "all", onExcessProperty: "error" })

/** Unknown keys and tables that are not tables, with Schema doing the walk. */
const structureIssues = (section: unknown): ReadonlyArray<RawIssue> => {
  const result = decodeSection(section)
  if (Either.isRight(result)) return []
  return ParseResult.ArrayFormatter.formatErrorSync(result.left).map((error): RawIssue => {
    const path = error.path.map(String)
    const full = [...SECTION, ...path]
    if (error._tag === "Unexpected") {
      const name = path[path.length - 1]!
      const known = Keys.TABLES[path.slice(0, -1).join(".")] ?? []
      return {
        path: full,
        problem: `unknown key${Layouts.didYouMean(name, known)}`,
        found: `the key ${JSON.stringify(name)}`,
        expected: `one of ${known.join(", ")}`
      }
    }
    return {
      path: full,
      problem: "not a table",
      found: describeToml(at(section, path)),
      expected: `a table with the keys ${(Keys.TABLES[path.join(".")] ?? []).join(", ")}`
    }
  })
}

/** `[lookup.<store>]` tables as key_get/key_exists see them; nested tables flatten to dotted keys. */
const lookupStores = (root: unknown): NonNullable<CompileOptions["lookup"]> => {
  const stores: { [store: string]: { [key: string]: Value } } = {}
  const toValue = (raw: unknown): Value | undefined => {
    if (typeof raw === "string" || typeof raw === "number") return raw
    if (typeof raw === "boolean") return raw ? 1 : 0
    if (raw instanceof Date) return raw.toISOString()
    if (Array.isArray(raw)) return raw.map(toValue).filter((v): v is Value => v !== undefined)
    return undefined
  }
  const lookup = at(root, ["lookup"])
  if (!isTable(lookup)) return stores
  for (const [store, entries] of Object.entries(lookup)) {
    if (!isTable(entries)) continue
    const flat: { [key: string]: Value } = {}
    const walk = (prefix: string, node: { readonly [key: string]: unknown }) => {
      for (const [k, v] of Object.entries(node)) {
        const name = prefix === "" ? k : `${prefix}.${k}`
        if (isTable(v)) walk(name, v)
        else {
          const value = toValue(v)
          if (value !== undefined) flat[name] = value
        }
      }
    }
    walk("", entries)
    stores[store] = flat
  }
  return stores
}

const machineHostname = (): string | null => {
  try {
    const name = os.hostname()
    return hostnameProblem(name) === null ? name : null
  } catch {
    return null
  }
}


/** The issues and notes of one load. */
interface Notes {
  readonly issues: Array<RawIssue>
  readonly warnings: Array<string>
  readonly notUsed: Array<string>
}

/**
 * The EHLO name every strategy falls back to, as Stalwart of each layout has it: `[server] hostname` (v0.11.2+ and
 * v0.13+; `SystemSettings.defaultHostname` in JSON), `[lookup.default] hostname` (v0.7–v0.11.1, `outbound` layout
 * only), else the machine's host name, else `localhost` with a warning.
 */
const defaultHostname = (
  layout: Keys.Layout,
  root: unknown,
  stores: NonNullable<CompileOptions["lookup"]>,
  notes: Notes
): Model.Model["hostname"] => {
  const candidates: Array<{ raw: unknown; path: ReadonlyArray<string>; from: string }> = []
  if (layout === "json") {
    const raw = at(root, ["SystemSettings", "defaultHostname"])
    if (raw !== undefined) candidates.push({
      raw,
      path: ["SystemSettings", "defaultHostname"],
      from: "SystemSettings.defaultHostname"
    })
  } else {
    const server = at(root, ["server", "hostname"])
    if (server !== undefined) candidates.push({ raw: server, path: ["server", "hostname"], from: "[server] hostname" })
    const lookup = stores["default"]?.["hostname"]
    if (layout === "outbound" && lookup !== undefined) {
      candidates.push({ raw: lookup, path: ["lookup", "default", "hostname"], from: "[lookup.default] hostname" })
    }
  }
  if (candidates.length === 2) {
    notes.warnings.push(
      "[server] hostname and [lookup.default] hostname are both set: the EHLO name defaults to [server] hostname, " +
        "as in Stalwart v0.11.2+ (v0.7–v0.11.1 used [lookup.default] hostname)"
    )
  }
  const chosen = candidates[0]
  if (chosen !== undefined) {
    const problem = typeof chosen.raw === "string" ? hostnameProblem(chosen.raw) : "it is not a string"
    if (problem === null) return { value: chosen.raw as string, origin: chosen.path, from: chosen.from }
    notes.issues.push({
      path: chosen.path,
      problem: `not a valid host name (${problem}); it is the default EHLO name`,
      found: typeof chosen.raw === "string" || typeof chosen.raw === "number" ? describe(chosen.raw as Value) : describeToml(chosen.raw),
      expected: "a host name (letters, digits, hyphens and dots; at most 255 characters and 63 per label)"
    })
    return { value: "localhost", origin: chosen.path, from: chosen.from }
  }
  const machine = machineHostname()
  if (machine !== null) return { value: machine, origin: null, from: "the machine's host name" }
  const setting = layout === "outbound" ? "queue.outbound.hostname" : layout === "strategies" ? "ehlo-hostname" : "ehloHostname"
  notes.warnings.push(
    `${setting}: the machine's host name ${JSON.stringify(os.hostname())} is not a valid EHLO name; ` +
      `using "localhost" (set [server] hostname or ${setting})`
  )
  return { value: "localhost", origin: null, from: "localhost" }
}

type Maps = {
  routes: Map<string, Model.RouteStrategy>
  connections: Map<string, Model.Strategy>
  tls: Map<string, Model.Strategy>
}

const emptyMaps = (): Maps => ({ routes: new Map(), connections: new Map(), tls: new Map() })

/**
 * Sorts out `[queue]` and `[remote]`: which layout the file uses (an error when it mixes them or has neither), the
 * tables Stalwart has that a transport does not use, and everything else below them (errors).
 */
const classify = (root: unknown, notes: Notes): Exclude<Keys.Layout, "json"> | null => {
  const found: { [L in Exclude<Keys.Layout, "json">]: Array<string> } = { outbound: [], strategies: [] }
  const queue = at(root, ["queue"])
  if (queue !== undefined && !isTable(queue)) {
    notes.issues.push({ path: ["queue"], problem: "not a table", found: describeToml(queue), expected: "a table" })
    return null
  }
  if (isTable(root)) {
    for (const top of Object.keys(root)) {
      if (top === "queue" || top === "remote") continue
      if (["queue", "remote"].some((k) => Layouts.didYouMean(top, [k]) !== "")) {
        notes.issues.push({
          path: [top],
          problem: `unknown table${Layouts.didYouMean(top, ["queue", "remote"])}`,
          found: `the table ${JSON.stringify(top)}`,
          expected: "[queue.*] and [remote.*] for outbound settings; other tables belong to other subsystems"
        })
      }
    }
  }
  if (at(root, ["remote"]) !== undefined) found.outbound.push("remote")
  // Limiters load in either TOML layout (parseLimiters); [[queue.throttle]] is v0.7–v0.11.3's spelling, so it is an
  // error next to v0.13–v0.15's strategies or v0.11.4+'s [queue.limiter] (one Stalwart version per file).
  let throttle = false
  let limiter = false
  for (const [name, value] of Object.entries(isTable(queue) ? queue : {})) {
    const path = ["queue", name]
    const dotted = path.join(".")
    if (dotted === Sections.SCHEDULE_TABLE) {
      // [queue.schedule] is both layouts': its own keys beside [queue.outbound] (v0.7–v0.12), named tables beside
      // [queue.strategy] (v0.13–v0.15).
      const entries = isTable(value) ? Object.values(value) : []
      if (entries.length > 0) (entries.every(isTable) ? found.strategies : found.outbound).push(dotted)
    } else if (Sections.LAYOUT_TABLES.outbound.includes(dotted)) found.outbound.push(dotted)
    else if (Sections.LAYOUT_TABLES.strategies.includes(dotted)) found.strategies.push(dotted)
    else if (dotted === Sections.THROTTLE_TABLE) throttle = true
    else if (dotted === Sections.LIMITER_TABLE) {
      limiter = true
      for (const k of isTable(value) ? Object.keys(value) : []) {
        if (k !== "outbound") notes.notUsed.push(`queue.limiter.${k} (${k === "inbound" ? "inbound" : "non-outbound"} limiters)`)
      }
    }
    else {
      const other = Sections.findTable(Sections.OTHER_VERSION, path)
      const notUsed = Sections.findTable(Sections.NOT_USED, path)
      if (other !== undefined) {
        notes.issues.push({
          path,
          problem: `a setting of another Stalwart version: ${other.why}`,
          found: `the ${isTable(value) || Array.isArray(value) ? "table" : "key"} ${dotted}`,
          expected: "the settings of one Stalwart version"
        })
      } else if (notUsed !== undefined) {
        notes.notUsed.push(`${notUsed.table} (${notUsed.what})`)
      } else {
        notes.issues.push({
          path,
          problem: `no Stalwart version has this table${
            Layouts.didYouMean(dotted, Sections.KNOWN_QUEUE_TABLES).replace(/"/g, "")
          }`,
          found: `the ${isTable(value) ? "table" : "key"} ${dotted}`,
          expected: `one of ${Sections.KNOWN_QUEUE_TABLES.join(", ")}`
        })
      }
    }
  }
  if (throttle && (found.strategies.length > 0 || limiter)) {
    notes.issues.push({
      path: ["queue", "throttle"],
      problem: "a setting of another Stalwart version: [[queue.throttle]] is v0.7–v0.11.3's; since v0.11.4 " +
        "`[queue.limiter.outbound.<id>]`" + (limiter ? ", which this file also has" : ", which v0.13–v0.15 reads"),
      found: "the table queue.throttle",
      expected: "the settings of one Stalwart version"
    })
  }
  if (found.outbound.length > 0 && found.strategies.length > 0) {
    notes.issues.push({
      path: [],
      problem: "the file mixes two layouts: " +
        `${found.outbound.join(", ")} belong to Stalwart v0.7–v0.12's layout, ` +
        `${found.strategies.join(", ")} to v0.13–v0.15's strategies; use one (smtp-transport config convert ` +
        "writes one from the other)",
      found: "both layouts",
      expected: "one layout"
    })
    return null
  }
  if (found.outbound.length > 0) return "outbound"
  if (found.strategies.length > 0) return "strategies"
  // Only limiters: every other setting at its default, read as the layout the limiters' versions share.
  if (throttle || limiter) return "outbound"
  return null
}

const NO_SETTINGS: RawIssue = {
  path: [],
  problem: "no outbound setting found",
  found: "none of [queue.outbound] or [remote.*] (Stalwart v0.7–v0.12), [queue.strategy], [queue.route.*], " +
    "[queue.connection.*], [queue.tls.*] or [queue.source-ip.*] (v0.13–v0.15)",
  expected: "the outbound settings of one Stalwart layout (an empty [queue.outbound] table for every default)"
}

/** The v0.7–v0.12 layout: every key of the table an expression, one implicit strategy of each kind. */
const loadOutbound = (
  root: unknown,
  options: CompileOptions,
  context: Keys.DefaultContext,
  notes: Notes
): Omit<Model.Model, "hostname"> & { readonly routeSetting: Relays.RouteSetting } => {
  const section = at(root, SECTION)
  const maps = emptyMaps()
  if (section !== undefined && !isTable(section)) {
    notes.issues.push({ path: SECTION, problem: "not a table", found: describeToml(section), expected: "a table" })
  } else if (section !== undefined) {
    const others = Sections.OTHER_VERSION.filter((o) => o.table.startsWith("queue.outbound."))
    const own: { [key: string]: unknown } = {}
    for (const [k, v] of Object.entries(section)) {
      const other = Sections.findTable(others, [...SECTION, k])
      const notUsed = Sections.findTable(Sections.NOT_USED, [...SECTION, k])
      if (other !== undefined) {
        notes.issues.push({
          path: [...SECTION, k],
          problem: `a setting of another Stalwart version: ${other.why}`,
          found: `the key queue.outbound.${k}`,
          expected: "the settings of one Stalwart version"
        })
      } else if (notUsed !== undefined) notes.notUsed.push(`${notUsed.table} (${notUsed.what})`)
      else own[k] = v
    }
    notes.issues.push(...structureIssues(own))
    for (const group of GROUPS) {
      const value = at(section, [group])
      // Schema sees a date as an object with no keys; it is not a table.
      if (value instanceof Date) {
        notes.issues.push({
          path: [...SECTION, group],
          problem: "not a table",
          found: describeToml(value),
          expected: `a table with the keys ${Keys.TABLES[group]!.join(", ")}`
        })
      }
    }
  }
  const implicit = (name: string): Model.Strategy => ({ name, origin: null, values: {}, ehloBySource: new Map() })
  const strategies = { route: implicit("mx"), connection: implicit("default"), tls: implicit("default") }
  for (const { name, spec } of Keys.ENTRIES) {
    const keyPath = [...SECTION, ...spec.path]
    const raw = isTable(section) ? at(section, spec.path) : undefined
    const built = build(spec, Model.fallbackOf(spec, "outbound", context), keyPath, raw, options)
    notes.issues.push(...built.issues)
    if (raw !== undefined) {
      ;(strategies[spec.group].values as { [n: string]: Model.Valued<unknown> })[name] = {
        setting: built.setting,
        raw,
        origin: keyPath
      }
    }
  }
  maps.routes.set("mx", { ...strategies.route, type: "mx" })
  maps.connections.set("default", strategies.connection)
  maps.tls.set("default", strategies.tls)
  // [remote.<id>] and next-hop as relays.ts reads them (its issues, its RouteSetting); the model gets the same relays.
  const nextHop = isTable(section) ? section["next-hop"] : undefined
  const routeSetting = Relays.route(root, nextHop, options)
  notes.issues.push(...routeSetting.issues)
  for (const [id, relay] of Relays.relays(root, [])) {
    const origins: { [field: string]: Model.Origin } = {}
    const table = at(root, ["remote", id])
    for (const field of Layouts.RELAY_FIELD_NAMES) {
      const spelled = Layouts.relaySpelling(field, false).split(".")
      if (at(table, spelled) !== undefined) origins[field] = ["remote", id, ...spelled]
    }
    const { _tag: _, name: __, ...fields } = relay
    maps.routes.set(id, {
      name: id,
      origin: ["remote", id],
      values: {},
      ehloBySource: new Map(),
      type: "relay",
      relay: { ...fields, origins }
    })
  }
  Layouts.withBuiltIns(maps, "outbound")
  // One implicit strategy per group: the selectors always name it (the route one is next-hop's default, false).
  const constant = (group: Keys.Group, name: string): Model.Selector => ({
    setting: {
      key: group === "route" ? "queue.outbound.next-hop" : `queue.outbound (the implicit ${group} strategy)`,
      stage: "domain",
      evaluate: () => ({ value: name, warning: null })
    },
    raw: undefined,
    origin: null,
    constant: name
  })
  // next-hop's issues are relays.ts's (above): the model's selector is built for show and convert only.
  const route = nextHop === undefined
    ? constant("route", "mx")
    : Layouts.selector("route", [...SECTION, "next-hop"], nextHop, [...SECTION, "next-hop"], "mx", options, [
      ...maps.routes.keys()
    ], [], true)
  return {
    layout: "outbound",
    selectors: { route, connection: constant("connection", "default"), tls: constant("tls", "default") },
    ...Schedule.loadOutbound(at(root, ["queue", "schedule"]), options, notes.issues),
    ...maps,
    routeSetting: routeSetting.setting
  }
}

/** One named route, `[queue.route.<name>]`, `[remote.<id>]` or an `MtaRoute` object. */
const readRoute = (
  layout: Keys.Layout,
  name: string,
  raw: unknown,
  path: ReadonlyArray<Segment>,
  maps: Maps,
  notes: Notes,
  fixedType?: "relay"
) => {
  const json = layout === "json"
  if (!isTable(raw)) {
    notes.issues.push({ path, problem: "not a table", found: describeToml(raw), expected: "a route" })
    return
  }
  const all = json ? Object.entries(raw).map(([key, v]) => ({ key, raw: v, path: [...path, key] })) : Layouts.fields(raw, path)
  const typeKey = json ? "@type" : "type"
  const typeField = all.find((f) => f.key === typeKey)
  const TYPES = json ? { Mx: "mx", Relay: "relay", Local: "local" } as const : { mx: "mx", relay: "relay", local: "local" } as const
  let type: "mx" | "relay" | "local" | null = fixedType ?? null
  if (fixedType === undefined) {
    if (typeField === undefined || typeof typeField.raw !== "string" || !(typeField.raw in TYPES)) {
      notes.issues.push({
        path: typeField?.path ?? path,
        problem: typeField === undefined ? "a route needs a type" : "unknown route type",
        found: typeField === undefined ? "no type" : describeToml(typeField.raw),
        expected: `${typeKey} = one of ${Object.keys(TYPES).map((t) => JSON.stringify(t)).join(", ")}`
      })
      return
    }
    type = TYPES[typeField.raw as keyof typeof TYPES] as "mx" | "relay" | "local"
  }
  const spellings = Layouts.groupSpellings("route", json)
  const relayKeys = Layouts.relayKeys(json)
  const own = new Set(["description", ...(json ? ["name", "id", "@type"] : fixedType === undefined ? ["type"] : [])])
  const values: { [name: string]: Model.Valued<unknown> } = {}
  const given: Array<Layouts.Field> = []
  for (const f of all) {
    if (own.has(f.key)) continue
    const isMx = spellings.has(f.key)
    const isRelay = relayKeys.includes(f.key)
    if ((type === "mx" && isMx) || (type === "relay" && isRelay)) {
      if (isMx) Layouts.strategyValue(layout as "strategies" | "json", spellings.get(f.key)!, f, values, new Map(), notes.issues)
      else given.push(f)
      continue
    }
    const known = type === "mx" ? [...spellings.keys()] : type === "relay" ? relayKeys : []
    notes.issues.push({
      path: f.path,
      problem: isMx || isRelay
        ? `${f.key} belongs to ${isMx ? "an mx" : "a relay"} route, not to this ${type} route`
        : `unknown key${Layouts.didYouMean(f.key, [...spellings.keys(), ...relayKeys])}`,
      found: `the key ${JSON.stringify(f.key)}`,
      expected: known.length === 0 ? `no keys but ${typeKey}` : `one of ${known.join(", ")}`
    })
  }
  const base: Model.Strategy = { name, origin: path, values, ehloBySource: new Map() }
  if (type === "relay") {
    const relay = Layouts.relay(json, given, path, notes.issues)
    if (relay !== null) maps.routes.set(name, { ...base, type, relay })
  } else {
    maps.routes.set(name, { ...base, type: type! })
  }
}

/** One named connection or TLS strategy. */
const readStrategy = (
  layout: "strategies" | "json",
  group: "connection" | "tls",
  name: string,
  raw: unknown,
  path: ReadonlyArray<Segment>,
  maps: Maps,
  notes: Notes
) => {
  const json = layout === "json"
  if (!isTable(raw)) {
    notes.issues.push({ path, problem: "not a table", found: describeToml(raw), expected: `a ${group} strategy` })
    return
  }
  const all = json ? Object.entries(raw).map(([key, v]) => ({ key, raw: v, path: [...path, key] })) : Layouts.fields(raw, path)
  const spellings = Layouts.groupSpellings(group, json)
  const values: { [name: string]: Model.Valued<unknown> } = {}
  const ehloBySource = new Map<string, Model.Valued<string>>()
  for (const f of all) {
    if (f.key === "description" || (json && (f.key === "name" || f.key === "id"))) continue
    const entries = spellings.get(f.key)
    if (entries !== undefined) {
      Layouts.strategyValue(layout, entries, f, values, ehloBySource, notes.issues)
      continue
    }
    notes.issues.push({
      path: f.path,
      problem: `unknown key${Layouts.didYouMean(f.key, [...spellings.keys()])}`,
      found: `the key ${JSON.stringify(f.key)}`,
      expected: `one of ${[...spellings.keys()].join(", ")}`
    })
  }
  ;(group === "connection" ? maps.connections : maps.tls).set(name, { name, origin: path, values, ehloBySource })
}

/** The v0.13–v0.15 layout: `[queue.strategy]` expressions naming `[queue.route|connection|tls.<name>]` tables. */
const loadStrategies = (
  root: unknown,
  options: CompileOptions,
  notes: Notes
): Omit<Model.Model, "hostname"> => {
  const maps = emptyMaps()
  const named = (group: Keys.Group, read: (name: string, raw: unknown, path: ReadonlyArray<Segment>) => void) => {
    const tables = at(root, ["queue", group])
    if (tables === undefined) return
    if (!isTable(tables)) {
      notes.issues.push({
        path: ["queue", group],
        problem: "not a table",
        found: describeToml(tables),
        expected: `[queue.${group}.<name>] tables`
      })
      return
    }
    for (const [name, raw] of Object.entries(tables)) read(name, raw, ["queue", group, name])
  }
  named("route", (name, raw, path) => readRoute("strategies", name, raw, path, maps, notes))
  named("connection", (name, raw, path) => readStrategy("strategies", "connection", name, raw, path, maps, notes))
  named("tls", (name, raw, path) => readStrategy("strategies", "tls", name, raw, path, maps, notes))
  Layouts.withBuiltIns(maps, "strategies")
  // [queue.source-ip."<ip>"] ehlo-hostname: the EHLO name of every connection strategy that binds that address.
  const sources = at(root, ["queue", "source-ip"])
  if (sources !== undefined && !isTable(sources)) {
    notes.issues.push({
      path: ["queue", "source-ip"],
      problem: "not a table",
      found: describeToml(sources),
      expected: "[queue.source-ip.\"<ip>\"] tables"
    })
  } else if (isTable(sources)) {
    for (const [ip, table] of Object.entries(sources)) {
      const path = ["queue", "source-ip", ip]
      if (isIP(ip) === 0) {
        notes.issues.push({
          path,
          problem: "not an IP address",
          found: `the table ${JSON.stringify(ip)}`,
          expected: "[queue.source-ip.\"<IP address>\"]"
        })
        continue
      }
      if (!isTable(table)) {
        notes.issues.push({
          path,
          problem: "not a table",
          found: describeToml(table),
          expected: "a table with ehlo-hostname"
        })
        continue
      }
      for (const k of Object.keys(table)) {
        if (k !== "ehlo-hostname") {
          notes.issues.push({
            path: [...path, k],
            problem: `unknown key${Layouts.didYouMean(k, ["ehlo-hostname"])}`,
            found: `the key ${JSON.stringify(k)}`,
            expected: "ehlo-hostname"
          })
        }
      }
      const raw = table["ehlo-hostname"]
      if (raw === undefined) continue
      const ehloPath = [...path, "ehlo-hostname"]
      const checked = Keys.KEYS.ehloName.converter.convert(typeof raw === "string" ? raw : "")
      if (typeof raw !== "string" || Either.isLeft(checked)) {
        notes.issues.push({
          path: ehloPath,
          problem: "not a valid host name",
          found: describeToml(raw),
          expected: Keys.KEYS.ehloName.converter.expected
        })
        continue
      }
      let used = false
      for (const strategy of maps.connections.values()) {
        const v4 = strategy.values["sourceIp.v4"]?.setting.evaluate({}).value ?? []
        const v6 = strategy.values["sourceIp.v6"]?.setting.evaluate({}).value ?? []
        if (![...v4, ...v6].includes(ip)) continue
        used = true
        ;(strategy.ehloBySource as Map<string, Model.Valued<string>>).set(ip, {
          setting: { key: formatPath(ehloPath), stage: "connection", evaluate: () => ({ value: checked.right, warning: null }) },
          raw,
          origin: ehloPath
        })
      }
      if (!used) {
        notes.warnings.push(
          `${formatPath(ehloPath)}: ${ip} is in no connection strategy's source-ips, so this EHLO name is never used`
        )
      }
    }
  }
  const strategy = at(root, ["queue", "strategy"])
  const selectors = selectorsOf("strategies", strategy, ["queue", "strategy"], options, maps, notes)
  // [queue.schedule.<name>] and [queue.strategy] schedule.
  const schedules = new Map<string, Model.ScheduleDefinition>()
  const tables = at(root, ["queue", "schedule"])
  if (tables !== undefined && !isTable(tables)) {
    notes.issues.push({
      path: ["queue", "schedule"],
      problem: "not a table",
      found: describeToml(tables),
      expected: "[queue.schedule.<name>] tables"
    })
  } else if (isTable(tables)) {
    for (const [name, raw] of Object.entries(tables)) {
      const path = ["queue", "schedule", name]
      if (!isTable(raw)) {
        notes.issues.push({
          path,
          problem: "a setting of another Stalwart version: [queue.schedule] retry, notify, expire belong to the " +
            "v0.7–v0.12 layout; beside [queue.strategy] a schedule is a named table chosen by [queue.strategy] schedule",
          found: `the key queue.schedule.${name}`,
          expected: "[queue.schedule.<name>] tables"
        })
        continue
      }
      const definition = Schedule.readNamed("strategies", name, raw, path, notes.issues)
      if (definition !== null) schedules.set(name, definition)
    }
  }
  Schedule.withBuiltIns(schedules, "strategies")
  const scheduleSelector = Schedule.selector(
    isTable(strategy) ? strategy["schedule"] : undefined,
    ["queue", "strategy", "schedule"],
    options,
    schedules,
    notes.issues
  )
  // [queue.virtual.<name>]: what the schedules' queue-name refers to, carried by convert.
  const virtual = at(root, ["queue", "virtual"])
  const { queues: virtualQueues } = Schedule.readVirtualQueues(
    "strategies",
    isTable(virtual) ? Object.entries(virtual).map(([name, raw]) => [name, raw, ["queue", "virtual", name]] as const) : [],
    notes.issues
  )
  return { layout: "strategies", selectors, scheduleSelector, schedules, virtualQueues, ...maps }
}

/** The three selectors of `[queue.strategy]` or `MtaOutboundStrategy`, with the defaults of Stalwart v0.13+. */
const selectorsOf = (
  layout: "strategies" | "json",
  raw: unknown,
  path: ReadonlyArray<string>,
  options: CompileOptions,
  maps: Maps,
  notes: Notes
): Model.Model["selectors"] => {
  const table = raw === undefined ? {} : raw
  if (!isTable(table)) {
    notes.issues.push({
      path,
      problem: "not a table",
      found: describeToml(raw),
      expected: "route, connection and tls expressions"
    })
  }
  const value = (group: string) => isTable(table) ? table[group] : undefined
  if (isTable(table)) {
    for (const k of Object.keys(table)) {
      if (k === "schedule") continue
      else if (!Keys.GROUPS.includes(k as Keys.Group) && !(layout === "json" && (k === "id" || k === "description"))) {
        notes.issues.push({
          path: [...path, k],
          problem: `unknown key${Layouts.didYouMean(k, [...Keys.GROUPS, "schedule"])}`,
          found: `the key ${JSON.stringify(k)}`,
          expected: "route, connection, tls or schedule"
        })
      }
    }
  }
  const make = (group: Keys.Group): Model.Selector => {
    const given = value(group)
    const expression = layout === "json" && given !== undefined ? jsonExpression(given, [...path, group], notes) : given
    const known = [...(group === "route" ? maps.routes : group === "connection" ? maps.connections : maps.tls).keys()]
    if (expression === undefined && group === "tls") {
      // Stalwart's default, kept as an if-list so that `convert` can write it where a layout has no selectors.
      return Layouts.selector(group, [...path, group], Layouts.DEFAULT_TLS_SELECTOR, null, "default", options, known, notes.issues)
    }
    return Layouts.selector(
      group,
      [...path, group],
      expression,
      given === undefined ? null : [...path, group],
      Model.FALLBACK_NAME[group],
      options,
      known,
      notes.issues
    )
  }
  return { route: make("route"), connection: make("connection"), tls: make("tls") }
}

/** v0.16's `{ "match": { "0": { "if", "then" } }, "else" }` → the if-list the TOML layouts write (or a string). */
const jsonExpression = (raw: unknown, path: ReadonlyArray<Segment>, notes: Notes): unknown => {
  if (typeof raw === "string") return raw
  if (!isTable(raw)) {
    notes.issues.push({
      path,
      problem: "not an expression",
      found: describeToml(raw),
      expected: "{ \"match\": { \"0\": { \"if\", \"then\" } }, \"else\" } or a string"
    })
    return undefined
  }
  for (const k of Object.keys(raw)) {
    if (k !== "match" && k !== "else") {
      notes.issues.push({
        path: [...path, k],
        problem: `unknown field${Layouts.didYouMean(k, ["match", "else"])}`,
        found: `the field ${JSON.stringify(k)}`,
        expected: "match, else"
      })
    }
  }
  const match = raw["match"]
  const branches = match === undefined ? [] : Array.isArray(match) ? match : isTable(match)
    ? Object.keys(match).sort((a, b) => Number(a) - Number(b)).map((k) => match[k])
    : null
  if (branches === null) {
    notes.issues.push({
      path: [...path, "match"],
      problem: "not a table",
      found: describeToml(match),
      expected: "{ \"0\": { \"if\", \"then\" }, … }"
    })
    return undefined
  }
  if (branches.length === 0) return raw["else"]
  return [...branches, { else: raw["else"] }]
}

const JSON_OBJECTS = [
  "MtaOutboundStrategy",
  "MtaRoute",
  "MtaConnectionStrategy",
  "MtaTlsStrategy",
  "SystemSettings",
  "MtaDeliverySchedule"
]
const JSON_NOT_USED: { readonly [name: string]: string } = {
  MtaVirtualQueue: "virtual queues",
  MtaQueueQuota: "queue quotas",
  MtaInboundThrottle: "inbound limiters"
}
/** Registry objects read beside the layout's settings (internal/config/limiters.ts). */
const JSON_BESIDE = ["MtaOutboundThrottle"]

/** The v0.16 layout: registry objects as JSON. */
const loadJson = (root: unknown, options: CompileOptions, notes: Notes): Omit<Model.Model, "hostname"> | null => {
  const maps = emptyMaps()
  if (!isTable(root)) {
    notes.issues.push({
      path: [],
      problem: "not a JSON object",
      found: describeToml(root),
      expected: "{ \"MtaOutboundStrategy\": …, \"MtaRoute\": [ … ], … }"
    })
    return null
  }
  for (const k of Object.keys(root)) {
    if (JSON_OBJECTS.includes(k) || JSON_BESIDE.includes(k)) continue
    if (k in JSON_NOT_USED) notes.notUsed.push(`${k} (${JSON_NOT_USED[k]})`)
    else if (k.startsWith("Mta")) {
      notes.issues.push({
        path: [k],
        problem: `no Stalwart registry object of that name${
          Layouts.didYouMean(k, [...JSON_OBJECTS, ...JSON_BESIDE, ...Object.keys(JSON_NOT_USED)])
        }`,
        found: `the object ${JSON.stringify(k)}`,
        expected: `one of ${
          [...JSON_OBJECTS, ...JSON_BESIDE, ...Object.keys(JSON_NOT_USED)].join(", ")
        }`
      })
    }
  }
  // Only limiters, as in TOML: every other setting at its default.
  if (!JSON_OBJECTS.slice(0, 4).some((k) => k in root) && !JSON_BESIDE.some((k) => k in root)) {
    notes.issues.push({
      ...NO_SETTINGS,
      found: "none of MtaOutboundStrategy, MtaRoute, MtaConnectionStrategy, MtaTlsStrategy"
    })
    return null
  }
  const objects = (object: string, read: (name: string, raw: unknown, path: ReadonlyArray<Segment>) => void) => {
    const list = root[object]
    if (list === undefined) return
    const items = Array.isArray(list) ? list.map((v, i) => [i, v] as const) : isTable(list) ? Object.entries(list) : null
    if (items === null) {
      notes.issues.push({
        path: [object],
        problem: "not a list of objects",
        found: describeToml(list),
        expected: `a list of ${object} objects`
      })
      return
    }
    for (const [i, item] of items) {
      const path = [object, i]
      const name = isTable(item) ? item["name"] : undefined
      if (typeof name !== "string" || name === "") {
        notes.issues.push({
          path: [...path, "name"],
          problem: "every object needs a name",
          found: describeToml(name),
          expected: "a non-empty string"
        })
        continue
      }
      read(name, item, path)
    }
  }
  objects("MtaRoute", (name, raw, path) => readRoute("json", name, raw, path, maps, notes))
  objects("MtaConnectionStrategy", (name, raw, path) => readStrategy("json", "connection", name, raw, path, maps, notes))
  objects("MtaTlsStrategy", (name, raw, path) => readStrategy("json", "tls", name, raw, path, maps, notes))
  Layouts.withBuiltIns(maps, "json")
  const selectors = selectorsOf("json", root["MtaOutboundStrategy"], ["MtaOutboundStrategy"], options, maps, notes)
  const schedules = new Map<string, Model.ScheduleDefinition>()
  objects("MtaDeliverySchedule", (name, raw, path) => {
    const definition = Schedule.readNamed("json", name, raw, path, notes.issues)
    if (definition !== null) schedules.set(name, definition)
  })
  // MtaVirtualQueue: what each schedule's queueId refers to, by the object's id.
  const virtual = root["MtaVirtualQueue"]
  const { ids, queues: virtualQueues } = Schedule.readVirtualQueues(
    "json",
    Array.isArray(virtual)
      ? virtual.map((raw, i) => [String(i), raw, ["MtaVirtualQueue", i]] as const)
      : isTable(virtual)
      ? Object.entries(virtual).map(([id, raw]) => [id, raw, ["MtaVirtualQueue", id]] as const)
      : [],
    notes.issues
  )
  Schedule.resolveQueueIds(schedules, ids, notes.warnings)
  Schedule.withBuiltIns(schedules, "json")
  const strategy = root["MtaOutboundStrategy"]
  const given = isTable(strategy) ? strategy["schedule"] : undefined
  const scheduleSelector = Schedule.selector(
    given === undefined ? undefined : jsonExpression(given, ["MtaOutboundStrategy", "schedule"], notes),
    ["MtaOutboundStrategy", "schedule"],
    options,
    schedules,
    notes.issues
  )
  return { layout: "json", selectors, scheduleSelector, schedules, virtualQueues, ...maps }
}

/** Options of `parse`. @internal */
export interface ParseOptions {
  /** Accept a text with no outbound setting (every default): what `OutboundConfig.defaults` is made of. */
  readonly allowEmpty?: boolean
}

/**
 * Where JSON text stops being valid (Node's messages do not always say): the longest prefix that is still the start of
 * a valid document, found by bisection, as being such a prefix holds for every shorter prefix too.
 */
const jsonErrorOffset = (text: string): number => {
  const validSoFar = (length: number) => {
    try {
      JSON.parse(text.slice(0, length))
      return true
    } catch (error) {
      return /Unexpected end of JSON input|Unterminated string/.test(String((error as Error).message))
    }
  }
  let lo = 0
  let hi = text.length
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1
    if (validSoFar(mid)) lo = mid
    else hi = mid - 1
  }
  return lo
}

const parseJson = (text: string): Either.Either<unknown, RawIssue & { line: number; col: number }> => {
  try {
    return Either.right(JSON.parse(text))
  } catch (error) {
    // V8 quotes the text around the error (`Unexpected token 's', ..."authSecret":s3cret}" is not valid JSON`): it
    // may be a secret, so only the kind of error is kept; the line and column say where.
    const message = String((error as Error).message)
      .replace(/\s+/g, " ")
      .replace(/ in JSON at position \d+.*$/, "")
      .replace(/,? ?(\.\.\.)?".*" is not valid JSON$/, "")
      .replace(/^Unexpected token '.*'$/, "Unexpected character")
    const index = jsonErrorOffset(text)
    const before = text.slice(0, index).split("\n")
    return Either.left({
      path: [],
      problem: `JSON syntax error: ${message}`,
      found: "malformed JSON",
      expected: "valid JSON",
      line: before.length,
      col: before[before.length - 1]!.length + 1
    })
  }
}

/**
 * Parses a configuration: JSON when the text starts with `{`, TOML otherwise. Pure apart from reading the machine's
 * host name for the EHLO default.
 *
 * @internal
 */
export const parse = (
  text: string,
  file: string | null,
  parseOptions: ParseOptions = {}
): Either.Either<Loaded, ConfigError> => {
  const json = text.trimStart().startsWith("{")
  const parsed = json ? parseJson(text) : parseToml(text)
  if (Either.isLeft(parsed)) {
    const { col, line, ...raw } = parsed.left
    return Either.left(new ConfigError({ file, issues: [issueOf(raw, { line, column: col })] }))
  }
  const root = parsed.right
  const notes: Notes = { issues: [], warnings: [], notUsed: [] }
  const stores = json ? {} : lookupStores(root)
  const options: CompileOptions = { lookup: stores }
  let loaded: Omit<Model.Model, "hostname"> | null
  let hostname: Model.Model["hostname"]
  let limiters: ReadonlyArray<OutboundLimiter> = []
  if (json) {
    if (isTable(root)) {
      const parsedLimiters = parseJsonLimiters(root, options, (raw, path) => jsonExpression(raw, path, notes))
      notes.issues.push(...parsedLimiters.issues)
      limiters = parsedLimiters.limiters
    }
    loaded = loadJson(root, options, notes)
    hostname = defaultHostname("json", root, stores, notes)
  } else {
    // The limiters live outside the layouts' tables ([queue.limiter.outbound.<id>] v0.11.4+ and v0.13–v0.15,
    // [[queue.throttle]] v0.7–v0.11.3) and are read the same way in both TOML layouts (internal/config/limiters.ts).
    const parsedLimiters = parseLimiters(root, options)
    notes.issues.push(...parsedLimiters.issues)
    limiters = parsedLimiters.limiters
    const layout = classify(root, notes)
    if (layout === null && notes.issues.length === 0 && parseOptions.allowEmpty !== true) notes.issues.push(NO_SETTINGS)
    hostname = defaultHostname(layout ?? "outbound", root, stores, notes)
    loaded = layout === "strategies"
      ? loadStrategies(root, options, notes)
      : loadOutbound(root, options, { hostname: hostname.value }, notes)
  }
  if (loaded !== null && notes.issues.length === 0) {
    const { routeSetting, ...rest } = loaded as typeof loaded & { readonly routeSetting?: Relays.RouteSetting }
    const model: Model.Model = { ...rest, hostname }
    const derived = Model.settingsOf(model, { hostname: hostname.value })
    const settings = routeSetting === undefined ? derived : { ...derived, route: routeSetting }
    return Either.right({
      ...settings,
      layout: model.layout,
      model,
      file,
      warnings: notes.warnings,
      notUsed: Array.from(new Set(notes.notUsed)),
      limiters,
      schedule: (variables) => Schedule.evaluate(model, variables)
    })
  }
  const locate = json ? makeJsonLocator(text) : makeLocator(text)
  const located = notes.issues.map((raw) => issueOf(raw, locate(raw.path, raw.column)))
  // In file order, which is how a reader fixes them; issues without a position go last, in key order.
  const order = (a: ConfigIssue, b: ConfigIssue) =>
    a.line === b.line ? (a.column ?? 0) - (b.column ?? 0) : a.line === null ? 1 : b.line === null ? -1 : a.line - b.line
  return Either.left(new ConfigError({ file, issues: located.sort(order) }))
}
