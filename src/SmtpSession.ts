/**
 * The SMTP client dialogue, phase by phase, each phase an Effect bounded by its own timeout: connect, greeting,
 * EHLO (HELO when EHLO is not understood), STARTTLS, then one mail transaction (MAIL, RCPT…, DATA or BDAT) and
 * QUIT.
 *
 * Errors before the transaction fail the Effect with a `TransportError`; the transaction itself never fails and
 * reports every outcome (the MAIL reply, each recipient's, the end-of-data reply) as values.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import type { ConnectOptions, Connection } from "./Connector.js"
import { Connector, SocketError, toTransportError } from "./Connector.js"
import * as capabilities from "./internal/capabilities.js"
import * as dotStuff from "./internal/dotStuff.js"
import * as log from "./internal/log.js"
import * as phaseDeadline from "./internal/phaseDeadline.js"
import type { TlsPolicy } from "./OutboundConfig.js"
import type { Reply } from "./SmtpReply.js"
import * as SmtpReply from "./SmtpReply.js"
import type { Phase } from "./TransportError.js"
import * as TransportError from "./TransportError.js"

/**
 * `tls.starttls`: `disable` never sends STARTTLS, `optional` uses it when offered and goes on in plaintext when it
 * is not offered or refused, `require` fails without it.
 *
 * @since 0.1.0
 */
export type { TlsPolicy }

/**
 * @since 0.1.0
 */
export interface SessionTimeouts {
  readonly greeting: Duration.Duration
  readonly ehlo: Duration.Duration
  /** The STARTTLS command and the handshake, together. */
  readonly tls: Duration.Duration
  readonly mailFrom: Duration.Duration
  /** Each RCPT on its own. */
  readonly rcptTo: Duration.Duration
  /** DATA, its 354, the body and the end-of-data reply, together (or BDAT and its reply). */
  readonly data: Duration.Duration
}

/**
 * Everything a session needs from the configuration, evaluated for this connection.
 *
 * @since 0.1.0
 */
export interface SessionSettings {
  /** The EHLO name. */
  readonly hostname: string
  /** The SNI name and the name the certificate must match: the MX host name. */
  readonly servername: string
  readonly starttls: TlsPolicy
  readonly allowInvalidCerts: boolean
  /** Trusted CAs (PEM) in place of Node's bundled roots. */
  readonly ca?: ReadonlyArray<string> | undefined
  /** The message requires TLS (REQUIRETLS) or an enforced MTA-STS policy applies: STARTTLS as if `require`. */
  readonly requireTls: boolean
  readonly timeouts: SessionTimeouts
}

/**
 * The EHLO keywords the transport acts on (RFC 5321 §4.1.1.1 and the extensions' RFCs).
 *
 * @since 0.1.0
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
  /** Every keyword line of the EHLO reply, as sent. */
  readonly keywords: ReadonlyArray<string>
}

/**
 * An open session, ready for a transaction.
 *
 * @since 0.1.0
 */
export interface Session {
  readonly connection: Connection
  /** From the last EHLO (after STARTTLS when TLS is up); none after HELO. */
  readonly capabilities: Capabilities
  readonly tls: boolean
  readonly greeting: Reply
  readonly ehloName: string
  /** The last EHLO (or HELO) reply. */
  readonly ehlo: Reply
  /** The server did not understand EHLO and the session went on with HELO. */
  readonly helo: boolean
}

/**
 * What {@link connect} returns.
 *
 * @since 0.1.0
 */
export type Connected = Connection

/**
 * DSN parameters (RFC 3461), sent only when the server advertises DSN.
 *
 * @since 0.1.0
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
 */
export interface RecipientOutcome {
  readonly address: string
  readonly accepted: boolean
  readonly reply: Reply | null
  readonly error: TransportError.TransportError | null
}

/**
 * Every outcome of one transaction.
 *
 * @since 0.1.0
 */
export interface TransactionResult {
  readonly mailFrom: Either.Either<Reply, TransportError.TransportError>
  readonly recipients: ReadonlyArray<RecipientOutcome>
  /** The end-of-data reply; `null` when no message was sent (MAIL rejected, no recipient accepted). */
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
 */
export const QUIT_TIMEOUT: Duration.Duration = Duration.seconds(2)

/**
 * After the server's 221, how long QUIT waits for the server to close the connection before the socket is destroyed.
 * The side that closes first keeps the connection in TIME_WAIT for a minute; a server closes right after its 221,
 * and a client that destroys its socket before that close arrives takes the TIME_WAIT on its own address. With
 * bound source addresses those run out of ports (about 14,000 connections per address, then the rate collapses).
 *
 * @since 0.1.0
 */
export const QUIT_CLOSE_WAIT: Duration.Duration = Duration.millis(200)

/** Bound on the lines read while waiting for the close: a server that talks after its 221 is not waited for. */
const MAX_LINES_AFTER_QUIT = 16

// ---------------------------------------------------------------------------------------------------------------

/**
 * A phase's span. A leaf: `Effect.useSpan` times the phase and records its exit like `withSpan`, but does not make
 * the span the parent of what runs inside (nothing inside opens a span, and debug lines stay on the delivery's
 * span), which spares the context switch in and out that is most of a span's cost: about 25 of its 35 run-loop
 * steps, eight phases per delivery.
 */
const phaseSpan = (phase: Phase, duration: Duration.Duration, attributes: Record<string, unknown>) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.useSpan(`smtp.${phase}`, {
    attributes: { ...attributes, "smtp.phase": phase, "smtp.timeout_ms": Duration.toMillis(duration) },
    captureStackTrace: false
  }, () => effect)

/**
 * One phase: its own timeout, its own span. The timeout is that of `Effect.timeoutFail`; on a connection of this
 * library's connectors it is kept without forking the phase (see internal/phaseDeadline).
 */
const bounded = (
  connection: Connection,
  phase: Phase,
  duration: Duration.Duration,
  attributes: Record<string, unknown> = {}
) =>
<A, R>(effect: Effect.Effect<A, TransportError.TransportError, R>): Effect.Effect<A, TransportError.TransportError, R> =>
  phaseDeadline.timeoutFail(connection, effect, duration, () => TransportError.timeout(phase, duration)).pipe(
    phaseSpan(phase, duration, attributes)
  )

/** What identifies a phase's span: the MX host, the remote and the source address. */
const spanAttributes = (connection: Connection, settings: SessionSettings) => ({
  "smtp.host": settings.servername,
  "smtp.remote_ip": connection.remoteAddress,
  "smtp.local_ip": connection.localAddress ?? ""
})

const send = (connection: Connection, phase: Phase, lines: ReadonlyArray<string>) =>
  Effect.zipRight(
    log.whenDebug(() => Effect.forEach(lines, (line) => Effect.logDebug(`C: ${line}`), { discard: true })),
    Effect.mapError(connection.write(lines.map((l) => `${l}\r\n`).join("")), (e) => toTransportError(e, phase))
  )

const command = (connection: Connection, phase: Phase, line: string) =>
  Effect.zipRight(send(connection, phase, [line]), SmtpReply.read(connection, phase))

/**
 * Opens the connection to `ip:port` (from `localAddress` when given) under the connect timeout. The connection
 * belongs to the scope.
 *
 * @since 0.1.0
 */
export const connect = (
  options: ConnectOptions,
  timeout: Duration.DurationInput
): Effect.Effect<Connection, TransportError.TransportError, Connector | Scope.Scope> => {
  const duration = Duration.decode(timeout)
  const onTimeout = () => TransportError.timeout("connect", duration)
  return Effect.flatMap(Connector, (connector) => {
    // This library's connectors time the connect with the connection's own deadline (no fibers forked for it).
    const timed = phaseDeadline.timedConnect<ConnectOptions, Connection, SocketError>(connector)
    return timed === undefined
      ? Effect.timeoutFail(Effect.mapError(connector.connect(options), (e) => toTransportError(e, "connect")), {
        duration,
        onTimeout
      })
      : Effect.mapError(
        timed(options, Duration.toMillis(duration), onTimeout),
        (e) => (e instanceof SocketError ? toTransportError(e, "connect") : e)
      )
  }).pipe(
    Effect.tap((c) => log.debug(() => `connected to ${c.remoteAddress}:${options.port} from ${c.localAddress}`)),
    phaseSpan("connect", duration, {
      "smtp.remote_ip": options.ip,
      "smtp.port": options.port,
      "smtp.local_ip": options.localAddress ?? ""
    })
  )
}

// An EHLO argument is a domain or an address literal: printable ASCII, no space (RFC 5321 §4.1.1.1).
const EHLO_NAME = /^[\x21-\x7e]+$/

interface Hello {
  readonly reply: Reply
  readonly capabilities: Capabilities
  readonly helo: boolean
}

/** EHLO, then HELO when the server does not know EHLO (500/502, RFC 5321 §3.2); each under the EHLO timeout. */
const hello = (connection: Connection, settings: SessionSettings) =>
  Effect.gen(function*() {
    const name = settings.hostname
    const timeout = settings.timeouts.ehlo
    const attributes = { ...spanAttributes(connection, settings), "smtp.ehlo": name }
    const reply = yield* command(connection, "ehlo", `EHLO ${name}`).pipe(bounded(connection, "ehlo", timeout, attributes))
    if (SmtpReply.isPositive(reply)) {
      return { reply, capabilities: capabilities.fromEhlo(reply), helo: false } satisfies Hello
    }
    if (reply.code !== 500 && reply.code !== 502) return yield* TransportError.fromReply("ehlo", reply)
    const helo = yield* command(connection, "ehlo", `HELO ${name}`).pipe(
      bounded(connection, "ehlo", timeout, { ...attributes, "smtp.helo": true })
    )
    if (!SmtpReply.isPositive(helo)) return yield* TransportError.fromReply("ehlo", helo)
    return { reply: helo, capabilities: capabilities.none, helo: true } satisfies Hello
  })

/** `true` once TLS is up; `false` when an `optional` policy goes on in plaintext after a refusal. */
const startTls = (connection: Connection, settings: SessionSettings, policy: "optional" | "require") =>
  Effect.gen(function*() {
    const reply = yield* command(connection, "tls", "STARTTLS")
    if (reply.code !== 220) {
      if (policy === "require") return yield* TransportError.fromReply("tls", reply)
      yield* Effect.logDebug("STARTTLS refused, going on in plaintext (tls.starttls = optional)")
      return false
    }
    yield* Effect.mapError(
      connection.startTls({
        servername: settings.servername,
        ca: settings.ca,
        rejectUnauthorized: !settings.allowInvalidCerts
      }),
      (e) => toTransportError(e, "tls")
    )
    yield* Effect.logDebug(`TLS established with ${settings.servername}`)
    return true
  })

/**
 * Greeting, EHLO (or HELO), and STARTTLS with a second EHLO when the policy asks for it.
 *
 * @since 0.1.0
 */
export const open = (
  connection: Connection,
  settings: SessionSettings
): Effect.Effect<Session, TransportError.TransportError> =>
  Effect.gen(function*() {
    const { timeouts } = settings
    if (!EHLO_NAME.test(settings.hostname)) {
      return yield* TransportError.make(
        "ehlo",
        "policy",
        `ehlo: invalid EHLO name ${JSON.stringify(settings.hostname)}`,
        true
      )
    }
    const attributes = spanAttributes(connection, settings)

    const greeting = yield* SmtpReply.read(connection, "greeting").pipe(bounded(connection, "greeting", timeouts.greeting, attributes))
    if (greeting.code !== 220) return yield* TransportError.fromReply("greeting", greeting)

    let hi = yield* hello(connection, settings)

    // A REQUIRETLS message or an enforced MTA-STS policy never goes in plaintext, whatever tls.starttls says.
    const policy: TlsPolicy = settings.requireTls ? "require" : settings.starttls
    let secure = false
    if (policy !== "disable") {
      if (!hi.capabilities.startTls) {
        if (policy === "require") {
          return yield* TransportError.make(
            "tls",
            "policy",
            settings.requireTls
              ? "tls: STARTTLS not advertised, and TLS is required for this message"
              : "tls: STARTTLS not advertised (tls.starttls = require)",
            true
          )
        }
      } else {
        secure = yield* startTls(connection, settings, policy).pipe(bounded(connection, "tls", timeouts.tls, {
          ...attributes,
          "smtp.servername": settings.servername,
          "smtp.tls_policy": policy
        }))
        if (secure) hi = yield* hello(connection, settings)
      }
    }

    return {
      connection,
      capabilities: hi.capabilities,
      tls: secure,
      greeting,
      ehloName: settings.hostname,
      ehlo: hi.reply,
      helo: hi.helo
    } satisfies Session
  }).pipe(log.annotateWhenDebug("smtp.remote_ip", connection.remoteAddress))

/**
 * Whether QUIT makes sense after an error from {@link open}: after a reply-level refusal or a policy refusal the
 * dialogue is in step; after a timeout, a reset, a protocol or TLS error it is not, and the socket should just be
 * closed.
 *
 * @since 0.1.0
 */
export const canQuitAfter = (error: TransportError.TransportError): boolean =>
  error.kind === "reply" || error.kind === "policy"

// ---------------------------------------------------------------------------------------------------------------
// The transaction
// ---------------------------------------------------------------------------------------------------------------

// Nothing in an envelope address may end or split the command line (RFC 5321 §4.1.2 has no use for them here).
const FORBIDDEN = /[\x00-\x20\x7f<>]/
const NON_ASCII = /[^\x00-\x7f]/

/** RFC 3461 §4: xtext. */
const xtext = (value: string): string => {
  let out = ""
  for (const byte of Buffer.from(value, "utf8")) {
    out += byte < 33 || byte > 126 || byte === 0x2b || byte === 0x3d
      ? `+${byte.toString(16).toUpperCase().padStart(2, "0")}`
      : String.fromCharCode(byte)
  }
  return out
}

const NOTIFY_ORDER = ["SUCCESS", "DELAY", "FAILURE"] as const

/** RFC 3461 §4.1: `NEVER`, or the others in a fixed order; `null` for no parameter. */
const notifyParam = (notify: Dsn["notify"]): string | null => {
  if (notify === undefined) return null
  if (notify === "NEVER") return "NEVER"
  const list = NOTIFY_ORDER.filter((n) => notify.includes(n))
  return list.length === 0 ? null : list.join(",")
}

const policyError = (phase: Phase, message: string) => TransportError.make(phase, "policy", `${phase}: ${message}`, true)

interface Prepared {
  readonly normalized: Uint8Array
  readonly mail: string
  readonly rcpts: ReadonlyArray<{ readonly index: number; readonly line: string }>
  readonly refused: ReadonlyArray<{ readonly index: number; readonly error: TransportError.TransportError }>
}

/** Builds the command lines, or refuses the whole transaction before anything is sent. */
const prepare = (
  session: Session,
  envelope: Envelope,
  message: Uint8Array
): Either.Either<Prepared, TransportError.TransportError> => {
  const caps = session.capabilities
  if (FORBIDDEN.test(envelope.sender)) {
    return Either.left(policyError("mail-from", `sender ${JSON.stringify(envelope.sender)} cannot be sent`))
  }
  const normalized = dotStuff.normalize(message)
  const needsUtf8 = NON_ASCII.test(envelope.sender) || envelope.recipients.some((r) => NON_ASCII.test(r)) ||
    dotStuff.headerHas8Bit(normalized)
  if (needsUtf8 && !caps.smtpUtf8) {
    return Either.left(policyError("mail-from", "the message needs SMTPUTF8 and the server does not advertise it"))
  }
  if (envelope.requireTls === true) {
    if (!session.tls) return Either.left(policyError("mail-from", "REQUIRETLS message over a plaintext connection"))
    if (!caps.requireTls) {
      return Either.left(policyError("mail-from", "REQUIRETLS message and the server does not advertise REQUIRETLS"))
    }
  }
  if (caps.size !== null && caps.size > 0 && normalized.length > caps.size) {
    return Either.left(
      policyError("mail-from", `message of ${normalized.length} bytes exceeds the server's SIZE ${caps.size}`)
    )
  }

  const dsn = caps.dsn ? envelope.dsn : undefined
  let mail = `MAIL FROM:<${envelope.sender}>`
  if (caps.size !== null) mail += ` SIZE=${normalized.length}`
  if (caps.eightBitMime && dotStuff.has8Bit(normalized)) mail += " BODY=8BITMIME"
  if (needsUtf8) mail += " SMTPUTF8"
  if (envelope.requireTls === true) mail += " REQUIRETLS"
  if (dsn?.ret !== undefined) mail += ` RET=${dsn.ret}`
  if (dsn?.envid !== undefined) mail += ` ENVID=${xtext(dsn.envid)}`

  const notify = notifyParam(dsn?.notify)

  const rcpts: Array<{ index: number; line: string }> = []
  const refused: Array<{ index: number; error: TransportError.TransportError }> = []
  envelope.recipients.forEach((address, index) => {
    if (FORBIDDEN.test(address) || address.length === 0) {
      refused.push({ index, error: policyError("rcpt-to", `recipient ${JSON.stringify(address)} cannot be sent`) })
      return
    }
    let line = `RCPT TO:<${address}>`
    if (notify !== null) line += ` NOTIFY=${notify}`
    if (dsn?.orcpt === true && !NON_ASCII.test(address)) line += ` ORCPT=rfc822;${xtext(address)}`
    rcpts.push({ index, line })
  })
  return Either.right({ normalized, mail, rcpts, refused })
}

/**
 * One mail transaction: MAIL, RCPT for each recipient, then the message with DATA (or `BDAT … LAST` under
 * CHUNKING), pipelined (RFC 2920) when the server offers it. Never fails: see {@link TransactionResult}.
 *
 * @since 0.1.0
 */
export const transaction = (
  session: Session,
  envelope: Envelope,
  message: Uint8Array,
  settings: SessionSettings
): Effect.Effect<TransactionResult> =>
  Effect.gen(function*() {
    const { connection } = session
    const { timeouts } = settings
    const caps = session.capabilities
    const pipelined = caps.pipelining
    const chunking = caps.chunking
    const attributes = spanAttributes(connection, settings)
    const outcomes: Array<RecipientOutcome | undefined> = envelope.recipients.map(() => undefined)
    const everyone = (error: TransportError.TransportError): ReadonlyArray<RecipientOutcome> =>
      envelope.recipients.map((address) => ({ address, accepted: false, reply: null, error }))
    const result = (
      fields: Pick<TransactionResult, "mailFrom" | "data" | "phase" | "canQuit">,
      recipients?: ReadonlyArray<RecipientOutcome>
    ): TransactionResult => ({
      ...fields,
      recipients: recipients ??
        outcomes.map((o, i) =>
          o ?? { address: envelope.recipients[i]!, accepted: false, reply: null, error: null }
        ),
      pipelined,
      chunking
    })

    const prepared = prepare(session, envelope, message)
    if (Either.isLeft(prepared)) {
      yield* Effect.logDebug(prepared.left.message)
      return result({ mailFrom: Either.left(prepared.left), data: null, phase: "mail-from", canQuit: true }, everyone(prepared.left))
    }
    const { mail, normalized, rcpts, refused } = prepared.right
    for (const { error, index } of refused) {
      outcomes[index] = { address: envelope.recipients[index]!, accepted: false, reply: null, error }
    }
    if (rcpts.length === 0) {
      // Nothing is sent: each recipient keeps its own refusal, MAIL carries the reason there is no transaction.
      const error = policyError("mail-from", "no recipient can be sent")
      return result({ mailFrom: Either.left(error), data: null, phase: "mail-from", canQuit: true })
    }
    // DATA goes last in the pipeline (RFC 2920 §3.1); BDAT waits for the RCPT replies so that no message is sent
    // when every recipient is refused.
    const dataInPipeline = pipelined && !chunking

    // MAIL (with every RCPT and DATA when pipelining)
    const mailExchange = pipelined
      ? Effect.zipRight(
        send(connection, "mail-from", [mail, ...rcpts.map((r) => r.line), ...(dataInPipeline ? ["DATA"] : [])]),
        SmtpReply.read(connection, "mail-from")
      )
      : command(connection, "mail-from", mail)
    const mailReply = yield* Effect.either(mailExchange.pipe(bounded(connection, "mail-from", timeouts.mailFrom, attributes)))
    if (Either.isLeft(mailReply)) {
      return result({ mailFrom: mailReply, data: null, phase: "mail-from", canQuit: false }, everyone(mailReply.left))
    }
    const mailError = SmtpReply.isPositive(mailReply.right) ? null : TransportError.fromReply("mail-from", mailReply.right)
    const mailFrom = mailError === null ? Either.right(mailReply.right) : Either.left(mailError)
    if (mailError !== null && !pipelined) {
      return result({ mailFrom, data: null, phase: "mail-from", canQuit: true }, everyone(mailError))
    }

    // RCPT, one reply per recipient in order
    let broken: TransportError.TransportError | null = null
    for (const { index, line } of rcpts) {
      const address = envelope.recipients[index]!
      if (broken !== null) {
        outcomes[index] = { address, accepted: false, reply: null, error: broken }
        continue
      }
      const exchange = pipelined ? SmtpReply.read(connection, "rcpt-to") : command(connection, "rcpt-to", line)
      const reply = yield* Effect.either(
        exchange.pipe(bounded(connection, "rcpt-to", timeouts.rcptTo, { ...attributes, "smtp.rcpt": address }))
      )
      if (Either.isLeft(reply)) {
        broken = reply.left
        outcomes[index] = { address, accepted: false, reply: null, error: broken }
      } else {
        const accepted = SmtpReply.isPositive(reply.right)
        outcomes[index] = {
          address,
          accepted,
          reply: reply.right,
          error: accepted ? null : TransportError.fromReply("rcpt-to", reply.right)
        }
      }
    }
    if (mailError !== null) {
      // Pipelined and MAIL refused: the RCPT replies are moot (RFC 2920 §3.2), every recipient has MAIL's error.
      const recipients = everyone(mailError)
      if (broken !== null) return result({ mailFrom, data: null, phase: "rcpt-to", canQuit: false }, recipients)
      if (!dataInPipeline) return result({ mailFrom, data: null, phase: "rcpt-to", canQuit: true }, recipients)
      const drained = yield* Effect.either(drainData(connection, timeouts.data, attributes))
      return result({ mailFrom, data: null, phase: "data", canQuit: Either.isRight(drained) }, recipients)
    }
    if (broken !== null) return result({ mailFrom, data: null, phase: "rcpt-to", canQuit: false })

    if (!outcomes.some((o) => o?.accepted === true)) {
      if (!dataInPipeline) return result({ mailFrom, data: null, phase: "rcpt-to", canQuit: true })
      const drained = yield* Effect.either(drainData(connection, timeouts.data, attributes))
      return result({ mailFrom, data: null, phase: "data", canQuit: Either.isRight(drained) })
    }

    // The message
    const transfer = chunking
      ? sendBdat(connection, normalized)
      : sendData(connection, normalized, dataInPipeline)
    const data = yield* Effect.either(transfer.pipe(bounded(connection, "data", timeouts.data, {
      ...attributes,
      "smtp.bytes": normalized.length,
      "smtp.chunking": chunking
    })))
    if (Either.isLeft(data)) {
      return result({ mailFrom, data, phase: "data", canQuit: data.left.kind === "reply" })
    }
    const final = data.right
    return result({
      mailFrom,
      data: SmtpReply.isPositive(final) ? Either.right(final) : Either.left(TransportError.fromReply("data", final)),
      phase: "data",
      canQuit: true
    })
  }).pipe(log.annotateWhenDebug("smtp.remote_ip", session.connection.remoteAddress))

/**
 * Every command sent so far has had its reply, so nothing may be waiting to be read. Bytes there now are a reply to
 * the message before it was sent (a desynchronised or hostile server): taken as the end-of-data reply, they would
 * report a delivery the server never confirmed.
 */
const refuseEarlyReply = (connection: Connection, after: string) =>
  Effect.suspend(() => {
    const early = connection.buffered
    return early === 0 ? Effect.void : Effect.fail(
      TransportError.make("data", "protocol", `data: the server sent ${early} bytes after ${after}, before the message`)
    )
  })

/** DATA (unless already pipelined), 354, the stuffed body; the end-of-data reply, whatever its code. */
const sendData = (connection: Connection, normalized: Uint8Array, pipelined: boolean) =>
  Effect.gen(function*() {
    const go = pipelined ? SmtpReply.read(connection, "data") : command(connection, "data", "DATA")
    const reply = yield* go
    if (reply.code !== 354) return yield* TransportError.fromReply("data", reply)
    yield* refuseEarlyReply(connection, "its 354")
    yield* log.debug(() => `C: <${normalized.length} bytes of message, dot-stuffed>`)
    yield* Effect.mapError(connection.write(dotStuff.stuff(normalized)), (e) => toTransportError(e, "data"))
    return yield* SmtpReply.read(connection, "data")
  })

/** RFC 3030: the whole message as one last chunk, no stuffing. */
const sendBdat = (connection: Connection, normalized: Uint8Array) =>
  Effect.gen(function*() {
    yield* refuseEarlyReply(connection, "the last RCPT reply")
    const header = Buffer.from(`BDAT ${normalized.length} LAST\r\n`, "ascii")
    yield* log.whenDebug(() =>
      Effect.zipRight(
        Effect.logDebug(`C: BDAT ${normalized.length} LAST`),
        Effect.logDebug(`C: <${normalized.length} bytes of message>`)
      )
    )
    yield* Effect.mapError(connection.write(Buffer.concat([header, normalized])), (e) => toTransportError(e, "data"))
    return yield* SmtpReply.read(connection, "data")
  })

/**
 * The pipelined DATA of a transaction that has nothing to send: its reply is read, and a 354 is answered with an
 * empty message (a lone `.`), as RFC 2920 §3.1 asks; the server's verdict on it is only logged.
 */
const drainData = (connection: Connection, timeout: Duration.Duration, attributes: Record<string, unknown>) =>
  Effect.gen(function*() {
    const reply = yield* SmtpReply.read(connection, "data")
    if (reply.code !== 354) return
    yield* send(connection, "data", ["."])
    yield* SmtpReply.read(connection, "data")
  }).pipe(bounded(connection, "data", timeout, { ...attributes, "smtp.drain": true }))

/** Reads until the server closes (end of input), at most {@link MAX_LINES_AFTER_QUIT} lines. */
const peerClosed = (connection: Connection): Effect.Effect<void, TransportError.TransportError> => {
  const loop = (left: number): Effect.Effect<void, TransportError.TransportError> =>
    Effect.matchEffect(connection.readLine, {
      onFailure: (e) => e.kind === "closed" ? Effect.void : Effect.fail(toTransportError(e, "quit")),
      onSuccess: () => left > 1 ? loop(left - 1) : Effect.void
    })
  return loop(MAX_LINES_AFTER_QUIT)
}

/**
 * QUIT, capped at {@link QUIT_TIMEOUT}; after a 221, up to {@link QUIT_CLOSE_WAIT} more for the server to close
 * first. Every failure is ignored. Takes a session, or just its connection.
 *
 * @since 0.1.0
 */
export const quit = (session: { readonly connection: Connection }): Effect.Effect<void> =>
  phaseDeadline.timeoutFail(session.connection, command(session.connection, "quit", "QUIT"), QUIT_TIMEOUT, () =>
    TransportError.timeout("quit", QUIT_TIMEOUT)).pipe(
    Effect.flatMap((reply) =>
      reply.code === 221
        ? phaseDeadline.timeoutFail(session.connection, peerClosed(session.connection), QUIT_CLOSE_WAIT, () =>
          TransportError.timeout("quit", QUIT_CLOSE_WAIT))
        : Effect.void
    ),
    Effect.tapError((e) => log.debug(() => `QUIT: ${e.message}`)),
    Effect.ignore,
    log.annotateWhenDebug("smtp.remote_ip", session.connection.remoteAddress),
    (effect) =>
      Effect.useSpan("smtp.quit", {
        attributes: { "smtp.remote_ip": session.connection.remoteAddress },
        captureStackTrace: false
      }, () => effect)
  )
