/**
 * One MX host: race its addresses (RFC 8305), run the session on the winner, and record every connection attempt.
 * Each connection attempt is one span, `smtp.attempt`, from its connect to its close; the session's phases are
 * events on it (or spans of their own under it, with `TransportOptions.phaseSpans`).
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Equal from "effect/Equal"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import { rootCertificates } from "node:tls"
import type * as Candidates from "../../Candidates.js"
import type * as ConnectionPool from "../../ConnectionPool.js"
import * as Limiter from "../../Limiter.js"
import type { Connection, Connector, TlsInfo } from "../../Connector.js"
import type * as Dane from "../../Dane.js"
import type { AttemptRecord, AttemptTls, RecipientResult } from "../../DeliveryReport.js"
import * as HappyEyeballs from "../../HappyEyeballs.js"
import type { Config } from "../../OutboundConfig.js"
import type { ConnectionSettings, HostSettings, RelayRoute } from "../../Settings.js"
import * as SmtpSession from "../../SmtpSession.js"
import type { TransportOptions } from "../../Transport.js"
import * as TransportError from "../../TransportError.js"
import { extend } from "../extend.js"
import { evaluateConnection } from "../settings/evaluate.js"
import * as tracing from "../tracing.js"
import { attemptDane } from "./dane.js"
import type { Plans } from "./plans.js"
import { firstTransportError, recipientResults, reportError } from "./report.js"
import { connectionVariables, type Group, type HostVariables } from "./request.js"
import * as settingWarnings from "./warnings.js"

/** What the stages below the domain need of the delivery. @internal */
export interface Delivery {
  /** The delivery's span, `Transport.deliver`. */
  readonly span: Tracer.Span
  readonly config: Config
  readonly options: TransportOptions.Service
  /** Clock time (ms) the delivery started at: attempts are timed from it. */
  readonly startMs: number
  /**
   * The fiber's Clock (the one `Clock.currentTimeMillis` reads), read once per delivery: an attempt's times are read
   * from it synchronously, where an Effect per read would be two or three run-loop steps.
   */
  readonly clock: Clock.Clock
  readonly message: Uint8Array
  /** The envelope sender, `""` for the null sender. */
  readonly sender: string
  readonly requireTls: boolean
  /** Trusted CAs for STARTTLS (Node's roots and the configured ones), `undefined` for Node's roots alone. */
  readonly ca: ReadonlyArray<string> | undefined
  /** The layer's connection pool; `null`: every connection carries one transaction. */
  readonly pool: ConnectionPool.ConnectionPool.Service | null
  /** A new connection's id (the pool's, or the delivery's own count without a pool). */
  readonly connectionId: Effect.Effect<string>
  /** The limiter state; `null` when no limiter is configured. */
  readonly limiter: Limiter.Limiter.Service | null
  /** The layer's plan cache and this Clock; `null` without a cache, or where the delivery's spans record. */
  readonly plans: Plans | null
}

/** A host's settings, the variables they were evaluated with, and its DANE decision (`null`: none made). @internal */
export interface HostStage {
  readonly variables: HostVariables
  readonly settings: HostSettings
  /** The domain's `limiter-wait`. */
  readonly limiterWait: Duration.Duration
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

/** A race's success: a new connection, or an idle one taken from the pool after a limiter's wait. */
type Connected = Opened | Taken

interface ConnectedFields {
  readonly connection: Connection
  readonly id: string
  readonly candidate: Candidates.Candidate
  readonly settings: ConnectionSettings
  readonly openedMs: number
  /** Gives back the connection-stage limiters' permits. */
  readonly permit: Effect.Effect<void>
  /** Handed to the pool (or, taken from it, to the transaction that closes it): the race's release must not close it. */
  kept: boolean
}

/** A new connection, in its attempt's span. */
interface Opened extends ConnectedFields {
  readonly span: Tracer.Span
  readonly idle: null
}

/**
 * The pool's idle connection an attempt took after waiting for a connection-stage limiter (the one whose release
 * gave it the turn), instead of connecting; its transaction makes its own span.
 */
interface Taken extends ConnectedFields {
  readonly span: null
  readonly idle: ConnectionPool.Idle
  /** Where it goes back untouched if this attempt loses the race. */
  readonly pool: ConnectionPool.ConnectionPool.Service
}

/**
 * The connect of one candidate, in the attempt's own span. Interruptible; a failure or interruption closes both.
 *
 * With connection-stage limiters (`remote_ip`, `local_ip`), their permits are taken first, and then the pool is
 * looked at again for this address and source: a delivery that waited got its turn from a transaction that ended,
 * and that transaction's connection, given back to the pool just before its permit, is the one to take (concurrency
 * counts connections carrying a transaction; an idle one holds no permit, so taking it needs the permit just
 * received, and connecting beside it would open one connection more than the limit lets transactions run).
 */
const connect = (
  delivery: Delivery,
  host: Candidates.HostCandidates,
  hostStage: HostStage,
  warnings: Array<string>,
  candidate: Candidates.Candidate,
  parent: Tracer.Span,
  /** What the session is opened with: the pool's session key is made of it (with the host's name and DANE). */
  opening: Opening
): Effect.Effect<Connected, TransportError.TransportError, Connector> => {
  const variables = connectionVariables(hostStage.variables, candidate.ip, candidate.source)
  const evaluated = evaluateConnection(delivery.config, variables)
  if (evaluated.warnings.length > 0) warnings.push(...evaluated.warnings)
  const { settings } = evaluated
  const ehlo = settingWarnings.ehloName(settings.ehloName)
  if (ehlo !== null) warnings.push(ehlo)
  const buckets = delivery.limiter === null
    ? []
    : Limiter.buckets(delivery.config.limiters, "connection", variables)
  if (buckets.length === 0) return open(delivery, host, hostStage, candidate, settings, parent, Effect.void)
  const limiter = delivery.limiter!
  const { pool } = delivery
  const port = portOf(delivery, hostStage)
  // The limiters' permits are held from before the connect until the connection is released; a connect that fails
  // or is interrupted gives them back.
  return Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(restore(limiter.acquire(buckets, hostStage.limiterWait)), (permit) => {
      const connectNew: Effect.Effect<Connected, TransportError.TransportError, Connector> = restore(
        open(delivery, host, hostStage, candidate, settings, parent, permit)
      )
      if (pool === null) return connectNew
      const accept = (idle: ConnectionPool.Idle) =>
        idle.source === candidate.source && idle.session.ehloName === settings.ehloName &&
        sameSecret(idle.session.settings.auth, opening.auth)
      const keys = sessionKeys(opening, host.host.name, hostStage.dane ?? null)
      const take = (k: number): Effect.Effect<Option.Option<ConnectionPool.Idle>> =>
        Effect.flatMap(
          pool.take({ ip: candidate.ip, port, session: keys[k]! }, accept),
          (taken) => Option.isSome(taken) || k + 1 >= keys.length ? Effect.succeed(taken) : take(k + 1)
        )
      return Effect.flatMap(
        take(0),
        Option.match({
          onNone: () => connectNew,
          onSome: (idle): Effect.Effect<Connected, TransportError.TransportError, Connector> =>
            Effect.succeed<Taken>({
              connection: idle.session.connection,
              id: idle.id,
              candidate,
              settings,
              span: null,
              openedMs: idle.openedMs,
              permit,
              idle,
              pool,
              kept: false
            })
        })
      )
    })
  )
}

/**
 * A new connection to the candidate, in the attempt's own span, under permits already held (`permit` gives them
 * back if the connect fails or is interrupted). Interruptible.
 */
const open = (
  delivery: Delivery,
  host: Candidates.HostCandidates,
  hostStage: HostStage,
  candidate: Candidates.Candidate,
  settings: ConnectionSettings,
  parent: Tracer.Span,
  permit: Effect.Effect<void>
): Effect.Effect<Opened, TransportError.TransportError, Connector> => {
  const port = portOf(delivery, hostStage)
  return Effect.flatMap(
    tracing.make("smtp.attempt", parent, () =>
      tracing.peerAttributes({
        servername: host.host.name,
        ip: candidate.ip,
        port,
        localAddress: candidate.source
      }), "client"),
    (span) =>
      // The connect alone is interruptible (it cleans up after itself); the connection it returns goes out through an
      // uninterruptible tail, as the race's `attempt` must hand over what it acquired, and an interruption that came
      // meanwhile releases it (connection, permits, span) rather than dropping it on the way out.
      Effect.uninterruptibleMask((restore) =>
        Effect.matchCauseEffect(
          restore(SmtpSession.connect(
            { ip: candidate.ip, port, localAddress: candidate.source ?? undefined },
            { timeouts: settings.timeouts, servername: host.host.name, phaseSpans: delivery.options.phaseSpans === true, span }
          )),
          {
            onFailure: (cause) =>
              Effect.zipRight(Effect.zipRight(tracing.end(span, Exit.failCause(cause)), permit), Effect.failCause(cause)),
            onSuccess: (connection) =>
              Effect.flatMap(Effect.zip(delivery.connectionId, Clock.currentTimeMillis), ([id, openedMs]) => {
                const opened: Opened = {
                  connection,
                  id,
                  candidate,
                  settings,
                  span,
                  openedMs,
                  permit,
                  idle: null,
                  kept: false
                }
                return Effect.catchAllCause(
                  restore(Effect.succeed(opened)),
                  (cause) => Effect.zipRight(release(opened), Effect.failCause(cause))
                )
              })
          }
        )
      )
  )
}

/**
 * A session's settings: the connection's, what it is opened with, and the host's. MX delivery's opening is its TLS
 * alone: an object literal, where `extend` (kept for a relay's protocol and login, the keys its opening has) costs
 * several times as much, on every message's path.
 */
const sessionSettings = (
  connection: ConnectionSettings,
  opening: Opening,
  servername: string,
  phaseSpans: boolean,
  span: Tracer.Span
): SmtpSession.SessionSettings => {
  if (opening.protocol !== undefined || opening.auth !== undefined) return extend(connection, opening, { servername, phaseSpans, span })
  // Every key `extend` gave but a relay's protocol and login: `satisfies` names them, so a connection setting added
  // later cannot be dropped here.
  const settings = {
    ehloName: connection.ehloName,
    timeouts: connection.timeouts,
    reuse: connection.reuse,
    tls: opening.tls,
    servername,
    phaseSpans,
    span
  } satisfies { readonly [K in keyof Required<ConnectionSettings> | "tls" | "servername" | "phaseSpans" | "span"]: unknown }
  return settings
}

/** Closes a connection (unless the pool has it) and ends its attempt's span. */
const release = (connected: Connected) =>
  Effect.zipRight(
    // Read when the release runs, not when the race builds it: the session may have handed the connection over since.
    // An idle connection taken by an attempt that lost the race was not used (the winner's is marked kept at once):
    // it goes back to the pool before the permit, for the next delivery that waits on this address.
    Effect.suspend(() =>
      connected.kept
        ? Effect.void
        : connected.idle === null
        ? connected.connection.close
        : connected.pool.put(connected.idle)
    ),
    Effect.zipRight(connected.permit, connected.span === null ? Effect.void : tracing.end(connected.span, Exit.void))
  )

/**
 * Races the host's addresses, then runs the session on the winner; the winner's connection is closed when the session
 * is done, whatever happens, before the next host is tried.
 *
 * @internal
 */
export const tryHost = <A, R>(
  delivery: Delivery,
  group: Group,
  hostStage: HostStage,
  host: Candidates.HostCandidates,
  attempts: Array<AttemptRecord>,
  /** An enforced MTA-STS policy applies: verified TLS or nothing (RFC 8461 §5). */
  enforced: boolean,
  warnings: Array<string>,
  /** The domain's span: each attempt's span goes under it. */
  parent: Tracer.Span,
  /**
   * What the caller makes of the outcome: applied by the continuation that has it (a reused connection's, the take's)
   * rather than by a `flatMap` around this, one continuation and one run-loop step less a message.
   */
  then: HostThen<A, R>
): Effect.Effect<A, never, Connector | R> => {
  const { relay } = hostStage
  const dane = hostStage.dane ?? null
  const tls = effectiveTls(hostStage.settings, { enforced, requireTls: delivery.requireTls, relay, dane })
  const ca = delivery.ca
  const authenticate = dane?.authenticate ?? null
  const opening: Opening = {
    // Field by field where there is no `implicit` (all but implicit-TLS relays): `extend` costs several times as much.
    tls: tls.implicit === undefined
      ? { starttls: tls.starttls, allowInvalidCerts: tls.allowInvalidCerts, required: tls.required, ca, dane: authenticate }
      : extend(tls, { ca, dane: authenticate }),
    ...(relay === null ? {} : {
      protocol: relay.protocol,
      ...(Option.isSome(relay.auth) ? { auth: relay.auth.value } : {})
    })
  }
  // Built only when no idle connection took the message (it pulls the candidates).
  const race = () => raceHost(delivery, group, hostStage, host, attempts, opening, warnings, parent)
  const addresses = delivery.pool === null || Either.isLeft(host.resolution) ? null : host.resolution.right.addresses
  if (delivery.limiter === null) {
    const raced = () => Effect.flatMap(race(), (outcome) => thenOutcome(then, outcome))
    return addresses === null
      ? raced()
      : reuse(delivery, delivery.pool!, group, hostStage, host, addresses, attempts, opening, warnings, parent, raced, then.done)
  }
  // With host-stage limiters, `then` (which may try the next host) comes after their permits are given back.
  const run = addresses === null
    ? race()
    : reuse(delivery, delivery.pool!, group, hostStage, host, addresses, attempts, opening, warnings, parent, race, doneOutcome)
  // Limiters keyed at the host stage (mx): held while this host is tried, its connection used and given back.
  const limiter = delivery.limiter
  // The wait is interruptible; once the permits are held, they are given back whatever happens.
  return Effect.flatMap(
    Effect.uninterruptibleMask((restore) =>
      Effect.matchEffect(
        restore(limiter.acquire(
          Limiter.buckets(delivery.config.limiters, "host", hostStage.variables),
          hostStage.limiterWait
        )),
        {
          onFailure: (error) => Effect.succeed<HostOutcome>({ _tag: "NextHost", error, host: null }),
          onSuccess: (permit) => Effect.ensuring(restore(run), permit)
        }
      )
    ),
    (outcome) => thenOutcome(then, outcome)
  )
}

/**
 * What `tryHost`'s caller makes of the host's outcome, in two parts: `done` is a value, not an Effect, because on a
 * reused connection it is applied in the step that has the transaction's result, inside the take's uninterruptible
 * region (a continuation outside it would be a run-loop step and a frame more a message); `next` (the next host, or
 * the end) goes on as interruptible as the caller.
 *
 * @internal
 */
export interface HostThen<A, R> {
  /** The transaction ran on this host: the caller's value for its recipients' results. */
  readonly done: (recipients: ReadonlyArray<RecipientResult>) => A
  readonly next: (outcome: NextHost) => Effect.Effect<A, never, R>
}

/** @internal */
export type NextHost = Extract<HostOutcome, { readonly _tag: "NextHost" }>

const thenOutcome = <A, R>(then: HostThen<A, R>, outcome: HostOutcome): Effect.Effect<A, never, R> =>
  outcome._tag === "Done" ? Effect.succeed(then.done(outcome.recipients)) : then.next(outcome)

const doneOutcome = (recipients: ReadonlyArray<RecipientResult>): HostOutcome => ({ _tag: "Done", recipients })

/**
 * What a session is opened with besides the connection settings: the TLS requirements, and on a relay route its
 * protocol and credentials. A pooled session keeps what it was opened with (its TLS state, LMTP, its login), so a
 * delivery takes only a session opened the same way.
 */
type Opening = Pick<SmtpSession.SessionSettings, "tls" | "protocol" | "auth">

/**
 * The pool's view of an `Opening` for one host: equal strings, interchangeable sessions. It names the AUTH user (and
 * whether it is a token, and plaintext allowed), never the secret: `sameSecret` compares that when a session is taken.
 * It names the host the certificate was checked for (`servername`: the MX host or the relay), so a session verified
 * for one name never carries mail for another on the same address, and the host's DANE decision (RFC 7672: the
 * TLSA status, and the records and names the certificate was matched against), so a session verified by DANE is
 * reused only for the same host under the same DANE status and records, and one opened without DANE never where DANE
 * applies.
 *
 * @internal
 */
export const sessionKey = ({ auth, protocol, servername, tls }: Opening & { readonly servername: string }, dane: Dane.HostDane | null) =>
  [
    servername,
    // JSON.stringify's text, without it where there is nothing to escape (a status; no records to authenticate by)
    dane === null ? "" : dane.authenticate === null ? `["${dane.status}",null]` : JSON.stringify([dane.status, dane.authenticate]),
    tls.starttls,
    tls.allowInvalidCerts,
    tls.required,
    tls.implicit === true ? "implicit" : "",
    tls.ca === undefined ? "" : caKey(tls.ca),
    protocol ?? "smtp",
    auth === undefined ? "" : JSON.stringify([auth.username, auth.token === true, auth.allowPlaintext === true])
  ].join(" ")

/**
 * The trusted CAs in a session key. `startTlsCa`'s list begins with Node's roots (144 certificates on Node 20.20,
 * 220 KB of PEM): those are the same for the whole process and stand as one word, so the key does not stringify them
 * for every message (0.3–0.8 ms a key, several times the rest of a reused message). Any other list is written out whole.
 */
const caKey = (ca: ReadonlyArray<string>): string => {
  const roots = rootCertificates
  if (ca.length < roots.length) return JSON.stringify(ca)
  for (let i = 0; i < roots.length; i++) if (ca[i] !== roots[i]) return JSON.stringify(ca)
  return `roots+${JSON.stringify(ca.slice(roots.length))}`
}

/** A session logged in is reused only under the same credentials (a changed secret opens a new session). */
const sameSecret = (a: Opening["auth"], b: Opening["auth"]): boolean =>
  a === undefined || b === undefined ? a === b : Equal.equals(a.secret, b.secret)

/**
 * The host's addresses may still be reached through the pool's idle connections, the first one found taken; `race`
 * when none took the message.
 */
const reuse = <A, R>(
  delivery: Delivery,
  pool: ConnectionPool.ConnectionPool.Service,
  group: Group,
  hostStage: HostStage,
  host: Candidates.HostCandidates,
  addresses: ReadonlyArray<string>,
  attempts: Array<AttemptRecord>,
  opening: Opening,
  warnings: Array<string>,
  parent: Tracer.Span,
  /** A new connection: what follows when no idle connection took the message (a continuation, not a step more). */
  race: () => Effect.Effect<A, never, Connector | R>,
  /** The caller's value of a transaction on an idle connection (`HostThen.done`), applied in the take's region. */
  done: (recipients: ReadonlyArray<RecipientResult>) => A
): Effect.Effect<A, never, Connector | R> => {
  // Not an Effect.gen: on every message's path, and a generator's steps and frames are its `yield*`s.
  const dane = hostStage.dane ?? null
  const keys = sessionKeys(opening, host.host.name, dane)
  const port = portOf(delivery, hostStage)
  const fromAddress = (at: number): Effect.Effect<A, never, Connector | R> => {
    if (at >= addresses.length) return race()
    const ip = addresses[at]!
    const sources = ip.includes(":") ? hostStage.settings.sourceIp.v6 : hostStage.settings.sourceIp.v4
    // The connection settings an idle connection would get now, per source address: its EHLO name must be the one
    // this delivery would send.
    // One source address is the usual case: its settings kept in a variable, a Map only for a second one.
    let firstSource: string | null | undefined
    let firstSettings: ConnectionSettings | undefined
    let others: Map<string | null, ConnectionSettings> | undefined
    const settingsFor = (source: string | null) => {
      if (firstSettings !== undefined && firstSource === source) return firstSettings
      let settings = others?.get(source)
      if (settings === undefined) {
        const result = evaluateConnection(delivery.config, connectionVariables(hostStage.variables, ip, source))
        if (result.warnings.length > 0) warnings.push(...result.warnings)
        settings = result.settings
        if (firstSettings === undefined) {
          firstSource = source
          firstSettings = settings
        } else (others ??= new Map()).set(source, settings)
      }
      return settings
    }
    const accept = (idle: ConnectionPool.Idle) =>
      (sources.length === 0 ? idle.source === null : idle.source !== null && sources.includes(idle.source)) &&
      settingsFor(idle.source).ehloName === idle.session.ehloName &&
      sameSecret(idle.session.settings.auth, opening.auth)
    // Each session key in turn (the plaintext-retry key after the TLS one, where plaintext is allowed). Taken, the
    // idle connection is this delivery's: an interruption before it is used or given back closes it. What follows
    // the take is decided inside its region, in the step that knows it: a transaction's result is the caller's value
    // there (no continuation around the region); anything else (the next key or address, a new connection, another
    // idle one) goes on under `restore`, as interruptible as the caller.
    const fromKey = (k: number): Effect.Effect<A, never, Connector | R> =>
      k >= keys.length ? fromAddress(at + 1) : Effect.uninterruptibleMask((restore) => {
        const onSome = (idle: ConnectionPool.Idle): Effect.Effect<A, never, Connector | R> => {
          // Runs in this mask: its interruptible parts under `restore`, an interruption closes the connection.
          // `null`: a connection the server had given up on; nothing was sent: the next idle one, or a new connection.
          const after = (recipients: ReadonlyArray<RecipientResult> | null): Effect.Effect<A, never, Connector | R> =>
            recipients === null ? restore(fromKey(k)) : Effect.succeed(done(recipients))
          const use = <B, R2>(then: (recipients: ReadonlyArray<RecipientResult> | null) => Effect.Effect<B, never, R2>) =>
            reusedSession(
              delivery,
              pool,
              group,
              host,
              idle,
              settingsFor(idle.source),
              opening,
              dane,
              attempts,
              parent,
              restore,
              then
            )
          // No limiter: nothing to wait for between the take and the transaction.
          if (delivery.limiter === null) return use(after)
          const buckets = Limiter.buckets(
            delivery.config.limiters,
            "connection",
            connectionVariables(hostStage.variables, ip, idle.source)
          )
          if (buckets.length === 0) return use(after)
          // Only a permit free now: a delivery that must wait does so in the race's connect, in the limiter's
          // queue, and takes an idle connection when its turn comes. Waiting here, holding this connection,
          // would leave the one whose turn comes first nothing to take but a new connection. The connection
          // goes back, and the next address is looked at (a zero wait takes nothing when it fails).
          return Effect.flatMap(
            Effect.either(delivery.limiter.acquire(buckets, Duration.zero)),
            (permit): Effect.Effect<A, never, Connector | R> =>
              Either.isLeft(permit)
                ? Effect.zipRight(pool.put(idle), restore(fromAddress(at + 1)))
                // The permit given back before what follows (another take, a new connection)
                : Effect.flatMap(Effect.ensuring(use(Effect.succeed), permit.right), after)
          )
        }
        const destination = { ip, port, session: keys[k]! }
        if (pool.takeNow === undefined) {
          return Effect.flatMap(
            pool.take(destination, accept),
            Option.match({ onNone: () => restore(fromKey(k + 1)), onSome })
          )
        }
        // Taken in this step, inside the mask: nothing can come between the take and its use or return.
        const now = pool.takeNow(destination, accept, delivery.clock.unsafeCurrentTimeMillis())
        return now === null
          ? restore(fromKey(k + 1))
          : Effect.isEffect(now)
          ? Effect.flatMap(now, Option.match({ onNone: () => restore(fromKey(k + 1)), onSome }))
          : onSome(now)
      })
    return fromKey(0)
  }
  return fromAddress(0)
}

/**
 * The pool's keys a delivery looks under, in order: its own (sessions opened under its TLS requirements), then,
 * when it would go on in plaintext after a failed handshake itself, the plaintext sessions opened that way.
 */
const sessionKeys = (opening: Opening, servername: string, dane: Dane.HostDane | null): ReadonlyArray<string> => {
  const key = sessionKey({ tls: opening.tls, protocol: opening.protocol, auth: opening.auth, servername }, dane)
  return plaintextAllowed(opening) ? [key, plaintextKey(key)] : [key]
}

/**
 * One transaction on an idle connection, RSET first when its last one did not end cleanly, then `then` of its
 * recipients' results; of `null` when the server had closed it, reset it or answers 421 (before any recipient was
 * accepted, so nothing was sent): the caller goes on over another connection.
 */
const reusedSession = <B, R>(
  delivery: Delivery,
  pool: ConnectionPool.ConnectionPool.Service,
  group: Group,
  host: Candidates.HostCandidates,
  idle: ConnectionPool.Idle,
  connectionSettings: ConnectionSettings,
  opening: Opening,
  dane: Dane.HostDane | null,
  attempts: Array<AttemptRecord>,
  parent: Tracer.Span,
  /** The caller's mask: this runs uninterruptibly, the dialogue under `restore`. */
  restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>,
  /**
   * What follows, given the recipients' results, or `null` when the server had closed the connection, reset it or
   * answered 421 (nothing was sent): applied in the step that has the transaction's result, in the caller's mask.
   */
  then: (recipients: ReadonlyArray<RecipientResult> | null) => Effect.Effect<B, never, R>
): Effect.Effect<B, never, R> => {
  // Not an Effect.gen: called by the step that runs it, on every reused message's path.
  const { connection } = idle.session
  const startMs = delivery.clock.unsafeCurrentTimeMillis()
  const withSpan = (span: Tracer.Span): Effect.Effect<B, never, R> => {
    const settings = sessionSettings(connectionSettings, opening, host.host.name, delivery.options.phaseSpans === true, span)
    // Field by field: a spread of the pooled session (objects of several shapes by now) leaves V8's fast path. The
    // `satisfies` names every key, optional ones included, so a field added to `Session` cannot be dropped here.
    const pooled = idle.session
    const session: SmtpSession.Session = {
      connection: pooled.connection,
      settings,
      capabilities: pooled.capabilities,
      tls: pooled.tls,
      greeting: pooled.greeting,
      ehloName: pooled.ehloName,
      ehlo: pooled.ehlo,
      helo: pooled.helo,
      auth: pooled.auth
    } satisfies { readonly [K in keyof Required<SmtpSession.Session>]: unknown }
    const record = (fields: RecordFields) => {
      attempts.push({
        domain: group.domain,
        host: host.host.name,
        ip: connection.remoteAddress,
        source: idle.source,
        startMs: startMs - delivery.startMs,
        durationMs: delivery.clock.unsafeCurrentTimeMillis() - startMs,
        connection: idle.id,
        reused: true,
        phase: fields.phase,
        outcome: fields.outcome,
        error: fields.error,
        tls: fields.tls,
        ehlo: fields.ehlo
      } satisfies Required<AttemptRecord>)
    }
    const dropped = (error: TransportError.TransportError, why: string) =>
      Effect.zipRight(
        Effect.logDebug(`${idle.id}: ${why}; going on over another connection`),
        Effect.suspend(() => {
          record({ phase: error.phase, outcome: "failed", error: reportError(error), tls: attemptTls(session.tls, dane), ehlo: session.ehloName })
          return Effect.zipRight(Effect.zipRight(connection.close, tracing.end(span, Exit.void)), then(null))
        })
      )
    const envelope: SmtpSession.Envelope = {
      sender: delivery.sender,
      recipients: group.recipients,
      requireTls: delivery.requireTls
    }
    // Only the dialogue is interruptible (under `restore`); an interruption there closes the connection and ends the
    // span: what `Effect.onInterrupt` does, without its own uninterruptible region (this runs in the caller's), in
    // the match that goes on with the dialogue's outcome.
    const interrupted = (cause: Cause.Cause<unknown>): Effect.Effect<never> =>
      Effect.zipRight(
        Effect.zipRight(connection.close, tracing.end(span, Exit.interrupt(FiberId.none))),
        // An interruption only: no failure in it
        Effect.failCause(cause as Cause.Cause<never>)
      )
    const transact = Effect.matchCauseEffect(
      restore(SmtpSession.transaction(session, envelope, delivery.message, settings)),
      {
        onFailure: (cause): Effect.Effect<B, never, R> =>
          Cause.isInterruptedOnly(cause) ? interrupted(cause) : Effect.failCause(cause),
        onSuccess: (transaction): Effect.Effect<B, never, R> => {
          if (gaveUp(transaction)) {
            const error = Either.isLeft(transaction.mailFrom) ? transaction.mailFrom.left : firstTransportError(transaction)!
            return dropped(error, error.message)
          }
          let kept = false
          // `finish` hands the connection over (or not) in the step that calls it: `kept` is known on return.
          const finishing = finishNow(pool, host, session, transaction, {
            id: idle.id,
            session: idle.destination.session,
            source: idle.source,
            reuse: idle.reuse,
            openedMs: idle.openedMs,
            messages: idle.messages
          }, dane, record, () => {
            kept = true
          }, delivery.clock)
          const ending = tracing.records(span) ? tracing.end(span, Exit.void) : null
          // A connection handed over with nothing to run (`putNow`) and no span to end: the results now, in this step.
          if (kept && ending === null && !Effect.isEffect(finishing)) return then(finishing)
          const after = kept
            ? ending ?? Effect.void
            : ending === null
            ? connection.close
            : Effect.zipRight(connection.close, ending)
          return Effect.flatMap(
            Effect.isEffect(finishing) ? finishing : Effect.succeed(finishing),
            (recipients) => Effect.flatMap(after, () => then(recipients))
          )
        }
      }
    )
    if (idle.clean) return transact
    return Effect.matchCauseEffect(restore(SmtpSession.reset(session, settings)), {
      onFailure: (cause): Effect.Effect<B, never, R> => {
        if (Cause.isInterruptedOnly(cause)) return interrupted(cause)
        const error = Cause.failureOption(cause)
        return Option.isSome(error)
          ? dropped(error.value, `RSET failed (${error.value.message})`)
          : Effect.failCause(cause) as Effect.Effect<never>
      },
      onSuccess: () => transact
    })
  }
  const known = tracing.knownUnder(parent)
  return known !== null ? withSpan(known) : Effect.flatMap(tracing.make("smtp.attempt", parent, () => ({
    ...tracing.peerAttributes({
      servername: host.host.name,
      ip: connection.remoteAddress,
      port: connection.remotePort,
      localAddress: idle.source
    }),
    "smtp.connection": idle.id,
    "smtp.reused": true
  })), withSpan)
}

/** An idle connection the server no longer serves: lost, reset, or a 421 at MAIL, with no recipient accepted. */
const gaveUp = (transaction: SmtpSession.TransactionResult): boolean =>
  transaction.data === null && Either.isLeft(transaction.mailFrom) &&
  !transaction.recipients.some((r) => r.accepted) &&
  (transaction.mailFrom.left.kind === "reset" || transaction.mailFrom.left.reply?.code === 421)

/** A reply that says the server is closing the connection (RFC 5321 §3.8; under LMTP, a recipient's own reply too). */
const closing = (transaction: SmtpSession.TransactionResult): boolean =>
  (Either.isLeft(transaction.mailFrom) && transaction.mailFrom.left.reply?.code === 421) ||
  transaction.recipients.some((r) =>
    r.reply?.code === 421 || (r.data !== undefined && Either.isLeft(r.data) && r.data.left.reply?.code === 421)
  ) ||
  (transaction.data !== null && Either.isLeft(transaction.data) && transaction.data.left.reply?.code === 421)

/** Where a connection came from, for the pool. */
interface Origin {
  readonly id: string
  /** The pool's session key, when known (a reused connection's: the one it was taken by). */
  readonly session?: string | undefined
  readonly source: string | null
  readonly reuse: ConnectionSettings["reuse"]
  readonly openedMs: number
  /** Transactions before this one. */
  readonly messages: number
}

/**
 * The end of a transaction: the attempt recorded, the connection given to the pool when the dialogue is in step and
 * the server is not closing it, else QUIT (when in step). `kept`: the pool has it, the caller must not close it.
 */
const finish = (
  pool: ConnectionPool.ConnectionPool.Service | null,
  host: Candidates.HostCandidates,
  opening: SmtpSession.Session,
  transaction: SmtpSession.TransactionResult,
  origin: Origin,
  dane: Dane.HostDane | null,
  record: (fields: RecordFields) => void,
  onKeep: () => void
): Effect.Effect<HostOutcome> => {
  const finished = finishNow(pool, host, opening, transaction, origin, dane, record, onKeep)
  return Effect.isEffect(finished) ? Effect.map(finished, doneOutcome) : Effect.succeed(doneOutcome(finished))
}

/**
 * `finish`, its recipients' results given as they are when nothing is left to run (the connection handed over in
 * this step, `masked`): the caller goes on in the same step.
 */
const finishNow = (
  pool: ConnectionPool.ConnectionPool.Service | null,
  host: Candidates.HostCandidates,
  opening: SmtpSession.Session,
  transaction: SmtpSession.TransactionResult,
  origin: Origin,
  dane: Dane.HostDane | null,
  /** Records the attempt, timed now. */
  record: (fields: RecordFields) => void,
  /** Called, uninterruptibly with the hand-over, when the pool takes the connection. */
  onKeep: () => void,
  /**
   * The caller runs this uninterruptibly already, and this is its Clock: the hand-over needs no region of its own,
   * and is made in this step where the pool can (`putNow`).
   */
  masked: Clock.Clock | null = null
): ReadonlyArray<RecipientResult> | Effect.Effect<ReadonlyArray<RecipientResult>> => {
  // Not an Effect.gen nor a suspend: called by the step that runs it, on every message's path; nothing here waits
  // but the hand-over or the QUIT.
  // Refused before MAIL was sent (SMTPUTF8, REQUIRETLS, SIZE, no recipient that can be sent): no transaction ran.
  const refused = Either.isLeft(transaction.mailFrom) && transaction.mailFrom.left.kind === "policy"
    ? transaction.mailFrom.left
    : null
  const transportError = refused ?? firstTransportError(transaction)
  const keep = pool !== null && transaction.canQuit && !closing(transaction) &&
    opening.connection.buffered === 0
  record({
    phase: transportError === null ? "quit" : transaction.phase,
    outcome: transportError === null ? "completed" : "failed",
    error: transportError === null ? null : reportError(transportError),
    tls: attemptTls(opening.tls, dane),
    ehlo: opening.ehloName
  })
  const done = recipientResults(host.host.name, transaction)
  if (keep) {
    const idle: ConnectionPool.Idle = {
      id: origin.id,
      destination: {
        ip: opening.connection.remoteAddress,
        port: opening.connection.remotePort,
        session: origin.session ?? sessionKey(opening.settings, dane)
      },
      source: origin.source,
      session: opening,
      reuse: origin.reuse,
      openedMs: origin.openedMs,
      messages: origin.messages + 1,
      clean: transaction.data !== null || refused !== null || Either.isLeft(transaction.mailFrom)
    }
    if (masked !== null) {
      // Nothing can come between this call (the step that runs it) and the hand-over.
      onKeep()
      if (pool.putNow === undefined) return Effect.as(pool.put(idle), done)
      const rest = pool.putNow(idle, masked.unsafeCurrentTimeMillis())
      return rest === null ? done : Effect.as(rest, done)
    }
    return Effect.uninterruptible(Effect.suspend(() => {
      onKeep()
      return Effect.as(pool.put(idle), done)
    }))
  }
  return transaction.canQuit ? Effect.as(SmtpSession.quit(opening), done) : Effect.succeed(done)
}

type RecordFields = Pick<AttemptRecord, "phase" | "outcome" | "error" | "tls" | "ehlo">

/** Races the host's addresses and runs the session on the winner. */
const raceHost = (
  delivery: Delivery,
  group: Group,
  hostStage: HostStage,
  host: Candidates.HostCandidates,
  attempts: Array<AttemptRecord>,
  opening: Opening,
  warnings: Array<string>,
  parent: Tracer.Span
): Effect.Effect<HostOutcome, never, Connector> =>
  HappyEyeballs.raceUse({
    candidates: host.candidates(),
    attempt: (candidate: Candidates.Candidate) =>
      connect(delivery, host, hostStage, warnings, candidate, parent, opening),
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
        error: loser._tag === "Failed" ? reportError(loser.error) : null,
        connection: null,
        reused: false
      })
    }
    if (Option.isNone(race.winner)) {
      const failures = race.losers.flatMap((l) => l._tag === "Failed" ? [l] : []).sort((a, b) => a.endMs - b.endMs)
      const last = failures[failures.length - 1]
      return Effect.succeed<HostOutcome>({ _tag: "NextHost", error: last?.error ?? noAddress(host.host.name), host: null })
    }
    const winner = race.winner.value
    const record: Record = (startMs, connection, fields) => {
      attempts.push({
        domain: group.domain,
        host: host.host.name,
        ip: winner.candidate.ip,
        source: winner.candidate.source,
        startMs: since(startMs),
        durationMs: delivery.clock.unsafeCurrentTimeMillis() - startMs,
        connection,
        reused: false,
        // Field by field: a spread after literal keys is V8's slow path (as `extend` says), on every message's path.
        phase: fields.phase,
        outcome: fields.outcome,
        error: fields.error,
        tls: fields.tls,
        ehlo: fields.ehlo
      } satisfies Required<AttemptRecord>)
    }
    const connected = winner.value
    const dane = hostStage.dane ?? null
    const port = portOf(delivery, hostStage)
    if (connected.idle === null) return session(delivery, group, host, port, opening, dane, connected, winner.startMs, record)
    const { idle } = connected
    // An idle connection taken after a limiter's wait (so the pool is there): its transaction closes it or gives it
    // back.
    const pool = delivery.pool!
    return Effect.uninterruptibleMask((restore) => {
      connected.kept = true
      return reusedSession(
        delivery,
        pool,
        group,
        host,
        idle,
        connected.settings,
        opening,
        dane,
        attempts,
        parent,
        restore,
        (recipients): Effect.Effect<HostOutcome, never, Connector> =>
          recipients !== null
            ? Effect.succeed(doneOutcome(recipients))
            // The server had given up on it (nothing was sent): a new connection to the same address, in the same
            // attempt, under the permits this one holds.
            : Effect.flatMap(Clock.currentTimeMillis, (startMs) =>
              Effect.flatMap(
                Effect.either(restore(
                  open(delivery, host, hostStage, connected.candidate, connected.settings, parent, Effect.void)
                )),
                (opened): Effect.Effect<HostOutcome, never, Connector> => {
                  if (Either.isRight(opened)) {
                    return Effect.ensuring(
                      restore(session(delivery, group, host, port, opening, dane, opened.right, startMs, record)),
                      release(opened.right)
                    )
                  }
                  record(startMs, null, {
                    phase: "connect",
                    outcome: "failed",
                    error: reportError(opened.left),
                    tls: null,
                    ehlo: null
                  })
                  return Effect.succeed<HostOutcome>({ _tag: "NextHost", error: opened.left, host: null })
                }
              ))
      )
    })
  })

/** Records an attempt, timed now (on the delivery's Clock). */
type Record = (startMs: number, connection: string | null, fields: RecordFields) => void

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
 * The session on the race's winner: open, one transaction, then the pool or QUIT; under opportunistic TLS, a failed
 * handshake is followed by a plaintext session on a new connection to the same address, which goes to the pool
 * under the host's key marked plaintext (`plaintextKey`): only a delivery that would retry in plaintext itself takes it.
 */
const session = (
  delivery: Delivery,
  group: Group,
  host: Candidates.HostCandidates,
  /** The host's port: the relay's, or the one of every MX host. */
  port: number,
  opening: Opening,
  dane: Dane.HostDane | null,
  connected: Opened,
  startMs: number,
  record: Record
): Effect.Effect<HostOutcome, never, Connector> =>
  Effect.gen(function*() {
    // The phases report to the attempt's span without it being made the current span (a context switch each way).
    const settings = sessionSettings(
      connected.settings,
      opening,
      host.host.name,
      delivery.options.phaseSpans === true,
      connected.span
    )
    const outcome = yield* converse(
      delivery,
      group,
      host,
      connected.connection,
      settings,
      dane,
      (f) => record(startMs, connected.id, f),
      {
        origin: {
          id: connected.id,
          source: connected.candidate.source,
          reuse: connected.settings.reuse,
          openedMs: connected.openedMs,
          messages: 0
        },
        onKeep: () => {
          connected.kept = true
        }
      }
    )
    if (outcome._tag === "Done" || !plaintextRetry(outcome.error, settings)) return outcome
    yield* Effect.logDebug(`${outcome.error.message}: going on in plaintext (tls.starttls = optional)`)
    yield* connected.connection.close
    const retryMs = yield* Clock.currentTimeMillis
    const plain: SmtpSession.SessionSettings = { ...settings, tls: { ...settings.tls, starttls: "disable" } }
    const { candidate } = connected
    // A new connection, a new attempt: its own span, beside the first one's. The connect stays interruptible (it
    // cleans up after itself); once it has succeeded the connection is closed whatever happens, unless the pool has it.
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
          (retry) => {
            if (Either.isLeft(retry)) {
              return Effect.sync(() => {
                record(retryMs, null, { phase: "connect", outcome: "failed", error: reportError(retry.left), tls: null, ehlo: null })
                return { _tag: "NextHost", error: retry.left, host: host.host.name } as const
              })
            }
            let kept = false
            return Effect.ensuring(
              Effect.flatMap(delivery.connectionId, (id) =>
                restore(
                  converse(delivery, group, host, retry.right, { ...plain, span }, dane, (f) => record(retryMs, id, f), {
                    origin: {
                      id,
                      session: plaintextKey(sessionKey({ ...opening, servername: host.host.name }, dane)),
                      source: candidate.source,
                      reuse: connected.settings.reuse,
                      openedMs: retryMs,
                      messages: 0
                    },
                    onKeep: () => {
                      kept = true
                    }
                  })
                )),
              Effect.suspend(() => kept ? Effect.void : retry.right.close)
            )
          }
        )
      ))
  })

/**
 * The pool's key for a plaintext session opened after STARTTLS failed under opportunistic TLS (`sessionKey` is the
 * key of the TLS requirements it was opened under): a delivery under other requirements computes another key and
 * never takes it; one under the same requirements takes a session with TLS first, and this one only when it would
 * itself go on in plaintext (`plaintextAllowed`).
 */
const plaintextKey = (sessionKey: string) => `${sessionKey} plaintext-retry`

/** A delivery that would go on in plaintext after a failed handshake (the conditions of `plaintextRetry`). */
const plaintextAllowed = (opening: Opening): boolean =>
  !opening.tls.required && opening.tls.starttls === "optional" && opening.tls.implicit !== true &&
  (opening.tls.dane ?? null) === null

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
  const tls = { starttls: host.tls.starttls, allowInvalidCerts: allowInvalidCerts && !verified, required: verified || daneTls }
  // Not a spread of an empty object where there is no `implicit`: V8's slow path, on every message's path.
  return relay?.implicitTls === true ? extend(tls, { implicit: true }) : tls
}

/**
 * Open, one transaction, then the pool or QUIT, on one connection; its attempt recorded. `pooled`: where the
 * connection came from, for the pool, and what to do when the pool takes it (its caller must not close it then).
 */
const converse = (
  delivery: Delivery,
  group: Group,
  host: Candidates.HostCandidates,
  connection: Connection,
  settings: SmtpSession.SessionSettings,
  dane: Dane.HostDane | null,
  record: (fields: RecordFields) => void,
  pooled: { readonly origin: Origin; readonly onKeep: () => void }
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
      record({
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
      record({
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
    return yield* finish(delivery.pool, host, opening, transaction, pooled.origin, dane, record, pooled.onKeep)
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
