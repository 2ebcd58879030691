/**
 * The outbox's status events: what a write of recipients' states announces, and how a process hears it.
 *
 * On PostgreSQL the write's own transaction announces it (`pg_notify` on a channel named from the prefix): the
 * server delivers a notification only if its transaction commits, in commit order, to every session that LISTENs,
 * so every process — runners and clients alike — hears every change of the cluster once, after it is in SQL. The
 * runner that made it hears it the same way (there is no in-process copy to hear twice). On SQLite (one process by
 * design) an in-process hub gets the events once their transaction committed.
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Random from "effect/Random"
import * as RcRef from "effect/RcRef"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { createHash } from "node:crypto"
import { ReportError } from "../../DeliveryReport.js"

/** @internal */
export const RecipientState = Schema.Literal("queued", "delivered", "deferred", "failed", "expired")

/** @internal */
export type RecipientState = typeof RecipientState.Type

/** A recipient's state as one write recorded it. @internal */
export interface StatusEvent {
  /** The message's id. */
  readonly id: string
  readonly address: string
  readonly state: RecipientState
  readonly retryNum: number
  readonly nextAttemptMs: number | null
  readonly error: ReportError | null
  /** When the write recorded it (the recipient's `updatedMs`). */
  readonly atMs: number
}

/** An event as the store's write has it: also which write of the recipient it is (its row's `version`). @internal */
export interface RecordedEvent extends StatusEvent {
  readonly version: number
}

const eventOf = ({ version: _, ...event }: RecordedEvent): StatusEvent => event

const Change = Schema.Struct({
  address: Schema.String,
  state: RecipientState,
  retryNum: Schema.Number,
  nextAttemptMs: Schema.NullOr(Schema.Number),
  error: Schema.NullOr(ReportError)
})

/**
 * A notification's payload: one write's changes of one message (`events`), or, when they do not fit in one
 * notification, the recipients it changed and which write of each it was (`changed`, address and version), whose
 * states the listener reads from SQL; or a listening session's probe (`probe`).
 *
 * @internal
 */
export const Notice = Schema.parseJson(Schema.Union(
  Schema.TaggedStruct("events", { id: Schema.String, atMs: Schema.Number, changes: Schema.Array(Change) }),
  Schema.TaggedStruct("changed", {
    id: Schema.String,
    atMs: Schema.Number,
    recipients: Schema.Array(Schema.Struct({ address: Schema.String, version: Schema.Number }))
  }),
  // A listening session's check of its connection (and the sign that its LISTEN is in place); no event.
  Schema.TaggedStruct("probe", { session: Schema.String })
))

/** @internal */
export type Notice = typeof Notice.Type

/** PostgreSQL takes a payload shorter than 8000 bytes; a margin for the server's encoding of the text. @internal */
export const PAYLOAD_LIMIT = 7900

const bytes = (text: string) => Buffer.byteLength(text, "utf8")

/**
 * The payloads that announce one write: its events (all of one message, one time) in one, or, past the limit (a long
 * server reply in each of many recipients' errors), the recipients (address, version), as many a payload as fit.
 *
 * @internal
 */
export const payloads = (events: ReadonlyArray<RecordedEvent>, limit = PAYLOAD_LIMIT): ReadonlyArray<string> => {
  const first = events[0]
  if (first === undefined) return []
  const { atMs, id } = first
  const encode = Schema.encodeSync(Notice)
  const whole = encode({
    _tag: "events",
    id,
    atMs,
    changes: events.map((e) => ({
      address: e.address,
      state: e.state,
      retryNum: e.retryNum,
      nextAttemptMs: e.nextAttemptMs,
      error: e.error
    }))
  })
  if (bytes(whole) <= limit) return [whole]
  const out: Array<string> = []
  let recipients: Array<{ readonly address: string; readonly version: number }> = []
  for (const e of events) {
    const recipient = { address: e.address, version: e.version }
    const next = [...recipients, recipient]
    if (recipients.length > 0 && bytes(encode({ _tag: "changed", id, atMs, recipients: next })) > limit) {
      out.push(encode({ _tag: "changed", id, atMs, recipients }))
      recipients = [recipient]
    } else {
      recipients = next
    }
  }
  out.push(encode({ _tag: "changed", id, atMs, recipients }))
  return out
}

/** What a `changed` notice needs of a recipient's row (`Store.recipients`). @internal */
export interface RecipientRead {
  readonly address: string
  readonly state: RecipientState
  readonly retryNum: number
  readonly nextAttemptMs: number | null
  readonly result: string | null
  readonly version: number
}

/**
 * A notice's events. A `changed` one is read from SQL: the rows the write left as they are (their `version` the
 * write's); a row written again since is left out, its own notice announces its newer state.
 *
 * @internal
 */
export const eventsOf = <E, R>(
  notice: Notice,
  read: (id: string) => Effect.Effect<ReadonlyArray<RecipientRead>, E, R>
): Effect.Effect<ReadonlyArray<StatusEvent>, E, R> => {
  if (notice._tag === "probe") return Effect.succeed([])
  if (notice._tag === "events") {
    return Effect.succeed(notice.changes.map((c) => ({ id: notice.id, ...c, atMs: notice.atMs })))
  }
  const wanted = new Map(notice.recipients.map((r) => [r.address, r.version]))
  return Effect.map(read(notice.id), (rows) =>
    rows.filter((r) => wanted.get(r.address) === r.version).map((r): StatusEvent => ({
      id: notice.id,
      address: r.address,
      state: r.state,
      retryNum: r.retryNum,
      nextAttemptMs: r.nextAttemptMs,
      error: r.result === null ? null : (JSON.parse(r.result) as { readonly error: ReportError | null }).error,
      atMs: notice.atMs
    })))
}

/**
 * How the store's writes announce their changes: `recording` inside the write's transaction (PostgreSQL's
 * notifications), `recorded` once it committed (the in-process hub). `events` is what a subscriber hears.
 *
 * @internal
 */
export interface Announcer {
  readonly recording: (events: ReadonlyArray<RecordedEvent>) => Effect.Effect<void, SqlError>
  readonly recorded: (events: ReadonlyArray<RecordedEvent>) => Effect.Effect<void>
  /** What the subscribers of one outbox layer share (on PostgreSQL, one listening session). */
  readonly events: <E>(
    read: (id: string) => Effect.Effect<ReadonlyArray<RecipientRead>, E>
  ) => Effect.Effect<Stream.Stream<StatusEvent>, never, Scope.Scope>
}

/** One process's hub (SQLite, and the in-memory engine): the events once their transaction committed. @internal */
export const local: Effect.Effect<Announcer> = Effect.map(PubSub.unbounded<StatusEvent>(), (hub) => ({
  recording: () => Effect.void,
  recorded: (events) => Effect.asVoid(PubSub.publishAll(hub, events.map(eventOf))),
  events: () => Effect.succeed(Stream.fromPubSub(hub))
}))

/**
 * The prefix's channel: `<prefix>_events`, or a digest of the prefix when that is not a plain identifier short
 * enough for PostgreSQL's 63 bytes (with room for the probe channel's suffix).
 *
 * @internal
 */
export const channelOf = (prefix: string): string =>
  /^[A-Za-z0-9_]{1,32}$/.test(prefix)
    ? `${prefix}_events`
    : `outbox_events_${createHash("sha256").update(prefix).digest("hex").slice(0, 24)}`

/** @internal */
export class ListenLost extends Data.TaggedError("ListenLost")<{ readonly reason: string }> {}

/**
 * How often a listening session checks that its connection still hears (a probe notification of its own, sent through
 * the pool on the events channel itself), how often before its first probe came back (its LISTEN may not be in place
 * yet), and how long after a probe was sent it listens again if that probe has not come back: `PgClient.listen`
 * neither ends nor fails when its connection dies (a PostgreSQL restart), it goes silent.
 */
const PROBE_EVERY_MS = 1_000
const FIRST_PROBE_EVERY_MS = 50
const LOST_AFTER_MS = 3_000

/**
 * Probes until `heard` fails or a probe this session sent (committed: its statement returned) has not come back for
 * `LOST_AFTER_MS`; `onHeard` on every probe that came back. Only a loss, not a slow process: a round of the loop that
 * took far longer than a second (the process starved of CPU, a slow pool) forgives the probes not heard yet, since
 * what this process has not read yet is not lost — a session that listened again for nothing would miss the changes
 * of its gap.
 *
 * @internal
 */
export const watch = <E1, E2>(
  send: Effect.Effect<unknown, E1>,
  heard: Stream.Stream<unknown, E2>,
  onHeard: Effect.Effect<void> = Effect.void
) =>
  Effect.gen(function*() {
    // When the oldest probe not heard back was sent; null while every probe sent came back.
    const unanswered = yield* Ref.make<number | null>(null)
    const answered = yield* Ref.make(false)
    const hearing = Stream.runForEach(heard, () =>
      Effect.zipRight(Effect.zipRight(Ref.set(unanswered, null), Ref.set(answered, true)), onHeard)).pipe(
        Effect.zipRight(Effect.fail(new ListenLost({ reason: "the channel's stream ended" })))
      )
    const probing = Effect.gen(function*() {
      let last = yield* Clock.currentTimeMillis
      for (;;) {
        const sent = yield* Effect.either(send)
        const now = yield* Clock.currentTimeMillis
        const stalled = now - last > LOST_AFTER_MS
        last = now
        if (stalled) yield* Ref.set(unanswered, null)
        else if (Either.isRight(sent)) yield* Ref.update(unanswered, (u) => u ?? now)
        const oldest = yield* Ref.get(unanswered)
        if (oldest !== null && now - oldest > LOST_AFTER_MS) {
          return yield* new ListenLost({ reason: `a probe sent ${now - oldest} ms ago did not come back` })
        }
        yield* Effect.sleep((yield* Ref.get(answered)) ? PROBE_EVERY_MS : FIRST_PROBE_EVERY_MS)
      }
    })
    return yield* Effect.raceFirst(hearing, probing)
  })

/** After a lost connection, the next LISTEN: at once, then less often, at most every 5 s, until one hears. */
const relistenAfterMs = (failures: number) => Math.min(100 * 2 ** failures, 5_000)

/**
 * PostgreSQL: every write NOTIFYs in its transaction. The subscribers of one outbox layer share one listening session
 * (`PgClient.listen` shares one connection per client, and a stream's end UNLISTENs the channel on it for every
 * listener of the connection): it starts with the first subscriber and ends with the last. It LISTENs, decodes into a
 * hub the subscribers read, checks its connection with probes on the same channel, and listens again after its
 * connection was lost. A subscriber's stream starts once the session is listening (its first probe came back: the
 * LISTEN was in place before the probe committed), so it hears every change committed from then on. Notifications
 * sent while no session listened are not replayed: `status` reads the truth from SQL.
 *
 * @internal
 */
export const postgres = (
  sql: SqlClient.SqlClient,
  pg: PgClient.PgClient,
  prefix: string
): Announcer => {
  const channel = channelOf(prefix)
  const decode = Schema.decodeEither(Notice)
  return {
    recording: (events) =>
      Effect.forEach(payloads(events), (payload) => sql`SELECT pg_notify(${channel}, ${payload})`, { discard: true }),
    recorded: () => Effect.void,
    events: (read) =>
      Effect.gen(function*() {
        /** One LISTEN, until it fails: the hub gets its events, `listening` is true once a probe came back. */
        const session = (hub: PubSub.PubSub<StatusEvent>, listening: SubscriptionRef.SubscriptionRef<boolean>) =>
          Effect.gen(function*() {
            const word = Random.nextIntBetween(0, 0x1_0000_0000)
            const [a, b] = yield* Effect.all([word, word])
            const token = `${a.toString(16)}${b.toString(16)}`
            const probe = Schema.encodeSync(Notice)({ _tag: "probe", session: token })
            // This session's probes; the events go to the hub on the way (another process's probes, to nobody).
            const probes = pg.listen(channel).pipe(
              Stream.mapEffect((payload) =>
                Either.match(decode(payload), {
                  // Another program's payload, or a newer version's: ignored (its first characters, not its size).
                  onLeft: () =>
                    Effect.as(
                      Effect.logWarning(`outbox: a payload on ${channel} that is no notice: ${payload.slice(0, 80)}`),
                      false
                    ),
                  onRight: (notice) =>
                    notice._tag === "probe"
                      ? Effect.succeed(notice.session === token)
                      : eventsOf(notice, read).pipe(
                        Effect.flatMap((events) => PubSub.publishAll(hub, events)),
                        Effect.as(false)
                      )
                })
              ),
              Stream.filter((own) => own)
            )
            const send = sql`SELECT pg_notify(${channel}, ${probe})`
            return yield* watch(send, probes, SubscriptionRef.set(listening, true))
          })
        /** Sessions one after another for as long as a subscriber is there. */
        const listen = (hub: PubSub.PubSub<StatusEvent>, listening: SubscriptionRef.SubscriptionRef<boolean>) =>
          Effect.gen(function*() {
            for (let failures = 0;;) {
              // Whatever ended the session (a read-back that failed, a connection that died, which makes the library's
              // UNLISTEN a defect too), it is over: listen again.
              const cause = yield* Effect.flip(Effect.sandbox(session(hub, listening)))
              if (Cause.isInterruptedOnly(cause)) return yield* Effect.interrupt
              const lost = Cause.failures(cause).pipe(Chunk.findFirst((e) => e instanceof ListenLost))
              const reason = Option.match(lost, { onNone: () => Cause.pretty(cause), onSome: (l) => l.reason })
              failures = (yield* SubscriptionRef.getAndSet(listening, false)) ? 0 : failures + 1
              yield* Effect.logWarning(
                `outbox: listening on ${channel} stopped (${reason}); listening again (events meanwhile are not heard)`
              )
              yield* Effect.sleep(relistenAfterMs(failures))
            }
          })
        const shared = yield* RcRef.make({
          acquire: Effect.gen(function*() {
            const hub = yield* Effect.acquireRelease(PubSub.unbounded<StatusEvent>(), PubSub.shutdown)
            const listening = yield* SubscriptionRef.make(false)
            yield* Effect.forkScoped(listen(hub, listening))
            return { hub, listening }
          })
        })
        return Stream.unwrapScoped(Effect.gen(function*() {
          const { hub, listening } = yield* RcRef.get(shared)
          const subscription = yield* PubSub.subscribe(hub)
          yield* listening.changes.pipe(Stream.takeUntil((on) => on), Stream.runDrain)
          return Stream.fromQueue(subscription)
        }))
      })
  }
}
