/**
 * What a delivery would do for one domain, without connecting: the same domain, host and connection stages as a
 * delivery, for every kept host (not only the ones a delivery would reach).
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Candidates from "../../Candidates.js"
import type { ExplainedDomain, ExplainedHost, ExplainedLimiter } from "../../DeliveryReport.js"
import type { Dns } from "../../Dns.js"
import * as Expression from "../../Expression.js"
import type { Variables } from "../../Expression.js"
import * as MtaSts from "../../MtaSts.js"
import type { Config } from "../../OutboundConfig.js"
import type { PolicyCache } from "../../PolicyCache.js"
import type { Stage } from "../../Limiter.js"
import type { TransportOptions } from "../../Transport.js"
import { evaluateConnection, evaluateHost, hostStrategies } from "../settings/evaluate.js"
import { explainedSettings } from "../settings/explain.js"
import { domainPlanOf, domainStage, excludedHostPlan, policyOf } from "./domain.js"
import { danePlan, hostDane } from "./dane.js"
import { effectiveTls } from "./host.js"
import { mtaStsMatch, reportError } from "./report.js"
import { connectionVariables, type Group, hostVariables, type RequestVariables } from "./request.js"
import * as settingWarnings from "./warnings.js"

/**
 * The limiters of `stage` whose `match` holds for these variables, with their key's values (Limiter.buckets' rule).
 *
 * @internal
 */
export const limitersAt = (config: Config, stage: Stage, variables: Variables): Array<ExplainedLimiter> =>
  config.limiters
    .filter((l) => l.stage === stage && (l.match === null || Expression.toBool(l.match.evaluate(variables))))
    .map((l) => ({
      id: l.id,
      stage,
      key: Object.fromEntries(l.key.map((k) => [k, String(variables[k] ?? "")])),
      concurrency: l.concurrency,
      rate: l.rate === null ? null : { count: l.rate.count, periodMs: Duration.toMillis(l.rate.period) }
    }))

/**
 * Connection-stage settings (EHLO name, timeouts) are evaluated for the host's first address with no source bound.
 *
 * @internal
 */
export const explainDomain = (
  config: Config,
  options: TransportOptions.Service,
  requestVariables: RequestVariables,
  group: Group,
  requireTls: boolean
): Effect.Effect<ExplainedDomain, never, Dns | MtaSts.PolicyFetcher | PolicyCache> =>
  Effect.gen(function*() {
    const stage = yield* domainStage(config, options, requestVariables, group)
    const hosts: Array<ExplainedHost> = stage.excluded.map((excluded) => ({
      ...excludedHostPlan(excluded),
      settings: null,
      limiters: []
    }))
    const policy = policyOf(stage)
    const enforced = MtaSts.enforced(policy)
    const relay = stage.route?._tag === "relay" ? stage.route : null
    for (const host of stage.plan?.hosts ?? []) {
      const variables = hostVariables(stage.variables, host)
      const hostEval = evaluateHost(config, variables)
      stage.warnings.push(...hostEval.warnings)
      const { ipStrategy, sourceIp } = hostEval.settings
      const resolved = yield* Effect.either(Candidates.resolveHost(host, ipStrategy, stage.settings.limits.multihomed))
      const addresses = Either.match(resolved, { onLeft: () => [], onRight: (r) => r.addresses })
      // DANE is for MX hosts; a relay is trusted as its route says
      const dane = Either.isLeft(resolved) || stage.plan === null || relay !== null
        ? null
        : yield* hostDane(stage.plan, options.port, host, hostEval.settings)
      const firstConnection = connectionVariables(variables, addresses[0] ?? "0.0.0.0", null)
      const connection = evaluateConnection(config, firstConnection)
      stage.warnings.push(...connection.warnings)
      // Said once per domain, not once per host that shares the setting.
      const ehlo = settingWarnings.ehloName(connection.settings.ehloName)
      for (const warning of [...settingWarnings.sourceIp(sourceIp), ...(ehlo === null ? [] : [ehlo])]) {
        if (!stage.warnings.includes(warning)) stage.warnings.push(warning)
      }
      hosts.push({
        host: host.name,
        preference: host.preference,
        implicit: host.implicit,
        strategy: ipStrategy,
        addresses,
        truncated: Either.match(resolved, { onLeft: () => [], onRight: (r) => r.truncated }),
        sourceIps: sourceIp,
        strategies: hostStrategies(config, variables),
        mtaSts: mtaStsMatch(policy, host.name),
        dane: danePlan(dane),
        error: Either.match(resolved, { onLeft: reportError, onRight: () => dane?.error ? reportError(dane.error) : null }),
        settings: explainedSettings(hostEval.settings, connection.settings, {
          allowInvalidCerts: effectiveTls(hostEval.settings, { enforced, requireTls, relay, dane }).allowInvalidCerts,
          requireTls: effectiveTls(hostEval.settings, { enforced, requireTls, relay, dane }).required
        }),
        limiters: [...limitersAt(config, "host", variables), ...limitersAt(config, "connection", firstConnection)]
      })
    }
    return {
      ...domainPlanOf(group, stage, hosts, stage.error),
      hosts,
      mtaStsTimeoutMs: Duration.toMillis(stage.settings.timeouts["mta-sts"]),
      limiters: limitersAt(config, "domain", stage.variables),
      limiterWaitMs: Duration.toMillis(stage.settings.limiterWait),
      warnings: stage.warnings
    }
  })
