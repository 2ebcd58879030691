/**
 * One destination domain, delivered: the domain stage, then its MX hosts (or its relay) in order, each raced and
 * tried until one takes the transaction; or its recipients handed to `LocalDelivery` when the route is `local`.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { identity } from "effect/Function"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import * as Candidates from "../../Candidates.js"
import type { Connector } from "../../Connector.js"
import type * as Dane from "../../Dane.js"
import type { AttemptRecord, DomainPlan, HostPlan, RecipientResult } from "../../DeliveryReport.js"
import type { Dns } from "../../Dns.js"
import * as MtaSts from "../../MtaSts.js"
import type * as MxPlan from "../../MxPlan.js"
import type { MxHost } from "../../MxPlan.js"
import type { PolicyCache } from "../../PolicyCache.js"
import * as Limiter from "../../Limiter.js"
import { evaluateHost, hostStrategies } from "../settings/evaluate.js"
import { type DomainStage, domainPlanOf, domainStageOrNow, excludedHostPlan, policyOf, settingsStage } from "./domain.js"
import { type Delivery, type HostStage, tryHost } from "./host.js"
import { hostDane, hostDaneNow } from "./dane.js"
import * as plans from "./plans.js"
import { allHostsFailed, failedBy, type HostFailure, hostPlan } from "./report.js"
import { type Group, hostVariables, type RequestVariables } from "./request.js"
import { deliverLocal, relayUnresolved } from "./route.js"
import * as Duration from "effect/Duration"

/** @internal */
export interface DomainRun {
  readonly recipients: ReadonlyArray<RecipientResult>
  readonly attempts: ReadonlyArray<AttemptRecord>
  readonly plan: DomainPlan
  readonly warnings: ReadonlyArray<string>
}

/** @internal */
export const deliverDomain = <A = DomainRun>(
  delivery: Delivery,
  requestVariables: RequestVariables,
  group: Group,
  /** The domain's span, `Transport.deliverDomain`: the parent of its lookups' and attempts' spans. */
  span: Tracer.Span,
  /** What the caller makes of the run, applied in the step that ends it (a `map` would be two more). */
  then: (run: DomainRun) => A = identity as (run: DomainRun) => A
): Effect.Effect<A, never, Dns | Connector | MtaSts.PolicyFetcher | PolicyCache> =>
  // Neither an Effect.gen nor a flatMap where the stage needed nothing to run: it goes on in this step.
  andThen(domainStageOrNow(delivery.config, delivery.options, requestVariables, group, span, delivery.plans), (stage) => {
    const { plan, warnings } = stage
    if (stage.route?._tag === "local") {
      return Effect.map(deliverLocal(stage.route, {
        domain: group.domain,
        sender: delivery.sender,
        recipients: group.recipients,
        message: delivery.message,
        requireTls: delivery.requireTls
      }), (recipients) =>
        then({
          recipients,
          attempts: [],
          plan: domainPlanOf(group, stage, [], null),
          warnings
        }))
    }
    const attempts: Array<AttemptRecord> = []
    const hostPlans: Array<HostPlan> = stage.excluded.map(excludedHostPlan)
    const hostErrors: Array<HostFailure> = stage.excluded.map(([, error]) => ({ error, host: null }))
    const error = stage.error ?? (plan !== null && plan.hosts.length === 0 ? hostErrors[0]!.error : null)
    if (plan === null || error !== null) {
      return Effect.succeed(then({
        recipients: group.recipients.map((rcpt) => failedBy(rcpt, error!, null)),
        attempts,
        plan: domainPlanOf(group, stage, hostPlans, error),
        warnings
      }))
    }
    // Started by the step that calls it (it goes as far as it can without one): after the limiters' wait, if any.
    const run = () => hostLoop(delivery, group, stage, plan, attempts, hostPlans, hostErrors, span, then)
    const limiter = delivery.limiter
    if (limiter === null) return run()
    // Limiters keyed at the domain stage (sender, sender_domain, rcpt_domain): held for the whole domain delivery.
    // The wait is interruptible; once held, the permits are given back whatever happens.
    return Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(
        Effect.either(restore(limiter.acquire(
          Limiter.buckets(delivery.config.limiters, "domain", stage.variables),
          stage.settings.limiterWait
        ))),
        (limited) =>
          Either.isLeft(limited)
            ? Effect.succeed(then({
              recipients: group.recipients.map((rcpt) => failedBy(rcpt, limited.left, null)),
              attempts,
              plan: domainPlanOf(group, stage, hostPlans, limited.left),
              warnings
            }))
            : Effect.ensuring(restore(run()), limited.right)
      )
    )
  })

/**
 * The message-stage limiters (keyed on `sender`, `sender_domain`, or nothing; Stalwart's "sender" limiters): one
 * count per message, however many domains it goes to, held while all of them are delivered. The wait is bounded by
 * the shortest `limiter-wait` of the message's domains (no domain waits longer than its own bound); past it, every
 * recipient is deferred with kind `concurrency` or `rate`, and nothing is looked up or contacted.
 *
 * @internal
 */
export const limitMessage = <R>(
  delivery: Delivery,
  requestVariables: RequestVariables,
  groups: ReadonlyArray<Group>,
  run: () => Effect.Effect<ReadonlyArray<DomainRun>, never, R>
): Effect.Effect<ReadonlyArray<DomainRun>, never, R> => {
  const limiter = delivery.limiter
  const buckets = limiter === null ? [] : Limiter.buckets(delivery.config.limiters, "message", requestVariables)
  if (limiter === null || buckets.length === 0) return run()
  const stages = groups.map((group) => settingsStage(delivery.config, requestVariables, group))
  const wait = stages.reduce((shortest, stage) => Duration.min(shortest, stage.settings.limiterWait), Duration.infinity)
  return Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.either(restore(limiter.acquire(buckets, wait))), (limited) =>
      Either.isLeft(limited)
        ? Effect.succeed(groups.map((group, i): DomainRun => ({
          recipients: group.recipients.map((rcpt) => failedBy(rcpt, limited.left, null)),
          attempts: [],
          plan: domainPlanOf(group, stages[i]!, [], limited.left),
          warnings: stages[i]!.warnings
        })))
        : Effect.ensuring(restore(run()), limited.right))
  )
}

/**
 * The host's stage with its DANE decision, field by field: a spread adding `dane` is V8's slow path (`extend`). The
 * `satisfies` names every key, optional ones included, so a field added to `HostStage` cannot be dropped here.
 */
const withDane = (stage: HostStage, dane: Dane.HostDane | null): HostStage => ({
  variables: stage.variables,
  settings: stage.settings,
  limiterWait: stage.limiterWait,
  relay: stage.relay,
  dane
} satisfies Record<keyof Required<HostStage>, unknown>)

/** `f` of the value now, or after the effect: a value known at once costs no step. */
const andThen = <A, B, E, R, E2, R2>(
  value: A | Effect.Effect<A, E, R>,
  f: (a: A) => Effect.Effect<B, E2, R2>
): Effect.Effect<B, E | E2, R | R2> => Effect.isEffect(value) ? Effect.flatMap(value, f) : f(value)

const hostLoop = <A>(
  delivery: Delivery,
  group: Group,
  stage: DomainStage,
  plan: MxPlan.MxPlan,
  attempts: Array<AttemptRecord>,
  hostPlans: Array<HostPlan>,
  hostErrors: Array<HostFailure>,
  span: Tracer.Span,
  then: (run: DomainRun) => A
): Effect.Effect<A, never, Dns | Connector | MtaSts.PolicyFetcher | PolicyCache> => {
  // Not an Effect.gen: one host is the usual case, and each `yield*` of a generator is a step and its frames.
  const { warnings } = stage
  const relay = stage.route?._tag === "relay" ? stage.route : null
  const policy = policyOf(stage)
  const enforced = MtaSts.enforced(policy)

  // A host's settings are evaluated when the pull reaches it, and kept for its race and session.
  // The pull evaluates a host's settings just before it hands that host over: the last host's stage is the one
  // asked for (no Map per message).
  let staged: { readonly host: MxHost; readonly stage: HostStage } | null = null
  const settingsOf = (host: MxHost) => {
    const variables = hostVariables(stage.variables, host)
    const evaluated = evaluateHost(delivery.config, variables)
    if (evaluated.warnings.length > 0) warnings.push(...evaluated.warnings)
    staged = {
      host,
      stage: {
        variables,
        settings: evaluated.settings,
        limiterWait: stage.settings.limiterWait,
        relay
      }
    }
    const { ipStrategy, sourceIp } = evaluated.settings
    return { ipStrategy, sourceIp, multihomed: stage.settings.limits.multihomed }
  }

  const done = (results: ReadonlyArray<RecipientResult> | null): A =>
    then({
      recipients: results ?? allHostsFailed(group.recipients, hostErrors),
      attempts,
      plan: domainPlanOf(group, stage, hostPlans, null),
      warnings
    })
  // The next host: from the plan cache's pull in this step when its addresses are kept.
  const pull = delivery.plans === null ? null : plans.hosts(delivery.plans, plan, settingsOf)
  const hosts = pull === null
    ? Candidates.hosts(plan, (host) => Effect.sync(() => settingsOf(host)), { parent: span })
    : null
  const next = (): Effect.Effect<A, never, Dns | Connector | MtaSts.PolicyFetcher | PolicyCache> => {
    const pulled = pull === null ? hosts!.next : pull()
    if (pulled === null || !Effect.isEffect(pulled)) return onHost(pulled)
    return Effect.flatMap(pulled, (host) => onHost(Option.getOrNull(host)))
  }

  // The host's attempt, its DANE decision made (`null`: none).
  const attempt = (
    host: Candidates.HostCandidates,
    hostStage: HostStage,
    strategies: ReturnType<typeof hostStrategies> | null,
    dane: Dane.HostDane | null
  ): Effect.Effect<A, never, Dns | Connector | MtaSts.PolicyFetcher | PolicyCache> => {
    hostPlans.push(hostPlan(host, policy, strategies, dane))
    if (dane?.error) {
      // A failed TLSA lookup or `tls.dane = require` without usable records: the host is not tried (RFC 7672 §2.2)
      hostErrors.push({ error: dane.error, host: null })
      return next()
    }
    return tryHost(delivery, group, withDane(hostStage, dane), host, attempts, enforced, warnings, span, {
      done,
      next: (outcome) => {
        hostErrors.push(outcome)
        // A limiter still full after its wait ends the domain's attempt (Stalwart: the group is rate-limited).
        if (outcome.error.kind === "concurrency" || outcome.error.kind === "rate") return Effect.succeed(done(null))
        return next()
      }
    })
  }

  // Each host in turn, until one takes the transaction or none is left.
  const onHost = (
    host: Candidates.HostCandidates | null
  ): Effect.Effect<A, never, Dns | Connector | MtaSts.PolicyFetcher | PolicyCache> => {
    if (host === null) return Effect.succeed(done(null))
    const hostStage = staged !== null && staged.host === host.host ? staged.stage : undefined
    const strategies = hostStage === undefined ? null : hostStrategies(delivery.config, hostStage.variables)
    if (Either.isLeft(host.resolution)) {
      hostPlans.push(hostPlan(host, policy, strategies, null))
      const error = host.resolution.left
      hostErrors.push({ error: relay === null ? error : relayUnresolved(relay, error), host: null })
      return next()
    }
    // Every host the pull hands over had its settings evaluated first.
    const settled = hostStage!
    // DANE is for MX hosts (RFC 7672); a relay is a configured host, trusted as its route says
    if (relay !== null) return attempt(host, settled, strategies, null)
    const now = hostDaneNow(plan, delivery.options.port, host.host, settled.settings)
    if (now !== undefined) return attempt(host, settled, strategies, now)
    return Effect.flatMap(
      hostDane(plan, delivery.options.port, host.host, settled.settings),
      (dane) => attempt(host, settled, strategies, dane)
    )
  }
  return next()
}
