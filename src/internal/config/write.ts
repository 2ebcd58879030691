/**
 * `smtp-transport config convert`: the model written in another layout. A setting with no equivalent in the target
 * (an expression where the target takes plain values, a computed strategy name where the target has no strategies)
 * is an error that names it; what is written is loaded again, and must load, before it is returned.
 *
 * - to `outbound` (v0.7–v0.12): every key becomes the if-list of its group's selector, each branch holding the value
 *   of the strategy it names; per-source EHLO names become `local_ip` branches of `hostname`; relay routes become
 *   `[remote.<name>]` hosts named by `next-hop`.
 * - to `strategies` (v0.13–v0.15) and `json` (v0.16): selectors are written as they are; the implicit strategies of an
 *   `outbound` file become the `default` strategies and the `mx` route, which its keys must then give as plain values.
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { compile } from "../../Expression.js"
import type { OutboundLimiter } from "../../Limiter.js"
import { ConfigError } from "./error.js"
import * as Keys from "./keys.js"
import { formatDuration } from "../duration.js"
import * as Layouts from "./layouts.js"
import * as Limiters from "./limiters.js"
import * as Model from "./model.js"
import { JSON_IP_STRATEGY } from "./plain.js"
import * as Schedule from "./schedule.js"
import type { RawIssue } from "./setting.js"

/** One branch of a selector: a condition (null for the else) and the strategy name it gives. */
interface Branch {
  readonly if: string | null
  readonly name: string
}

const literal = (raw: unknown, nextHop: boolean): string | null => {
  if (nextHop && (raw === false || raw === "false" || raw === "")) return "mx"
  if (typeof raw !== "string") return null
  const match = /^\s*(?:'([^'\\]*)'|"([^"\\]*)")\s*$/.exec(raw)
  return match === null ? null : match[1] ?? match[2]!
}

/** A selector as branches with literal names, or null when it computes a name. */
const branchesOf = (model: Model.Model, group: Keys.Group): ReadonlyArray<Branch> | null => {
  const selector = model.selectors[group]
  const nextHop = model.layout === "outbound" && group === "route"
  if (selector.raw === undefined) return [{ if: null, name: selector.constant ?? Model.FALLBACK_NAME[group] }]
  const single = literal(selector.raw, nextHop)
  if (single !== null) return [{ if: null, name: single }]
  if (!Array.isArray(selector.raw)) return null
  const out: Array<Branch> = []
  for (const item of selector.raw as ReadonlyArray<{ readonly [k: string]: unknown }>) {
    const name = literal(item["then"] ?? item["else"], nextHop)
    if (name === null) return null
    const condition = item["if"]
    out.push({ if: condition === undefined ? null : String(condition), name })
  }
  return out
}

/** Whether a key's raw value in an `outbound` file is a constant (no variable read, not an if-list). */
/** @internal */
export const isConstantRaw = (raw: unknown): boolean => {
  if (Array.isArray(raw) && raw.some((item) => typeof item === "object" && item !== null)) return false
  if (typeof raw !== "string") return true
  const compiled = compile(raw)
  return Either.isRight(compiled) && compiled.right.variables.size === 0 && !raw.includes("$")
}

/** @internal */
export const same = (a: unknown, b: unknown): boolean => {
  if (Duration.isDuration(a) && Duration.isDuration(b)) return Duration.toMillis(a) === Duration.toMillis(b)
  if (Option.isOption(a) && Option.isOption(b)) {
    return Option.isNone(a) ? Option.isNone(b) : Option.isSome(b) && same(a.value, b.value)
  }
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => same(x, b[i]))
  return a === b
}

/** A value as a plain TOML value of the `strategies` layout. @internal */
export const tomlPlain = (spec: Pick<Keys.KeySpec<unknown>, "kind">, value: unknown): unknown => {
  switch (spec.kind) {
    case "durations":
      return (value as ReadonlyArray<Duration.Duration>).map(formatDuration)
    case "attempts":
      return Option.match(value as Option.Option<number>, { onNone: () => false, onSome: (n) => n })
    case "duration":
      return formatDuration(value as Duration.Duration)
    case "delay":
      return Option.match(value as Option.Option<Duration.Duration>, { onNone: () => false, onSome: formatDuration })
    default:
      return value
  }
}

/** A value as the expression source an `outbound` if-list branch holds. */
const expressionSource = (spec: Keys.KeySpec<unknown>, value: unknown): string => {
  const quote = (s: string) => `'${s.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`
  switch (spec.kind) {
    case "hostname":
      return quote(value as string)
    case "ipv4":
    case "ipv6":
      return `[${(value as ReadonlyArray<string>).map(quote).join(", ")}]`
    case "duration":
      return formatDuration(value as Duration.Duration)
    case "delay":
      return Option.match(value as Option.Option<Duration.Duration>, { onNone: () => "false", onSome: formatDuration })
    default:
      return String(value)
  }
}

/** A whole `[queue.outbound]` key holding one value. */
const outboundConstant = (spec: Keys.KeySpec<unknown>, value: unknown): unknown => {
  switch (spec.kind) {
    case "hostname":
      return expressionSource(spec, value)
    case "ipv4":
    case "ipv6":
    case "count":
    case "bool":
      return value
    default:
      return expressionSource(spec, value)
  }
}

/** A value as a JSON field of a v0.16 object. @internal */
export const jsonValue = (spec: Pick<Keys.KeySpec<unknown>, "kind">, value: unknown): unknown => {
  switch (spec.kind) {
    case "durations":
      return (value as ReadonlyArray<Duration.Duration>).map(Duration.toMillis)
    case "attempts":
      return Option.match(value as Option.Option<number>, { onNone: () => false, onSome: (n) => n })
    case "duration":
      return Duration.toMillis(value as Duration.Duration)
    case "delay":
      return Option.match(value as Option.Option<Duration.Duration>, { onNone: () => false, onSome: Duration.toMillis })
    case "strategy":
      return Object.entries(JSON_IP_STRATEGY).find(([, v]) => v === value)![0]
    default:
      return value
  }
}

/** What the conversion found it cannot write, for the error. */
type Problems = Array<RawIssue>

/** A strategy's value of a key, or the key's default in the source layout; null when it is an expression. */
const valueIn = (
  model: Model.Model,
  group: Keys.Group,
  name: string,
  entry: Keys.Entry,
  problems: Problems
): { readonly value: unknown } | null => {
  const strategy = Model.lookup(model, group, name)
  const context = { hostname: model.hostname.value }
  // A relay or local route takes the `mx` route's keys (as `Model.settingsOf`).
  if (group === "route" && strategy !== null && (strategy as Model.RouteStrategy).type !== "mx") {
    return name === "mx" ? { value: Model.fallbackOf(entry.spec, model.layout, context) } : valueIn(model, group, "mx", entry, problems)
  }
  const valued = strategy?.values[entry.name] as Model.Valued<unknown> | undefined
  if (valued === undefined) return { value: Model.fallbackOf(entry.spec, model.layout, context) }
  if (model.layout === "outbound" && !isConstantRaw(valued.raw)) {
    problems.push({
      path: valued.origin ?? [],
      problem: "an expression: the target layout holds plain values in named strategies, chosen by " +
        "[queue.strategy] expressions; write one strategy per case and select it there",
      found: `the expression ${JSON.stringify(valued.raw)}`,
      expected: "a plain value"
    })
    return null
  }
  return { value: valued.setting.evaluate({}).value }
}

/** An expression with the variable `mx` (outside string literals) replaced by the empty string. */
const withoutMx = (source: string): string =>
  source.split(/('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")/).map((part, i) =>
    i % 2 === 1 ? part : part.replace(/(?<![A-Za-z0-9_.$])mx(?![A-Za-z0-9_(])/g, "''")
  ).join("")

/** An if-list (or a plain expression) as v0.16 writes an Expression. */
const jsonExpression = Limiters.jsonExpression

/** The outbound limiters as `[queue.limiter.outbound.<id>]` tables (v0.11.4+, both TOML layouts). */
const limiterTables = (
  limiters: ReadonlyArray<OutboundLimiter>
): Array<readonly [ReadonlyArray<string>, ReadonlyArray<readonly [string, unknown]>]> =>
  limiters.map((l) => [["queue", "limiter", "outbound", l.id], Limiters.tomlFields(l)])

/** Minimal TOML writer: tables in order, dotted keys, inline arrays and inline tables. */
/** @internal */
export const toml = (tables: ReadonlyArray<readonly [ReadonlyArray<string>, ReadonlyArray<readonly [string, unknown]>]>) => {
  const key = (k: string) => (/^[A-Za-z0-9_-]+$/.test(k) ? k : JSON.stringify(k))
  const value = (v: unknown): string => {
    if (typeof v === "string") return JSON.stringify(v)
    if (typeof v === "number" || typeof v === "boolean") return String(v)
    if (Array.isArray(v)) return `[${v.map(value).join(", ")}]`
    if (typeof v === "object" && v !== null) {
      return `{ ${Object.entries(v).map(([k, x]) => `${key(k)} = ${value(x)}`).join(", ")} }`
    }
    throw new Error(`cannot write ${String(v)}`)
  }
  return tables
    .map(([header, entries]) =>
      [`[${header.map(key).join(".")}]`, ...entries.map(([k, v]) => `${k.split(".").map(key).join(".")} = ${value(v)}`)]
        .join("\n")
    )
    .join("\n\n") + "\n"
}

const relayFields = (relay: Model.RelayDefinition, json: boolean, implicitDefault: boolean) => {
  const fields: Array<readonly [string, unknown]> = [[Layouts.relaySpelling("address", json), relay.address]]
  if (relay.port !== 25) fields.push([Layouts.relaySpelling("port", json), relay.port])
  if (relay.protocol !== "smtp") fields.push([Layouts.relaySpelling("protocol", json), relay.protocol])
  if (relay.implicitTls !== implicitDefault) fields.push([Layouts.relaySpelling("implicitTls", json), relay.implicitTls])
  if (relay.allowInvalidCerts) fields.push([Layouts.relaySpelling("allowInvalidCerts", json), true])
  if (Option.isSome(relay.auth)) {
    const auth = relay.auth.value
    fields.push([Layouts.relaySpelling("username", json), auth.username])
    const secret = Redacted.value(auth.secret)
    // v0.16 writes a secret as a SecretKeyOptional object; the token is this library's field, a string.
    fields.push([
      Layouts.relaySpelling(auth.token === true ? "token" : "secret", json),
      json && auth.token !== true ? { "@type": "Value", secret } : secret
    ])
    if (auth.allowPlaintext === true) fields.push([Layouts.relaySpelling("allowPlaintext", json), true])
  }
  return fields
}

/** The names of a group's strategies: the file's and the built-in ones. */
const namesOf = (model: Model.Model, group: Keys.Group): ReadonlyArray<string> =>
  [...Model.strategiesOf(model, group).keys()]

/** Writes the model in the `outbound` layout. */
const toOutbound = (model: Model.Model, limiters: ReadonlyArray<OutboundLimiter>, problems: Problems): string => {
  const target: Keys.Layout = "outbound"
  const context = { hostname: model.hostname.value }
  const entries: Array<readonly [string, unknown]> = []
  const branches: { [G in Keys.Group]?: ReadonlyArray<Branch> | null } = {}
  for (const group of Keys.GROUPS) branches[group] = branchesOf(model, group)
  for (const entry of Keys.ENTRIES) {
    const { spec } = entry
    const group = spec.group
    const list = branches[group]
    const strategies = namesOf(model, group)
    if (list === null || list === undefined) {
      // A computed name: only keys every strategy agrees on can be written.
      const values = strategies.map((name) => valueIn(model, group, name, entry, problems))
      if (values.some((v) => v === null)) continue
      const first = values[0]!.value
      if (values.every((v) => same(v!.value, first))) {
        if (!same(first, Model.fallbackOf(spec, target, context))) entries.push([spec.path.join("."), outboundConstant(spec, first)])
        continue
      }
      const selector = model.selectors[group]
      problems.push({
        path: selector.origin ?? [],
        problem: `the ${group} selector computes a strategy name, and ${Model.keyName(model.layout, spec)} differs ` +
          "between strategies: [queue.outbound] can only hold it as an if-list of literal cases",
        found: `the expression ${JSON.stringify(selector.raw)}`,
        expected: "an if-list whose branches give literal names ('name')"
      })
      continue
    }
    const values = list.map((b) => valueIn(model, group, b.name, entry, problems))
    if (values.some((v) => v === null)) continue
    const bySource = entry.name === "ehloName"
      ? list.map((b) => [...(Model.lookup(model, "connection", b.name)?.ehloBySource ?? new Map()).entries()])
      : list.map(() => [])
    const allSame = values.every((v) => same(v!.value, values[0]!.value)) && bySource.every((s) => s.length === 0)
    if (allSame) {
      const value = values[values.length - 1]!.value
      if (!same(value, Model.fallbackOf(spec, target, context))) entries.push([spec.path.join("."), outboundConstant(spec, value)])
      continue
    }
    const items: Array<{ [k: string]: string }> = []
    // Stalwart evaluates the TLS selector per domain with `mx` still empty; a per-domain key of [queue.outbound] may
    // not read `mx`, so there it reads as the empty string it is.
    const condition = (c: string) => spec.stage === "domain" ? withoutMx(c) : c
    list.forEach((branch, i) => {
      for (const [ip, valued] of bySource[i]!) {
        const condition = `local_ip == '${ip}'`
        items.push({
          if: branch.if === null ? condition : `(${branch.if}) && ${condition}`,
          then: expressionSource(spec, valued.setting.evaluate({}).value)
        })
      }
      const then = expressionSource(spec, values[i]!.value)
      items.push(branch.if === null ? { else: then } : { if: condition(branch.if), then })
    })
    // An if-list ends at its first else.
    const end = items.findIndex((item) => "else" in item)
    entries.push([spec.path.join("."), items.slice(0, end + 1)])
  }
  // The route selector becomes next-hop: relay and local routes by name, MX routes as false.
  const routes = branches.route
  const relays: Array<readonly [ReadonlyArray<string>, ReadonlyArray<readonly [string, unknown]>]> = []
  for (const route of model.routes.values()) {
    if (route.type === "relay") relays.push([["remote", route.name], relayFields(route.relay, false, true)])
  }
  const hop = (name: string) => {
    const route = model.routes.get(name)
    return route === undefined || route.type === "mx" ? false : `'${name}'`
  }
  if (routes === null || routes === undefined) {
    problems.push({
      path: model.selectors.route.origin ?? [],
      problem: "the route selector computes a route name: next-hop can only name relay hosts as literal cases",
      found: `the expression ${JSON.stringify(model.selectors.route.raw)}`,
      expected: "an if-list whose branches give literal names ('name')"
    })
  } else if (routes.some((b) => hop(b.name) !== false)) {
    const items = routes.map((b) => b.if === null ? { else: hop(b.name) } : { if: b.if, then: hop(b.name) })
    entries.push(["next-hop", items.length === 1 ? items[0]!["else"] : items])
  }
  const server = model.hostname.origin === null ? [] : [[["server"], [["hostname", model.hostname.value]]] as const]
  const schedule = Schedule.toOutbound(model, problems)
  return toml([
    ...server,
    [["queue", "outbound"], entries],
    ...relays,
    ...limiterTables(limiters),
    ...(schedule.length === 0 ? [] : [[["queue", "schedule"], schedule] as const])
  ])
}

/** The implicit strategies of an `outbound` file, and every strategy of the others, as plain values. */
const strategyFields = (
  model: Model.Model,
  group: Keys.Group,
  strategy: Model.Strategy,
  json: boolean,
  problems: Problems
): Array<readonly [string, unknown]> => {
  const target: Keys.Layout = json ? "json" : "strategies"
  const context = { hostname: model.hostname.value }
  const fields: Array<readonly [string, unknown]> = []
  const sources: Array<readonly [string, string | undefined]> = []
  for (const entry of Keys.ENTRIES) {
    if (entry.spec.group !== group) continue
    const read = valueIn(model, group, strategy.name, entry, problems)
    if (read === null) continue
    if (entry.spec.kind === "ipv4" || entry.spec.kind === "ipv6") {
      for (const ip of read.value as ReadonlyArray<string>) {
        sources.push([ip, strategy.ehloBySource.get(ip)?.setting.evaluate({}).value])
      }
      continue
    }
    if (entry.name === "ehloName" && strategy.values.ehloName === undefined) continue
    if (same(read.value, Model.fallbackOf(entry.spec, target, context)) && entry.name !== "ehloName") continue
    const spelling = json ? entry.spec.json : entry.spec.strategies
    fields.push([spelling, json ? jsonValue(entry.spec, read.value) : tomlPlain(entry.spec, read.value)])
  }
  if (sources.length > 0) {
    fields.push(
      json
        ? [
          "sourceIps",
          Object.fromEntries(sources.map(([ip, ehlo], i) => [
            String(i),
            ehlo === undefined ? { sourceIp: ip } : { sourceIp: ip, ehloHostname: ehlo }
          ]))
        ]
        : ["source-ips", sources.map(([ip]) => ip)]
    )
  }
  return fields
}

/** Writes the model in the `strategies` (TOML) or `json` layout. */
/** v0.16's default `MtaVirtualQueue.threadsPerNode` (`crates/registry`'s `impl Default for MtaVirtualQueue`). */
const VIRTUAL_QUEUE_THREADS = 25

const toNamed = (
  model: Model.Model,
  limiters: ReadonlyArray<OutboundLimiter>,
  json: boolean,
  problems: Problems
): string => {
  const selectors: Array<readonly [string, unknown]> = []
  for (const group of Keys.GROUPS) {
    const selector = model.selectors[group]
    if (selector.origin === null && model.layout !== "outbound") continue
    if (model.layout === "outbound") {
      if (group !== "route" || selector.raw === undefined) continue
      const list = branchesOf(model, "route")
      if (list === null) {
        problems.push({
          path: selector.origin ?? [],
          problem: "next-hop computes a relay name: write it as an if-list of literal names to convert it",
          found: `the expression ${JSON.stringify(selector.raw)}`,
          expected: "an if-list whose branches give literal names ('name')"
        })
        continue
      }
      const name = (b: Branch) => `'${b.name}'`
      selectors.push([
        group,
        list.length === 1 ? name(list[0]!) : list.map((b) => b.if === null ? { else: name(b) } : { if: b.if, then: name(b) })
      ])
      continue
    }
    selectors.push([group, selector.raw])
  }
  if (model.layout === "outbound") {
    // Stalwart v0.13+ switches to the invalid-tls strategy after a TLS error unless the file says otherwise; an
    // outbound file's single TLS strategy applies on every attempt.
    selectors.push(["tls", "'default'"])
  }
  const schedules = Schedule.toNamed(model, json, problems, isConstantRaw)
  if (schedules.selector !== undefined) selectors.push(["schedule", schedules.selector])
  const written = (group: Keys.Group) =>
    [...Model.strategiesOf(model, group).values()].filter((s) =>
      s.origin !== null || Object.keys(s.values).length > 0 && !(s.name === "invalid-tls" && Object.keys(s.values).length === 1)
    )
  const routes = written("route") as Array<Model.RouteStrategy>
  const connections = written("connection")
  const tls = written("tls")
  if (json) {
    const document: { [k: string]: unknown } = {}
    if (model.hostname.origin !== null) document["SystemSettings"] = { defaultHostname: model.hostname.value }
    if (selectors.length > 0) document["MtaOutboundStrategy"] = Object.fromEntries(selectors.map(([g, raw]) => [g, jsonExpression(raw)]))
    document["MtaRoute"] = routes.map((route) => ({
      "@type": route.type === "mx" ? "Mx" : route.type === "relay" ? "Relay" : "Local",
      name: route.name,
      ...Object.fromEntries(
        route.type === "relay"
          ? relayFields(route.relay, true, false)
          : strategyFields(model, "route", route, true, problems)
      )
    }))
    document["MtaConnectionStrategy"] = connections.map((s) => ({
      name: s.name,
      ...Object.fromEntries(strategyFields(model, "connection", s, true, problems))
    }))
    document["MtaTlsStrategy"] = tls.map((s) => ({
      name: s.name,
      ...Object.fromEntries(strategyFields(model, "tls", s, true, problems))
    }))
    if (schedules.schedules.length > 0) {
      document["MtaDeliverySchedule"] = schedules.schedules.map(([name, fields]) => ({ name, ...Object.fromEntries(fields) }))
    }
    // The schedules' queueId are these objects' ids (their place in the list); threadsPerNode left out is v0.16's 25.
    if (schedules.virtualQueues.length > 0) {
      document["MtaVirtualQueue"] = schedules.virtualQueues.map(({ name, threads }, id) => ({
        id,
        name,
        ...(threads === null ? {} : { threadsPerNode: threads })
      }))
    }
    for (const k of ["MtaConnectionStrategy", "MtaTlsStrategy"]) if ((document[k] as Array<unknown>).length === 0) delete document[k]
    if (limiters.length > 0) document["MtaOutboundThrottle"] = limiters.map(Limiters.jsonObject)
    return JSON.stringify(document, null, 2) + "\n"
  }
  const tables: Array<readonly [ReadonlyArray<string>, ReadonlyArray<readonly [string, unknown]>]> = []
  if (model.hostname.origin !== null) tables.push([["server"], [["hostname", model.hostname.value]]])
  tables.push([["queue", "strategy"], selectors])
  for (const route of routes) {
    const fields = route.type === "relay" ? relayFields(route.relay, false, true) : strategyFields(model, "route", route, false, problems)
    tables.push([["queue", "route", route.name], [["type", route.type], ...fields]])
  }
  const sourceNames = new Map<string, string>()
  for (const s of connections) {
    tables.push([["queue", "connection", s.name], strategyFields(model, "connection", s, false, problems)])
    for (const [ip, valued] of s.ehloBySource) {
      const name = valued.setting.evaluate({}).value
      const seen = sourceNames.get(ip)
      if (seen !== undefined && seen !== name) {
        problems.push({
          path: valued.origin ?? [],
          problem: `the source address ${ip} has two EHLO names in two connection strategies; ` +
            "[queue.source-ip.\"<ip>\"] gives one per address",
          found: `${JSON.stringify(seen)} and ${JSON.stringify(name)}`,
          expected: "one EHLO name per source address"
        })
      }
      sourceNames.set(ip, name)
    }
  }
  for (const s of tls) tables.push([["queue", "tls", s.name], strategyFields(model, "tls", s, false, problems)])
  for (const [ip, name] of sourceNames) tables.push([["queue", "source-ip", ip], [["ehlo-hostname", name]]])
  for (const [name, fields] of schedules.schedules) tables.push([["queue", "schedule", name], fields])
  // v0.13–v0.15 require threads-per-node; a queue whose count the source left to v0.16's default gets that default.
  for (const { name, threads } of schedules.virtualQueues) {
    tables.push([["queue", "virtual", name], [["threads-per-node", threads ?? VIRTUAL_QUEUE_THREADS]]])
  }
  // A table with no key still names a strategy that must exist.
  return toml([...tables, ...limiterTables(limiters)])
}

/**
 * The model in the target layout as text, or every setting that has no equivalent there.
 *
 * @internal
 */
export const write = (
  model: Model.Model,
  limiters: ReadonlyArray<OutboundLimiter>,
  to: Keys.Layout,
  file: string | null,
  issueOf: (raw: RawIssue) => ConfigError["issues"][number]
): Either.Either<string, ConfigError> => {
  const problems: Problems = []
  const text = to === "outbound"
    ? toOutbound(model, limiters, problems)
    : toNamed(model, limiters, to === "json", problems)
  if (problems.length > 0) return Either.left(new ConfigError({ file, issues: problems.map(issueOf) }))
  return Either.right(text)
}
