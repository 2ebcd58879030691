/**
 * What a `Transport` layer keeps of its destinations' DNS between deliveries: a domain's MX plan and an MX host's
 * addresses, each until the DNS answer it was made from expires. Consecutive messages to a domain then skip the MX
 * and address lookups and the planning built on them: on a reused connection those were most of a message's own cost.
 *
 * A kept value is exactly what the lookups would give again while their answers are cached: the key holds everything
 * the value was computed from besides the answer (the `limits.mx` of a plan; the `ip-strategy` and
 * `limits.multihomed` of an address list), and an entry expires on Effect's Clock one second before the answer's TTL
 * (a TTL handed on by a cache is rounded up to the second), so a TestClock moved past a TTL finds the lookups made
 * again. Only what depends on nothing else is kept: a plan whose hosts of equal preference were shuffled (Random),
 * a failed lookup and an answer without a TTL are made again on every delivery; the MTA-STS policy, the DANE
 * records and every setting are decided per delivery as before. The transport uses the cache only where its spans
 * record nothing (under the built-in tracer or with tracing disabled), so a trace shows every lookup's span.
 *
 * The members are synchronous: a lookup here is a map read inside the step that needs it, where an Effect would be a
 * run-loop step or two on every message's path.
 *
 * @since 0.3.0
 */
import * as Context from "effect/Context"
import * as Layer from "effect/Layer"
import type { HostResolution } from "./Candidates.js"
import type { MxPlan } from "./MxPlan.js"
import type { IpStrategy } from "./Settings.js"

/**
 * @since 0.3.0
 * @category models
 */
export declare namespace PlanCache {
  /**
   * Times are Effect's Clock (epoch milliseconds), read by the caller.
   *
   * @since 0.3.0
   * @category models
   */
  export interface Service {
    /** The plan of `domain` (its A-label form) for a `limits.mx` of `mx`, if one is kept that is valid at `nowMs`. */
    readonly mxPlan: (domain: string, mx: number, nowMs: number) => MxPlan | undefined
    /** Keeps a plan until `expiresMs`. */
    readonly setMxPlan: (domain: string, mx: number, plan: MxPlan, expiresMs: number) => void
    /** A host's addresses under a strategy and `limits.multihomed`, if kept and valid at `nowMs`. */
    readonly addresses: (
      host: string,
      ipStrategy: IpStrategy,
      multihomed: number,
      nowMs: number
    ) => HostResolution | undefined
    /** Keeps a host's addresses until `expiresMs`. */
    readonly setAddresses: (
      host: string,
      ipStrategy: IpStrategy,
      multihomed: number,
      resolution: HostResolution,
      expiresMs: number
    ) => void
  }
}

/**
 * @since 0.3.0
 * @category tags
 */
export class PlanCache extends Context.Tag("effect-smtp-transport/PlanCache")<PlanCache, PlanCache.Service>() {}

interface Kept<A> {
  readonly value: A
  readonly expiresMs: number
}

/** A bounded map whose oldest entry goes first: a read does not reorder it (every entry expires with its TTL anyway). */
class Bounded<A> {
  private readonly entries = new Map<string, Kept<A>>()
  constructor(private readonly capacity: number) {}

  get(key: string, nowMs: number): A | undefined {
    const kept = this.entries.get(key)
    if (kept === undefined) return undefined
    if (kept.expiresMs > nowMs) return kept.value
    this.entries.delete(key)
    return undefined
  }

  set(key: string, value: A, expiresMs: number): void {
    this.entries.delete(key)
    if (this.capacity <= 0) return
    this.entries.set(key, { value, expiresMs })
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next()
      if (oldest.done === true) break
      this.entries.delete(oldest.value)
    }
  }
}

/**
 * A cache in memory holding at most `capacity` plans and as many address lists (default 10 000 each); when full, the
 * one stored first is dropped (a read is a plain map read on every message's path, where keeping a recency order
 * would reinsert the entry each time).
 *
 * @since 0.3.0
 * @category constructors
 */
export const make = (capacity = 10_000): PlanCache.Service => {
  const plans = new Bounded<MxPlan>(capacity)
  const addresses = new Bounded<HostResolution>(capacity)
  return {
    mxPlan: (domain, mx, nowMs) => plans.get(`${mx} ${domain}`, nowMs),
    setMxPlan: (domain, mx, plan, expiresMs) => plans.set(`${mx} ${domain}`, plan, expiresMs),
    addresses: (host, ipStrategy, multihomed, nowMs) => addresses.get(`${ipStrategy} ${multihomed} ${host}`, nowMs),
    setAddresses: (host, ipStrategy, multihomed, resolution, expiresMs) =>
      addresses.set(`${ipStrategy} ${multihomed} ${host}`, resolution, expiresMs)
  }
}

/**
 * A cache of its own per layer: a new layer (a new configuration, a new `Transport.layer`) starts empty.
 *
 * @since 0.3.0
 * @category layers
 */
export const layer: Layer.Layer<PlanCache> = Layer.sync(PlanCache, () => make())

/**
 * How long a value made from an answer with this TTL (seconds; `null`: not known) may be kept, in milliseconds: one
 * second less than the TTL, since a cache hands on its remaining TTL rounded up; 0 (not kept) without a TTL.
 *
 * @since 0.3.0
 * @category utils
 */
export const keepMs = (ttl: number | null): number => ttl === null || !(ttl > 1) ? 0 : (Math.ceil(ttl) - 1) * 1000
