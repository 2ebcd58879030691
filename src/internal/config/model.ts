/**
 * The one model the three layouts load into: expressions that choose a route, a connection and a TLS strategy by
 * name, and the named strategies, each holding a `Setting` per key of the key table in its group. The `outbound`
 * layout (v0.7–v0.12) is the special case of one implicit strategy of each kind whose settings are expressions; the
 * `strategies` (v0.13–v0.15) and `json` (v0.16) layouts have plain values in named strategies.
 *
 * From the model the per-key settings of `Config` are derived (`settingsOf`): a key's setting evaluates its group's
 * selector and then the chosen strategy's value, so the stage evaluations (`internal/settings/evaluate`) are the same
 * for every layout.
 */
import * as Either from "effect/Either"
import type { Variables } from "../../Expression.js"
import type { RelayRoute, Route } from "../../Settings.js"
import type { RouteSetting } from "./relays.js"
import * as Keys from "./keys.js"
import type { Segment } from "./locate.js"

/** Where a value was read: its path in the file (TOML keys or JSON fields), or null for a default. @internal */
export type Origin = ReadonlyArray<Segment> | null

/** One key's value in a strategy: the setting, what the file held (for `convert`) and where. @internal */
export interface Valued<A> {
  readonly setting: Keys.Setting<A>
  /** The value as the file wrote it (TOML or JSON); undefined for a default. */
  readonly raw: unknown
  readonly origin: Origin
}

/** A named connection or TLS strategy, or the implicit one of the `outbound` layout. @internal */
export interface Strategy {
  readonly name: string
  readonly origin: Origin
  /** The keys of the strategy's group that the file sets; the others are at their default. */
  readonly values: { readonly [N in Keys.Name]?: Valued<Keys.ValueOf<N>> }
  /** Connection strategies: the EHLO name per source address (`[queue.source-ip."<ip>"]`, `sourceIps[]`). */
  readonly ehloBySource: ReadonlyMap<string, Valued<string>>
}

/** A relay route's fields as the file gave them, with their origins. @internal */
export interface RelayDefinition extends Omit<RelayRoute, "_tag" | "name"> {
  /** Where each field set by the file was read. */
  readonly origins: { readonly [field: string]: Origin }
}

/** A named route. `mx` routes carry their keys (`limits`, `ip-lookup`) as a strategy does. @internal */
export type RouteStrategy =
  | (Strategy & { readonly type: "mx" })
  | (Strategy & { readonly type: "relay"; readonly relay: RelayDefinition })
  | (Strategy & { readonly type: "local" })

/** An expression choosing a strategy by name. @internal */
export interface Selector {
  readonly setting: Keys.Setting<string>
  readonly raw: unknown
  readonly origin: Origin
  /** The name it always gives, when it reads no variable. */
  readonly constant: string | null
}

/**
 * A delivery schedule: `[queue.schedule]` (the one schedule of the `outbound` layout, named `default`, whose values
 * may be expressions), a `[queue.schedule.<name>]` table or an `MtaDeliverySchedule` object (plain values). Absent
 * values are at the layout's default.
 *
 * @internal
 */
export interface ScheduleDefinition {
  readonly name: string
  readonly origin: Origin
  readonly values: { readonly [N in Keys.ScheduleName]?: Valued<Keys.ScheduleValues[N]> }
  /**
   * The virtual queue it puts messages in: v0.13–v0.15's `queue-name`, v0.16's `queueId` resolved to its
   * `MtaVirtualQueue`'s name (read and carried, not used).
   */
  readonly queueName?: Valued<string> | undefined
  /** v0.16's `queueId` as the file wrote it, until it is resolved to a name. */
  readonly queueId?: { readonly raw: unknown; readonly origin: Origin } | undefined
}

/**
 * A virtual queue (`[queue.virtual.<name>]` in v0.13–v0.15, an `MtaVirtualQueue` object in v0.16): what a schedule's
 * queue name refers to. Read and carried by `convert`, not used (a transport has no queue threads).
 *
 * @internal
 */
export interface VirtualQueue {
  readonly name: string
  /** `threads-per-node` / `threadsPerNode`; `null` when the file left it out (v0.16's default then). */
  readonly threads: number | null
  readonly origin: Origin
}

/** @internal */
export interface Model {
  readonly layout: Keys.Layout
  readonly selectors: { readonly [G in Keys.Group]: Selector }
  /** `[queue.strategy] schedule`, `MtaOutboundStrategy.schedule`; the constant `default` in the `outbound` layout. */
  readonly scheduleSelector: Selector
  readonly schedules: ReadonlyMap<string, ScheduleDefinition>
  /** The virtual queues the file defines (strategies and JSON layouts), by name. */
  readonly virtualQueues?: ReadonlyMap<string, VirtualQueue> | undefined
  readonly routes: ReadonlyMap<string, RouteStrategy>
  readonly connections: ReadonlyMap<string, Strategy>
  readonly tls: ReadonlyMap<string, Strategy>
  /** The EHLO name every strategy falls back to, and where it came from. */
  readonly hostname: { readonly value: string; readonly origin: Origin; readonly from: string }
}

/** The name a selector falls back to when its value cannot be used (Stalwart: `"default"`, the MX route). @internal */
export const FALLBACK_NAME: { readonly [G in Keys.Group]: string } = { route: "mx", connection: "default", tls: "default" }

/** The built-in strategies of the `strategies` and `json` layouts, which a file may redefine. @internal */
export const BUILT_IN: { readonly [G in Keys.Group]: ReadonlyArray<string> } = {
  route: ["mx", "local"],
  connection: ["default"],
  tls: ["default", "invalid-tls"]
}

/** The strategies of a group. @internal */
export const strategiesOf = (model: Model, group: Keys.Group): ReadonlyMap<string, Strategy> =>
  group === "route" ? model.routes : group === "connection" ? model.connections : model.tls

/** The strategy a name chooses, or null when the file has none of that name. @internal */
export const lookup = (model: Model, group: Keys.Group, name: string): Strategy | null =>
  strategiesOf(model, group).get(name) ?? null

/** The route a route name stands for. Unknown names are Stalwart's default MX route (a warning says so). @internal */
export const routeOf = (model: Model, name: string): Route => {
  const route = model.routes.get(name)
  if (route === undefined || route.type === "mx") return { _tag: "mx", name }
  if (route.type === "local") return { _tag: "local", name }
  const { address, allowInvalidCerts, auth, implicitTls, port, protocol } = route.relay
  return { _tag: "relay", name, address, port, protocol, implicitTls, allowInvalidCerts, auth }
}

/** The default of a key in a layout, resolved for the file. @internal */
export const fallbackOf = (spec: Keys.KeySpec<unknown>, layout: Keys.Layout, context: Keys.DefaultContext): unknown =>
  layout !== "outbound" && spec.strategiesFallback !== undefined
    ? spec.strategiesFallback
    : typeof spec.fallback === "function"
    ? (spec.fallback as (c: Keys.DefaultContext) => unknown)(context)
    : spec.fallback

const constant = <A>(key: string, stage: Keys.Setting<A>["stage"], value: A): Keys.Setting<A> => {
  const evaluated: Keys.Evaluated<A> = { value, warning: null }
  return { key, stage, evaluate: () => evaluated }
}

/**
 * Which strategy of a group applies with these variables, and the warning when the selector's name could not be used
 * (a value that is not a name, or a name the file does not define: Stalwart's defaults apply).
 *
 * @internal
 */
export const choose = (
  model: Model,
  group: Keys.Group,
  variables: Variables
): { readonly name: string; readonly strategy: Strategy | null; readonly warning: string | null } => {
  const selector = model.selectors[group]
  const chosen = selector.setting.evaluate(variables)
  const name = chosen.value
  const strategy = lookup(model, group, name)
  if (strategy !== null || BUILT_IN[group].includes(name)) return { name, strategy, warning: chosen.warning }
  return {
    name,
    strategy: null,
    warning: `${selector.setting.key}: no ${group} strategy is named ${JSON.stringify(name)}; used Stalwart's ` +
      `default ${group === "route" ? "MX route" : `${group} strategy`} instead`
  }
}

/**
 * The settings of `Config`, derived from the model: per key, a setting that evaluates the key's selector and then the
 * chosen strategy's value (the key's default when the strategy does not set it). When a group has one strategy and
 * its selector is a constant, the key's setting is the strategy's own (a constant costs nothing to evaluate).
 *
 * @internal
 */
export const settingsOf = (
  model: Model,
  context: Keys.DefaultContext
): Keys.ConfigSettings & { readonly route: RouteSetting } => {
  const settings: { [name: string]: any } = {}
  for (const { at, name, spec } of Keys.ENTRIES) {
    const key = keyName(model.layout, spec)
    const fallback = constant(key, spec.stage, fallbackOf(spec, model.layout, context))
    const group = spec.group
    const strategies = strategiesOf(model, group)
    const selector = model.selectors[group]
    const only = selector.constant === null ? undefined : strategies.get(selector.constant)
    const bySource = name === "ehloName"
    let setting: Keys.Setting<unknown>
    if (
      selector.constant !== null && (only === undefined ? BUILT_IN[group].includes(selector.constant) : true) &&
      (group !== "route" || only === undefined || (only as RouteStrategy).type === "mx") &&
      !(bySource && only !== undefined && only.ehloBySource.size > 0)
    ) {
      // One strategy applies to every delivery: its own setting (a constant costs nothing to evaluate).
      setting = (only?.values[name] as Valued<unknown> | undefined)?.setting ?? fallback
    } else {
      setting = {
        key,
        stage: spec.stage,
        evaluate: (variables) => {
          const chosen = choose(model, group, variables)
          const strategy = chosen.strategy
          // A relay or local route has no keys of its own: the `mx` route's apply (a relay's addresses are resolved
          // by `ip-strategy` and cut by `limits.multihomed` like any host's).
          const source = group === "route" && strategy !== null && (strategy as RouteStrategy).type !== "mx"
            ? model.routes.get("mx") ?? null
            : strategy
          const valued = source === null ? undefined : source.values[name] as Valued<unknown> | undefined
          if (bySource && strategy !== null) {
            const source = strategy.ehloBySource.get(String(variables["local_ip"] ?? ""))
            if (source !== undefined) return source.setting.evaluate(variables)
          }
          const evaluated = (valued?.setting ?? fallback).evaluate(variables)
          return chosen.warning === null || evaluated.warning !== null ? evaluated : { ...evaluated, warning: chosen.warning }
        }
      }
    }
    let node = settings
    for (const segment of at.slice(0, -1)) node = node[segment] ??= {}
    node[at[at.length - 1]!] = setting
  }
  // A route name no route has fails the domain's delivery (as relays.ts does for next-hop): mail is never sent by
  // MX when the configuration meant another route.
  const key = model.selectors.route.setting.key
  const route: RouteSetting = {
    key,
    evaluate: (variables) => {
      const chosen = choose(model, "route", variables)
      if (chosen.strategy === null && !BUILT_IN.route.includes(chosen.name)) {
        return Either.left(
          `${key} computed ${JSON.stringify(chosen.name)}, which names no route; the routes are ${
            [...model.routes.keys()].join(", ")
          }`
        )
      }
      return Either.right({ value: routeOf(model, chosen.name), warning: chosen.warning })
    }
  }
  return { ...(settings as Keys.ConfigSettings), route }
}

/** A key's full name in a layout, as warnings and issues name it. @internal */
export const keyName = (layout: Keys.Layout, spec: Keys.KeySpec<unknown>): string =>
  layout === "outbound"
    ? ["queue", "outbound", ...spec.path].join(".")
    : layout === "strategies"
    ? `queue.${spec.group}.<name>.${spec.strategies}`
    : `${JSON_OBJECT[spec.group]}.${spec.json}`

/** The v0.16 registry object of each group. @internal */
export const JSON_OBJECT: { readonly [G in Keys.Group]: string } = {
  route: "MtaRoute",
  connection: "MtaConnectionStrategy",
  tls: "MtaTlsStrategy"
}
