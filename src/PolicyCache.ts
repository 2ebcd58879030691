/**
 * Where fetched MTA-STS policies are kept between deliveries, keyed by the policy domain (lowercase A-label, no
 * trailing dot). The default layer keeps them in memory for the life of the process, bounded; a mail server that
 * wants policies to survive restarts (RFC 8461 §10.2 recommends it, since a fresh sender is the easiest to fool)
 * provides its own store through the same tag.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { Lru } from "./internal/lru.js"
import type { Policy } from "./MtaStsPolicy.js"

/**
 * One cached policy with the TXT `id` it was fetched under and when (Effect's Clock, epoch milliseconds). It is plain
 * data, so a persistent store can serialise it with `JSON.stringify`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly id: string
  readonly policy: Policy
  readonly fetchedAt: number
}

/**
 * @since 0.1.0
 * @category tags
 */
export class PolicyCache extends Context.Tag("effect-smtp-transport/PolicyCache")<
  PolicyCache,
  PolicyCache.Service
>() {}

/**
 * @since 0.1.0
 * @category tags
 */
export declare namespace PolicyCache {
  /**
   * A store never fails: a store that can (a database) should answer `Option.none()` on a failed read and swallow a
   * failed write, since a missing cache entry only costs a fetch.
   *
   * @since 0.1.0
   */
  export interface Service {
    readonly get: (domain: string) => Effect.Effect<Option.Option<Entry>>
    readonly set: (domain: string, entry: Entry) => Effect.Effect<void>
  }
}

/**
 * An in-memory store holding at most `capacity` domains (default 10 000); when full, the least recently used domain
 * is evicted. An entry is kept past its `max_age`: an expired policy is still the fallback when a refresh fails.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (options?: { readonly capacity?: number }): Effect.Effect<PolicyCache.Service> =>
  Effect.sync(() => {
    const entries = new Lru<string, Entry>(Math.max(1, Math.floor(options?.capacity ?? 10_000)))
    return PolicyCache.of({
      get: (domain) => Effect.sync(() => Option.fromNullable(entries.get(domain))),
      set: (domain, entry) => Effect.sync(() => entries.set(domain, entry))
    })
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options?: { readonly capacity?: number }): Layer.Layer<PolicyCache> =>
  Layer.effect(PolicyCache, makeMemory(options))

/**
 * The default store: in memory, 10 000 domains.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<PolicyCache> = layerMemory()
