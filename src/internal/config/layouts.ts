/**
 * The pieces the three layouts share when they load into the model: strategy-name expressions (selectors), named
 * strategies of plain values, relay routes, and the built-in strategies a file may leave out.
 */
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { isIP } from "node:net"
import type { CompileOptions } from "../../Expression.js"
import { type RelayProtocol, relayProtocols, type Stage } from "../../Settings.js"
import * as editDistance from "../editDistance.js"
import type { Converter } from "./convert.js"
import { describeToml } from "./describe.js"
import * as Keys from "./keys.js"
import type { Segment } from "./locate.js"
import * as Model from "./model.js"
import { plainValue } from "./plain.js"
import { build, type RawIssue } from "./setting.js"

/** @internal */
export const isTable = (raw: unknown): raw is { readonly [key: string]: unknown } =>
  typeof raw === "object" && raw !== null && !Array.isArray(raw) && !(raw instanceof Date)

/** `[" or "]` hint for the nearest names. @internal */
export const didYouMean = (name: string, known: ReadonlyArray<string>): string => {
  const near = known.filter((k) => editDistance.distance(k, name) <= 2 || k.replace(/-/g, "_") === name)
  return near.length > 0 ? ` (did you mean ${near.map((k) => JSON.stringify(k)).join(" or ")}?)` : ""
}

/** A field of a strategy: its dotted key, value and path in the file. @internal */
export interface Field {
  readonly key: string
  readonly raw: unknown
  readonly path: ReadonlyArray<Segment>
}

/** A table's values as dotted keys (`timeout.connect`), stopping at lists. @internal */
export const fields = (table: { readonly [key: string]: unknown }, path: ReadonlyArray<Segment>): Array<Field> => {
  const out: Array<Field> = []
  const walk = (node: { readonly [key: string]: unknown }, prefix: string, at: ReadonlyArray<Segment>) => {
    for (const [k, v] of Object.entries(node)) {
      const key = prefix === "" ? k : `${prefix}.${k}`
      if (isTable(v)) walk(v, key, [...at, k])
      else out.push({ key, raw: v, path: [...at, k] })
    }
  }
  walk(table, "", path)
  return out
}

const nameConverter = (nextHop: boolean): Converter<string> => ({
  expected: nextHop ? "a relay name (a string), or false for MX delivery" : "a strategy name (a string)",
  convert: (value) => {
    if (typeof value === "string" && value !== "") return Either.right(value)
    if (nextHop && (value === 0 || value === "")) return Either.right("mx")
    return Either.left("")
  }
})

/** The stage whose variables a selector may read (Stalwart's variable sets, narrowed where a key needs it earlier). */
const SELECTOR_STAGE: { readonly [G in Keys.Group | "schedule"]: Stage } = {
  route: "domain",
  connection: "host",
  tls: "host",
  schedule: "domain"
}

/** The name a selector always gives, read from what the file wrote, when it is a literal. */
const literalName = (raw: unknown, nextHop: boolean): string | null => {
  if (nextHop && (raw === false || raw === "false" || raw === "")) return "mx"
  if (typeof raw !== "string") return null
  const match = /^\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*$/.exec(raw)
  return match === null ? null : match[1] ?? match[2]!
}

/**
 * A strategy-name expression, built like any key (string, if-list, stage-checked variables); names it gives as
 * literals must name a strategy of the file or a built-in one.
 *
 * @internal
 */
export const selector = (
  group: Keys.Group | "schedule",
  key: ReadonlyArray<string>,
  raw: unknown,
  origin: Model.Origin,
  fallbackName: string,
  options: CompileOptions,
  known: ReadonlyArray<string>,
  issues: Array<RawIssue>,
  nextHop = false
): Model.Selector => {
  const spec: Pick<Keys.KeySpec<string>, "stage" | "kind" | "converter" | "variables"> = {
    stage: SELECTOR_STAGE[group],
    kind: "strategy",
    converter: nameConverter(nextHop),
    ...(group === "schedule" ? { variables: Keys.SCHEDULE_VARIABLES } : {})
  }
  const built = build(spec, fallbackName, key, raw, options)
  issues.push(...built.issues)
  const literals: Array<{ name: string; path: ReadonlyArray<Segment> }> = []
  const single = literalName(raw, nextHop)
  if (single !== null) literals.push({ name: single, path: key })
  if (Array.isArray(raw)) {
    raw.forEach((item, i) => {
      if (!isTable(item)) return
      for (const field of ["then", "else"] as const) {
        const name = literalName(item[field], nextHop)
        if (name !== null) literals.push({ name, path: [...key, i, field] })
      }
    })
  }
  // next-hop names relay hosts and 'local'; MX delivery is false there.
  const names = nextHop ? known.filter((k) => k !== "mx") : known
  for (const { name, path } of literals) {
    if (!known.includes(name)) {
      issues.push({
        path,
        problem: `no ${
          group === "route" && nextHop ? "relay host" : group === "schedule" ? "schedule" : `${group} strategy`
        } is named ` +
          `${JSON.stringify(name)}${didYouMean(name, names)}`,
        found: `the name ${JSON.stringify(name)}`,
        expected: `one of ${names.map((k) => JSON.stringify(k)).join(", ")}${nextHop ? ", or false for MX delivery" : ""}`,
        column: 1
      })
    }
  }
  return {
    setting: built.setting,
    raw,
    origin,
    constant: raw === undefined ? fallbackName : single
  }
}

const constantSetting = <A>(key: string, stage: Stage, value: A): Keys.Setting<A> => {
  const evaluated: Keys.Evaluated<A> = { value, warning: null }
  return { key, stage, evaluate: () => evaluated }
}

/** The relay fields in each layout's spelling: TOML (`[queue.route.<n>]`, `[remote.<id>]`) and JSON. */
const RELAY_FIELDS = {
  address: { toml: "address", json: "address" },
  port: { toml: "port", json: "port" },
  protocol: { toml: "protocol", json: "protocol" },
  implicitTls: { toml: "tls.implicit", json: "implicitTls" },
  allowInvalidCerts: { toml: "tls.allow-invalid-certs", json: "allowInvalidCerts" },
  username: { toml: "auth.username", json: "authUsername" },
  secret: { toml: "auth.secret", json: "authSecret" },
  // This library's (relays.ts): an OAuth 2.0 token for XOAUTH2 in place of the secret, and AUTH without verified TLS.
  token: { toml: "auth.token", json: "authToken" },
  allowPlaintext: { toml: "auth.allow-plaintext", json: "authAllowPlaintext" }
} as const

/** @internal */
export type RelayField = keyof typeof RELAY_FIELDS

/** @internal */
export const RELAY_FIELD_NAMES = Object.keys({
  address: 0,
  port: 0,
  protocol: 0,
  implicitTls: 0,
  allowInvalidCerts: 0,
  username: 0,
  secret: 0,
  token: 0,
  allowPlaintext: 0
} satisfies { [F in RelayField]: 0 }) as ReadonlyArray<RelayField>

/** A relay field's spelling in a layout. @internal */
export const relaySpelling = (field: RelayField, json: boolean): string => RELAY_FIELDS[field][json ? "json" : "toml"]

/** @internal */
export const relayKeys = (json: boolean): ReadonlyArray<string> =>
  Object.values(RELAY_FIELDS).map((f) => (json ? f.json : f.toml))

/**
 * v0.16's `SecretKeyOptional`: `{ "@type": "Value", "secret" }` or `{ "@type": "None" }` (no credentials). A secret
 * kept in an environment variable or a file is refused, with the reason: reading either while loading would make the
 * configuration depend on the process that loads it, and `config convert` would write the secret out.
 */
const secretKeyOptional = (f: Field, issues: Array<RawIssue>): string | null | undefined => {
  const raw = f.raw as { readonly [key: string]: unknown }
  const type = raw["@type"]
  const extra = Object.keys(raw).filter((k) => k !== "@type" && k !== (type === "Value" ? "secret" : ""))
  if (type === "None" && extra.length === 0) return undefined
  if (type === "Value" && extra.length === 0 && typeof raw["secret"] === "string" && raw["secret"] !== "") {
    return raw["secret"]
  }
  const other = type === "EnvironmentVariable" || type === "File"
  issues.push({
    path: other || extra.length === 0 ? [...f.path, type === "Value" ? "secret" : "@type"] : [...f.path, extra[0]!],
    problem: other
      ? `not supported: a secret read from ${type === "File" ? "a file" : "an environment variable"} (give its value)`
      : type === "Value" || type === "None" ? "wrong fields" : "not a SecretKeyOptional",
    // The value is never quoted back: it may be the secret.
    found: typeof type === "string" ? `@type ${JSON.stringify(type)}` : "no @type",
    expected: "{ \"@type\": \"Value\", \"secret\": \"…\" } or { \"@type\": \"None\" }"
  })
  return null
}

/**
 * A relay route from its fields: `address` required, `port` 25, `protocol` smtp, `tls.implicit` true in TOML (Stalwart
 * v0.7–v0.15) and false in JSON (v0.16), credentials both or neither.
 *
 * @internal
 */
export const relay = (
  json: boolean,
  given: ReadonlyArray<Field>,
  at: ReadonlyArray<Segment>,
  issues: Array<RawIssue>
): Model.RelayDefinition | null => {
  const field = (name: RelayField) => given.find((f) => f.key === relaySpelling(name, json))
  const origins: { [field: string]: Model.Origin } = {}
  const problem = (f: Field, expected: string, why = "wrong type of value") => {
    issues.push({ path: f.path, problem: why, found: describeToml(f.raw), expected })
    return null
  }
  const string = (name: RelayField): string | null | undefined => {
    const f = field(name)
    if (f === undefined) return undefined
    origins[name] = f.path
    if (json && name === "secret" && isTable(f.raw)) return secretKeyOptional(f, issues)
    if (typeof f.raw === "string" && f.raw !== "") return f.raw
    if (name !== "secret" && name !== "token") return problem(f, "a non-empty string")
    // The value is never quoted back: it may be the secret.
    issues.push({
      path: f.path,
      problem: "not a non-empty string",
      found: typeof f.raw === "string" ? "an empty string" : `a value of type ${Array.isArray(f.raw) ? "list" : typeof f.raw}`,
      expected: "a non-empty string"
    })
    return null
  }
  const bool = (name: RelayField, fallback: boolean): boolean | null => {
    const f = field(name)
    if (f === undefined) return fallback
    origins[name] = f.path
    return typeof f.raw === "boolean" ? f.raw : problem(f, "true or false")
  }
  const address = string("address")
  if (address === undefined) {
    issues.push({
      path: at,
      problem: "a relay route needs an address",
      found: "no address",
      expected: `${relaySpelling("address", json)} = a host name or an IP address`
    })
  }
  let port = 25
  const portField = field("port")
  if (portField !== undefined) {
    origins["port"] = portField.path
    const n = typeof portField.raw === "string" && /^[0-9]+$/.test(portField.raw) ? Number(portField.raw) : portField.raw
    if (typeof n === "number" && Number.isInteger(n) && n >= 1 && n <= 65535) port = n
    else problem(portField, "a port number (1–65535)", "wrong value")
  }
  let protocol: RelayProtocol = "smtp"
  const protocolField = field("protocol")
  if (protocolField !== undefined) {
    origins["protocol"] = protocolField.path
    const p = typeof protocolField.raw === "string" ? protocolField.raw.toLowerCase() : null
    if (p !== null && (relayProtocols as ReadonlyArray<string>).includes(p)) protocol = p as RelayProtocol
    else problem(protocolField, "one of \"smtp\", \"lmtp\"", "wrong value")
  }
  const implicitTls = bool("implicitTls", !json)
  const allowInvalidCerts = bool("allowInvalidCerts", false)
  const username = string("username")
  const password = string("secret")
  const token = string("token")
  const allowPlaintext = bool("allowPlaintext", false)
  if (password !== undefined && token !== undefined) {
    issues.push({
      path: at,
      problem: "a secret and a token together",
      found: "both",
      expected: `${relaySpelling("secret", json)} (a password: PLAIN, LOGIN) or ${relaySpelling("token", json)} ` +
        "(an OAuth 2.0 token: XOAUTH2)"
    })
  }
  const secret = password !== undefined ? password : token
  if ((username === undefined) !== (secret === undefined)) {
    const missing = username === undefined ? "username" : "secret"
    issues.push({
      path: at,
      problem: `AUTH needs a username and a secret; the ${missing} is missing`,
      found: `only the ${missing === "username" ? "secret" : "username"}`,
      expected: `${relaySpelling("username", json)} and ${relaySpelling("secret", json)} together, or neither`
    })
  }
  if (
    typeof address !== "string" || implicitTls === null || allowInvalidCerts === null || username === null ||
    secret === null || allowPlaintext === null || (password !== undefined && token !== undefined)
  ) return null
  return {
    address,
    port,
    protocol,
    implicitTls,
    allowInvalidCerts,
    auth: typeof username === "string" && typeof secret === "string"
      ? Option.some({
        username,
        secret: Redacted.make(secret),
        ...(typeof token === "string" ? { token: true } : {}),
        ...(allowPlaintext ? { allowPlaintext } : {})
      })
      : Option.none(),
    origins
  }
}

/** The keys of a group, by their spelling in a layout (`source-ips` stands for both source lists). @internal */
export const groupSpellings = (group: Keys.Group, json: boolean): Map<string, Array<Keys.Entry>> => {
  const map = new Map<string, Array<Keys.Entry>>()
  for (const entry of Keys.ENTRIES) {
    if (entry.spec.group !== group) continue
    const spelling = json ? entry.spec.json : entry.spec.strategies
    map.set(spelling, [...(map.get(spelling) ?? []), entry])
  }
  return map
}

/**
 * One field of a named strategy read as its key(s): plain values converted and checked; `source-ips` split into the
 * two families. Returns the values set, and the EHLO names by source address for JSON's `sourceIps`.
 *
 * @internal
 */
export const strategyValue = (
  layout: Exclude<Keys.Layout, "outbound">,
  entries: ReadonlyArray<Keys.Entry>,
  f: Field,
  values: { [name: string]: Model.Valued<unknown> },
  ehloBySource: Map<string, Model.Valued<string>>,
  issues: Array<RawIssue>
) => {
  const json = layout === "json"
  const key = (entry: Keys.Entry) => Model.keyName(layout, entry.spec)
  if (entries[0]!.spec.kind === "ipv4" || entries[0]!.spec.kind === "ipv6") {
    // One list of both families; in JSON a list (or an object keyed "0", "1" …) of { sourceIp, ehloHostname }.
    const items: Array<{ ip: unknown; ehlo: unknown; path: ReadonlyArray<Segment> }> = []
    const list = Array.isArray(f.raw) ? f.raw.map((v, i) => [i, v] as const)
      : json && isTable(f.raw) ? Object.entries(f.raw)
      : !json && typeof f.raw === "string" ? [[0, f.raw] as const]
      : null
    if (list === null) {
      issues.push({
        path: f.path,
        problem: "wrong type of value",
        found: describeToml(f.raw),
        expected: json ? "a list of { sourceIp, ehloHostname }" : "a list of IP addresses"
      })
      return
    }
    for (const [i, item] of list) {
      const path = Array.isArray(f.raw) ? [...f.path, i as number] : [...f.path, String(i)]
      if (json) {
        if (!isTable(item)) {
          issues.push({
            path,
            problem: "wrong type of value",
            found: describeToml(item),
            expected: "{ sourceIp, ehloHostname }"
          })
          continue
        }
        for (const k of Object.keys(item)) {
          if (k !== "sourceIp" && k !== "ehloHostname") {
            issues.push({
              path: [...path, k],
              problem: `unknown field${didYouMean(k, ["sourceIp", "ehloHostname"])}`,
              found: `the field ${JSON.stringify(k)}`,
              expected: "sourceIp, ehloHostname"
            })
          }
        }
        items.push({ ip: item["sourceIp"], ehlo: item["ehloHostname"], path })
      } else {
        items.push({ ip: item, ehlo: undefined, path })
      }
    }
    const v4: Array<string> = []
    const v6: Array<string> = []
    for (const item of items) {
      const ipPath = json ? [...item.path, "sourceIp"] : item.path
      const family = typeof item.ip === "string" ? isIP(item.ip) : 0
      if (family === 0) {
        issues.push({ path: ipPath, problem: "invalid address", found: describeToml(item.ip), expected: "an IP address" })
        continue
      }
      ;(family === 4 ? v4 : v6).push(item.ip as string)
      if (item.ehlo !== undefined) {
        const hostname = Keys.KEYS.ehloName.converter.convert(item.ehlo as string)
        if (typeof item.ehlo !== "string" || Either.isLeft(hostname)) {
          issues.push({
            path: [...item.path, "ehloHostname"],
            problem: "not a valid host name",
            found: describeToml(item.ehlo),
            expected: Keys.KEYS.ehloName.converter.expected
          })
        } else {
          const setting = constantSetting(`${key(entries[0]!)}.ehloHostname`, "connection", hostname.right)
          ehloBySource.set(item.ip as string, { setting, raw: item.ehlo, origin: [...item.path, "ehloHostname"] })
        }
      }
    }
    for (const entry of entries) {
      const value = entry.spec.kind === "ipv4" ? v4 : v6
      values[entry.name] = {
        setting: constantSetting(key(entry), entry.spec.stage, value),
        raw: f.raw,
        origin: f.path
      }
    }
    return
  }
  const entry = entries[0]!
  const read = plainValue(layout, entry.spec, f.raw)
  if (Either.isLeft(read)) {
    issues.push({ path: f.path, ...read.left })
    return
  }
  values[entry.name] = { setting: constantSetting(key(entry), entry.spec.stage, read.right), raw: f.raw, origin: f.path }
}

/** The built-in strategies, added where the file does not define them. @internal */
export const withBuiltIns = (model: {
  routes: Map<string, Model.RouteStrategy>
  connections: Map<string, Model.Strategy>
  tls: Map<string, Model.Strategy>
}, layout: Keys.Layout) => {
  const empty = (name: string): Model.Strategy => ({ name, origin: null, values: {}, ehloBySource: new Map() })
  if (!model.routes.has("mx")) model.routes.set("mx", { ...empty("mx"), type: "mx" })
  if (!model.routes.has("local")) model.routes.set("local", { ...empty("local"), type: "local" })
  if (!model.connections.has("default")) model.connections.set("default", empty("default"))
  if (!model.tls.has("default")) model.tls.set("default", empty("default"))
  if (layout !== "outbound" && !model.tls.has("invalid-tls")) {
    const spec = Keys.KEYS["tls.allowInvalidCerts"]
    model.tls.set("invalid-tls", {
      ...empty("invalid-tls"),
      values: {
        "tls.allowInvalidCerts": {
          setting: constantSetting(Model.keyName(layout, spec as Keys.KeySpec<unknown>), spec.stage, true),
          raw: true,
          origin: null
        }
      }
    })
  }
}

/** Stalwart's default TLS selector (v0.13+): the `invalid-tls` strategy on a retry after a TLS error. @internal */
export const DEFAULT_TLS_SELECTOR = [
  { if: "retry_num > 0 && last_error == 'tls'", then: "'invalid-tls'" },
  { else: "'default'" }
]
