/**
 * The `[queue.outbound]` section of a Stalwart-style TOML file, loaded into typed, immutable settings.
 *
 * Every key may be a plain value, an expression, or an if-list; each becomes a `Setting` that is evaluated with the
 * variables of a delivery at the stage where the key is needed. Everything that can be checked at load is checked at
 * load, and loading fails with every problem found at once: unlike Stalwart, which keeps the default on a bad value
 * and logs it (stalwart#425), a misconfiguration here stops the program before a message is sent.
 *
 * @since 0.1.0
 */
import type { PlatformError } from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import { Context, Data, Duration, Effect, Either, Layer, Option, ParseResult, Schema } from "effect"
import * as os from "node:os"
import * as Toml from "smol-toml"
import type { CompileOptions, Value, Variables } from "./Expression.js"
import { hostnameProblem } from "./internal/config/convert.js"
import { describe, describeToml } from "./internal/config/describe.js"
import * as Keys from "./internal/config/keys.js"
import { makeLocator, type Position, type Segment } from "./internal/config/locate.js"
import { build, type RawIssue } from "./internal/config/setting.js"

/**
 * Which address families to try, in which order.
 *
 * @since 0.1.0
 */
export type IpStrategy = "ipv4_only" | "ipv6_only" | "ipv6_then_ipv4" | "ipv4_then_ipv6"

/**
 * A TLS requirement (`tls.starttls`, `tls.mta-sts`).
 *
 * @since 0.1.0
 */
export type TlsPolicy = "optional" | "require" | "disable"

/**
 * When a key is evaluated, which decides the variables it may use: `domain` knows the message and recipient
 * variables, `host` adds `mx`, `connection` adds `remote_ip` and `local_ip`.
 *
 * @since 0.1.0
 */
export type Stage = "domain" | "host" | "connection"

/**
 * A setting's value for one delivery. `warning` is set when the configured expression gave a value that could not be
 * used and the key's default was used instead; it names the key, what was found and the default.
 *
 * @since 0.1.0
 */
export interface Evaluated<A> {
  readonly value: A
  readonly warning: string | null
}

/**
 * One configured key, ready to evaluate. Constant values were converted and checked at load and cost nothing to
 * evaluate; expressions are evaluated without re-parsing.
 *
 * @since 0.1.0
 */
export interface Setting<A> {
  /** The full key, e.g. `queue.outbound.timeouts.data`. */
  readonly key: string
  readonly stage: Stage
  readonly evaluate: (vars: Variables) => Evaluated<A>
}

/**
 * The loaded `[queue.outbound]` section.
 *
 * @since 0.1.0
 */
export interface Config {
  /** The file it was loaded from, null for text and defaults. */
  readonly file: string | null
  /** The EHLO name. */
  readonly hostname: Setting<string>
  readonly ipStrategy: Setting<IpStrategy>
  readonly sourceIp: {
    readonly v4: Setting<ReadonlyArray<string>>
    readonly v6: Setting<ReadonlyArray<string>>
  }
  readonly limits: {
    readonly mx: Setting<number>
    readonly multihomed: Setting<number>
  }
  readonly timeouts: {
    readonly connect: Setting<Duration.Duration>
    readonly greeting: Setting<Duration.Duration>
    readonly tls: Setting<Duration.Duration>
    readonly ehlo: Setting<Duration.Duration>
    readonly mailFrom: Setting<Duration.Duration>
    readonly rcptTo: Setting<Duration.Duration>
    readonly data: Setting<Duration.Duration>
    readonly mtaSts: Setting<Duration.Duration>
  }
  readonly tls: {
    readonly starttls: Setting<TlsPolicy>
    readonly mtaSts: Setting<TlsPolicy>
    readonly allowInvalidCerts: Setting<boolean>
  }
  /** Delay between staggered connection attempts (RFC 8305); None = one attempt at a time. */
  readonly connectionAttemptDelay: Setting<Option.Option<Duration.Duration>>
  /** Load-time warnings, e.g. Stalwart keys this library does not implement. */
  readonly warnings: ReadonlyArray<string>
}

/**
 * The configuration as a service.
 *
 * @since 0.1.0
 */
export class OutboundConfig extends Context.Tag("effect-smtp-transport/OutboundConfig")<OutboundConfig, Config>() {}

/**
 * One problem in a configuration file.
 *
 * @since 0.1.0
 */
export interface ConfigIssue {
  /** `queue.outbound.timeouts.data`, `queue.outbound.ip-strategy[1].then`; "" for a TOML syntax error. */
  readonly path: string
  readonly found: string
  readonly expected: string
  /** One sentence with the path, the problem, what was found and what was expected. */
  readonly message: string
  /** Position in the file (1-based), when known. */
  readonly line: number | null
  readonly column: number | null
}

/**
 * Loading failed. `issues` holds every problem found, `message` lists them one per line.
 *
 * @since 0.1.0
 */
export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly file: string | null
  readonly issues: ReadonlyArray<ConfigIssue>
}> {
  override get message(): string {
    const name = this.file ?? "<config>"
    const count = this.issues.length
    const lines = this.issues.map((issue) => {
      const position = issue.line === null ? "" : `:${issue.line}${issue.column === null ? "" : `:${issue.column}`}`
      return `  ${name}${position}: ${issue.message}`
    })
    return [`invalid configuration ${name}: ${count} issue${count === 1 ? "" : "s"}`, ...lines].join("\n")
  }
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

const issueOf = (raw: RawIssue, position: Position | null): ConfigIssue => {
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
const Section = Schema.Struct({
  ...Object.fromEntries(Keys.TABLES[""]!.map((k) => [k, leaf])),
  "source-ip": Schema.optionalWith(table(Keys.TABLES["source-ip"]!), { exact: true }),
  limits: Schema.optionalWith(table(Keys.TABLES["limits"]!), { exact: true }),
  timeouts: Schema.optionalWith(table(Keys.TABLES["timeouts"]!), { exact: true }),
  tls: Schema.optionalWith(table(Keys.TABLES["tls"]!), { exact: true })
})
const decodeSection = Schema.decodeUnknownEither(Section, { errors: "all", onExcessProperty: "error" })

const distance = (a: string, b: string): number => {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1))
      previous = current
    }
  }
  return row[b.length]!
}

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
      const near = known.filter((k) => distance(k, name) <= 2 || k.replace(/-/g, "_") === name)
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

type SyntaxIssue = RawIssue & { readonly line: number; readonly col: number }

const parseToml = (text: string): Either.Either<unknown, SyntaxIssue> => {
  try {
    return Either.right(Toml.parse(text, { unsafeKeyBehaviour: "throw" }))
  } catch (error) {
    if (error instanceof Toml.TomlError) {
      const lineText = text.split(/\r?\n/)[error.line - 1] ?? ""
      return Either.left({
        path: [],
        problem: `TOML syntax error: ${error.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "")}`,
        found: `the line ${JSON.stringify(lineText.trim())}`,
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
 * @since 0.1.0
 */
export const parse = (text: string, file: string | null = null): Either.Either<Config, ConfigError> => {
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
    for (const group of ["source-ip", "limits", "timeouts", "tls"]) {
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
  const hostnameDefault = defaultHostname(stores, issues, warnings)
  const setting = <A>(spec: Keys.KeySpec<A>) => {
    const keyPath = [...SECTION, ...spec.path]
    const built = build(spec, keyPath, isTable(section) ? at(section, spec.path) : undefined, options)
    issues.push(...built.issues)
    return built.setting
  }
  const K = Keys.KEYS
  const config: Config = {
    file,
    hostname: setting(Keys.hostname(hostnameDefault)),
    ipStrategy: setting(K.ipStrategy),
    sourceIp: { v4: setting(K.sourceIpV4), v6: setting(K.sourceIpV6) },
    limits: { mx: setting(K.limitsMx), multihomed: setting(K.limitsMultihomed) },
    timeouts: {
      connect: setting(K.timeoutConnect),
      greeting: setting(K.timeoutGreeting),
      tls: setting(K.timeoutTls),
      ehlo: setting(K.timeoutEhlo),
      mailFrom: setting(K.timeoutMailFrom),
      rcptTo: setting(K.timeoutRcptTo),
      data: setting(K.timeoutData),
      mtaSts: setting(K.timeoutMtaSts)
    },
    tls: {
      starttls: setting(K.tlsStarttls),
      mtaSts: setting(K.tlsMtaSts),
      allowInvalidCerts: setting(K.tlsAllowInvalidCerts)
    },
    connectionAttemptDelay: setting(K.connectionAttemptDelay),
    warnings
  }
  if (issues.length === 0) return Either.right(config)
  const locate = makeLocator(text)
  const located = issues.map((raw) => issueOf(raw, locate(raw.path, raw.column)))
  // In file order, which is how a reader fixes them; issues without a position go last, in key order.
  const order = (a: ConfigIssue, b: ConfigIssue) =>
    a.line === b.line ? (a.column ?? 0) - (b.column ?? 0) : a.line === null ? 1 : b.line === null ? -1 : a.line - b.line
  return Either.left(new ConfigError({ file, issues: located.sort(order) }))
}

/**
 * Reads and parses a TOML file; the file name is in every issue.
 *
 * @since 0.1.0
 */
export const load: (path: string) => Effect.Effect<Config, ConfigError, FileSystem.FileSystem> = Effect.fn(
  "OutboundConfig.load"
)(function*(path: string) {
  const fs = yield* FileSystem.FileSystem
  const text = yield* fs.readFileString(path).pipe(
    Effect.mapError((error: PlatformError) =>
      new ConfigError({
        file: path,
        issues: [issueOf({
          path: [],
          problem: `cannot read the file (${error.message})`,
          found: "no readable file",
          expected: "a readable UTF-8 TOML file"
        }, null)]
      })
    )
  )
  return yield* parse(text, path)
})

/**
 * The configuration with every key at its default (the `hostname` default is the machine's host name).
 *
 * @since 0.1.0
 */
export const defaults: Config = Either.getOrThrow(parse(""))

/**
 * @since 0.1.0
 */
export const layer = (path: string): Layer.Layer<OutboundConfig, ConfigError, FileSystem.FileSystem> =>
  Layer.effect(OutboundConfig, load(path))

/**
 * @since 0.1.0
 */
export const layerDefault: Layer.Layer<OutboundConfig> = Layer.succeed(OutboundConfig, defaults)

/**
 * @since 0.1.0
 */
export const layerFromText = (text: string, file?: string): Layer.Layer<OutboundConfig, ConfigError> =>
  Layer.effect(OutboundConfig, Effect.suspend(() => parse(text, file ?? null)))
