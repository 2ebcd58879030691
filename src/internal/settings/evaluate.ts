/**
 * One evaluation per stage, from the key table: every key of the stage evaluated with the stage's variables and put
 * where its name says. `deliver` and `explain` both call these, so what a plan shows is what a delivery uses.
 */
import * as Either from "effect/Either"
import type { Variables } from "../../Expression.js"
import type { ConnectionSettings, DomainSettings, HostSettings, Stage } from "../../Settings.js"
import * as Keys from "../config/keys.js"
import * as Model from "../config/model.js"
import * as Schedule from "../config/schedule.js"
import { MX_ROUTE, type RouteSetting } from "../config/relays.js"
import { extend } from "../extend.js"

/**
 * A stage's settings and the warnings met evaluating them (a computed value that could not be used, replaced by the
 * key's default).
 *
 * @internal
 */
export interface Evaluation<A> {
  readonly settings: A
  readonly warnings: ReadonlyArray<string>
}

const noWarnings: ReadonlyArray<string> = []

const evaluator = <S extends Stage>(stage: S) => {
  const entries = Keys.stageEntries(stage)
  return (config: Keys.ConfigSettings, variables: Variables): Evaluation<Keys.StageSettings<S>> => {
    const settings: { [name: string]: any } = {}
    let warnings: Array<string> | null = null
    for (const { at } of entries) {
      let setting: any = config
      let node = settings
      for (let i = 0; i < at.length - 1; i++) {
        setting = setting[at[i]!]
        node = node[at[i]!] ??= {}
      }
      const evaluated = (setting[at[at.length - 1]!] as Keys.Setting<unknown>).evaluate(variables)
      // A selector's warning comes with every key it chooses for: said once.
      if (evaluated.warning !== null && !(warnings ??= []).includes(evaluated.warning)) warnings.push(evaluated.warning)
      node[at[at.length - 1]!] = evaluated.value
    }
    return { settings: settings as Keys.StageSettings<S>, warnings: warnings ?? noWarnings }
  }
}

/**
 * The domain stage's evaluation: `routeError` says the route expression named no relay, which fails the domain's
 * delivery (`settings.route` is then MX delivery, not to be used).
 *
 * @internal
 */
export interface DomainEvaluation extends Evaluation<DomainSettings> {
  readonly routeError: string | null
}

const domainKeys = evaluator("domain")

/**
 * The settings evaluated once per destination domain, with the domain variables (message, `rcpt`, `rcpt_domain`).
 *
 * @internal
 */
export const evaluateDomain = (
  config: Keys.ConfigSettings & { readonly route: RouteSetting },
  variables: Variables
): DomainEvaluation => {
  const keys = domainKeys(config, variables)
  const route = config.route.evaluate(variables)
  if (Either.isLeft(route)) {
    return { settings: extend(keys.settings, { route: MX_ROUTE }), warnings: keys.warnings, routeError: route.left }
  }
  const { value, warning } = route.right
  return {
    settings: extend(keys.settings, { route: value }),
    warnings: warning === null ? keys.warnings : [warning, ...keys.warnings],
    routeError: null
  }
}

/**
 * The settings evaluated once per MX host: the domain variables and `mx`.
 *
 * @internal
 */
export const evaluateHost: (config: Keys.ConfigSettings, variables: Variables) => Evaluation<HostSettings> =
  evaluator("host")

/**
 * The settings evaluated once per connection: the host's variables, `remote_ip` and `local_ip`.
 *
 * @internal
 */
export const evaluateConnection: (config: Keys.ConfigSettings, variables: Variables) => Evaluation<ConnectionSettings> =
  evaluator("connection")

/**
 * The route and TLS strategy names the selectors choose for a domain (TLS with `mx` still empty, as Stalwart's first
 * evaluation for MTA-STS), and the schedule's, for the plan.
 *
 * @internal
 */
export const domainStrategies = (
  config: { readonly model: Model.Model },
  variables: Variables
): { readonly route: string; readonly tls: string; readonly schedule: string } => ({
  route: Model.choose(config.model, "route", variables).name,
  tls: Model.choose(config.model, "tls", variables).name,
  schedule: Schedule.evaluate(config.model, variables).settings.name
})

/**
 * The connection and TLS strategy names the selectors choose for an MX host, for the plan.
 *
 * @internal
 */
export const hostStrategies = (
  config: { readonly model: Model.Model },
  variables: Variables
): { readonly connection: string; readonly tls: string } => ({
  connection: Model.choose(config.model, "connection", variables).name,
  tls: Model.choose(config.model, "tls", variables).name
})
