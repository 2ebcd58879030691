/**
 * The SMTP client dialogue, phase by phase: connect, greeting, EHLO (HELO when EHLO is not understood), STARTTLS,
 * AUTH, then one mail transaction (MAIL, RCPT…, DATA or BDAT) and QUIT. Each phase is one exchange on the connection
 * (its commands written and its replies read in one async step) under `timeouts[phase]`. For relays, the same
 * dialogue in LMTP (RFC 2033) and over implicit TLS (RFC 8314).
 *
 * Errors before the transaction fail the Effect with a `TransportError`; the transaction itself never fails and
 * reports every outcome (the MAIL reply, each recipient's, the end-of-data reply) as values.
 *
 * Observability, by OpenTelemetry's conventions (`server.address` is the MX host, `network.peer.address` the
 * remote IP, `network.local.address` the source, `smtp.*` the rest): each phase adds a span event `smtp.<phase>`
 * (duration, outcome) to the settings' `span` or else the current span (which {@link attemptSpan} opens per
 * attempt); with `phaseSpans` each phase also gets a span of its own under it.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import type * as Tracer from "effect/Tracer"
import type { Connection, Connector, TlsInfo } from "./Connector.js"
import type * as Dane from "./Dane.js"
import * as internal from "./internal/session/session.js"
import type * as Settings from "./Settings.js"
import type { ConnectionSettings, Phase, RelayAuth, RelayProtocol, SessionPhase, Timeouts } from "./Settings.js"
import type { Reply } from "./SmtpReply.js"
import type * as TransportError from "./TransportError.js"

/**
 * `tls.starttls`: `disable` never sends STARTTLS; `optional` uses it when offered whatever the certificate (RFC 7435:
 * `Session.tls.verified` says whether it verified) and goes on in plaintext when it is not offered or refused;
 * `require` fails without it (a temporary failure) and verifies the certificate.
 *
 * @since 0.1.0
 * @category models
 */
export type TlsPolicy = Settings.TlsPolicy

/**
 * Everything a session needs, evaluated for this connection.
 *
 * @since 0.2.0
 * @category models
 */
export interface SessionSettings extends Pick<ConnectionSettings, "ehloName" | "timeouts"> {
  /** The MX host name (or the relay's address): the SNI name and the name the certificate must carry. */
  readonly servername: string
  /**
   * `smtp` (EHLO, one reply after the message) or `lmtp` (RFC 2033: LHLO, one reply per accepted recipient after
   * the message, no HELO fallback). Absent: `smtp`.
   */
  readonly protocol?: RelayProtocol | undefined
  /**
   * AUTH (RFC 4954) after EHLO: PLAIN (else LOGIN) with a password, XOAUTH2 with a token. Sent only over TLS whose
   * certificate verified (or that `allowInvalidCerts` accepts) unless `allowPlaintext`. Its exchanges run under
   * `timeouts.ehlo` (Stalwart has no AUTH timeout of its own).
   */
  readonly auth?: RelayAuth | undefined
  readonly tls: {
    /**
     * TLS from the first byte (a relay on port 465, RFC 8314): the handshake under `timeouts.tls` before the
     * greeting, the certificate verified unless `allowInvalidCerts`; `starttls` is then not used. Absent: `false`.
     */
    readonly implicit?: boolean | undefined
    readonly starttls: TlsPolicy
    /** Accept a certificate that does not verify where TLS is required (`optional` accepts any anyway). */
    readonly allowInvalidCerts: boolean
    /** Trusted CAs (PEM) in place of Node's bundled roots. */
    readonly ca?: ReadonlyArray<string> | undefined
    /** A REQUIRETLS message or an enforced MTA-STS policy: STARTTLS as if `require`. */
    readonly required: boolean
    /**
     * DANE (RFC 7672): the host's usable TLSA records and the names a DANE-TA chain may carry. STARTTLS is then
     * mandatory whatever `starttls` says, the certificate is matched against the records instead of the CA roots
     * (`allowInvalidCerts` does not apply), and any failure of the TLS step is a temporary `dane` error.
     */
    readonly dane?: {
      readonly records: ReadonlyArray<Dane.TlsaRecord>
      readonly names: ReadonlyArray<string>
    } | null | undefined
  }
  /** A span per phase (`smtp.<phase>`) besides the span events. */
  readonly phaseSpans: boolean
  /**
   * The span the phases report to (their events, and with `phaseSpans` their spans' parent); the current span when
   * absent. Given, it spares making it the current span around the session, which is most of a span's cost.
   */
  readonly span?: Tracer.AnySpan | undefined
}

/**
 * What {@link connect} needs: the connect timeout, and optionally the span settings and the MX host name.
 *
 * @since 0.2.0
 * @category models
 */
export interface ConnectSettings {
  readonly timeouts: Pick<Timeouts<SessionPhase>, "connect">
  readonly phaseSpans?: boolean | undefined
  readonly servername?: string | undefined
  /** As {@link SessionSettings}' `span`. */
  readonly span?: Tracer.AnySpan | undefined
}

/**
 * @since 0.2.0
 * @category models
 */
export interface SessionConnectOptions {
  readonly ip: string
  readonly port: number
  readonly localAddress?: string | undefined
}

/**
 * The EHLO keywords the transport acts on (RFC 5321 §4.1.1.1 and the extensions' RFCs).
 *
 * @since 0.1.0
 * @category models
 */
export interface Capabilities {
  /** `SIZE` (RFC 1870): the declared limit, `0` when none is declared; `null` when not advertised. */
  readonly size: number | null
  readonly eightBitMime: boolean
  readonly smtpUtf8: boolean
  readonly pipelining: boolean
  readonly startTls: boolean
  readonly dsn: boolean
  readonly chunking: boolean
  readonly requireTls: boolean
  readonly enhancedStatusCodes: boolean
  /** The SASL mechanisms of `AUTH` (RFC 4954), upper-cased; empty when AUTH is not advertised. */
  readonly auth: ReadonlyArray<string>
  /** Every keyword line of the EHLO reply, as sent. */
  readonly keywords: ReadonlyArray<string>
}

/**
 * The answer to EHLO (or HELO).
 *
 * @since 0.2.0
 * @category models
 */
export interface Hello {
  readonly reply: Reply
  readonly capabilities: Capabilities
  readonly helo: boolean
}

/**
 * An open session, ready for a transaction.
 *
 * @since 0.1.0
 * @category models
 */
export interface Session {
  readonly connection: Connection
  readonly settings: SessionSettings
  /** From the last EHLO (after STARTTLS when TLS is up); none after HELO. */
  readonly capabilities: Capabilities
  /** The TLS session when STARTTLS succeeded (`verified` when the certificate verified); `null` in plaintext. */
  readonly tls: TlsInfo | null
  readonly greeting: Reply
  readonly ehloName: string
  /** The last EHLO (or HELO) reply. */
  readonly ehlo: Reply
  /** The server did not understand EHLO and the session went on with HELO. */
  readonly helo: boolean
  /** The SASL mechanism AUTH succeeded with (`PLAIN`, `LOGIN`, `XOAUTH2`); `null` without AUTH. */
  readonly auth: string | null
}

/**
 * What {@link connect} returns.
 *
 * @since 0.1.0
 * @category models
 */
export type Connected = Connection

/**
 * DSN parameters (RFC 3461), sent only when the server advertises DSN.
 *
 * @since 0.1.0
 * @category models
 */
export interface Dsn {
  readonly ret?: "FULL" | "HDRS" | undefined
  /** Sent xtext-encoded. */
  readonly envid?: string | undefined
  /** For every recipient. */
  readonly notify?: "NEVER" | ReadonlyArray<"SUCCESS" | "DELAY" | "FAILURE"> | undefined
  /** Send `ORCPT=rfc822;<recipient>` (ASCII recipients only). */
  readonly orcpt?: boolean | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Envelope {
  /** `""` is the null sender. */
  readonly sender: string
  readonly recipients: ReadonlyArray<string>
  /** RFC 8689: the message goes only over TLS to servers that advertise REQUIRETLS. */
  readonly requireTls?: boolean | undefined
  readonly dsn?: Dsn | undefined
}

/**
 * One recipient's answer to RCPT. `error` is set whenever the recipient was not accepted: the reply as an error,
 * the MAIL failure that made RCPT moot, a transport error that struck before its reply, or a policy refusal.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecipientOutcome {
  readonly address: string
  readonly accepted: boolean
  readonly reply: Reply | null
  readonly error: TransportError.TransportError | null
  /**
   * LMTP only, for an accepted recipient: its own reply after the message (RFC 2033 §4.2), as a value when 2xx and
   * as an error otherwise, or the error that struck before it came; absent under SMTP, where
   * {@link TransactionResult}'s `data` is every recipient's.
   */
  readonly data?: Either.Either<Reply, TransportError.TransportError> | undefined
}

/**
 * Every outcome of one transaction.
 *
 * @since 0.1.0
 * @category models
 */
export interface TransactionResult {
  readonly mailFrom: Either.Either<Reply, TransportError.TransportError>
  readonly recipients: ReadonlyArray<RecipientOutcome>
  /**
   * The end-of-data reply; `null` when no message was sent (MAIL rejected, no recipient accepted). Under LMTP the
   * first recipient's reply (or the error before any came); each recipient's is in its {@link RecipientOutcome}.
   */
  readonly data: Either.Either<Reply, TransportError.TransportError> | null
  /** The last phase reached. */
  readonly phase: Phase
  /**
   * The dialogue is still in step (no timeout, reset or protocol error): a QUIT makes sense. When `false` the
   * connection should just be closed.
   */
  readonly canQuit: boolean
  readonly pipelined: boolean
  /** The message went with `BDAT … LAST` (CHUNKING) rather than DATA. */
  readonly chunking: boolean
}

/**
 * The cap on QUIT: write and reply.
 *
 * @since 0.1.0
 * @category constants
 */
export const QUIT_TIMEOUT: Duration.Duration = internal.QUIT_TIMEOUT

/**
 * After the server's 221, how long QUIT waits for the server to close the connection before the socket is destroyed.
 * The side that closes first keeps the connection in TIME_WAIT for a minute; a server closes right after its 221,
 * and a client that destroys its socket before that close arrives takes the TIME_WAIT on its own address. With
 * bound source addresses those run out of ports (about 14,000 connections per address, then the rate collapses).
 *
 * @since 0.1.0
 * @category constants
 */
export const QUIT_CLOSE_WAIT: Duration.Duration = internal.QUIT_CLOSE_WAIT

/**
 * Opens the connection to `ip:port` (from `localAddress` when given) under `timeouts.connect` (or the timeout
 * given). Interruptible; the connection returned belongs to the caller, who must `close` it (or use
 * {@link connectScoped}).
 *
 * @since 0.1.0
 * @category constructors
 */
export const connect: (
  options: SessionConnectOptions,
  settings: ConnectSettings | Duration.DurationInput
) => Effect.Effect<Connection, TransportError.TransportError, Connector> = internal.connect

/**
 * {@link connect}, the connection closed with the scope.
 *
 * @since 0.2.0
 * @category constructors
 */
export const connectScoped: (
  options: SessionConnectOptions,
  settings: ConnectSettings | Duration.DurationInput
) => Effect.Effect<Connection, TransportError.TransportError, Connector | Scope.Scope> = internal.connectScoped

/**
 * With `tls.implicit` the TLS handshake first; then the greeting, EHLO (or HELO; LHLO for LMTP), STARTTLS with a
 * second EHLO when the policy asks for it, and AUTH when the settings carry credentials.
 *
 * @since 0.1.0
 * @category constructors
 */
export const open: (
  connection: Connection,
  settings: SessionSettings
) => Effect.Effect<Session, TransportError.TransportError> = internal.open

/**
 * Whether QUIT makes sense after an error from {@link open}: after a reply-level refusal or a policy refusal the
 * dialogue is in step; after a timeout, a reset, a protocol or TLS error it is not, and the socket should just be
 * closed.
 *
 * @since 0.1.0
 * @category predicates
 */
export const canQuitAfter: (error: TransportError.TransportError) => boolean = internal.canQuitAfter

/**
 * One mail transaction: MAIL, RCPT for each recipient, then the message with DATA (or `BDAT … LAST` under
 * CHUNKING), pipelined (RFC 2920) when the server offers it. Never fails: see {@link TransactionResult}.
 *
 * @since 0.1.0
 * @category combinators
 */
export const transaction: (
  session: Session,
  envelope: Envelope,
  message: Uint8Array,
  settings: SessionSettings
) => Effect.Effect<TransactionResult> = internal.transaction

/**
 * RSET (RFC 5321 §4.1.1.5): ends a transaction that did not end cleanly (MAIL accepted, then no message) before the
 * next one on the same connection. Under `timeouts["mail-from"]`, whose phase it opens; a reply other than 2xx fails.
 *
 * @since 0.3.0
 * @category combinators
 */
export const reset: (
  session: Session,
  settings: SessionSettings
) => Effect.Effect<void, TransportError.TransportError> = internal.reset

/**
 * QUIT, capped at {@link QUIT_TIMEOUT}; after a 221, up to {@link QUIT_CLOSE_WAIT} more for the server to close
 * first. Every failure is ignored. Takes a session, or just its connection (with the settings for spans).
 *
 * @since 0.1.0
 * @category combinators
 */
export const quit: (
  session: {
    readonly connection: Connection
    readonly settings?: Pick<SessionSettings, "servername" | "phaseSpans" | "span"> | undefined
  }
) => Effect.Effect<void> = internal.quit

/**
 * The span of one attempt (connect and session), `smtp.attempt`, with the attempt's identity as attributes; the
 * phases add their events to it.
 *
 * @since 0.2.0
 * @category tracing
 */
export const attemptSpan: (attributes: {
  readonly servername: string
  readonly ip: string
  readonly port: number
  readonly localAddress?: string | null | undefined
}) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R> = internal.attemptSpan
