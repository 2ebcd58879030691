/**
 * Connection reuse: the sessions that finished a transaction and are still healthy wait here, idle, for the next
 * delivery to the same destination, as Postfix's connection cache and KumoMTA's `max_deliveries_per_connection` do.
 *
 * Two connections are interchangeable when they have the same remote address and port, source address, EHLO name, host
 * name (the name the certificate was checked for), DANE decision, and TLS: the TLS state the session reached and the
 * requirements it was verified against (a connection that verified a certificate under one policy, or for one name, is
 * not handed to a delivery with stricter ones or another name). Each connection carries its own
 * limits (`reuse.messages`, `reuse.idle`, `reuse.age`, evaluated when it was opened): past `messages` transactions or
 * `age` it is not reused; idle past `idle` it is closed with QUIT. Every wait is on Effect's Clock. Closing the
 * pool's scope (the layer's) closes every idle connection with QUIT.
 *
 * The pool holds idle connections only: a connection in use belongs to the delivery that took it, which gives it back
 * with {@link ConnectionPool.Service.put} or closes it.
 *
 * @since 0.3.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import * as internal from "./internal/pool/pool.js"
import type { Reuse } from "./Settings.js"
import type { Session } from "./SmtpSession.js"

/**
 * Where a connection goes and how its session was opened: the part of the key a delivery knows before it picks a
 * source address. `session` is, as a string, what the session was opened with besides the connection settings: the
 * host name the certificate was checked for (the MX host or the relay), the host's DANE decision (TLSA status, and the
 * records and names a certificate is matched against), the TLS requirements (policy, implicit TLS, certificate checks,
 * trusted CAs), the protocol (SMTP or LMTP) and the AUTH user of a relay (never its secret, which the delivery's
 * `accept` compares): equal strings, interchangeable sessions.
 *
 * @since 0.3.0
 * @category models
 */
export interface Destination {
  readonly ip: string
  readonly port: number
  readonly session: string
}

/**
 * An idle connection: its open session (the capabilities and TLS state its EHLO established) and its history.
 *
 * @since 0.3.0
 * @category models
 */
export interface Idle {
  /** The connection's id, as the attempt trace shows it. */
  readonly id: string
  readonly destination: Destination
  /** The source address it was opened from (`null`: the OS picked). */
  readonly source: string | null
  readonly session: Session
  readonly reuse: Reuse
  /** Clock time (ms) it was opened at. */
  readonly openedMs: number
  /** Transactions it has carried. */
  readonly messages: number
  /** The last transaction ended with the end-of-data reply (or never started): no RSET is needed before the next. */
  readonly clean: boolean
}

/**
 * @since 0.3.0
 * @category models
 */
export declare namespace ConnectionPool {
  /**
   * @since 0.3.0
   * @category models
   */
  export interface Service {
    /** A new connection id, unique within this pool: `c1`, `c2`, … */
    readonly connectionId: Effect.Effect<string>
    /**
     * Takes the most recently used idle connection to `destination` that `accept` accepts (the source address and
     * EHLO name the delivery would use), if any. A connection past its age, or that has sent bytes while idle (a
     * `421` before closing), is closed instead of returned.
     */
    readonly take: (
      destination: Destination,
      accept: (idle: Idle) => boolean
    ) => Effect.Effect<Option.Option<Idle>>
    /**
     * `take` in the caller's step, with the Clock's time (ms) it read: the connection taken, `null` for none, or an
     * Effect when stale connections must be closed first (it gives the one taken). Optional: a caller that finds it
     * absent uses `take`. It spares a delivery the run-loop steps of an Effect on every message's path; it must be
     * called where nothing can interrupt before the connection taken is used or given back.
     */
    readonly takeNow?: (
      destination: Destination,
      accept: (idle: Idle) => boolean,
      nowMs: number
    ) => Idle | null | Effect.Effect<Option.Option<Idle>>
    /**
     * Gives a connection back after a transaction. It waits for the next delivery, unless it has carried
     * `reuse.messages` transactions, is past `reuse.age`, or the pool is closing: then it is closed with QUIT.
     */
    readonly put: (idle: Idle) => Effect.Effect<void>
    /**
     * `put` in the caller's step, with the Clock's time (ms) it read: `null` when nothing is left to run, else the
     * Effect that completes it (a QUIT, the idle-time sweeper rescheduled). Optional, as `takeNow`.
     */
    readonly putNow?: (idle: Idle, nowMs: number) => Effect.Effect<void> | null
    /** How many connections are idle (for tests and metrics). */
    readonly size: Effect.Effect<number>
  }
}

/**
 * @since 0.3.0
 * @category tags
 */
export class ConnectionPool extends Context.Tag("effect-smtp-transport/ConnectionPool")<
  ConnectionPool,
  ConnectionPool.Service
>() {}

/**
 * A pool in memory whose idle connections are closed with QUIT when the layer's scope closes.
 *
 * @since 0.3.0
 * @category layers
 */
export const layer: Layer.Layer<ConnectionPool> = Layer.scoped(ConnectionPool, internal.make)
