/**
 * The domain stage: the domain's settings and route, its MTA-STS policy and its MX plan (or its relay), with the hosts an enforced policy
 * excludes taken out. Shared by `deliver` and `explain`.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Tracer from "effect/Tracer"
import type { DomainPlan, HostPlan, MtaStsPlan } from "../../DeliveryReport.js"
import type * as Dns from "../../Dns.js"
import * as MtaSts from "../../MtaSts.js"
import * as MxPlan from "../../MxPlan.js"
import type { Config } from "../../OutboundConfig.js"
import type * as PolicyCache from "../../PolicyCache.js"
import type { DomainSettings, Route } from "../../Settings.js"
import type { TransportOptions } from "../../Transport.js"
import * as TransportError from "../../TransportError.js"
import { domainStrategies, evaluateDomain } from "../settings/evaluate.js"
import { keptMxPlan, mxPlanOf, type Plans } from "./plans.js"
import { reportError } from "./report.js"
import { domainVariables, type DomainVariables, type Group, type RequestVariables } from "./request.js"
import { relayPlan, routePlan, unknownRoute } from "./route.js"

/** What the domain stage decided. @internal */
export interface DomainStage {
  readonly variables: DomainVariables
  readonly settings: DomainSettings
  /** The route and TLS strategies the selectors chose, and the delivery schedule, by name. */
  readonly strategies: { readonly route: string; readonly tls: string; readonly schedule: string }
  /** The domain's route; `null` when `next-hop` named no relay (`error` says so). */
  readonly route: Route | null
  /** Every stage's warnings for this domain (a fallback to a default is worth telling), in evaluation order. */
  readonly warnings: Array<string>
  readonly mtaSts: MtaSts.Outcome | null
  readonly plan: MxPlan.MxPlan | null
  /** Hosts an enforced MTA-STS policy does not list: never contacted, a permanent policy error each. */
  readonly excluded: ReadonlyArray<readonly [MxPlan.MxHost, TransportError.TransportError]>
  readonly error: TransportError.TransportError | null
}

/** @internal */
export const domainStage = (
  config: Config,
  options: TransportOptions.Service,
  requestVariables: RequestVariables,
  group: Group,
  /** The parent of the MX lookup's span; the current span when absent. */
  span?: Tracer.AnySpan
): Effect.Effect<DomainStage, never, Dns.Dns | MtaSts.PolicyFetcher | PolicyCache.PolicyCache> => {
  const stage = domainStageOrNow(config, options, requestVariables, group, span, null)
  return Effect.isEffect(stage) ? stage : Effect.succeed(stage)
}

/**
 * `domainStage`, or the stage itself when it needed nothing to run (a plan from the cache, no MTA-STS policy to
 * resolve): for a caller that goes on in the same step.
 *
 * @internal
 */
export const domainStageOrNow = (
  config: Config,
  options: TransportOptions.Service,
  requestVariables: RequestVariables,
  group: Group,
  span: Tracer.AnySpan | undefined,
  /** The layer's plan cache, where `span` records nothing; `null`: plan from the lookups. */
  plans: Plans | null
): DomainStage | Effect.Effect<DomainStage, never, Dns.Dns | MtaSts.PolicyFetcher | PolicyCache.PolicyCache> => {
  // Neither an Effect.gen nor a suspend: on every delivery's path, called by the step that runs it (deliver's and
  // explain's yield), so the settings are evaluated then, and the steps are the lookups' own.
  const stage = settingsStage(config, requestVariables, group)
  if (stage.error !== null) return Effect.succeed(stage)
  const { settings, warnings } = stage
  const mode = settings.tls.mtaSts
  // Local recipients are handed over as they are; a relay is the one host, with no MTA-STS (as Stalwart).
  if (settings.route._tag === "local") return Effect.succeed(stage)
  if (settings.route._tag === "relay") return Effect.succeed({ ...stage, plan: relayPlan(group.target, settings.route) })
  // An address literal goes to MxPlan as written so that it skips DNS; a name goes in its A-label form.
  const planWith = (mtaSts: MtaSts.Outcome | null) => {
    // A plan the cache keeps: the stage in the step that asked for it.
    const kept = plans === null || group.literal ? undefined : keptMxPlan(plans, group.target, settings.limits.mx)
    if (kept !== undefined) return withPlan(stage, group, mtaSts, kept)
    return Effect.matchEffect(
      plans === null || group.literal
        ? MxPlan.plan(group.literal ? group.domain : group.target, settings.limits.mx, { parent: span })
        : mxPlanOf(plans, group.target, settings.limits.mx),
      {
        onFailure: (error) => Effect.succeed<DomainStage>({ ...stage, mtaSts, error }),
        onSuccess: (planned) => Effect.succeed(withPlan(stage, group, mtaSts, planned))
      }
    )
  }
  // An address literal has no policy to publish; `disable` means not even asking.
  if (group.literal || mode === "disable") return planWith(null)
  return Effect.flatMap(
    Effect.either(MtaSts.resolve(group.target, {
      mode,
      timeout: settings.timeouts["mta-sts"],
      port: options.mtaStsPort,
      ca: options.ca,
      parent: span
    })),
    (resolved) => {
      if (Either.isLeft(resolved)) return Effect.succeed<DomainStage>({ ...stage, error: resolved.left })
      if (resolved.right.warning !== null) warnings.push(resolved.right.warning)
      const planned = planWith(resolved.right)
      return Effect.isEffect(planned) ? planned : Effect.succeed(planned)
    }
  )
}

/**
 * The domain stage's settings, route and strategies, before any lookup (`error`: `next-hop` named no relay).
 *
 * @internal
 */
export const settingsStage = (config: Config, requestVariables: RequestVariables, group: Group): DomainStage => {
  const variables = domainVariables(requestVariables, group)
  const evaluated = evaluateDomain(config, variables)
  const { settings } = evaluated
  return {
    variables,
    settings,
    route: evaluated.routeError === null ? settings.route : null,
    strategies: domainStrategies(config, variables),
    warnings: [...evaluated.warnings],
    mtaSts: null,
    plan: null,
    excluded: [],
    error: evaluated.routeError === null ? null : unknownRoute(evaluated.routeError)
  }
}

/** The stage with its MX plan, the hosts an enforced MTA-STS policy does not list taken out. */
const withPlan = (
  stage: DomainStage,
  group: Group,
  mtaSts: MtaSts.Outcome | null,
  planned: MxPlan.MxPlan
): DomainStage => {
  const policy = mtaSts?.policy ?? null
  const listed = (host: MxPlan.MxHost) => policy === null || MtaSts.hostAllowed(policy, host.name)
  const enforced = MtaSts.enforced(policy)
  const excluded = enforced
    ? planned.hosts.filter((h) => !listed(h)).map((h) => [h, notListed(h.name)] as const)
    : []
  if (policy !== null && policy.mode === "testing") {
    for (const host of planned.hosts.filter((h) => !listed(h))) {
      stage.warnings.push(`MTA-STS (testing): ${host.name} is not listed in the policy of ${group.target}`)
    }
  }
  // Without an enforced policy every host stays: the plan as planned.
  const plan = enforced ? { ...planned, hosts: planned.hosts.filter(listed) } : planned
  return { ...stage, mtaSts, plan, excluded, error: null }
}

const notListed = (host: string) =>
  TransportError.make("mta-sts", "policy", `${host} is not listed in the domain's enforced MTA-STS policy`, true)

/** The MTA-STS policy in force, if any. @internal */
export const policyOf = (stage: DomainStage): MtaSts.Policy | null => stage.mtaSts?.policy ?? null

/** @internal */
export const domainPlanOf = (
  group: Group,
  stage: DomainStage,
  hosts: ReadonlyArray<HostPlan>,
  error: TransportError.TransportError | null
): DomainPlan => ({
  domain: group.domain,
  recipients: group.recipients,
  route: stage.route === null ? null : routePlan(stage.route),
  // In preference order, as a reader expects them; DNS answers in any order.
  mx: stage.plan?.records.map((r) => ({ exchange: r.exchange, priority: r.priority }))
    .sort((a, b) => a.priority - b.priority) ?? [],
  hosts,
  dropped: stage.plan?.dropped.map((h) => h.name) ?? [],
  limits: stage.settings.limits,
  strategies: stage.strategies,
  mtaSts: stage.mtaSts === null ? null : mtaStsPlan(stage.mtaSts),
  error: error === null ? null : reportError(error)
})

const mtaStsPlan = (outcome: MtaSts.Outcome): MtaStsPlan => ({
  status: outcome.status,
  source: outcome.source,
  id: outcome.id,
  policy: outcome.policy === null
    ? null
    : { mode: outcome.policy.mode, mx: outcome.policy.mx, maxAge: outcome.policy.maxAge },
  error: outcome.error === null ? null : reportError(outcome.error)
})

/** A host an enforced MTA-STS policy excludes, as the plan shows it. @internal */
export const excludedHostPlan = (
  [host, error]: readonly [MxPlan.MxHost, TransportError.TransportError]
): HostPlan => ({
  host: host.name,
  preference: host.preference,
  implicit: host.implicit,
  strategy: null,
  addresses: [],
  truncated: [],
  sourceIps: { v4: [], v6: [] },
  strategies: null,
  mtaSts: "mismatch",
  dane: null,
  error: reportError(error)
})
