/**
 * The domain and host stages' DNS work through the layer's `PlanCache`: a domain's MX plan and a host's addresses
 * taken from it while their answers are valid, made (and kept) as `MxPlan.plan` and `Candidates.hosts` make them
 * otherwise. Used only where the delivery's spans record nothing (see `PlanCache`).
 */
import type * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as Candidates from "../../Candidates.js"
import { Dns, toAnswerer } from "../../Dns.js"
import type { MxHost, MxPlan } from "../../MxPlan.js"
import * as PlanCache from "../../PlanCache.js"
import type * as TransportError from "../../TransportError.js"
import { candidatesOf, families, resolution, resolveSilently } from "../candidates.js"
import * as mxPlan from "../mxPlan.js"
import { withService } from "../service.js"

/** The layer's plan cache and the delivery's Clock. @internal */
export interface Plans {
  readonly cache: PlanCache.PlanCache.Service
  readonly clock: Clock.Clock
}

/** The plan the cache keeps for the domain, if any. @internal */
export const keptMxPlan = (plans: Plans, domain: string, mx: number): MxPlan | undefined =>
  plans.cache.mxPlan(domain, mx, plans.clock.unsafeCurrentTimeMillis())

/** `MxPlan.plan` (its span records nothing here) for a domain the cache has no plan of; the plan kept if it may be. @internal */
export const mxPlanOf = (plans: Plans, domain: string, mx: number): Effect.Effect<MxPlan, TransportError.TransportError, Dns> =>
  mxPlan.planOf(domain, mx, (plan, ttl) => {
    const keep = PlanCache.keepMs(ttl)
    if (keep > 0) plans.cache.setMxPlan(domain, mx, plan, plans.clock.unsafeCurrentTimeMillis() + keep)
  })

/**
 * `Candidates.hosts` with a parent span that records nothing, the host's settings given synchronously, and a host's
 * addresses through the cache where one family is queried (the two-family strategies look up as before). Its pull:
 * the next host now when nothing needs to run (its addresses kept; `null`: no host left), else the Effect that gives
 * it, for a caller already in a step of its own (no `Pull` and its `next` Effect built a message for nothing).
 *
 * @internal
 */
export const hosts = <S extends Candidates.HostSettings>(
  plans: Plans,
  plan: MxPlan,
  settingsOf: (host: MxHost) => S
): () => Candidates.HostCandidates<S> | null | Effect.Effect<Option.Option<Candidates.HostCandidates<S>>, never, Dns> => {
  let at = 0
  return () => {
    if (at >= plan.hosts.length) return null
    const host = plan.hosts[at++]!
    const settings = settingsOf(host)
    const { ipStrategy, multihomed } = settings
    const entry = (
      resolved: Either.Either<Candidates.HostResolution, TransportError.TransportError>
    ): Candidates.HostCandidates<S> => ({
      host,
      settings,
      resolution: resolved,
      candidates: candidatesOf(host, settings.sourceIp, resolved)
    })
    const rrtypes = families(ipStrategy)
    if (host.literal || rrtypes.length > 1) {
      return resolveSilently(host, ipStrategy, multihomed, (resolved) => Option.some(entry(resolved)))
    }
    const kept = plans.cache.addresses(host.name, ipStrategy, multihomed, plans.clock.unsafeCurrentTimeMillis())
    if (kept !== undefined) return entry(Either.right(kept))
    const rrtype = rrtypes[0]!
    // The TTL-aware lookup: the same query and cache entry as `a`/`aaaa`.
    return withService(Dns, (dns) =>
      Effect.matchEffect(toAnswerer(dns)(rrtype, host.name), {
        onFailure: (error) =>
          Effect.succeed(Option.some(entry(resolution(host, ipStrategy, multihomed, [{ rrtype, addresses: [], error }])))),
        onSuccess: (answer) => {
          const resolved = resolution(host, ipStrategy, multihomed, [{ rrtype, addresses: answer.records, error: null }])
          const keep = PlanCache.keepMs(answer.ttl)
          if (keep > 0 && Either.isRight(resolved)) {
            plans.cache.setAddresses(
              host.name,
              ipStrategy,
              multihomed,
              resolved.right,
              plans.clock.unsafeCurrentTimeMillis() + keep
            )
          }
          return Effect.succeed(Option.some(entry(resolved)))
        }
      }))
  }
}
