/**
 * `smtp-transport config show`: the effective model, every value with where it came from (file:line, or default),
 * in the spelling of the file's layout. Secrets are never printed.
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import type { Value } from "../../Expression.js"
import type { OutboundLimiter } from "../../Limiter.js"
import * as Limiters from "./limiters.js"
import { render as renderValue } from "./describe.js"
import * as Keys from "./keys.js"
import * as Layouts from "./layouts.js"
import type { Position, Segment } from "./locate.js"
import * as Model from "./model.js"
import * as Schedule from "./schedule.js"
import { renderDefault } from "./setting.js"
import { jsonValue, tomlPlain } from "./write.js"

/** What the loaded file says about itself. @internal */
export interface Shown {
  readonly layout: Keys.Layout
  readonly file: string | null
  readonly model: Model.Model
  readonly warnings: ReadonlyArray<string>
  readonly notUsed: ReadonlyArray<string>
  /** The enabled outbound limiters (not part of the model of strategies, shown after it). */
  readonly limiters?: ReadonlyArray<OutboundLimiter> | undefined
}

/** The Stalwart versions of each layout. @internal */
export const LAYOUT_VERSIONS: { readonly [L in Keys.Layout]: string } = {
  outbound: "Stalwart v0.7–v0.12, [queue.outbound]",
  strategies: "Stalwart v0.13–v0.15, [queue.strategy] and named strategies",
  json: "Stalwart v0.16+, registry objects as JSON"
}

const formatPath = (path: ReadonlyArray<Segment>): string =>
  path.reduce<string>((out, s) => typeof s === "number" ? `${out}[${s}]` : out === "" ? s : `${out}.${s}`, "")

/** A raw value as the file wrote it, on one line. */
const rawText = (raw: unknown): string => {
  if (typeof raw === "string") return JSON.stringify(raw)
  if (Array.isArray(raw)) return `[${raw.map(rawText).join(", ")}]`
  if (typeof raw === "object" && raw !== null) {
    return `{ ${Object.entries(raw).map(([k, v]) => `${k} = ${rawText(v)}`).join(", ")} }`
  }
  return String(raw)
}

const valueText = (value: unknown): string => {
  if (Duration.isDuration(value)) return Duration.format(value)
  if (Option.isOption(value)) return Option.match(value, { onNone: () => "false", onSome: valueText })
  if (Array.isArray(value)) return renderValue(value as Value)
  if (typeof value === "string") return JSON.stringify(value)
  return String(value)
}

/**
 * The model as lines of text; `locate` gives a path's position in the file (null when unknown, e.g. JSON).
 *
 * @internal
 */
export const show = (shown: Shown, locate: (path: ReadonlyArray<Segment>) => Position | null): string => {
  const { layout, model } = shown
  const file = shown.file ?? "<config>"
  const where = (origin: Model.Origin): string => {
    if (origin === null) return "default"
    const position = locate(origin)
    return position === null ? `${file}: ${formatPath(origin)}` : `${file}:${position.line}`
  }
  const lines: Array<string> = []
  const row = (indent: string, key: string, value: string, origin: Model.Origin) =>
    lines.push(`${indent}${key} = ${value}`.padEnd(72) + `  # ${where(origin)}`)
  lines.push(`# ${file}: layout ${layout} (${LAYOUT_VERSIONS[layout]})`)
  lines.push(`# EHLO name by default: ${JSON.stringify(model.hostname.value)} (${model.hostname.from})`.padEnd(72) +
    `  # ${where(model.hostname.origin)}`)
  const spelling = (spec: Keys.KeySpec<unknown>) =>
    layout === "outbound" ? spec.path.join(".") : layout === "strategies" ? spec.strategies : spec.json
  const strategy = (group: Keys.Group, s: Model.Strategy, indent: string) => {
    const context = { hostname: model.hostname.value }
    const seen = new Set<string>()
    for (const entry of Keys.ENTRIES) {
      if (entry.spec.group !== group) continue
      const valued = s.values[entry.name] as Model.Valued<unknown> | undefined
      const key = spelling(entry.spec)
      if (layout !== "outbound" && entry.spec.kind === "ipv6" && seen.has(key)) continue
      seen.add(key)
      if (layout !== "outbound" && (entry.spec.kind === "ipv4")) {
        const v4 = (s.values["sourceIp.v4"]?.setting.evaluate({}).value ?? []) as ReadonlyArray<string>
        const v6 = (s.values["sourceIp.v6"]?.setting.evaluate({}).value ?? []) as ReadonlyArray<string>
        row(indent, key, renderValue([...v4, ...v6]), valued?.origin ?? null)
        for (const [ip, ehlo] of s.ehloBySource) row(`${indent}  `, `${ip} ehlo`, valueText(ehlo.setting.evaluate({}).value), ehlo.origin)
        continue
      }
      // A value as the file's layout writes it.
      const written = (value: unknown) =>
        layout === "outbound"
          ? renderDefault(value)
          : JSON.stringify(layout === "json" ? jsonValue(entry.spec, value) : tomlPlain(entry.spec, value))
      if (valued === undefined) {
        const fallback = Model.fallbackOf(entry.spec, layout, context)
        row(indent, key, entry.name === "ehloName" ? `${valueText(fallback)} (the default EHLO name)` : written(fallback), null)
        continue
      }
      const text = layout === "outbound" ? rawText(valued.raw) : written(valued.setting.evaluate({}).value)
      row(indent, key, text, valued.origin)
    }
  }
  if (layout === "outbound") {
    const mx = model.routes.get("mx")!
    lines.push("", "[queue.outbound]  # one implicit route (mx), connection and TLS strategy")
    for (const group of Keys.GROUPS) strategy(group, Model.lookup(model, group, Model.FALLBACK_NAME[group]) ?? mx, "")
    const hop = model.selectors.route
    row("", "next-hop", hop.raw === undefined ? "false (MX delivery)" : rawText(hop.raw), hop.origin)
  } else {
    lines.push("", "# strategy selectors")
    for (const group of Keys.GROUPS) {
      const selector = model.selectors[group]
      row("", group, rawText(selector.raw ?? `'${Model.FALLBACK_NAME[group]}'`), selector.origin)
    }
  }
  for (const route of model.routes.values()) {
    if (layout === "outbound" && route.type === "mx") continue
    if (route.origin === null && route.type !== "mx") continue
    lines.push("", `# route ${JSON.stringify(route.name)}: ${route.type}${route.origin === null ? " (built in)" : ""}`)
    if (route.type === "mx" && layout !== "outbound") strategy("route", route, "  ")
    if (route.type === "relay") {
      const json = layout === "json"
      const r = route.relay
      const field = (name: Layouts.RelayField, value: string) =>
        row("  ", Layouts.relaySpelling(name, json), value, r.origins[name] ?? null)
      field("address", JSON.stringify(r.address))
      field("port", String(r.port))
      field("protocol", JSON.stringify(r.protocol))
      field("implicitTls", String(r.implicitTls))
      field("allowInvalidCerts", String(r.allowInvalidCerts))
      if (Option.isSome(r.auth)) {
        field("username", JSON.stringify(r.auth.value.username))
        // A token is shown under its own key (and origin), as the file spells it.
        field(r.auth.value.token === true ? "token" : "secret", "<redacted>")
        if (r.auth.value.allowPlaintext === true) field("allowPlaintext", "true")
      }
    }
  }
  if (layout !== "outbound") {
    for (const group of ["connection", "tls"] as const) {
      for (const s of Model.strategiesOf(model, group).values()) {
        lines.push("", `# ${group} strategy ${JSON.stringify(s.name)}${s.origin === null ? " (built in)" : ""}`)
        strategy(group, s, "  ")
      }
    }
  }
  // The delivery schedules: [queue.schedule] of an outbound file, else the selector and every schedule.
  const scheduleRows = (definition: Model.ScheduleDefinition, indent: string) => {
    const values = Schedule.constantValues(layout, definition)
    for (const n of Keys.SCHEDULE_NAMES) {
      const spec = Keys.SCHEDULE_KEYS[n] as Keys.ScheduleKeySpec<unknown>
      const valued = definition.values[n] as Model.Valued<unknown> | undefined
      const key = Schedule.spelling(n, layout)
      if (layout === "outbound") {
        row(indent, key, valued === undefined ? renderDefault(spec.fallback) : rawText(valued.raw), valued?.origin ?? null)
        continue
      }
      // A named schedule expires by one of them: the other is not shown.
      const attempts = Option.isSome(values.maxAttempts)
      if ((n === "expire" && attempts) || (n === "maxAttempts" && !attempts)) continue
      const value = values[n]
      row(indent, key, rawText(layout === "json" ? jsonValue(spec, value) : tomlPlain(spec, value)), valued?.origin ?? null)
    }
  }
  if (layout === "outbound") {
    lines.push("", "[queue.schedule]  # the one delivery schedule")
    scheduleRows(model.schedules.get("default")!, "")
  } else {
    const selector = model.scheduleSelector
    lines.push("", "# schedule selector")
    row("", "schedule", rawText(selector.raw), selector.origin)
    for (const definition of model.schedules.values()) {
      lines.push("", `# schedule ${JSON.stringify(definition.name)}${definition.origin === null ? " (built in)" : ""}`)
      if (definition.queueName !== undefined) row("  ", "queue-name", JSON.stringify(definition.queueName.raw), definition.queueName.origin)
      scheduleRows(definition, "  ")
    }
  }
  for (const limiter of shown.limiters ?? []) {
    const origin: Model.Origin = limiter.origin ?? ["queue", "limiter", "outbound", limiter.id]
    lines.push("", `# outbound limiter ${JSON.stringify(limiter.id)}, checked at the ${limiter.stage} stage`.padEnd(72) +
      `  # ${where(origin)}`)
    if (layout === "json") {
      const { description: _, ...fields } = Limiters.jsonObject(limiter)
      for (const [k, v] of Object.entries(fields)) lines.push(`  ${k} = ${JSON.stringify(v)}`)
    } else {
      // An if-list's source is already TOML; anything else is a string or a list of names.
      for (const [k, v] of Limiters.tomlFields(limiter)) {
        lines.push(`  ${k} = ${k === "match" && Array.isArray(v) ? limiter.match!.source : JSON.stringify(v)}`)
      }
    }
  }
  if (shown.notUsed.length > 0) {
    lines.push("", "# not used by the transport:", ...shown.notUsed.map((n) => `#   ${n}`))
  }
  if (shown.warnings.length > 0) lines.push("", "# warnings:", ...shown.warnings.map((w) => `#   ${w}`))
  return lines.join("\n")
}
