/**
 * The SMTP client dialogue: each phase one `exchange` on the connection (its commands written and its replies read
 * in one async step) under the phase's deadline.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type * as Scope from "effect/Scope"
import type { Connection, TlsInfo } from "../../Connector.js"
import * as Connector from "../../Connector.js"
import type { RelayAuth, SessionPhase, TlsPolicy } from "../../Settings.js"
import type {
  Capabilities,
  ConnectSettings,
  Envelope,
  Hello,
  RecipientOutcome,
  Session,
  SessionConnectOptions,
  SessionSettings,
  TransactionResult
} from "../../SmtpSession.js"
import type { Reply } from "../../SmtpReply.js"
import * as SmtpReply from "../../SmtpReply.js"
import * as TransportError from "../../TransportError.js"
import * as log from "../log.js"
import * as tracing from "../tracing.js"
import * as auth from "./auth.js"
import * as capabilities from "./capabilities.js"
import * as dotStuff from "./dotStuff.js"
import * as phase from "./phase.js"
import { prepare, policyError } from "./prepare.js"

export const QUIT_TIMEOUT: Duration.Duration = Duration.seconds(2)
export const QUIT_CLOSE_WAIT: Duration.Duration = Duration.millis(200)
/** Bound on the lines read while waiting for the close: a server that talks after its 221 is not waited for. */
const MAX_LINES_AFTER_QUIT = 16

const millis = (timeouts: SessionSettings["timeouts"], p: SessionPhase) => Duration.toMillis(timeouts[p])

/** The attempt's identity by OpenTelemetry's conventions. */
const connectionAttributes = (connection: Connection, servername: string | undefined): phase.Attributes =>
  tracing.peerAttributes({
    servername,
    ip: connection.remoteAddress,
    port: connection.remotePort,
    localAddress: connection.localAddress
  })

/**
 * The phases of one dialogue (open, a transaction, QUIT) as span-event options: the connection's attributes are
 * built once, when the first event or span needs them, and each phase adds only its own.
 */
const phasesOf = (connection: Connection, settings: SessionSettings) => {
  let base: phase.Attributes | null = null
  const attributes = () => base ??= connectionAttributes(connection, settings.servername)
  return (p: SessionPhase, extra?: phase.Attributes): phase.PhaseOptions => ({
    phase: p,
    timeoutMs: millis(settings.timeouts, p),
    phaseSpans: settings.phaseSpans,
    span: settings.span,
    attributes: extra === undefined ? attributes : () => ({ ...attributes(), ...extra })
  })
}

// ---------------------------------------------------------------------------------------------------------------
// Connect
// ---------------------------------------------------------------------------------------------------------------

const connectTimeout = (settings: ConnectSettings | Duration.DurationInput): Duration.Duration =>
  typeof settings === "object" && settings !== null && "timeouts" in settings
    ? Duration.decode(settings.timeouts.connect)
    : Duration.decode(settings as Duration.DurationInput)

export const connect = (
  options: SessionConnectOptions,
  settings: ConnectSettings | Duration.DurationInput
): Effect.Effect<Connection, TransportError.TransportError, Connector.Connector> => {
  const timeoutMs = Duration.toMillis(connectTimeout(settings))
  const full = typeof settings === "object" && settings !== null && "timeouts" in settings ? settings : undefined
  return Effect.flatMap(Connector.Connector, (connector) =>
    phase.run({
      phase: "connect",
      timeoutMs,
      phaseSpans: full?.phaseSpans === true,
      span: full?.span,
      attributes: () => tracing.peerAttributes({ ...options, servername: full?.servername })
    }, (step) =>
      Effect.mapError(
        connector.connect({
          ip: options.ip,
          port: options.port,
          localAddress: options.localAddress,
          deadline: step.deadline
        }),
        (e) => phase.fromSocket(e, "connect", timeoutMs)
      ).pipe(
        Effect.tap((c) =>
          step.debug ? Effect.logDebug(`connected to ${c.remoteAddress}:${options.port} from ${c.localAddress}`) : Effect.void
        )
      )))
}

export const connectScoped = (
  options: SessionConnectOptions,
  settings: ConnectSettings | Duration.DurationInput
): Effect.Effect<Connection, TransportError.TransportError, Connector.Connector | Scope.Scope> =>
  Connector.own(connect(options, settings))

// ---------------------------------------------------------------------------------------------------------------
// Open
// ---------------------------------------------------------------------------------------------------------------

// An EHLO argument is a domain or an address literal: printable ASCII, no space (RFC 5321 §4.1.1.1).
const EHLO_NAME = /^[\x21-\x7e]+$/

type Phases = ReturnType<typeof phasesOf>

/**
 * EHLO, then HELO when the server does not know EHLO (500/502, RFC 5321 §3.2); LHLO alone for LMTP; each under the
 * EHLO timeout.
 */
const hello = (
  connection: Connection,
  settings: SessionSettings,
  phases: Phases
): Effect.Effect<Hello, TransportError.TransportError> => {
  const name = settings.ehloName
  const timeoutMs = millis(settings.timeouts, "ehlo")
  const lmtp = settings.protocol === "lmtp"
  return Effect.flatMap(
    phase.run(
      phases("ehlo", { "smtp.ehlo_name": name }),
      (step) => phase.command(connection, "ehlo", timeoutMs, step, `${lmtp ? "LHLO" : "EHLO"} ${name}`)
    ),
    (reply): Effect.Effect<Hello, TransportError.TransportError> => {
      if (SmtpReply.isPositive(reply)) {
        return Effect.succeed({ reply, capabilities: capabilities.fromEhlo(reply), helo: false })
      }
      // LMTP has no HELO (RFC 2033 §4.1).
      if (lmtp || (reply.code !== 500 && reply.code !== 502)) return Effect.fail(TransportError.fromReply("ehlo", reply))
      return Effect.flatMap(
        phase.run(
          phases("ehlo", { "smtp.ehlo_name": name, "smtp.helo": true }),
          (step) => phase.command(connection, "ehlo", timeoutMs, step, `HELO ${name}`)
        ),
        (helo) =>
          SmtpReply.isPositive(helo)
            ? Effect.succeed({ reply: helo, capabilities: capabilities.none, helo: true })
            : Effect.fail(TransportError.fromReply("ehlo", helo))
      )
    }
  )
}

/** The TLS session; `null` when an `optional` policy goes on in plaintext after a refusal. */
const startTls = (
  connection: Connection,
  settings: SessionSettings,
  phases: Phases,
  policy: "optional" | "require"
) => {
  const timeoutMs = millis(settings.timeouts, "tls")
  const dane = settings.tls.dane ?? null
  const tls = phase.run(
    phases("tls", { "smtp.tls_policy": policy, ...(dane === null ? {} : { "smtp.dane": true }) }),
    (step) =>
      Effect.flatMap(phase.command(connection, "tls", timeoutMs, step, "STARTTLS"), (reply) => {
        if (reply.code !== 220) {
          if (policy === "require") {
            // Refused where TLS is required: deferred whatever the code (Postfix's 4.7.x). A 5xx is also what an
            // attacker who rewrote the command gets back, and a downgrade must delay mail, never bounce it.
            const refused = TransportError.fromReply("tls", reply)
            return Effect.fail(
              new TransportError.TransportError({ phase: "tls", kind: "reply", permanent: false, message: refused.message, reply })
            )
          }
          return Effect.as(Effect.logDebug("STARTTLS refused, going on in plaintext (tls.starttls = optional)"), null)
        }
        return Effect.flatMap(Clock.currentTimeMillis, (nowMs) =>
          Effect.mapError(
            connection.startTls({
              servername: settings.servername,
              ca: settings.tls.ca,
              // RFC 7435: where nothing asks for authenticated TLS, any certificate beats plaintext; the attempt
              // records whether it verified. Where TLS is required, verification as configured. With DANE the TLSA
              // records decide, after the handshake (RFC 7672 §3.1): the CA roots have no say.
              rejectUnauthorized: dane === null && policy === "require" && !settings.tls.allowInvalidCerts,
              dane: dane === null ? undefined : { records: dane.records, names: dane.names, nowMs }
            }, step.deadline),
            (e) => phase.fromSocket(e, "tls", timeoutMs)
          )
        ).pipe(
          Effect.flatMap((info) =>
            info.dane !== null && info.dane.status === "failed"
              ? Effect.fail(
                TransportError.make(
                  "tls",
                  "dane",
                  `tls: the certificate of ${settings.servername} does not match its TLSA records: ${info.dane.reason}`
                )
              )
              : Effect.succeed(info)
          ),
          Effect.tap(() => step.debug ? Effect.logDebug(`TLS established with ${settings.servername}`) : Effect.void)
        )
      })
  )
  // RFC 7672 §2.2: whatever stops an authenticated TLS session with a DANE host (a refusal, a failed handshake, a
  // mismatch) defers the mail to that host; the kind says DANE was the reason (Stalwart's `last_error` = dane).
  return dane === null ? tls : Effect.mapError(tls, (error) =>
    error.kind === "timeout" || error.kind === "dane"
      ? error
      : new TransportError.TransportError({ ...fieldsOf(error), kind: "dane", permanent: false }))
}

const fieldsOf = (error: TransportError.TransportError) => ({
  phase: error.phase,
  kind: error.kind,
  permanent: error.permanent,
  message: error.message,
  reply: error.reply
})

/**
 * TLS from the first byte (RFC 8314): the handshake before the greeting, under the TLS timeout. Nothing asks for
 * opportunistic TLS here (a relay was configured to speak TLS), so the certificate verifies unless
 * `allowInvalidCerts`.
 */
const implicitTls = (connection: Connection, settings: SessionSettings, phases: Phases) => {
  const timeoutMs = millis(settings.timeouts, "tls")
  return phase.run(
    phases("tls", { "smtp.tls_implicit": true }),
    (step) =>
      Effect.mapError(
        connection.startTls({
          servername: settings.servername,
          ca: settings.tls.ca,
          rejectUnauthorized: !settings.tls.allowInvalidCerts
        }, step.deadline),
        (e) => phase.fromSocket(e, "tls", timeoutMs)
      )
  )
}

/** AUTH under the EHLO timeout (Stalwart has no AUTH timeout); the mechanism used. */
const authenticate = (
  connection: Connection,
  settings: SessionSettings,
  phases: Phases,
  credentials: RelayAuth,
  caps: Capabilities,
  tls: TlsInfo | null
) => {
  const refusal = auth.refusal(credentials, tls, settings.tls.allowInvalidCerts)
  if (refusal !== null) return Effect.fail(refusal)
  const timeoutMs = millis(settings.timeouts, "ehlo")
  return phase.run(
    { ...phases("ehlo"), phase: "auth" },
    (step) => auth.authenticate(connection, credentials, caps, timeoutMs, step)
  ).pipe(Effect.tap((m) => log.debug(() => `AUTH ${m} accepted`)))
}

export const open = (
  connection: Connection,
  settings: SessionSettings
): Effect.Effect<Session, TransportError.TransportError> =>
  Effect.gen(function*() {
    if (!EHLO_NAME.test(settings.ehloName)) {
      return yield* TransportError.make(
        "ehlo",
        "policy",
        `ehlo: invalid EHLO name ${JSON.stringify(settings.ehloName)}`,
        true
      )
    }
    const phases = phasesOf(connection, settings)
    let tls: TlsInfo | null = null
    if (settings.tls.implicit === true) tls = yield* implicitTls(connection, settings, phases)
    const greetingMs = millis(settings.timeouts, "greeting")
    const greeting = yield* phase.run(
      phases("greeting"),
      (step) => phase.reply(connection, "greeting", greetingMs, step)
    )
    if (greeting.code !== 220) return yield* TransportError.fromReply("greeting", greeting)

    let hi = yield* hello(connection, settings, phases)

    // A REQUIRETLS message, an enforced MTA-STS policy or a DANE host never goes in plaintext, whatever
    // tls.starttls says.
    const dane = settings.tls.dane ?? null
    const policy: TlsPolicy = settings.tls.required || dane !== null ? "require" : settings.tls.starttls
    if (tls === null && policy !== "disable") {
      if (!hi.capabilities.startTls) {
        if (policy === "require") {
          // Temporary, as Postfix's 4.7.4: a STARTTLS stripped from the EHLO reply delays mail, never bounces it.
          if (dane !== null) {
            return yield* TransportError.make(
              "tls",
              "dane",
              `tls: STARTTLS not advertised, and ${settings.servername} has DANE TLSA records`
            )
          }
          return yield* TransportError.make(
            "tls",
            "policy",
            settings.tls.required
              ? "tls: STARTTLS not advertised, and TLS is required for this message"
              : "tls: STARTTLS not advertised (tls.starttls = require)"
          )
        }
      } else {
        tls = yield* startTls(connection, settings, phases, policy)
        if (tls !== null) hi = yield* hello(connection, settings, phases)
      }
    }

    // Capabilities are not asked again after AUTH: some servers forget the login on a second EHLO (Stalwart's note).
    const mechanism = settings.auth === undefined
      ? null
      : yield* authenticate(connection, settings, phases, settings.auth, hi.capabilities, tls)

    const session: Session = {
      connection,
      settings,
      capabilities: hi.capabilities,
      tls,
      greeting,
      ehloName: settings.ehloName,
      ehlo: hi.reply,
      helo: hi.helo,
      auth: mechanism
    }
    return session
  }).pipe(log.annotateWhenDebug("smtp.remote_ip", connection.remoteAddress))

export const canQuitAfter = (error: TransportError.TransportError): boolean =>
  error.kind === "reply" || error.kind === "policy" || error.kind === "auth"

// ---------------------------------------------------------------------------------------------------------------
// The transaction
// ---------------------------------------------------------------------------------------------------------------

export const transaction = (
  session: Session,
  envelope: Envelope,
  message: Uint8Array,
  settings: SessionSettings
): Effect.Effect<TransactionResult> =>
  // The fiber's Clock, log level and span read once for the transaction's phases (`phase.attemptWith`), in the step
  // that starts it.
  Effect.withFiberRuntime((fiber) => {
    const reader = phase.reader(fiber)
    const body = Effect.gen(function*() {
    const { connection } = session
    const phases = phasesOf(connection, settings)
    const caps = session.capabilities
    const pipelined = caps.pipelining
    const chunking = caps.chunking
    const outcomes: Array<RecipientOutcome | undefined> = envelope.recipients.map(() => undefined)
    const everyone = (error: TransportError.TransportError): ReadonlyArray<RecipientOutcome> =>
      envelope.recipients.map((address) => ({ address, accepted: false, reply: null, error }))
    const result = (
      fields: Pick<TransactionResult, "mailFrom" | "data" | "phase" | "canQuit">,
      recipients?: ReadonlyArray<RecipientOutcome>
    ): TransactionResult => ({
      // Field by field rather than a spread of `fields`: on every message's path.
      mailFrom: fields.mailFrom,
      recipients: recipients ??
        outcomes.map((o, i) => o ?? { address: envelope.recipients[i]!, accepted: false, reply: null, error: null }),
      data: fields.data,
      phase: fields.phase,
      canQuit: fields.canQuit,
      pipelined,
      chunking
    })

    const prepared = prepare(session, envelope, message)
    if (Either.isLeft(prepared)) {
      yield* Effect.logDebug(prepared.left.message)
      return result(
        { mailFrom: Either.left(prepared.left), data: null, phase: "mail-from", canQuit: true },
        everyone(prepared.left)
      )
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

    // MAIL (with every RCPT and DATA when pipelining): one write, MAIL's reply under its own deadline
    const mailMs = millis(settings.timeouts, "mail-from")
    const mailReply = yield* phase.attemptWith(reader, 
      phases("mail-from"),
      (step) =>
        phase.exchangeFirstEither(
          connection,
          "mail-from",
          mailMs,
          step,
          pipelined ? [mail, ...rcpts.map((r) => r.line), ...(dataInPipeline ? ["DATA"] : [])] : [mail]
        )
    )
    if (Either.isLeft(mailReply)) {
      return result({ mailFrom: mailReply, data: null, phase: "mail-from", canQuit: false }, everyone(mailReply.left))
    }
    const mailError = SmtpReply.isPositive(mailReply.right)
      ? null
      : TransportError.fromReply("mail-from", mailReply.right)
    const mailFrom = mailError === null ? Either.right(mailReply.right) : Either.left(mailError)
    if (mailError !== null && !pipelined) {
      return result({ mailFrom, data: null, phase: "mail-from", canQuit: true }, everyone(mailError))
    }

    // RCPT, one reply per recipient in order, each under its own deadline
    const rcptMs = millis(settings.timeouts, "rcpt-to")
    let broken: TransportError.TransportError | null = null
    for (const { index, line } of rcpts) {
      const address = envelope.recipients[index]!
      if (broken !== null) {
        outcomes[index] = { address, accepted: false, reply: null, error: broken }
        continue
      }
      const reply = yield* phase.attemptWith(reader, 
        phases("rcpt-to", { "smtp.rcpt": address }),
        (step) => phase.exchangeFirstEither(connection, "rcpt-to", rcptMs, step, pipelined ? undefined : [line])
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
      const drained = yield* Effect.either(drainData(connection, settings, phases))
      return result({ mailFrom, data: null, phase: "data", canQuit: Either.isRight(drained) }, recipients)
    }
    if (broken !== null) return result({ mailFrom, data: null, phase: "rcpt-to", canQuit: false })

    if (!outcomes.some((o) => o?.accepted === true)) {
      if (!dataInPipeline) return result({ mailFrom, data: null, phase: "rcpt-to", canQuit: true })
      const drained = yield* Effect.either(drainData(connection, settings, phases))
      return result({ mailFrom, data: null, phase: "data", canQuit: Either.isRight(drained) })
    }

    // The message
    const dataMs = millis(settings.timeouts, "data")
    const finalReply = (reply: Reply) =>
      SmtpReply.isPositive(reply) ? Either.right(reply) : Either.left(TransportError.fromReply("data", reply))
    const send = (step: phase.Step) =>
      chunking
        ? sendBdat(connection, dataMs, step, normalized)
        : sendData(connection, dataMs, step, normalized, dataInPipeline)
    if (settings.protocol === "lmtp") {
      // RFC 2033 §4.2: one reply per accepted recipient, in RCPT order, all under the data deadline. Each is read on
      // its own so that a failure part-way keeps the replies that came before it.
      const accepted = outcomes.flatMap((o, index) => o?.accepted === true ? [index] : [])
      const replies: Array<Reply> = []
      const read = yield* Effect.either(phase.run(
        phases("data", { "smtp.bytes": normalized.length, "smtp.chunking": chunking, "smtp.lmtp": true }),
        (step) =>
          Effect.gen(function*() {
            replies.push(yield* send(step))
            while (replies.length < accepted.length) replies.push(yield* phase.reply(connection, "data", dataMs, step))
          })
      ))
      accepted.forEach((index, i) => {
        const reply = replies[i]
        outcomes[index] = {
          ...outcomes[index]!,
          data: reply !== undefined ? finalReply(reply) : Either.left(Either.isLeft(read) ? read.left : noReply)
        }
      })
      const first = replies[0]
      return result({
        mailFrom,
        data: first !== undefined ? finalReply(first) : Either.left(Either.isLeft(read) ? read.left : noReply),
        phase: "data",
        canQuit: Either.isRight(read) || read.left.kind === "reply"
      })
    }
    const data = yield* phase.attemptWith(reader, 
      phases("data", { "smtp.bytes": normalized.length, "smtp.chunking": chunking }),
      (step) =>
        chunking
          ? Effect.either(send(step))
          : sendDataEither(connection, dataMs, step, normalized, dataInPipeline)
    )
    if (Either.isLeft(data)) {
      return result({ mailFrom, data, phase: "data", canQuit: data.left.kind === "reply" })
    }
    return result({ mailFrom, data: finalReply(data.right), phase: "data", canQuit: true })
  })
    return reader.debug ? Effect.annotateLogs(body, "smtp.remote_ip", session.connection.remoteAddress) : body
  })

/** Cannot happen: the data phase succeeded, so every reply it was asked for came. */
const noReply = TransportError.make("data", "protocol", "data: no reply for this recipient")

/**
 * Every command sent so far has had its reply, so nothing may be waiting to be read. Bytes there now are a reply to
 * the message before it was sent (a desynchronised or hostile server): taken as the end-of-data reply, they would
 * report a delivery the server never confirmed.
 */
const refuseEarlyReply = (connection: Connection, after: string) =>
  Effect.suspend(() => {
    const error = earlyReply(connection, after)
    return error === null ? Effect.void : Effect.fail(error)
  })

const earlyReply = (connection: Connection, after: string): TransportError.TransportError | null => {
  const early = connection.buffered
  return early === 0
    ? null
    : TransportError.make("data", "protocol", `data: the server sent ${early} bytes after ${after}, before the message`)
}

/** DATA (unless already pipelined), 354, the stuffed body; the end-of-data reply, whatever its code. */
const sendData = (connection: Connection, timeoutMs: number, step: phase.Step, normalized: Uint8Array, pipelined: boolean) =>
  Effect.flatMap(
    pipelined
      ? phase.reply(connection, "data", timeoutMs, step)
      : phase.command(connection, "data", timeoutMs, step, "DATA"),
    (reply): Effect.Effect<Reply, TransportError.TransportError> => {
      if (reply.code !== 354) return Effect.fail(TransportError.fromReply("data", reply))
      // `refuseEarlyReply`, checked in this step: nothing runs between the 354 and the message.
      const early = earlyReply(connection, "its 354")
      return early !== null ? Effect.fail(early) : phase.exchangeFirst(
        connection,
        "data",
        timeoutMs,
        step,
        dotStuff.stuff(normalized),
        `<${normalized.length} bytes of message, dot-stuffed>`
      )
    }
  )

/** `sendData`, its outcome as an Either: each exchange's match gives it, no `Effect.either` around the phase. */
const sendDataEither = (
  connection: Connection,
  timeoutMs: number,
  step: phase.Step,
  normalized: Uint8Array,
  pipelined: boolean
): Effect.Effect<Either.Either<Reply, TransportError.TransportError>> =>
  Effect.flatMap(
    phase.exchangeFirstEither(connection, "data", timeoutMs, step, pipelined ? undefined : ["DATA"]),
    (reply) => {
      if (Either.isLeft(reply)) return Effect.succeed(reply)
      if (reply.right.code !== 354) return Effect.succeed(Either.left(TransportError.fromReply("data", reply.right)))
      const early = earlyReply(connection, "its 354")
      if (early !== null) return Effect.succeed(Either.left(early))
      return step.debug
        ? Effect.either(phase.exchangeFirst(
          connection,
          "data",
          timeoutMs,
          step,
          dotStuff.stuff(normalized),
          `<${normalized.length} bytes of message, dot-stuffed>`
        ))
        : phase.exchangeFirstEither(connection, "data", timeoutMs, step, dotStuff.stuff(normalized))
    }
  )

/** RFC 3030: the whole message as one last chunk, no stuffing. */
const sendBdat = (connection: Connection, timeoutMs: number, step: phase.Step, normalized: Uint8Array) =>
  Effect.zipRight(
    refuseEarlyReply(connection, "the last RCPT reply"),
    Effect.suspend(() => {
      const header = Buffer.from(`BDAT ${normalized.length} LAST\r\n`, "ascii")
      return phase.exchangeFirst(
        connection,
        "data",
        timeoutMs,
        step,
        Buffer.concat([header, normalized]),
        `BDAT ${normalized.length} LAST, then <${normalized.length} bytes of message>`
      )
    })
  )

/**
 * The pipelined DATA of a transaction that has nothing to send: its reply is read, and a 354 is answered with an
 * empty message (a lone `.`), as RFC 2920 §3.1 asks; the server's verdict on it is only logged.
 */
const drainData = (connection: Connection, settings: SessionSettings, phases: Phases) => {
  const timeoutMs = millis(settings.timeouts, "data")
  return phase.run(
    phases("data", { "smtp.drain": true }),
    (step) =>
      Effect.flatMap(phase.reply(connection, "data", timeoutMs, step), (reply) =>
        reply.code !== 354
          ? Effect.void
          : Effect.asVoid(phase.exchange(connection, "data", timeoutMs, step, ["."], 1)))
  )
}

// ---------------------------------------------------------------------------------------------------------------
// RSET
// ---------------------------------------------------------------------------------------------------------------

export const reset = (session: Session, settings: SessionSettings): Effect.Effect<void, TransportError.TransportError> => {
  const { connection } = session
  // RSET opens the next transaction: it runs as part of MAIL's phase, under its timeout.
  const timeoutMs = millis(settings.timeouts, "mail-from")
  return phase.run(
    phasesOf(connection, settings)("mail-from", { "smtp.rset": true }),
    (step) =>
      Effect.flatMap(
        phase.command(connection, "mail-from", timeoutMs, step, "RSET"),
        (reply) => SmtpReply.isPositive(reply) ? Effect.void : Effect.fail(TransportError.fromReply("mail-from", reply))
      )
  )
}

// ---------------------------------------------------------------------------------------------------------------
// QUIT
// ---------------------------------------------------------------------------------------------------------------

export const quit = (
  session: {
    readonly connection: Connection
    readonly settings?: Pick<SessionSettings, "servername" | "phaseSpans" | "span"> | undefined
  }
): Effect.Effect<void> => {
  const { connection } = session
  const quitMs = Duration.toMillis(QUIT_TIMEOUT)
  const waitMs = Duration.toMillis(QUIT_CLOSE_WAIT)
  return phase.run({
    phase: "quit",
    timeoutMs: quitMs,
    phaseSpans: session.settings?.phaseSpans === true,
    span: session.settings?.span,
    attributes: () => connectionAttributes(connection, session.settings?.servername)
  }, (step) =>
    Effect.flatMap(phase.command(connection, "quit", quitMs, step, "QUIT"), (reply) =>
      // After the 221 the server closes: waiting for that close (bounded) leaves the TIME_WAIT on its side.
      reply.code !== 221 ? Effect.void : Effect.mapError(
        connection.awaitClose({
          deadline: step.clock.unsafeCurrentTimeMillis() + waitMs,
          maxLines: MAX_LINES_AFTER_QUIT
        }),
        (e) => phase.fromSocket(e, "quit", waitMs)
      ))).pipe(
      Effect.tapError((e) => log.debug(() => `QUIT: ${e.message}`)),
      Effect.ignore,
      log.annotateWhenDebug("smtp.remote_ip", connection.remoteAddress)
    )
}

export const attemptSpan = (attributes: {
  readonly servername: string
  readonly ip: string
  readonly port: number
  readonly localAddress?: string | null | undefined
}) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withSpan(effect, "smtp.attempt", {
    kind: "client",
    attributes: tracing.peerAttributes(attributes),
    captureStackTrace: false
  })
