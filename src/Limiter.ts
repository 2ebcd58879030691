/**
 * Outbound limiters, as Stalwart configures them (`[queue.limiter.outbound.<id>]` from v0.11.4, `[[queue.throttle]]`
 * before): per value of a key (the MX host, the remote or local address, the recipient domain, the sender or its
 * domain), at most `concurrency` at once and at most `rate` started per window.
 *
 * What a limiter counts depends on the stage its key and `match` are known at:
 *
 * | key | stage | `concurrency` counts | `rate` counts |
 * |---|---|---|---|
 * | `sender`, `sender_domain`, or none | message | `Transport.deliver` calls under way (all their domains) | calls started |
 * | `rcpt_domain` | domain | domain deliveries under way | domain deliveries started |
 * | `mx` | host | deliveries to the host under way (each holds one connection) | deliveries to the host started |
 * | `remote_ip`, `local_ip` | connection | connections in use | connections used (new or reused) |
 *
 * A delivery over a limit waits for its turn, on Effect's Clock, up to `limiter-wait` (default 5 minutes); past it,
 * its recipients are deferred with a `TransportError` of kind `concurrency` or `rate` (Stalwart's `last_error`),
 * phase `connect`, and no connection is made for them. An idle pooled connection holds no permit: concurrency counts
 * the connections carrying a transaction, and a delivery that waited for a connection-stage permit takes the pooled
 * connection whose release gave it its turn rather than opening another.
 *
 * A message is one `Transport.deliver` call: the outbox makes one per domain attempt, so there a message-stage
 * limiter counts each domain's attempts.
 *
 * The state (who holds what, who started when) is the {@link Limiter} service: one per `Transport` layer, shared by
 * every delivery on it.
 *
 * @since 0.3.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { Expression, Variables } from "./Expression.js"
import * as internal from "./internal/limiter/limiter.js"
import type * as Settings from "./Settings.js"
import type { TransportError } from "./TransportError.js"

/**
 * The variables a limiter may be keyed by.
 *
 * @since 0.3.0
 * @category constants
 */
export const keys = ["mx", "remote_ip", "local_ip", "rcpt_domain", "sender_domain", "sender"] as const

/**
 * @since 0.3.0
 * @category models
 */
export type Key = typeof keys[number]

/**
 * Where a limiter is checked: `message` once per message, before its recipients are grouped by domain (`sender`,
 * `sender_domain`, or no key), then the settings' stages (`domain` for `rcpt_domain`, `host` for `mx`,
 * `connection` for `remote_ip` and `local_ip`).
 *
 * @since 0.3.0
 * @category models
 */
export type Stage = "message" | Settings.Stage

/**
 * `count` starts per `period` (`rate = "100/1s"`).
 *
 * @since 0.3.0
 * @category models
 */
export interface Rate {
  readonly count: number
  readonly period: Duration.Duration
}

/**
 * One configured limiter.
 *
 * @since 0.3.0
 * @category models
 */
export interface OutboundLimiter {
  /** The table's id (`queue.limiter.outbound.<id>`), or `throttle[<n>]` for the n-th `[[queue.throttle]]`. */
  readonly id: string
  /** Each distinct combination of these variables' values has its own count; none: one count for all. */
  readonly key: ReadonlyArray<Key>
  readonly concurrency: number | null
  readonly rate: Rate | null
  /** The limiter applies where this is true; always when absent. */
  readonly match: Expression | null
  /** The stage its key and `match` are known at, where it is checked. */
  readonly stage: Stage
  /** Where the configuration defines it (a path of keys and indexes), for messages; absent when built in code. */
  readonly origin?: ReadonlyArray<string | number> | undefined
}

/**
 * One count a delivery needs: the limiter's id and the key's value (`bucket`), and its limits.
 *
 * @since 0.3.0
 * @category models
 */
export interface Bucket {
  readonly bucket: string
  readonly concurrency: number | null
  readonly rate: Rate | null
}

/**
 * @since 0.3.0
 * @category models
 */
export declare namespace Limiter {
  /**
   * @since 0.3.0
   * @category models
   */
  export interface Service {
    /**
     * Waits, up to `wait` on the Clock, until every bucket has room, and takes a place in each: a concurrency permit
     * (given back by the returned release) and a start in the rate window. Fails with kind `concurrency` or `rate`
     * when the wait would be longer, holding nothing. Interruptible: an interrupted wait holds nothing either.
     */
    readonly acquire: (
      buckets: ReadonlyArray<Bucket>,
      wait: Duration.Duration
    ) => Effect.Effect<Effect.Effect<void>, TransportError>
  }
}

/**
 * @since 0.3.0
 * @category tags
 */
export class Limiter extends Context.Tag("effect-smtp-transport/Limiter")<Limiter, Limiter.Service>() {}

/**
 * The buckets of the limiters of `stage` that apply to a delivery with these variables.
 *
 * @since 0.3.0
 * @category constructors
 */
export const buckets: (
  limiters: ReadonlyArray<OutboundLimiter>,
  stage: Stage,
  variables: Variables
) => ReadonlyArray<Bucket> = internal.buckets

/**
 * A fresh in-memory state.
 *
 * @since 0.3.0
 * @category constructors
 */
export const make: Effect.Effect<Limiter.Service> = internal.make

/**
 * @since 0.3.0
 * @category layers
 */
export const layer: Layer.Layer<Limiter> = Layer.effect(Limiter, internal.make)
