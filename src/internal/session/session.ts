/**
 * The SMTP client dialogue: each phase one `exchange` on the connection (its commands written and its replies read
 * in one async step) under the phase's deadline.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import { identity } from "effect/Function"
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
  const phaseSpans = full?.phaseSpans === true
  const connectWith = (connector: Connector.Connector.Service, step: phase.Step) =>
    phase.socketFailure(
      connector.connect({ ip: options.ip, port: options.port, localAddress: options.localAddress, deadline: step.deadline }),
      "connect",
      timeoutMs
    )
  // The Connector, the Clock, the log level and the span read in one step, as a Tag's read would take a step of its own.
  return Effect.withFiberRuntime((fiber) => {
    const connector = Context.unsafeGet(fiber.currentContext, Connector.Connector)
    const read = phase.reader(fiber)
    if (!read.debug && phase.reportsNothing(read, phaseSpans, full?.span)) {
      return connectWith(connector, phase.stepOf(read, timeoutMs))
    }
    return phase.run({
      phase: "connect",
      timeoutMs,
      phaseSpans,
      span: full?.span,
      attributes: () => tracing.peerAttributes({ ...options, servername: full?.servername })
    }, (step) =>
      Effect.tap(connectWith(connector, step), (c) =>
        step.debug ? Effect.logDebug(`connected to ${c.remoteAddress}:${options.port} from ${c.localAddress}`) : Effect.void))
  })
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
 * EHLO timeout; `then` goes on from the greeting. With `silent` (the phase reports to nothing) the EHLO is its
 * exchange alone, and `then` starts where its reply completes.
 */
const hello = <A>(
  connection: Connection,
  settings: SessionSettings,
  phases: Phases,
  silent: phase.Reader | null,
  then: (hi: Hello) => Effect.Effect<A, TransportError.TransportError>
): Effect.Effect<A, TransportError.TransportError> => {
  const name = settings.ehloName
  const timeoutMs = millis(settings.timeouts, "ehlo")
  const lmtp = settings.protocol === "lmtp"
  const command = `${lmtp ? "LHLO" : "EHLO"} ${name}`
  const replied = (reply: Reply): Effect.Effect<A, TransportError.TransportError> => {
    if (SmtpReply.isPositive(reply)) return then({ reply, capabilities: capabilities.fromEhlo(reply), helo: false })
    // LMTP has no HELO (RFC 2033 §4.1).
    if (lmtp || (reply.code !== 500 && reply.code !== 502)) return Effect.fail(TransportError.fromReply("ehlo", reply))
    return Effect.flatMap(
      phase.run(
        phases("ehlo", { "smtp.ehlo_name": name, "smtp.helo": true }),
        (step) => phase.command(connection, "ehlo", timeoutMs, step, `HELO ${name}`)
      ),
      (helo) =>
        SmtpReply.isPositive(helo)
          ? then({ reply: helo, capabilities: capabilities.none, helo: true })
          : Effect.fail(TransportError.fromReply("ehlo", helo))
    )
  }
  if (silent !== null) {
    return phase.exchangeFirstThen(
      connection,
      "ehlo",
      timeoutMs,
      phase.stepOf(silent, timeoutMs),
      [command],
      (reply) => Either.isLeft(reply) ? Effect.fail(reply.left) : replied(reply.right)
    )
  }
  return Effect.flatMap(
    phase.run(
      phases("ehlo", { "smtp.ehlo_name": name }),
      (step) => phase.command(connection, "ehlo", timeoutMs, step, command)
    ),
    replied
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
  // The fiber's Clock, log level and span read once for the opening's phases, in the step that starts it.
  Effect.withFiberRuntime((fiber) => {
    if (!EHLO_NAME.test(settings.ehloName)) {
      return Effect.fail(
        TransportError.make("ehlo", "policy", `ehlo: invalid EHLO name ${JSON.stringify(settings.ehloName)}`, true)
      )
    }
    const read = phase.reader(fiber)
    if (!read.debug) return opening(connection, settings, read)
    return Effect.annotateLogs(
      Effect.suspend(() => opening(connection, settings, read)),
      "smtp.remote_ip",
      connection.remoteAddress
    )
  })

/**
 * The greeting, EHLO, and what they call for: continuations rather than a generator, on every new connection's path.
 * Where the phases report to nothing (no span of its own, no event, Debug off), the greeting and the first EHLO are
 * each their exchange alone, the next phase started where the reply completes.
 */
const opening = (
  connection: Connection,
  settings: SessionSettings,
  read: phase.Reader
): Effect.Effect<Session, TransportError.TransportError> => {
  const phases = phasesOf(connection, settings)
  const silent = !read.debug && phase.reportsNothing(read, settings.phaseSpans, settings.span) ? read : null
  const greetingMs = millis(settings.timeouts, "greeting")
  const greeted = (greeting: Reply, tls: TlsInfo | null): Effect.Effect<Session, TransportError.TransportError> =>
    greeting.code !== 220
      ? Effect.fail(TransportError.fromReply("greeting", greeting))
      : hello(connection, settings, phases, silent, (hi) => afterHello(connection, settings, phases, greeting, hi, tls))
  const greet = (tls: TlsInfo | null) =>
    silent !== null
      ? phase.exchangeFirstThen(
        connection,
        "greeting",
        greetingMs,
        phase.stepOf(silent, greetingMs),
        undefined,
        (reply) => Either.isLeft(reply) ? Effect.fail(reply.left) : greeted(reply.right, tls)
      )
      : Effect.flatMap(
        phase.run(phases("greeting"), (step) => phase.reply(connection, "greeting", greetingMs, step)),
        (greeting) => greeted(greeting, tls)
      )
  return settings.tls.implicit === true ? Effect.flatMap(implicitTls(connection, settings, phases), greet) : greet(null)
}

/** STARTTLS and the EHLO after it where the policy asks for TLS, then AUTH where configured. */
const afterHello = (
  connection: Connection,
  settings: SessionSettings,
  phases: Phases,
  greeting: Reply,
  hi: Hello,
  tls: TlsInfo | null
): Effect.Effect<Session, TransportError.TransportError> => {
  // A REQUIRETLS message, an enforced MTA-STS policy or a DANE host never goes in plaintext, whatever
  // tls.starttls says.
  const dane = settings.tls.dane ?? null
  const policy: TlsPolicy = settings.tls.required || dane !== null ? "require" : settings.tls.starttls
  if (tls === null && policy !== "disable") {
    if (!hi.capabilities.startTls) {
      if (policy === "require") {
        // Temporary, as Postfix's 4.7.4: a STARTTLS stripped from the EHLO reply delays mail, never bounces it.
        if (dane !== null) {
          return Effect.fail(TransportError.make(
            "tls",
            "dane",
            `tls: STARTTLS not advertised, and ${settings.servername} has DANE TLSA records`
          ))
        }
        return Effect.fail(TransportError.make(
          "tls",
          "policy",
          settings.tls.required
            ? "tls: STARTTLS not advertised, and TLS is required for this message"
            : "tls: STARTTLS not advertised (tls.starttls = require)"
        ))
      }
    } else {
      return Effect.flatMap(startTls(connection, settings, phases, policy), (secured) =>
        secured === null
          ? authenticated(connection, settings, phases, greeting, hi, null)
          : hello(connection, settings, phases, null, (again) =>
            authenticated(connection, settings, phases, greeting, again, secured)))
    }
  }
  return authenticated(connection, settings, phases, greeting, hi, tls)
}

/** AUTH where configured, and the session. */
const authenticated = (
  connection: Connection,
  settings: SessionSettings,
  phases: Phases,
  greeting: Reply,
  hi: Hello,
  tls: TlsInfo | null
): Effect.Effect<Session, TransportError.TransportError> => {
  const session = (mechanism: string | null): Session => ({
    connection,
    settings,
    capabilities: hi.capabilities,
    tls,
    greeting,
    ehloName: settings.ehloName,
    ehlo: hi.reply,
    helo: hi.helo,
    auth: mechanism
  })
  // Capabilities are not asked again after AUTH: some servers forget the login on a second EHLO (Stalwart's note).
  return settings.auth === undefined
    ? Effect.succeed(session(null))
    : Effect.map(authenticate(connection, settings, phases, settings.auth, hi.capabilities, tls), session)
}

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
  // The fiber's Clock, log level and span read once for the transaction's phases, in the step that starts it.
  Effect.withFiberRuntime((fiber) => {
    const reader = phase.reader(fiber)
    if (!reader.debug) return new Transaction(session, envelope, settings, reader).start(message)
    return Effect.annotateLogs(
      Effect.suspend(() => new Transaction(session, envelope, settings, reader).start(message)),
      "smtp.remote_ip",
      session.connection.remoteAddress
    )
  })

/**
 * `f` of the effect's value: at once when the effect is a value already (an exchange whose reply was buffered, as
 * RCPT's and DATA's are under PIPELINING), else as its continuation. What a generator's `yield*` does, without the
 * generator.
 */
const andThen = <A, B, E>(effect: Effect.Effect<A, E>, f: (a: A) => Effect.Effect<B, E>): Effect.Effect<B, E> =>
  Exit.isExit(effect) && Exit.isSuccess(effect) ? f(effect.value as A) : Effect.flatMap(effect, f)

const finalReply = (reply: Reply): Either.Either<Reply, TransportError.TransportError> =>
  SmtpReply.isPositive(reply) ? Either.right(reply) : Either.left(TransportError.fromReply("data", reply))

type ResultFields = Pick<TransactionResult, "mailFrom" | "data" | "phase" | "canQuit">

/**
 * One transaction: MAIL, the RCPTs, the message, each stage a method that returns the effect going on from there.
 * Continuations rather than a generator: this runs for every message on a reused connection, where the generator
 * object and its iterator steps were the largest allocation and a tenth of the run loop's time.
 */
class Transaction {
  private readonly connection: Connection
  private readonly pipelined: boolean
  private readonly chunking: boolean
  /**
   * DATA goes last in the pipeline (RFC 2920 §3.1); BDAT waits for the RCPT replies so that no message is sent when
   * every recipient is refused.
   */
  private readonly dataInPipeline: boolean
  /** The phases report to no span and no event: each is its body alone, no options or attributes built. */
  private readonly silent: boolean
  private readonly outcomes: Array<RecipientOutcome | undefined>
  private phasesMemo: Phases | null = null
  private normalized: Uint8Array = new Uint8Array(0)
  private rcpts: ReadonlyArray<{ readonly index: number; readonly line: string }> = []
  private mailFrom: Either.Either<Reply, TransportError.TransportError> | null = null
  private mailError: TransportError.TransportError | null = null
  /** An RCPT exchange failed: the recipients after it get its error, unsent. */
  private broken: TransportError.TransportError | null = null

  constructor(
    private readonly session: Session,
    private readonly envelope: Envelope,
    private readonly settings: SessionSettings,
    private readonly reader: phase.Reader
  ) {
    this.connection = session.connection
    const caps = session.capabilities
    this.pipelined = caps.pipelining
    this.chunking = caps.chunking
    this.dataInPipeline = caps.pipelining && !caps.chunking
    this.silent = phase.reportsNothing(reader, settings.phaseSpans, settings.span)
    this.outcomes = envelope.recipients.map(() => undefined)
  }

  private phases(p: SessionPhase, extra?: phase.Attributes): phase.PhaseOptions {
    return (this.phasesMemo ??= phasesOf(this.connection, this.settings))(p, extra)
  }

  /** `phase.attempt`, its Step built here where the phase reports to nothing (no step, no options built). */
  private attempt<A>(
    p: SessionPhase,
    extra: phase.Attributes | undefined,
    timeoutMs: number,
    body: (step: phase.Step) => Effect.Effect<Either.Either<A, TransportError.TransportError>>
  ): Effect.Effect<Either.Either<A, TransportError.TransportError>> {
    if (this.silent) return body(phase.stepOf(this.reader, timeoutMs))
    return phase.attempt(this.phases(p, extra), body)
  }

  private everyone(error: TransportError.TransportError): ReadonlyArray<RecipientOutcome> {
    return this.envelope.recipients.map((address) => ({ address, accepted: false, reply: null, error }))
  }

  private result(fields: ResultFields, recipients?: ReadonlyArray<RecipientOutcome>): TransactionResult {
    const all = this.envelope.recipients
    return {
      // Field by field rather than a spread of `fields`: on every message's path.
      mailFrom: fields.mailFrom,
      recipients: recipients ??
        this.outcomes.map((o, i) => o ?? { address: all[i]!, accepted: false, reply: null, error: null }),
      data: fields.data,
      phase: fields.phase,
      canQuit: fields.canQuit,
      pipelined: this.pipelined,
      chunking: this.chunking
    }
  }

  private done(fields: ResultFields, recipients?: ReadonlyArray<RecipientOutcome>): Effect.Effect<TransactionResult> {
    return Effect.succeed(this.result(fields, recipients))
  }

  start(message: Uint8Array): Effect.Effect<TransactionResult> {
    const prepared = prepare(this.session, this.envelope, message)
    if (Either.isLeft(prepared)) {
      const error = prepared.left
      return Effect.zipRight(
        Effect.logDebug(error.message),
        this.done({ mailFrom: Either.left(error), data: null, phase: "mail-from", canQuit: true }, this.everyone(error))
      )
    }
    const { mail, normalized, rcpts, refused } = prepared.right
    this.normalized = normalized
    this.rcpts = rcpts
    for (const { error, index } of refused) {
      this.outcomes[index] = { address: this.envelope.recipients[index]!, accepted: false, reply: null, error }
    }
    if (rcpts.length === 0) {
      // Nothing is sent: each recipient keeps its own refusal, MAIL carries the reason there is no transaction.
      const error = policyError("mail-from", "no recipient can be sent")
      return this.done({ mailFrom: Either.left(error), data: null, phase: "mail-from", canQuit: true })
    }
    // MAIL (with every RCPT and DATA when pipelining): one write, MAIL's reply under its own deadline
    const lines = [mail]
    if (this.pipelined) {
      for (const rcpt of rcpts) lines.push(rcpt.line)
      if (this.dataInPipeline) lines.push("DATA")
    }
    const connection = this.connection
    const mailMs = millis(this.settings.timeouts, "mail-from")
    if (this.silent) {
      const step = phase.stepOf(this.reader, mailMs)
      return phase.exchangeFirstThen(connection, "mail-from", mailMs, step, lines, (reply) => this.afterMail(reply))
    }
    return andThen(
      this.attempt("mail-from", undefined, mailMs, (step) =>
        phase.exchangeFirstEitherNow(connection, "mail-from", mailMs, step, lines)),
      (reply) => this.afterMail(reply)
    )
  }

  private afterMail(reply: Either.Either<Reply, TransportError.TransportError>): Effect.Effect<TransactionResult> {
    if (Either.isLeft(reply)) {
      return this.done({ mailFrom: reply, data: null, phase: "mail-from", canQuit: false }, this.everyone(reply.left))
    }
    const mailError = SmtpReply.isPositive(reply.right) ? null : TransportError.fromReply("mail-from", reply.right)
    const mailFrom = mailError === null ? Either.right(reply.right) : Either.left(mailError)
    this.mailError = mailError
    this.mailFrom = mailFrom
    if (mailError !== null && !this.pipelined) {
      return this.done({ mailFrom, data: null, phase: "mail-from", canQuit: true }, this.everyone(mailError))
    }
    return this.rcpt(0)
  }

  /** RCPT, one reply per recipient in order, each under its own deadline: the `from`-th recipient on. */
  private rcpt(from: number): Effect.Effect<TransactionResult> {
    const { connection, pipelined, rcpts } = this
    const rcptMs = millis(this.settings.timeouts, "rcpt-to")
    for (let k = from; k < rcpts.length; k++) {
      const { index, line } = rcpts[k]!
      const address = this.envelope.recipients[index]!
      if (this.broken !== null) {
        this.outcomes[index] = { address, accepted: false, reply: null, error: this.broken }
        continue
      }
      const reply = this.attempt("rcpt-to", { "smtp.rcpt": address }, rcptMs, (step) =>
        phase.exchangeFirstEitherNow(connection, "rcpt-to", rcptMs, step, pipelined ? undefined : [line]))
      if (Exit.isExit(reply) && Exit.isSuccess(reply)) {
        this.rcptReply(index, address, reply.value as Either.Either<Reply, TransportError.TransportError>)
        continue
      }
      return Effect.flatMap(reply, (outcome) => {
        this.rcptReply(index, address, outcome)
        return this.rcpt(k + 1)
      })
    }
    return this.afterRcpts()
  }

  private rcptReply(index: number, address: string, reply: Either.Either<Reply, TransportError.TransportError>): void {
    if (Either.isLeft(reply)) {
      this.broken = reply.left
      this.outcomes[index] = { address, accepted: false, reply: null, error: reply.left }
      return
    }
    const accepted = SmtpReply.isPositive(reply.right)
    this.outcomes[index] = {
      address,
      accepted,
      reply: reply.right,
      error: accepted ? null : TransportError.fromReply("rcpt-to", reply.right)
    }
  }

  private afterRcpts(): Effect.Effect<TransactionResult> {
    const { broken, mailError } = this
    const mailFrom = this.mailFrom!
    if (mailError !== null) {
      // Pipelined and MAIL refused: the RCPT replies are moot (RFC 2920 §3.2), every recipient has MAIL's error.
      const recipients = this.everyone(mailError)
      if (broken !== null) return this.done({ mailFrom, data: null, phase: "rcpt-to", canQuit: false }, recipients)
      if (!this.dataInPipeline) return this.done({ mailFrom, data: null, phase: "rcpt-to", canQuit: true }, recipients)
      return Effect.flatMap(
        Effect.either(drainData(this.connection, this.settings, (p, extra) => this.phases(p, extra))),
        (drained) => this.done({ mailFrom, data: null, phase: "data", canQuit: Either.isRight(drained) }, recipients)
      )
    }
    if (broken !== null) return this.done({ mailFrom, data: null, phase: "rcpt-to", canQuit: false })
    if (!this.outcomes.some((o) => o?.accepted === true)) {
      if (!this.dataInPipeline) return this.done({ mailFrom, data: null, phase: "rcpt-to", canQuit: true })
      return Effect.flatMap(
        Effect.either(drainData(this.connection, this.settings, (p, extra) => this.phases(p, extra))),
        (drained) => this.done({ mailFrom, data: null, phase: "data", canQuit: Either.isRight(drained) })
      )
    }
    return this.settings.protocol === "lmtp" ? this.lmtpData(mailFrom) : this.data(mailFrom)
  }

  /** The message, and its end-of-data reply. */
  private data(mailFrom: Either.Either<Reply, TransportError.TransportError>): Effect.Effect<TransactionResult> {
    const { chunking, connection, dataInPipeline, normalized } = this
    const dataMs = millis(this.settings.timeouts, "data")
    const end = (data: Either.Either<Reply, TransportError.TransportError>) =>
      Either.isLeft(data)
        ? this.result({ mailFrom, data, phase: "data", canQuit: data.left.kind === "reply" })
        : this.result({ mailFrom, data: finalReply(data.right), phase: "data", canQuit: true })
    if (this.silent && !chunking) {
      return sendDataMap(connection, dataMs, phase.stepOf(this.reader, dataMs), normalized, dataInPipeline, end)
    }
    return andThen(
      this.attempt("data", { "smtp.bytes": normalized.length, "smtp.chunking": chunking }, dataMs, (step) =>
        chunking
          ? Effect.either(sendBdat(connection, dataMs, step, normalized))
          : sendDataEither(connection, dataMs, step, normalized, dataInPipeline)),
      (data) => Effect.succeed(end(data))
    )
  }

  /**
   * LMTP (RFC 2033 §4.2): one reply per accepted recipient, in RCPT order, all under the data deadline. Each is read
   * on its own so that a failure part-way keeps the replies that came before it.
   */
  private lmtpData(mailFrom: Either.Either<Reply, TransportError.TransportError>): Effect.Effect<TransactionResult> {
    const { chunking, connection, dataInPipeline, normalized, outcomes } = this
    const dataMs = millis(this.settings.timeouts, "data")
    const accepted = outcomes.flatMap((o, index) => o?.accepted === true ? [index] : [])
    const replies: Array<Reply> = []
    const send = (step: phase.Step) =>
      chunking
        ? sendBdat(connection, dataMs, step, normalized)
        : sendData(connection, dataMs, step, normalized, dataInPipeline)
    const read = Effect.either(phase.run(
      this.phases("data", { "smtp.bytes": normalized.length, "smtp.chunking": chunking, "smtp.lmtp": true }),
      (step) =>
        Effect.gen(function*() {
          replies.push(yield* send(step))
          while (replies.length < accepted.length) replies.push(yield* phase.reply(connection, "data", dataMs, step))
        })
    ))
    return Effect.flatMap(read, (read) => {
      accepted.forEach((index, i) => {
        const reply = replies[i]
        outcomes[index] = {
          ...outcomes[index]!,
          data: reply !== undefined ? finalReply(reply) : Either.left(Either.isLeft(read) ? read.left : noReply)
        }
      })
      const first = replies[0]
      return this.done({
        mailFrom,
        data: first !== undefined ? finalReply(first) : Either.left(Either.isLeft(read) ? read.left : noReply),
        phase: "data",
        canQuit: Either.isRight(read) || read.left.kind === "reply"
      })
    })
  }
}

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
      return early !== null ? Effect.fail(early) : sendPayload(connection, timeoutMs, step, normalized)
    }
  )

/** The dot-stuffed message and its terminator, then the end-of-data reply (the transcript names it, not its bytes). */
const sendPayload = (connection: Connection, timeoutMs: number, step: phase.Step, normalized: Uint8Array) =>
  phase.exchangeFirst(
    connection,
    "data",
    timeoutMs,
    step,
    dotStuff.stuff(normalized),
    `<${normalized.length} bytes of message, dot-stuffed>`
  )

/** `sendData`, its outcome as an Either: each exchange's match gives it, no `Effect.either` around the phase. */
const sendDataEither = (
  connection: Connection,
  timeoutMs: number,
  step: phase.Step,
  normalized: Uint8Array,
  pipelined: boolean
): Effect.Effect<Either.Either<Reply, TransportError.TransportError>> =>
  sendDataMap(connection, timeoutMs, step, normalized, pipelined, identity)

/**
 * `sendDataEither`, its outcome mapped by `f` where the end-of-data reply completes (`phase.exchangeFirstMap`): the
 * fiber resumes with the transaction's result, no continuation after it.
 */
const sendDataMap = <B>(
  connection: Connection,
  timeoutMs: number,
  step: phase.Step,
  normalized: Uint8Array,
  pipelined: boolean,
  f: (reply: Either.Either<Reply, TransportError.TransportError>) => B
): Effect.Effect<B> =>
  // Under PIPELINING the 354 came with MAIL's reply: taken at once, no continuation.
  andThen(
    phase.exchangeFirstEitherNow(connection, "data", timeoutMs, step, pipelined ? undefined : ["DATA"]),
    (reply) => {
      if (Either.isLeft(reply)) return Effect.succeed(f(reply))
      if (reply.right.code !== 354) return Effect.succeed(f(Either.left(TransportError.fromReply("data", reply.right))))
      const early = earlyReply(connection, "its 354")
      if (early !== null) return Effect.succeed(f(Either.left(early)))
      return step.debug
        ? Effect.map(Effect.either(sendPayload(connection, timeoutMs, step, normalized)), f)
        : phase.exchangeFirstMap(connection, "data", timeoutMs, step, dotStuff.stuff(normalized), f)
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
  const phaseSpans = session.settings?.phaseSpans === true
  const span = session.settings?.span
  // After the 221 the server closes: waiting for that close (bounded) leaves the TIME_WAIT on its side.
  const awaitClose = (clock: Clock.Clock) =>
    connection.awaitClose({ deadline: clock.unsafeCurrentTimeMillis() + waitMs, maxLines: MAX_LINES_AFTER_QUIT })
  return Effect.withFiberRuntime((fiber) => {
    const read = phase.reader(fiber)
    if (!read.debug && phase.reportsNothing(read, phaseSpans, span)) {
      // Nothing reports the phase and nothing logs its failure: QUIT's exchange and the wait, their failures ignored.
      return phase.exchangeFirstThen(
        connection,
        "quit",
        quitMs,
        phase.stepOf(read, quitMs),
        ["QUIT"],
        (reply) =>
          Either.isLeft(reply) || reply.right.code !== 221
            ? Effect.void
            : Effect.catchAllCause(awaitClose(read.clock), ignoreFailure)
      )
    }
    const quitting = phase.run({
      phase: "quit",
      timeoutMs: quitMs,
      phaseSpans,
      span,
      attributes: () => connectionAttributes(connection, session.settings?.servername)
    }, (step) =>
      Effect.flatMap(phase.command(connection, "quit", quitMs, step, "QUIT"), (reply) =>
        reply.code !== 221 ? Effect.void : phase.socketFailure(awaitClose(step.clock), "quit", waitMs))).pipe(
        Effect.tapError((e) => log.debug(() => `QUIT: ${e.message}`)),
        Effect.ignore
      )
    return read.debug ? Effect.annotateLogs(quitting, "smtp.remote_ip", connection.remoteAddress) : quitting
  })
}

/** `Effect.ignore`'s failure side alone (a success passes a failure handler's frame without a step). */
const ignoreFailure = <E>(cause: Cause.Cause<E>): Effect.Effect<void> =>
  Cause.isDie(cause)
    ? Effect.failCause(Cause.flatMap(cause, (e) => Cause.die(e)))
    : Cause.isFailure(cause)
    ? Effect.void
    : Effect.failCause(cause as Cause.Cause<never>)

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
