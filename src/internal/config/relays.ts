/**
 * Routes in the v0.7–v0.12 layout: the `[remote.<id>]` tables (relay hosts, plain values as Stalwart's
 * `parse_relay_host` reads them) and the `queue.outbound.next-hop` expression naming one of them, or `local`, or
 * nothing (MX delivery). Its own module so that the other layouts' loaders can produce the same `Route` values.
 */
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { isIP } from "node:net"
import { compile, type CompileOptions, type Value, type Variables } from "../../Expression.js"
import type { LocalRoute, MxRoute, RelayAuth, RelayRoute, Route } from "../../Settings.js"
import * as editDistance from "../editDistance.js"
import { hostnameProblem, type Converter } from "./convert.js"
import { describe, describeToml } from "./describe.js"
import type { Evaluated, KeySpec } from "./keys.js"
import { ROUTE_KEY } from "./keys.js"
import { build, type RawIssue } from "./setting.js"

/** The route of MX delivery, `next-hop` unset or false. @internal */
export const MX_ROUTE: MxRoute = { _tag: "mx", name: "mx" }

/** The built-in id `local`. @internal */
export const LOCAL_ROUTE: LocalRoute = { _tag: "local", name: "local" }

/**
 * The configured `next-hop`, ready to evaluate with the domain variables. Right: the route (with a warning when a
 * computed value could not be used and MX delivery was used instead); Left: the expression named no relay, a
 * failure of the domain's delivery.
 *
 * @internal
 */
export interface RouteSetting {
  readonly key: string
  readonly evaluate: (variables: Variables) => Either.Either<Evaluated<Route>, string>
}

const isTable = (raw: unknown): raw is { readonly [key: string]: unknown } =>
  typeof raw === "object" && raw !== null && !Array.isArray(raw) && !(raw instanceof Date)

/** The keys of a `[remote.<id>]` table; `auth.token` and `auth.allow-plaintext` are this library's. */
const REMOTE_KEYS: { readonly [table: string]: ReadonlyArray<string> } = {
  "": ["address", "port", "protocol", "tls", "auth"],
  tls: ["implicit", "allow-invalid-certs"],
  auth: ["username", "secret", "token", "allow-plaintext"]
}

/** A relay id, `false` (or "") for MX delivery. */
const relayId: Converter<Option.Option<string>> = {
  expected: "a relay id (a string naming a [remote.<id>] table, or 'local'), or false for MX delivery",
  convert: (value) =>
    value === 0 || value === ""
      ? Either.right(Option.none())
      : typeof value === "string"
      ? Either.right(Option.some(value))
      : Either.left("")
}

/** @internal */
export const NEXT_HOP: KeySpec<Option.Option<string>> = {
  path: ROUTE_KEY.path,
  group: "route",
  strategies: "route",
  json: "route",
  stage: ROUTE_KEY.stage,
  kind: "hostname",
  converter: relayId,
  fallback: Option.none(),
  fallbackDoc: "none: MX delivery",
  doc: "The route: the id of a [remote.<id>] relay, 'local' (handed to the LocalDelivery service), or false for " +
    "MX delivery. A constant naming no relay is a load error; a computed one fails the domain's delivery (kind " +
    "route, deferred)."
}

/** The keys of `[remote.<id>]` for the reference: key, default, what it accepts, what it means. @internal */
export const REMOTE_REFERENCE: ReadonlyArray<readonly [string, string, string, string]> = [
  ["address", "(required)", "a host name or an IP address", "The relay; a name is resolved by A/AAAA with ip-strategy."],
  ["port", "`25`", "an integer from 1 to 65535", "The relay's port."],
  ["protocol", "`smtp`", "smtp or lmtp", "LMTP (RFC 2033): LHLO, and a reply per recipient after the message."],
  ["tls.implicit", "`true`", "true or false", "TLS from the first byte (port 465); false: STARTTLS as tls.starttls says."],
  ["tls.allow-invalid-certs", "`false`", "true or false", "Accept a certificate that does not verify."],
  ["auth.username", "none", "a string", "AUTH (RFC 4954) with this user name; needs auth.secret or auth.token."],
  ["auth.secret", "none", "a string", "The password, sent with PLAIN (or LOGIN); never shown in a report or a log."],
  [
    "auth.token",
    "none",
    "a string",
    "This library's: an OAuth 2.0 access token, sent with XOAUTH2, in place of auth.secret."
  ],
  [
    "auth.allow-plaintext",
    "`false`",
    "true or false",
    "This library's: send the credentials without TLS, or over TLS whose certificate did not verify."
  ]
]

const unknownRelay = (id: string, known: ReadonlyArray<string>) => {
  const near = known.filter((k) => editDistance.distance(k, id) <= 2)
  return `${JSON.stringify(id)}, which names no [remote.${id}] table${
    near.length > 0 ? ` (did you mean ${near.map((k) => JSON.stringify(k)).join(" or ")}?)` : ""
  }; the relays are ${known.length === 0 ? "none" : known.join(", ")}, and local is built in`
}

const routeOf = (
  id: Option.Option<string>,
  relays: ReadonlyMap<string, RelayRoute>
): Either.Either<Route, string> => {
  if (Option.isNone(id)) return Either.right(MX_ROUTE)
  if (id.value === "local") return Either.right(LOCAL_ROUTE)
  const relay = relays.get(id.value)
  return relay === undefined ? Either.left(unknownRelay(id.value, [...relays.keys()])) : Either.right(relay)
}

/**
 * The constant values of `next-hop` (the whole value, or a branch's `then`/`else`) that name no relay: load errors,
 * where a computed one is a failure of the delivery.
 */
const constantIssues = (
  raw: unknown,
  keyPath: ReadonlyArray<string>,
  /** Every `[remote.<id>]` id of the file, valid or not. */
  declared: ReadonlySet<string>,
  options: CompileOptions
): ReadonlyArray<RawIssue> => {
  const slots: Array<{ readonly path: ReadonlyArray<string | number>; readonly source: string }> = []
  if (typeof raw === "string") slots.push({ path: keyPath, source: raw })
  else if (Array.isArray(raw)) {
    raw.forEach((item, i) => {
      if (!isTable(item)) return
      for (const field of ["then", "else"] as const) {
        const value = item[field]
        if (typeof value === "string") slots.push({ path: [...keyPath, i, field], source: value })
      }
    })
  }
  const issues: Array<RawIssue> = []
  for (const slot of slots) {
    const compiled = compile(slot.source, options)
    if (Either.isLeft(compiled) || compiled.right.variables.size > 0 || slot.source.includes("$")) continue
    const value: Value = compiled.right.evaluate({})
    const id = relayId.convert(value)
    // A table that is there but has issues of its own is not also reported as missing.
    if (Either.isLeft(id) || Option.isNone(id.right) || id.right.value === "local" || declared.has(id.right.value)) {
      continue
    }
    issues.push({
      path: slot.path,
      problem: `unknown relay: ${unknownRelay(id.right.value, [...declared].filter((d) => d !== "local"))}`,
      found: describe(value),
      expected: "the id of a [remote.<id>] table, 'local', or false",
      column: 1
    })
  }
  return issues
}

const flag = (raw: unknown): boolean | null =>
  typeof raw === "boolean" ? raw : raw === "true" ? true : raw === "false" ? false : null

const port = (raw: unknown): number | null => {
  const n = typeof raw === "number" ? raw : typeof raw === "string" && /^[0-9]{1,5}$/.test(raw) ? Number(raw) : Number.NaN
  return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : null
}

/** One `[remote.<id>]` table, or its issues. */
const relay = (
  id: string,
  table: { readonly [key: string]: unknown },
  issues: Array<RawIssue>
): RelayRoute | null => {
  const base = ["remote", id]
  const before = issues.length
  const issue = (path: ReadonlyArray<string>, problem: string, raw: unknown, expected: string) =>
    issues.push({ path: [...base, ...path], problem, found: describeToml(raw), expected, column: 1 })

  for (const [table_, names] of Object.entries(REMOTE_KEYS)) {
    const node = table_ === "" ? table : table[table_]
    if (node === undefined) continue
    if (!isTable(node)) {
      issue([table_], "not a table", node, `a table with the keys ${names.join(", ")}`)
      continue
    }
    for (const name of Object.keys(node)) {
      if (names.includes(name)) continue
      const near = names.filter((k) => editDistance.distance(k, name) <= 2 || k.replace(/-/g, "_") === name)
      issues.push({
        path: [...base, ...(table_ === "" ? [] : [table_]), name],
        problem: `unknown key${near.length > 0 ? ` (did you mean ${near.map((k) => JSON.stringify(k)).join(" or ")}?)` : ""}`,
        found: `the key ${JSON.stringify(name)}`,
        expected: `one of ${names.join(", ")}`
      })
    }
  }
  const tls = isTable(table["tls"]) ? table["tls"] : {}
  const auth = isTable(table["auth"]) ? table["auth"] : {}

  const address = table["address"]
  if (address === undefined) {
    issues.push({
      path: base,
      problem: "the relay has no address",
      found: "no address key",
      expected: "address = \"<host name or IP address>\""
    })
  } else if (typeof address !== "string" || (isIP(address) === 0 && hostnameProblem(address) !== null)) {
    const why = typeof address === "string" ? ` (${hostnameProblem(address)})` : ""
    issue(["address"], `not a host name or an IP address${why}`, address, "a host name or an IP address")
  }
  const portValue = table["port"] === undefined ? 25 : port(table["port"])
  if (portValue === null) issue(["port"], "not a port", table["port"], "an integer from 1 to 65535")
  const protocol = table["protocol"] ?? "smtp"
  if (protocol !== "smtp" && protocol !== "lmtp") issue(["protocol"], "unknown protocol", protocol, "smtp or lmtp")
  const booleanAt = (node: { readonly [key: string]: unknown }, path: ReadonlyArray<string>, fallback: boolean) => {
    const raw = node[path[path.length - 1]!]
    if (raw === undefined) return fallback
    const value = flag(raw)
    if (value === null) issue(path, "not a boolean", raw, "true or false")
    return value ?? fallback
  }
  // Stalwart v0.7–v0.12: a relay speaks TLS from the first byte unless told otherwise.
  const implicitTls = booleanAt(tls, ["tls", "implicit"], true)
  const allowInvalidCerts = booleanAt(tls, ["tls", "allow-invalid-certs"], false)
  const allowPlaintext = booleanAt(auth, ["auth", "allow-plaintext"], false)

  const stringAt = (name: string): string | undefined => {
    const raw = auth[name]
    if (raw === undefined) return undefined
    if (typeof raw === "string" && raw !== "") return raw
    // The value is never quoted back: it may be the secret.
    issues.push({
      path: [...base, "auth", name],
      problem: "not a non-empty string",
      found: typeof raw === "string" ? "an empty string" : `a value of type ${Array.isArray(raw) ? "list" : typeof raw}`,
      expected: "a non-empty string"
    })
    return undefined
  }
  const username = stringAt("username")
  const secret = stringAt("secret")
  const token = stringAt("token")
  let credentials: Option.Option<RelayAuth> = Option.none()
  const has = (name: string) => auth[name] !== undefined
  if (has("secret") && has("token")) {
    issues.push({
      path: [...base, "auth", "token"],
      problem: "auth.secret and auth.token together",
      found: "both keys",
      expected: "auth.secret (a password: PLAIN, LOGIN) or auth.token (an OAuth 2.0 token: XOAUTH2)"
    })
  } else if (has("username") !== (has("secret") || has("token"))) {
    issues.push({
      path: [...base, "auth"],
      problem: "auth.username and auth.secret (or auth.token) go together",
      found: has("username") ? "a user name without a secret" : "a secret without a user name",
      expected: "both, or neither"
    })
  } else if (username !== undefined && (secret ?? token) !== undefined) {
    credentials = Option.some({
      username,
      secret: Redacted.make((secret ?? token)!),
      ...(token === undefined ? {} : { token: true }),
      ...(allowPlaintext ? { allowPlaintext } : {})
    })
  }
  if (allowPlaintext && !has("username")) {
    issue(["auth", "allow-plaintext"], "auth.allow-plaintext without credentials", auth["allow-plaintext"], "auth.username and auth.secret")
  }
  if (issues.length > before || typeof address !== "string" || portValue === null) return null
  return {
    _tag: "relay",
    name: id,
    address,
    port: portValue,
    protocol: protocol as RelayRoute["protocol"],
    implicitTls,
    allowInvalidCerts,
    auth: credentials
  }
}

/** Every `[remote.<id>]` table of the file. @internal */
export const relays = (root: unknown, issues: Array<RawIssue>): ReadonlyMap<string, RelayRoute> => {
  const out = new Map<string, RelayRoute>()
  const remote = isTable(root) ? root["remote"] : undefined
  if (remote === undefined) return out
  if (!isTable(remote)) {
    issues.push({ path: ["remote"], problem: "not a table", found: describeToml(remote), expected: "[remote.<id>] tables" })
    return out
  }
  for (const [id, table] of Object.entries(remote)) {
    if (id === "local") {
      issues.push({
        path: ["remote", id],
        problem: "local is the built-in local route",
        found: "a [remote.local] table",
        expected: "another id for a relay"
      })
      continue
    }
    if (!isTable(table)) {
      issues.push({ path: ["remote", id], problem: "not a table", found: describeToml(table), expected: "a relay table" })
      continue
    }
    const built = relay(id, table, issues)
    if (built !== null) out.set(id, built)
  }
  return out
}

/**
 * `queue.outbound.next-hop` (`raw`, undefined when absent) against the file's relays: the setting, and the issues of
 * the key and of the `[remote]` tables.
 *
 * @internal
 */
export const route = (
  root: unknown,
  raw: unknown,
  options: CompileOptions
): { readonly setting: RouteSetting; readonly issues: ReadonlyArray<RawIssue> } => {
  const issues: Array<RawIssue> = []
  const known = relays(root, issues)
  const keyPath = ["queue", "outbound", ...ROUTE_KEY.path]
  const built = build(NEXT_HOP, Option.none(), keyPath, raw, options)
  issues.push(...built.issues)
  const remote = isTable(root) && isTable(root["remote"]) ? root["remote"] : {}
  if (built.issues.length === 0) issues.push(...constantIssues(raw, keyPath, new Set(Object.keys(remote)), options))
  const key = keyPath.join(".")
  const setting: RouteSetting = {
    key,
    evaluate: (variables) => {
      const id = built.setting.evaluate(variables)
      return Either.map(
        Either.mapLeft(routeOf(id.value, known), (why) => `${key} computed ${why}`),
        (value) => ({ value, warning: id.warning })
      )
    }
  }
  return { setting, issues }
}
