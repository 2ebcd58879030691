/**
 * TCP connections to SMTP servers: one async step per exchange (write the commands, read their replies), an
 * in-place STARTTLS upgrade, and deadlines on Effect's Clock. Every connector is built on the same core
 * ({@link fromIo}) from a byte pipe: the live layer's is `node:net` / `node:tls`, `ConnectorTest`'s is a script.
 *
 * @since 0.1.0
 */
import type * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as MetricKeyType from "effect/MetricKeyType"
import * as MetricPolling from "effect/MetricPolling"
import type * as MetricState from "effect/MetricState"
import type * as Scope from "effect/Scope"
import * as live from "./internal/connection/live.js"
import type { Verification } from "./internal/dane/verify.js"
import type { TlsaRecord } from "./internal/dns/model.js"
import * as socketError from "./internal/connection/socketError.js"
import * as wire from "./internal/connection/wire.js"
import * as scopeFinalizer from "./internal/scopeFinalizer.js"
import type { Reply } from "./SmtpReply.js"
import * as SmtpReply from "./SmtpReply.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface ConnectOptions {
  readonly ip: string
  readonly port: number
  /** The source address to bind before connecting; the OS picks one when absent. */
  readonly localAddress?: string | undefined
  /** The connect's deadline, in milliseconds on Effect's Clock (`Infinity`: none). */
  readonly deadline: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface StartTlsOptions {
  /** The SNI name and the name the certificate must carry (the MX host name, or the relay's address). */
  readonly servername: string
  /** Trusted CA certificates (PEM) replacing Node's bundled roots; the roots when absent. */
  readonly ca?: ReadonlyArray<string> | undefined
  /** `false` accepts any certificate (`tls.allow-invalid-certs`, and DANE, which verifies after the handshake). */
  readonly rejectUnauthorized: boolean
  /**
   * DANE (RFC 7672): the chain the server presents is matched against these usable TLSA records once the handshake
   * is done, at `nowMs` (Effect's Clock); the outcome is `TlsInfo.dane`. Give `rejectUnauthorized: false` with it:
   * the TLSA records, not the CA roots, decide.
   */
  readonly dane?: {
    readonly records: ReadonlyArray<TlsaRecord>
    readonly names: ReadonlyArray<string>
    readonly nowMs: number
  } | undefined
}

/**
 * What the TLS handshake established.
 *
 * @since 0.2.0
 * @category models
 */
export interface TlsInfo {
  /** `TLSv1.3`, … */
  readonly version: string | null
  readonly cipher: string | null
  /** The certificate chain verified and carried the server name. */
  readonly verified: boolean
  /** Why it did not verify. */
  readonly reason: string | null
  /** The certificates the server presented, DER, leaf first (empty when it presented none). */
  readonly peerCertificates: ReadonlyArray<Uint8Array>
  /** The DANE verification, when `StartTlsOptions.dane` asked for one. */
  readonly dane: Verification | null
}

/**
 * One exchange: the bytes to write, then how many complete replies to read.
 *
 * @since 0.2.0
 * @category models
 */
export interface Exchange {
  readonly write?: string | Uint8Array | undefined
  /** `0`: just write, and wait until the socket has taken the bytes. */
  readonly replies: number
  /** Milliseconds on Effect's Clock; past it the exchange fails with kind `timeout`. */
  readonly deadline: number
}

/**
 * @since 0.1.0
 * @category errors
 */
export type SocketErrorKind = socketError.SocketErrorKind

/**
 * A socket-level failure. It knows nothing of SMTP phases: the session maps it to its phase's error.
 *
 * @since 0.1.0
 * @category errors
 */
export const SocketError: typeof socketError.SocketError = socketError.SocketError

/**
 * @since 0.1.0
 * @category errors
 */
export type SocketError = socketError.SocketError

/**
 * One open connection, owned by whoever connected it: it must run `close`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Connection {
  readonly remoteAddress: string
  readonly remotePort: number
  readonly localAddress: string | null
  /**
   * One async step: writes `write` (if any), then reads `replies` complete replies. Lines over
   * {@link MAX_LINE_BYTES}, malformed or oversized replies are `protocol` errors, end of input is `closed`. Bytes
   * past the last reply stay buffered. An exchange interrupted stays the connection's pending operation until its
   * deadline or `close` (its replies would desynchronise the dialogue): another exchange before then fails.
   */
  readonly exchange: (request: Exchange) => Effect.Effect<ReadonlyArray<Reply>, SocketError>
  /**
   * `exchange`, its outcome handed to `onFailure` or `onSuccess` in the step that completes it: the same exchange,
   * without the frame and the run-loop steps a `match` around it adds (a session makes four on every message).
   * Optional: a caller that finds it absent matches `exchange`'s outcome itself. A defect or an interruption is not
   * handed over: it ends the Effect as it would end `exchange`.
   */
  readonly exchangeEither?: <B>(
    request: Exchange,
    onFailure: (error: SocketError) => B,
    onSuccess: (replies: ReadonlyArray<Reply>) => B
  ) => Effect.Effect<B>
  /**
   * `exchangeEither`, started in the caller's step with the Clock it read: for a caller that runs the returned effect
   * at once, in its own fiber (a session's transaction). An exchange whose replies are already buffered (RCPT's and
   * DATA's under PIPELINING) is then a value, taken without a run-loop step. Optional: a caller that finds it absent
   * uses `exchangeEither` (or `exchange`).
   */
  readonly exchangeEitherNow?: <B>(
    clock: Clock.Clock,
    request: Exchange,
    onFailure: (error: SocketError) => B,
    onSuccess: (replies: ReadonlyArray<Reply>) => B
  ) => Effect.Effect<B>
  /**
   * `exchangeEitherNow` whose outcome is the effect to go on with: where the exchange waits for the server, the fiber
   * resumes with that effect (one step) rather than with a value and then its continuation (two). Optional, with
   * `exchangeEitherNow`.
   */
  readonly exchangeThenNow?: <B, E>(
    clock: Clock.Clock,
    request: Exchange,
    onFailure: (error: SocketError) => Effect.Effect<B, E>,
    onSuccess: (replies: ReadonlyArray<Reply>) => Effect.Effect<B, E>
  ) => Effect.Effect<B, E>
  /**
   * Upgrades the connection in place: after the server's 220 to STARTTLS, or right after the connect for implicit
   * TLS (RFC 8314, a relay on port 465), where the server waits for the handshake. Refused with a `protocol` error
   * when the server sent anything not yet read (CVE-2011-0411): those bytes would otherwise be read as if they came
   * over TLS.
   */
  readonly startTls: (options: StartTlsOptions, deadline: number) => Effect.Effect<TlsInfo, SocketError>
  /**
   * Reads and drops lines until the server closes (success), at most `maxLines` of them (success too), at most
   * until `deadline` (a `timeout` failure).
   */
  readonly awaitClose: (options: { readonly deadline: number; readonly maxLines: number }) => Effect.Effect<
    void,
    SocketError
  >
  readonly isTls: boolean
  /** The TLS session, once `startTls` succeeded. */
  readonly tls: TlsInfo | null
  /**
   * Bytes received and not yet read. Non-zero where the dialogue expects the server to be silent (after its 354,
   * before the message is sent) means it answered a command it has not received.
   */
  readonly buffered: number
  /** Idempotent; fails a pending operation, and resolves once the OS socket is released. */
  readonly close: Effect.Effect<void>
}

/**
 * Callbacks through which an {@link Io} reports what the peer did.
 *
 * @since 0.2.0
 * @category builders
 */
export interface IoEvents {
  /** The core may keep `chunk` until it is read: the pipe must not reuse its memory. */
  readonly data: (chunk: Uint8Array) => void
  /** End of input: the peer closed (no error) or the transport failed; complete lines stay readable. */
  readonly end: (error?: SocketError) => void
  /** The connection was reset: what was buffered is dropped. */
  readonly reset: (error: SocketError) => void
}

/**
 * The byte pipe a connector supplies to {@link fromIo}. Callbacks, no Effects: the core owns every wait.
 *
 * @since 0.2.0
 * @category builders
 */
export interface Io {
  /** Read once connected. */
  readonly localAddress: string | null
  /** Bytes the transport holds that have not reached `IoEvents.data` (the STARTTLS check counts them). */
  readonly readableLength: number
  /** Starts the connection; `done` once, possibly at once. */
  readonly connect: (done: (error: SocketError | null) => void) => void
  /**
   * `true` when taken below the transport's high-water mark; `flushed` once written (or failed). A `Uint8Array` may be
   * a view into a buffer shared with other data (Node's `Buffer` pool): read it through its `byteOffset` and
   * `byteLength`, never its whole `buffer`, and do not transfer or keep that buffer.
   */
  readonly write: (data: string | Uint8Array, flushed: (error: SocketError | null) => void) => boolean
  readonly pause: () => void
  readonly resume: () => void
  /** Starts the TLS handshake over the pipe; `done` once; the returned function abandons it. */
  readonly upgrade: (options: StartTlsOptions, done: (result: TlsInfo | SocketError) => void) => () => void
  /** Releases the transport (idempotent); `released` once its resource is gone. */
  readonly destroy: (released: () => void) => void
}

/**
 * Opens the pipe of one connection. `scope` is the connection's own, closed by `close`: a place for fibers the pipe
 * needs. `open` runs interruptibly, and its Io is the core's only once it has returned: whatever `open` acquires that
 * needs releasing goes in `scope` as soon as it exists (the core closes it however the connect ends), or is acquired
 * in `open`'s last step.
 *
 * @since 0.2.0
 * @category builders
 */
export type Open = (
  options: ConnectOptions,
  events: IoEvents,
  scope: Scope.Scope
) => Effect.Effect<Io, SocketError>

/**
 * @since 0.1.0
 * @category models
 */
export declare namespace Connector {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /**
     * Connects under `options.deadline`. Interruptible: interruption, failure and timeout release the socket before
     * the effect ends. A connection returned belongs to the caller, who must run its `close` (or use {@link scoped}).
     */
    readonly connect: (options: ConnectOptions) => Effect.Effect<Connection, SocketError>
  }
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Connector extends Context.Tag("effect-smtp-transport/Connector")<Connector, Connector.Service>() {}

/**
 * The longest line a server may send, in bytes without its line ending.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_LINE_BYTES = SmtpReply.MAX_LINE

/**
 * A connector on the shared core: framing, reply limits, back-pressure, the STARTTLS check and the deadline timer
 * come from the core, the bytes from `open`. A third-party transport gets the same timing as the live one.
 *
 * @since 0.2.0
 * @category builders
 */
export const fromIo = (open: Open): Connector.Service => ({ connect: wire.connect(open) })

/**
 * A connection that lives until the scope closes. The connect stays interruptible; once it succeeds, closing is
 * the scope's.
 *
 * @since 0.2.0
 * @category constructors
 */
export const scoped = (options: ConnectOptions): Effect.Effect<Connection, SocketError, Connector | Scope.Scope> =>
  Effect.flatMap(Connector, (connector) => own(connector.connect(options)))

/**
 * Gives the connection `connect` returns to the current scope.
 *
 * @since 0.2.0
 * @category constructors
 */
export const own = <E, R>(
  connect: Effect.Effect<Connection, E, R>
): Effect.Effect<Connection, E, R | Scope.Scope> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.tap(restore(connect), (connection) => scopeFinalizer.add(() => connection.close))
  )

/**
 * Sockets the live layer has created and not yet seen closed, across every instance of the layer: zero once every
 * connection has been closed (the leak check).
 *
 * @since 0.1.0
 * @category observability
 */
export const openConnections: Effect.Effect<number> = live.openConnections

/**
 * {@link openConnections} as a gauge, `smtp_transport_open_connections`: run
 * `MetricPolling.launch(Connector.openConnectionsMetric, Schedule.spaced("10 seconds"))` in an application to export
 * it with its other metrics. A polled gauge because the count changes in socket events, outside any fiber.
 *
 * @since 0.2.0
 * @category observability
 */
export const openConnectionsMetric: MetricPolling.MetricPolling<
  MetricKeyType.MetricKeyType.Gauge<number>,
  number,
  never,
  never,
  MetricState.MetricState.Gauge<number>
> = MetricPolling.make(
  Metric.gauge("smtp_transport_open_connections", {
    description: "Sockets of the live Connector created and not yet closed"
  }),
  live.openConnections
)

/**
 * Connections over `node:net`, upgraded with `node:tls`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<Connector> = Layer.succeed(Connector, fromIo(live.open))
