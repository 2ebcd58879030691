/**
 * One MX host: race its addresses (RFC 8305), run the session on the winner, and record every connection attempt.
 * Each connection attempt is one span, `smtp.attempt`, from its connect to its close; the session's phases are
 * events on it (or spans of their own under it, with `TransportOptions.phaseSpans`).
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import type * as Candidates from "../../Candidates.js"
import type { Connection, Connector, TlsInfo } from "../../Connector.js"
import type * as Dane from "../../Dane.js"
import type { AttemptRecord, AttemptTls, RecipientResult } from "../../DeliveryReport.js"
import type { Variables } from "../../Expression.js"
import * as HappyEyeballs from "../../HappyEyeballs.js"
import type { Config } from "../../OutboundConfig.js"
import type { ConnectionSettings, HostSettings, RelayRoute } from "../../Settings.js"
import * as SmtpSession from "../../SmtpSession.js"
import type { TransportOptions } from "../../Transport.js"
import * as TransportError from "../../TransportError.js"
import { evaluateConnection } from "../settings/evaluate.js"
import * as tracing from "../tracing.js"
import { attemptDane } from "./dane.js"
import { firstTransportError, recipientResults, reportError } from "./report.js"
import { connectionVariables, type Group } from "./request.js"
import * as settingWarnings from "./warnings.js"

/** What the stages below the domain need of the delivery. @internal */
export interface Delivery {
  /** The delivery's span, `Transport.deliver`. */
  readonly span: Tracer.Span
  readonly config: Config
  readonly options: TransportOptions.Service
  /** Clock time (ms) the delivery started at: attempts are timed from it. */
  readonly startMs: number
  readonly message: Uint8Array
  /** The envelope sender, `""` for the null sender. */
  readonly sender: string
  readonly requireTls: boolean
  /** Trusted CAs for STARTTLS (Node's roots and the configured ones), `undefined` for Node's roots alone. */
  readonly ca: ReadonlyArray<string> | undefined
}

/** A host's settings, the variables they were evaluated with, and its DANE decision (`null`: none made). @internal */
export interface HostStage {
  readonly variables: Variables
  readonly settings: HostSettings
  /** The relay this host is, on a relay route; `null` for an MX host. */
  readonly relay: RelayRoute | null
  readonly dane?: Dane.HostDane | null | undefined
}

/** The port of a host: the relay's, or the one of every MX host. */
const portOf = (delivery: Delivery, hostStage: HostStage) => hostStage.relay?.port ?? delivery.options.port

/** @internal */
export type HostOutcome =
  /** `host`: the host's name when it answered (the connection was made), `null` when it was never reached. */
  | { readonly _tag: "NextHost"; readonly error: TransportError.TransportError; readonly host: string | null }
  | { readonly _tag: "Done"; readonly recipients: ReadonlyArray<RecipientResult> }

interface Connected {
  readonly connection: Connection
  readonly candidate: Candidates.Candidate
  readonly settings: ConnectionSettings
  readonly span: Tracer.Span
}


/** The connect of one candidate, in the attempt's own span. Interruptible; a failure or interruption closes both. */
const connect = (
  delivery: Delivery,
  host: Candidates.HostCandidates,
  hostStage: HostStage,
  warnings: Array<string>,
  candidate: Candidates.Candidate,
  parent: Tracer.Span
): Effect.Effect<Connected, TransportError.TransportError, Connector> => {
  const evaluated = evaluateConnection(
    delivery.config,
    connectionVariables(hostStage.variables, candidate.ip, candidate.source)
  )
  if (evaluated.warnings.length > 0) warnings.push(...evaluated.warnings)
  const { settings } = evaluated
  const ehlo = settingWarnings.ehloName(settings.ehloName)
  if (ehlo !== null) warnings.push(ehlo)
  const { options } = delivery
  const port = portOf(delivery, hostStage)
  return Effect.flatMap(
    Effect.makeSpan("smtp.attempt", {
      kind: "client",
      captureStackTrace: false,
      parent,
      attributes: tracing.peerAttributes({
        servername: host.host.name,
        ip: candidate.ip,
        port,
        localAddress: candidate.source
      })
    }),
    (span) =>
      SmtpSession.connect(
        { ip: candidate.ip, port, localAddress: candidate.source ?? undefined },
        { timeouts: settings.timeouts, servername: host.host.name, phaseSpans: options.phaseSpans === true, span }
      ).pipe(
        Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : tracing.end(span, exit)),
        Effect.map((connection): Connected => ({ connection, candidate, settings, span }))
      )
  )
}

/** Closes a connection and ends its attempt's span. */
const release = (connected: Connected) => Effect.zipRight(connected.connection.close, tracing.end(connected.span, Exit.void))

/**
 * Races the host's addresses, then runs the session on the winner; the winner's connection is closed when the session
 * is done, whatever happens, before the next host is tried.
 *
 * @internal
 */
export const tryHost = (
  delivery: Delivery,
  group: Group,
  hostStage: HostStage,
  host: Candidates.HostCandidates,
  attempts: Array<AttemptRecord>,
  /** An enforced MTA-STS policy applies: verified TLS or nothing (RFC 8461 §5). */
  enforced: boolean,
  warnings: Array<string>,
  /** The domain's span: each attempt's span goes under it. */
  parent: Tracer.Span
): Effect.Effect<HostOutcome, never, Connector> =>
  HappyEyeballs.raceUse({
    candidates: host.candidates(),
    attempt: (candidate: Candidates.Candidate) => connect(delivery, host, hostStage, warnings, candidate, parent),
    release,
    delay: hostStage.settings.connectionAttemptDelay
  }, (race) => {
    const since = (ms: number) => ms - delivery.startMs
    for (const loser of race.losers) {
      attempts.push({
        domain: group.domain,
        host: host.host.name,
        ip: loser.candidate.ip,
        source: loser.candidate.source,
        ehlo: null,
        tls: null,
        startMs: since(loser.startMs),
        durationMs: loser.endMs - loser.startMs,
        phase: "connect",
        outcome: loser._tag === "Failed" ? "failed" : "cancelled",
        error: loser._tag === "Failed" ? reportError(loser.error) : null
      })
    }
    if (Option.isNone(race.winner)) {
      const failures = race.losers.flatMap((l) => l._tag === "Failed" ? [l] : []).sort((a, b) => a.endMs - b.endMs)
      const last = failures[failures.length - 1]
      return Effect.succeed<HostOutcome>({ _tag: "NextHost", error: last?.error ?? noAddress(host.host.name), host: null })
    }
    const winner = race.winner.value
    const record: Record = (startMs, fields) =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        attempts.push({
          domain: group.domain,
          host: host.host.name,
          ip: winner.candidate.ip,
          source: winner.candidate.source,
          startMs: since(startMs),
          durationMs: now - startMs,
          ...fields
        })
      })
    return session(delivery, group, host, hostStage, enforced, winner.value, winner.startMs, record)
  })

type Record = (
  startMs: number,
  fields: Pick<AttemptRecord, "phase" | "outcome" | "error" | "tls" | "ehlo">
) => Effect.Effect<void>

const attemptTls = (tls: TlsInfo | null, dane: Dane.HostDane | null): AttemptTls | null =>
  tls === null
    ? null
    : { version: tls.version, cipher: tls.cipher, verified: tls.verified, reason: tls.reason, dane: attemptDane(dane, tls) }

/**
 * A handshake that failed outright (an alert, no common protocol, a reset during it) where nothing requires TLS:
 * Postfix's `may` level goes on in plaintext, on a new connection since this one is lost. Not after a timeout (a
 * silent server would cost a second timeout) nor bytes injected after the 220 (CVE-2011-0411: not a TLS failure,
 * a server to leave).
 */
const plaintextRetry = (error: TransportError.TransportError, settings: SmtpSession.SessionSettings): boolean =>
  error.phase === "tls" && (error.kind === "tls" || error.kind === "reset") && !settings.tls.required &&
  settings.tls.starttls === "optional" && settings.tls.implicit !== true && (settings.tls.dane ?? null) === null

/**
 * The session on the race's winner: open, one transaction, QUIT; under opportunistic TLS, a failed handshake is
 * followed by a plaintext session on a new connection to the same address.
 */
const session = (
  delivery: Delivery,
  group: Group,
  host: Candidates.HostCandidates,
  hostStage: HostStage,
  enforced: boolean,
  connected: Connected,
  startMs: number,
  record: Record
): Effect.Effect<HostOutcome, never, Connector> =>
  Effect.gen(function*() {
    const { relay } = hostStage
    const dane = hostStage.dane ?? null
    const tls = effectiveTls(hostStage.settings, { enforced, requireTls: delivery.requireTls, relay, dane })
    const settings: SmtpSession.SessionSettings = {
      ...connected.settings,
      servername: host.host.name,
      tls: { ...tls, ca: delivery.ca, dane: dane?.authenticate ?? null },
      phaseSpans: delivery.options.phaseSpans === true,
      // The phases report to the attempt's span without it being made the current span (a context switch each way).
      span: connected.span,
      ...(relay === null ? {} : {
        protocol: relay.protocol,
        ...(Option.isSome(relay.auth) ? { auth: relay.auth.value } : {})
      })
    }
    const port = portOf(delivery, hostStage)
    const outcome = yield* converse(delivery, group, host, connected.connection, settings, dane, (f) => record(startMs, f))
    if (outcome._tag === "Done" || !plaintextRetry(outcome.error, settings)) return outcome
    yield* Effect.logDebug(`${outcome.error.message}: going on in plaintext (tls.starttls = optional)`)
    yield* connected.connection.close
    const retryMs = yield* Clock.currentTimeMillis
    const plain: SmtpSession.SessionSettings = { ...settings, tls: { ...settings.tls, starttls: "disable" } }
    const { candidate } = connected
    // A new connection, a new attempt: its own span, beside the first one's. The connect stays interruptible (it
    // cleans up after itself); once it has succeeded the connection is closed whatever happens.
    return yield* tracing.within("smtp.attempt", Option.getOrUndefined(connected.span.parent), {
      ...tracing.peerAttributes({
        servername: host.host.name,
        ip: candidate.ip,
        port,
        localAddress: candidate.source
      }),
      "smtp.plaintext_retry": true
    }, (span) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(
          Effect.either(restore(SmtpSession.connect(
            { ip: candidate.ip, port, localAddress: candidate.source ?? undefined },
            { timeouts: settings.timeouts, servername: host.host.name, phaseSpans: settings.phaseSpans, span }
          ))),
          (retry) =>
            Either.isRight(retry)
              ? Effect.ensuring(
                restore(converse(delivery, group, host, retry.right, { ...plain, span }, null, (f) => record(retryMs, f))),
                retry.right.close
              )
              : Effect.as(
                record(retryMs, { phase: "connect", outcome: "failed", error: reportError(retry.left), tls: null, ehlo: null }),
                { _tag: "NextHost", error: retry.left, host: host.host.name } as const
              )
        )
      ))
  })

/**
 * The TLS a host gets: an enforced MTA-STS policy or a REQUIRETLS message requires verified TLS (RFC 8461 §5, RFC 8689
 * §4), so `allow-invalid-certs` does not apply to them. A relay adds its own `tls.allow-invalid-certs` and
 * `tls.implicit`. DANE (RFC 7672) requires TLS too: with usable TLSA records the session verifies by them (the CA
 * roots and `allow-invalid-certs` have no say, and an enforced MTA-STS policy gives way, RFC 8461 §2); with only
 * unusable records TLS is mandatory but not authenticated (§2.2), unless something else requires a verified
 * certificate. Shared by the session and `explain`.
 *
 * @internal
 */
export const effectiveTls = (
  host: HostSettings,
  requirements: {
    readonly enforced: boolean
    readonly requireTls: boolean
    readonly relay?: RelayRoute | null | undefined
    readonly dane?: Dane.HostDane | null | undefined
  }
): Omit<SmtpSession.SessionSettings["tls"], "ca" | "dane"> => {
  const relay = requirements.relay ?? null
  const verified = requirements.enforced || requirements.requireTls
  const daneTls = requirements.dane?.requireTls === true
  const allowInvalidCerts = host.tls.allowInvalidCerts || relay?.allowInvalidCerts === true || daneTls
  return {
    starttls: host.tls.starttls,
    allowInvalidCerts: allowInvalidCerts && !verified,
    required: verified || daneTls,
    ...(relay?.implicitTls === true ? { implicit: true } : {})
  }
}

/** Open, one transaction, QUIT, on one connection; its attempt recorded. */
const converse = (
  delivery: Delivery,
  group: Group,
  host: Candidates.HostCandidates,
  connection: Connection,
  settings: SmtpSession.SessionSettings,
  dane: Dane.HostDane | null,
  record: (fields: Pick<AttemptRecord, "phase" | "outcome" | "error" | "tls" | "ehlo">) => Effect.Effect<void>
): Effect.Effect<HostOutcome> =>
  Effect.gen(function*() {
    const opened = yield* Effect.either(SmtpSession.open(connection, settings))
    if (Either.isLeft(opened)) {
      let error = opened.left
      // RFC 8689 §4.1: a REQUIRETLS message fails for good only when no MX host offered it, which a host without
      // STARTTLS (or refusing it) does not; the other TLS requirements defer (Postfix's 4.7.4). Permanent here, the
      // next host is still tried: the recipients fail only when every host failed permanently.
      if (error.phase === "tls" && (error.kind === "policy" || error.kind === "reply") && delivery.requireTls) {
        error = new TransportError.TransportError({ ...fieldsOf(error), permanent: true })
      }
      // A refusal in words (421 greeting, EHLO 550) leaves the dialogue in step: say goodbye (RFC 5321 §3.1);
      // after a timeout or a reset just close.
      if (SmtpSession.canQuitAfter(error)) yield* SmtpSession.quit({ connection, settings })
      yield* record({
        phase: error.phase,
        outcome: "failed",
        error: reportError(error),
        tls: attemptTls(connection.tls, dane),
        ehlo: error.phase === "greeting" ? null : settings.ehloName
      })
      return { _tag: "NextHost", error, host: host.host.name } as const
    }
    const opening = opened.right
    if (delivery.requireTls && !opening.capabilities.requireTls) {
      // RFC 8689 §4.1: this host cannot take a REQUIRETLS message; another MX host may.
      const error = TransportError.make(
        "mail-from",
        "policy",
        `mail-from: REQUIRETLS message and ${host.host.name} does not advertise REQUIRETLS`,
        true
      )
      yield* SmtpSession.quit(opening)
      yield* record({
        phase: "mail-from",
        outcome: "failed",
        error: reportError(error),
        tls: attemptTls(opening.tls, dane),
        ehlo: opening.ehloName
      })
      return { _tag: "NextHost", error, host: host.host.name } as const
    }
    const envelope: SmtpSession.Envelope = {
      sender: delivery.sender,
      recipients: group.recipients,
      requireTls: delivery.requireTls
    }
    const transaction = yield* SmtpSession.transaction(opening, envelope, delivery.message, settings)
    // Refused before MAIL was sent (SMTPUTF8, REQUIRETLS, SIZE, no recipient that can be sent): no transaction ran.
    const refused = Either.isLeft(transaction.mailFrom) && transaction.mailFrom.left.kind === "policy"
      ? transaction.mailFrom.left
      : null
    const transportError = refused ?? firstTransportError(transaction)
    if (transaction.canQuit) yield* SmtpSession.quit(opening)
    yield* record({
      phase: transportError === null ? "quit" : transaction.phase,
      outcome: transportError === null ? "completed" : "failed",
      error: transportError === null ? null : reportError(transportError),
      tls: attemptTls(opening.tls, dane),
      ehlo: opening.ehloName
    })
    return { _tag: "Done", recipients: recipientResults(host.host.name, transaction) } as const
  })

const fieldsOf = (error: TransportError.TransportError) => ({
  phase: error.phase,
  kind: error.kind,
  permanent: error.permanent,
  message: error.message,
  reply: error.reply
})

const noAddress = (host: string) =>
  TransportError.make("connect", "unreachable", `no address of ${host} could be tried`)
