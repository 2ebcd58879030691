/**
 * Loading `[queue.outbound]`: TOML text → every key of the key table built into a `Setting`, or every problem found.
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as os from "node:os"
import * as Toml from "smol-toml"
import type { CompileOptions, Value } from "../../Expression.js"
import * as editDistance from "../editDistance.js"
import { hostnameProblem } from "./convert.js"
import { describe, describeToml } from "./describe.js"
import { ConfigError, type ConfigIssue } from "./error.js"
import * as Keys from "./keys.js"
import { makeLocator, type Position, type Segment } from "./locate.js"
import * as Relays from "./relays.js"
import { build, type RawIssue } from "./setting.js"

/** The loaded section: the settings, the file and the load-time warnings. @internal */
export type Loaded = Keys.ConfigSettings & {
  readonly route: Relays.RouteSetting
  readonly file: string | null
  readonly warnings: ReadonlyArray<string>
}

const SECTION = ["queue", "outbound"] as const

const isTable = (raw: unknown): raw is { readonly [key: string]: unknown } =>
  typeof raw === "object" && raw !== null && !Array.isArray(raw) && !(raw instanceof Date)

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
      const near = known.filter((k) => editDistance.distance(k, name) <= 2 || k.replace(/-/g, "_") === name)
      const hint = near.length > 0 ? ` (did you mean ${near.map((k) => JSON.stringify(k)).join(" or ")}?)` : ""
      return {
        path: full,
        problem: `unknown key${hint}`,
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

/**
 * Stalwart's default `key_get('default', 'hostname')`: `[lookup.default] hostname` of the same file, else the
 * machine's host name, else `localhost` (with a warning).
 */
const defaultHostname = (
  stores: NonNullable<CompileOptions["lookup"]>,
  issues: Array<RawIssue>,
  warnings: Array<string>
): string => {
  const configured = stores["default"]?.["hostname"]
  if (configured !== undefined) {
    const problem = typeof configured === "string" ? hostnameProblem(configured) : "it is not a string"
    if (problem === null) return configured as string
    issues.push({
      path: ["lookup", "default", "hostname"],
      problem: `not a valid host name (${problem}); it is the default of queue.outbound.hostname`,
      found: describe(configured),
      expected: "a host name (letters, digits, hyphens and dots; at most 255 characters and 63 per label)"
    })
    return "localhost"
  }
  const machine = machineHostname()
  if (machine !== null) return machine
  warnings.push(
    `queue.outbound.hostname: the machine's host name ${JSON.stringify(os.hostname())} is not a valid EHLO name; ` +
      "using \"localhost\" (set [lookup.default] hostname or queue.outbound.hostname)"
  )
  return "localhost"
}

/** `auth.secret = …`, `secret = …`, `auth.token = …` (the keys of `[remote.<id>]` that hold a credential). */
const SECRET_LINE = /^\s*((?:[\w-]+\.)*(?:secret|token))\s*=/

type SyntaxIssue = RawIssue & { readonly line: number; readonly col: number }

const parseToml = (text: string): Either.Either<unknown, SyntaxIssue> => {
  try {
    return Either.right(Toml.parse(text, { unsafeKeyBehaviour: "throw" }))
  } catch (error) {
    if (error instanceof Toml.TomlError) {
      const lineText = text.split(/\r?\n/)[error.line - 1] ?? ""
      // A relay's secret is never quoted back, not even from a line that does not parse.
      const secret = SECRET_LINE.exec(lineText)
      return Either.left({
        path: [],
        problem: `TOML syntax error: ${error.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "")}`,
        found: secret === null
          ? `the line ${JSON.stringify(lineText.trim())}`
          : `the line of the key ${secret[1]} (its value not shown)`,
        expected: "valid TOML",
        line: error.line,
        col: error.column
      })
    }
    throw error
  }
}
/**
 * Parses TOML text. Pure apart from reading the machine's host name for the `hostname` default.
 *
 * @internal
 */
export const parse = (text: string, file: string | null): Either.Either<Loaded, ConfigError> => {
  const tomlResult = parseToml(text)
  if (Either.isLeft(tomlResult)) {
    const { col, line, ...raw } = tomlResult.left
    return Either.left(new ConfigError({ file, issues: [issueOf(raw, { line, column: col })] }))
  }
  const root = tomlResult.right
  const issues: Array<RawIssue> = []
  const warnings: Array<string> = []

  const queue = at(root, ["queue"])
  const section = at(root, SECTION)
  if (queue !== undefined && !isTable(queue)) {
    issues.push({ path: ["queue"], problem: "not a table", found: describeToml(queue), expected: "a table" })
  } else if (section !== undefined && !isTable(section)) {
    issues.push({ path: SECTION, problem: "not a table", found: describeToml(section), expected: "a table" })
  } else if (section !== undefined) {
    issues.push(...structureIssues(section))
    for (const group of GROUPS) {
      const value = at(section, [group])
      // Schema sees a date as an object with no keys; it is not a table.
      if (value instanceof Date) {
        issues.push({
          path: [...SECTION, group],
          problem: "not a table",
          found: describeToml(value),
          expected: `a table with the keys ${Keys.TABLES[group]!.join(", ")}`
        })
      }
    }
    for (const { path, why } of Keys.UNIMPLEMENTED) {
      if (at(section, path) !== undefined) {
        warnings.push(`${[...SECTION, ...path].join(".")} is a Stalwart setting this library ignores: ${why}`)
      }
    }
  }

  const stores = lookupStores(root)
  const options: CompileOptions = { lookup: stores }
  const context: Keys.DefaultContext = { hostname: defaultHostname(stores, issues, warnings) }
  // Each key built from its table entry and put where its name says (`timeouts.mail-from` → timeouts["mail-from"]).
  const settings: { [name: string]: any } = {}
  for (const { at: name, spec } of Keys.ENTRIES) {
    const fallback = typeof spec.fallback === "function"
      ? (spec.fallback as (c: Keys.DefaultContext) => unknown)(context)
      : spec.fallback
    const keyPath = [...SECTION, ...spec.path]
    const built = build(spec, fallback, keyPath, isTable(section) ? at(section, spec.path) : undefined, options)
    issues.push(...built.issues)
    let node = settings
    for (const segment of name.slice(0, -1)) node = node[segment] ??= {}
    node[name[name.length - 1]!] = built.setting
  }
  const route = Relays.route(root, isTable(section) ? at(section, Keys.ROUTE_KEY.path) : undefined, options)
  issues.push(...route.issues)
  const config: Loaded = { ...(settings as Keys.ConfigSettings), route: route.setting, file, warnings }
  if (issues.length === 0) return Either.right(config)
  const locate = makeLocator(text)
  const located = issues.map((raw) => issueOf(raw, locate(raw.path, raw.column)))
  // In file order, which is how a reader fixes them; issues without a position go last, in key order.
  const order = (a: ConfigIssue, b: ConfigIssue) =>
    a.line === b.line ? (a.column ?? 0) - (b.column ?? 0) : a.line === null ? 1 : b.line === null ? -1 : a.line - b.line
  return Either.left(new ConfigError({ file, issues: located.sort(order) }))
}
