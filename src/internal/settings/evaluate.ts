/**
 * One evaluation per stage: every key of the stage (the key table's, in its order) evaluated with the stage's
 * variables and put where its name says. `deliver` and `explain` both call these, so what a plan shows is what a delivery uses.
 */
import * as Either from "effect/Either"
import type { Variables } from "../../Expression.js"
import type { ConnectionSettings, DomainSettings, HostSettings } from "../../Settings.js"
import * as Keys from "../config/keys.js"
import * as Model from "../config/model.js"
import * as Schedule from "../config/schedule.js"
import { MX_ROUTE, type RouteSetting } from "../config/relays.js"

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

/**
 * A stage's values, read one by one. The stages below are object literals in the key table's order (the order their
 * keys and warnings come in; a test holds them to the table): built key by key from the table's paths, every read and
 * write went through a property name known only at run time, which V8 handles by its slowest (megamorphic) lookups,
 * about 2 % of a reused message's CPU for the three stages.
 */
class Reader {
  private warnings: Array<string> | null = null
  constructor(readonly variables: Variables) {}
  value<A>(setting: Keys.Setting<A>): A {
    const evaluated = setting.evaluate(this.variables)
    // A selector's warning comes with every key it chooses for: said once.
    if (evaluated.warning !== null && !(this.warnings ??= []).includes(evaluated.warning)) {
      this.warnings.push(evaluated.warning)
    }
    return evaluated.value
  }
  evaluation<A>(settings: A): Evaluation<A> {
    return { settings, warnings: this.warnings ?? noWarnings }
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

/**
 * The settings evaluated once per destination domain, with the domain variables (message, `rcpt`, `rcpt_domain`).
 *
 * @internal
 */
export const evaluateDomain = (
  config: Keys.ConfigSettings & { readonly route: RouteSetting },
  variables: Variables
): DomainEvaluation => {
  // The route first: it goes last in the settings (where the table's keys end) and its warning first.
  const route = config.route.evaluate(variables)
  const read = new Reader(variables)
  const { settings, warnings } = read.evaluation<DomainSettings>({
    limits: { mx: read.value(config.limits.mx), multihomed: read.value(config.limits.multihomed) },
    limiterWait: read.value(config.limiterWait),
    timeouts: { "mta-sts": read.value(config.timeouts["mta-sts"]) },
    tls: { mtaSts: read.value(config.tls.mtaSts) },
    route: Either.isLeft(route) ? MX_ROUTE : route.right.value
  })
  if (Either.isLeft(route)) return { settings, warnings, routeError: route.left }
  const { warning } = route.right
  return { settings, warnings: warning === null ? warnings : [warning, ...warnings], routeError: null }
}

/**
 * The settings evaluated once per MX host: the domain variables and `mx`.
 *
 * @internal
 */
export const evaluateHost = (config: Keys.ConfigSettings, variables: Variables): Evaluation<HostSettings> => {
  const read = new Reader(variables)
  return read.evaluation<HostSettings>({
    ipStrategy: read.value(config.ipStrategy),
    sourceIp: { v4: read.value(config.sourceIp.v4), v6: read.value(config.sourceIp.v6) },
    tls: {
      starttls: read.value(config.tls.starttls),
      dane: read.value(config.tls.dane),
      allowInvalidCerts: read.value(config.tls.allowInvalidCerts)
    },
    connectionAttemptDelay: read.value(config.connectionAttemptDelay)
  })
}

/**
 * The settings evaluated once per connection: the host's variables, `remote_ip` and `local_ip`.
 *
 * @internal
 */
export const evaluateConnection = (
  config: Keys.ConfigSettings,
  variables: Variables
): Evaluation<ConnectionSettings> => {
  const read = new Reader(variables)
  const { reuse, timeouts } = config
  return read.evaluation<ConnectionSettings>({
    ehloName: read.value(config.ehloName),
    timeouts: {
      connect: read.value(timeouts.connect),
      greeting: read.value(timeouts.greeting),
      tls: read.value(timeouts.tls),
      ehlo: read.value(timeouts.ehlo),
      "mail-from": read.value(timeouts["mail-from"]),
      "rcpt-to": read.value(timeouts["rcpt-to"]),
      data: read.value(timeouts.data)
    },
    reuse: { messages: read.value(reuse.messages), idle: read.value(reuse.idle), age: read.value(reuse.age) }
  })
}

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
  schedule: Schedule.nameOf(config.model, variables)
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
