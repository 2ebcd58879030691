/**
 * The outbox's own durable state, in SQL tables beside the cluster's: the messages (bytes and envelope), each
 * recipient's state, and the attempt history. The statements are the subset SQLite and PostgreSQL share (`ON CONFLICT
 * DO NOTHING`, `RETURNING`), so both engines run the same code; integers come back as strings from PostgreSQL's
 * BIGINT, so every number is read through `Number`.
 */
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Arr from "effect/Array"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import type { ReportError } from "../../DeliveryReport.js"
import type { Announcer, RecipientState, RecordedEvent } from "./events.js"

export type { RecipientState } from "./events.js"

/** @internal */
export const finalStates: ReadonlyArray<RecipientState> = ["delivered", "failed", "expired"]

/** @internal */
export interface MessageRow {
  readonly id: string
  readonly sender: string
  /** The message, base64 (one column type for both engines, whatever the bytes). */
  readonly body: string
  readonly requireTls: boolean
  readonly createdMs: number
  /** `""`, or the id of the message this one is a delivery status notification about. */
  readonly dsnOf: string
}

/** @internal */
export interface RecipientRow {
  readonly messageId: string
  readonly address: string
  readonly domain: string
  readonly state: RecipientState
  readonly retryNum: number
  readonly lastError: string
  readonly nextAttemptMs: number | null
  /** When a TTL schedule gives the recipient up; `null` under `max-attempts`. */
  readonly expiresMs: number | null
  /** How many delay DSNs went out for it. */
  readonly notifyNum: number
  readonly nextNotifyMs: number | null
  /** The final reply or the last error, JSON (`{ reply, error, host }`). */
  readonly result: string | null
  /** Whether the failure DSN for it was enqueued. */
  readonly dsnSent: boolean
  readonly updatedMs: number
  /** How many writes of its state there were after the first (`3_recipient_version`). */
  readonly version: number
  /** The attempt that holds it (a random token), until `claimUntilMs`. */
  readonly claim: string | null
  readonly claimUntilMs: number | null
}

/** @internal */
export interface AttemptRow {
  readonly messageId: string
  readonly generation: number
  readonly step: number
  readonly domain: string
  readonly startedMs: number
  /** JSON: the recipients' results and the attempts of the report. */
  readonly report: string
}

/** @internal */
export interface Tables {
  readonly messages: string
  readonly recipients: string
  readonly attempts: string
}

/** @internal */
export const tables = (prefix: string): Tables => ({
  messages: `${prefix}_messages`,
  recipients: `${prefix}_recipients`,
  attempts: `${prefix}_attempts`
})

/**
 * The outbox's schema as `@effect/sql`'s `Migrator` applies it: each entry once per database and prefix, in the order
 * of its number, recorded in `<prefix>_migrations` in the transaction that applies it. A change of schema is a new
 * entry at the end; an entry that was released is never edited (databases have it applied already).
 *
 * @internal
 */
export const migrations = (t: Tables): Record<string, Effect.Effect<void, SqlError, SqlClient.SqlClient>> => ({
  // IF NOT EXISTS: a database made before the outbox had migrations has these tables and no record; it takes this
  // entry as applied, unchanged.
  "1_tables": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    // The type of a millisecond time, 64 bits in both.
    const blob = sql.onDialectOrElse({ pg: () => "BIGINT", orElse: () => "INTEGER" })
    yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS ${t.messages} (
      id TEXT PRIMARY KEY,
      sender TEXT NOT NULL,
      body TEXT NOT NULL,
      require_tls INTEGER NOT NULL,
      created_ms ${blob} NOT NULL,
      dsn_of TEXT NOT NULL,
      started INTEGER NOT NULL,
      done INTEGER NOT NULL,
      revived_ms ${blob},
      generation INTEGER NOT NULL,
      start_claim TEXT,
      start_until ${blob}
    )`)
    yield* sql.unsafe(`CREATE INDEX IF NOT EXISTS ${t.messages}_pending ON ${t.messages} (started, done)`)
    yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS ${t.recipients} (
      message_id TEXT NOT NULL,
      address TEXT NOT NULL,
      domain TEXT NOT NULL,
      position INTEGER NOT NULL,
      state TEXT NOT NULL,
      retry_num INTEGER NOT NULL,
      last_error TEXT NOT NULL,
      next_attempt_ms ${blob},
      expires_ms ${blob},
      notify_num INTEGER NOT NULL,
      next_notify_ms ${blob},
      result TEXT,
      dsn_sent INTEGER NOT NULL,
      claim TEXT,
      claim_until ${blob},
      updated_ms ${blob} NOT NULL,
      PRIMARY KEY (message_id, address)
    )`)
    // The watchdog's query (overdue recipients) reads a range of this index, not the whole queue.
    yield* sql.unsafe(`CREATE INDEX IF NOT EXISTS ${t.recipients}_due ON ${t.recipients} (state, next_attempt_ms)`)
    yield* sql.unsafe(`CREATE TABLE IF NOT EXISTS ${t.attempts} (
      message_id TEXT NOT NULL,
      generation INTEGER NOT NULL,
      step INTEGER NOT NULL,
      domain TEXT NOT NULL,
      started_ms ${blob} NOT NULL,
      report TEXT NOT NULL,
      PRIMARY KEY (message_id, generation, step, domain)
    )`)
  }),
  // The claims are renewed by token (`renew`, every 5 s an attempt runs or waits for its permit): a lookup, not a
  // scan of every recipient the outbox ever had.
  "2_claim_index": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`CREATE INDEX IF NOT EXISTS ${t.recipients}_claim ON ${t.recipients} (claim)`)
  }),
  // Which write of a recipient a `changed` notice announced (events.ts): a time in milliseconds does not tell two
  // writes of one millisecond apart. Every write of a recipient's state adds one.
  "3_recipient_version": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`ALTER TABLE ${t.recipients} ADD COLUMN version INTEGER NOT NULL DEFAULT 0`)
  })
})

/**
 * A start step on PostgreSQL that took longer than `START_ATTEMPT`: made again, as a storage failure is.
 *
 * @internal
 */
export class StartTimeout extends Data.TaggedError("StartTimeout")<{ readonly message: string }> {}

/**
 * How long one attempt at a start step (the cluster's storage, the outbox's migrations) may take. A step that lost
 * its connection can wait for ever: `@effect/cluster`'s `SqlMessageStorage` migration retries its `CREATE INDEX`
 * every second, without end, on the transaction's connection, which a PostgreSQL restart killed (0.60's
 * `0001_create_tables`, `Effect.retry({ schedule: Schedule.spaced(1000) })`); the attempt is interrupted and made
 * again on a new connection.
 */
const START_ATTEMPT = Duration.seconds(10)

/**
 * How long a runner (or a client) starting on PostgreSQL goes on making its start steps again while storage fails
 * (PostgreSQL down, restarting, refusing connections): then the step's error is the layer's. docs/outbox.md, "When
 * PostgreSQL is away".
 *
 * @internal
 */
export const START_PATIENCE = Duration.seconds(20)

/** Every failure but the last is logged as a warning: a runner waiting for PostgreSQL says so. @internal */
export const startRetry = Schedule.exponential("100 millis", 2).pipe(
  Schedule.union(Schedule.spaced("1 second")),
  Schedule.upTo(START_PATIENCE),
  Schedule.tapInput((error: unknown) =>
    Effect.logWarning(
      `outbox: storage not ready at start (${
        typeof error === "object" && error !== null && "message" in error ? String(error.message) : String(error)
      }); trying again`
    )
  )
)

/** A start step's storage failure, as the libraries report it: failed, or died (below). */
const isStartFailure = (u: unknown): boolean => {
  const tag = typeof u === "object" && u !== null ? (u as { readonly _tag?: unknown })._tag : undefined
  return tag === "SqlError" || tag === "MigrationError" || tag === "PersistenceError" || tag === "StartTimeout"
}

/**
 * Storage failures that the libraries turn into defects, as failures: `@effect/cluster`'s storages die on them when
 * they are built (`SqlRunnerStorage`'s shard-lock connection is taken with `Effect.orDie(sql.reserve)`,
 * `SqlMessageStorage` runs its migrations under `Effect.orDie`), `Migrator` dies with a `MigrationError` when a
 * migration's statement fails, and a transaction whose connection died dies on its ROLLBACK. Without this a start
 * during a PostgreSQL restart ended the process as an internal error.
 */
const startDefects = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StartFailure, R> =>
  Effect.catchAllDefect(effect, (defect) =>
    isStartFailure(defect) ? Effect.fail(defect as StartFailure) : Effect.die(defect))

/** @internal */
export type StartFailure = SqlError | Migrator.MigrationError | StartTimeout

/** Made again while storage fails, up to `START_PATIENCE`. */
const retryStart = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.retry(effect, { schedule: startRetry, while: isStartFailure })

/**
 * Runs `effect` while this process holds the prefix's start lock. On PostgreSQL: a transaction's advisory lock on a
 * connection of its own, released when `effect` ends (or with the session, should the process die), so that runners
 * and clients starting at once make their tables one after the other: PostgreSQL fails concurrent `CREATE TABLE`s of
 * one name on its catalog's unique index, `IF NOT EXISTS` or not, and `@effect/cluster`'s storage makes its tables so
 * (two of three runners started at once on a new prefix failed, every time). The two-key form: its numbers are a
 * space apart from the one-key locks `@effect/cluster` takes for shards when its advisory locks are on (the outbox
 * turns them off, a user may turn them back on). On SQLite, one process by design, `effect`
 * as it is.
 *
 * @internal
 */
export const exclusive = (prefix: string) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R | SqlClient.SqlClient> =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.onDialectOrElse({
      pg: () =>
        Effect.scoped(Effect.gen(function*() {
          const connection = yield* sql.reserve
          const key = ["effect-smtp-transport/outbox", prefix]
          // A transaction's lock, not a session's: it ends with the transaction whatever happens to the statement
          // that ends it (a session lock whose unlock failed would go back to the pool still held, and every later
          // start would wait on it). Nothing is written on this connection: the end is a ROLLBACK. A start waits
          // for the lock at most two minutes (a process stuck holding it), then fails with PostgreSQL's error.
          yield* Effect.acquireRelease(
            connection.executeRaw("BEGIN", []),
            () => Effect.ignore(connection.executeRaw("ROLLBACK", []))
          )
          yield* connection.executeRaw("SET LOCAL lock_timeout = '120s'", [])
          yield* connection.executeRaw("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))", key)
          return yield* effect
        })),
      orElse: () => effect
    }))

/**
 * `layer` built under the prefix's start lock (`exclusive`): for `@effect/cluster`'s storage, which makes its tables
 * when it is built.
 *
 * @internal
 */
export const exclusiveLayer = (prefix: string) =>
<ROut, E, RIn>(
  layer: Layer.Layer<ROut, E, RIn>
): Layer.Layer<ROut, E | StartFailure, RIn | SqlClient.SqlClient> =>
  Layer.scopedContext(Effect.flatMap(Effect.scope, (outer) =>
    Effect.flatMap(SqlClient.SqlClient, (sql) => {
      // Each attempt builds in a scope of its own, closed when the attempt fails: what a failed attempt acquired
      // (its connections, its fibers) does not stay for the layer's life.
      const attempt = Effect.flatMap(Scope.fork(outer, ExecutionStrategy.sequential), (scope) =>
        exclusive(prefix)(Layer.buildWithScope(layer, scope)).pipe(
          startDefects,
          Effect.timeoutFail({
            duration: START_ATTEMPT,
            onTimeout: () => new StartTimeout({ message: `not built within ${Duration.format(START_ATTEMPT)}` })
          }),
          Effect.onExit((exit) => Exit.isSuccess(exit) ? Effect.void : Scope.close(scope, exit))
        ))
      return sql.onDialectOrElse({ pg: () => retryStart(attempt), orElse: () => attempt })
    })))

/**
 * Brings the prefix's tables to the latest of `record` (default: the outbox's `migrations`) under the start lock. On
 * SQLite a second process migrating at the same moment can find the Migrator's transaction taken and return without
 * waiting for it: the record is read again until it has the latest entry.
 *
 * @internal
 */
export const migrate = (
  prefix: string,
  record: Record<string, Effect.Effect<void, SqlError, SqlClient.SqlClient>> = migrations(tables(prefix))
): Effect.Effect<void, StartFailure, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const table = `${prefix}_migrations`
    const latest = Math.max(0, ...Object.keys(record).map((key) => Number.parseInt(key, 10)))
    yield* Migrator.make({})({ loader: Migrator.fromRecord(record), table })
    const rows = yield* sql`SELECT MAX(migration_id) AS latest FROM ${sql(table)}`
    const applied = Number((rows[0] as any)?.latest ?? 0)
    if (applied < latest) {
      return yield* new Migrator.MigrationError({
        reason: "locked",
        message: `the migrations of ${prefix} are at ${applied}, not yet at ${latest}`
      })
    }
  }).pipe(
    // (A statement refused while the other process holds the database: the same, made again.)
    Effect.retry({
      times: 20,
      schedule: Schedule.spaced("250 millis"),
      while: (e) => e._tag === "SqlError" || e.reason === "locked"
    }),
    exclusive(prefix),
    (migrating) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) =>
        sql.onDialectOrElse({
          // The lock's own connection and statements are outside the retry above: a start while PostgreSQL restarts
          // fails them, and they are made again with the rest.
          pg: () => retryStart(startDefects(migrating)),
          orElse: () => migrating
        }))
  )

const num = (u: unknown): number => Number(u)
const numOrNull = (u: unknown): number | null => (u === null || u === undefined ? null : Number(u))
/** The error of a row's `result` (JSON `{ reply, error, host }`). */
const errorOf = (result: string | null): ReportError | null =>
  result === null ? null : (JSON.parse(result) as { readonly error: ReportError | null }).error

const messageRow = (r: any): MessageRow => ({
  id: r.id,
  sender: r.sender,
  body: r.body,
  requireTls: num(r.require_tls) === 1,
  createdMs: num(r.created_ms),
  dsnOf: r.dsn_of
})

const recipientRow = (r: any): RecipientRow => ({
  messageId: r.message_id,
  address: r.address,
  domain: r.domain,
  state: r.state,
  retryNum: num(r.retry_num),
  lastError: r.last_error,
  nextAttemptMs: numOrNull(r.next_attempt_ms),
  expiresMs: numOrNull(r.expires_ms),
  notifyNum: num(r.notify_num),
  nextNotifyMs: numOrNull(r.next_notify_ms),
  result: r.result ?? null,
  dsnSent: num(r.dsn_sent) === 1,
  updatedMs: num(r.updated_ms),
  version: num(r.version),
  claim: r.claim ?? null,
  claimUntilMs: numOrNull(r.claim_until)
})

const attemptRow = (r: any): AttemptRow => ({
  messageId: r.message_id,
  generation: num(r.generation),
  step: num(r.step),
  domain: r.domain,
  startedMs: num(r.started_ms),
  report: r.report
})

/** @internal */
export interface NewRecipient {
  readonly address: string
  readonly domain: string
  readonly nextAttemptMs: number
  readonly expiresMs: number | null
  readonly nextNotifyMs: number | null
}

/** @internal */
export interface RecipientUpdate {
  readonly address: string
  readonly state: RecipientState
  readonly retryNum: number
  readonly lastError: string
  readonly nextAttemptMs: number | null
  /** A deferral's expiry, the schedule's as evaluated after the attempt; `undefined`: left as it was. */
  readonly expiresMs?: number | null
  readonly result: string | null
}

/** A message the watchdog found stalled. @internal */
export interface Stalled {
  readonly id: string
  readonly domains: ReadonlyArray<string>
  /** Its workflow's generation (0 until the watchdog began a new one). */
  readonly generation: number
  /** Whether it was revived before (then, a bound ago or more) and is stalled still. */
  readonly revivedBefore: boolean
}

/** @internal */
export interface Store {
  readonly tables: Tables
  /** Inserts the message and its recipients in one transaction; an id that exists already is left as it is. */
  readonly insert: (
    message: MessageRow,
    recipients: ReadonlyArray<NewRecipient>
  ) => Effect.Effect<boolean, SqlError>
  readonly message: (id: string) => Effect.Effect<Option.Option<MessageRow>, SqlError>
  readonly recipients: (id: string) => Effect.Effect<ReadonlyArray<RecipientRow>, SqlError>
  readonly attempts: (id: string) => Effect.Effect<ReadonlyArray<AttemptRow>, SqlError>
  /**
   * One domain's results and its attempt record, in one transaction. A `delivered` result is always recorded and
   * never overwritten; any other only over a pending (queued, deferred) state.
   */
  readonly recordDomain: (
    id: string,
    updates: ReadonlyArray<RecipientUpdate>,
    attempt: AttemptRow,
    nowMs: number
  ) => Effect.Effect<void, SqlError>
  /**
   * Takes the domain's due recipients that no live attempt holds, for `token` until `untilMs`: two executions of one
   * attempt (a redelivered entity message while the first still runs) never send to the same recipient.
   */
  readonly claim: (
    id: string,
    domain: string,
    token: string,
    nowMs: number,
    untilMs: number
  ) => Effect.Effect<void, SqlError>
  /** Extends the claims of `tokens` (their attempts are under way, or waiting for a permit), in statements of 500. */
  readonly renew: (tokens: ReadonlyArray<string>, untilMs: number) => Effect.Effect<void, SqlError>
  /** Gives up pending recipients, except those an attempt under way holds (its claim not lapsed). */
  readonly expire: (id: string, addresses: ReadonlyArray<string>, nowMs: number) => Effect.Effect<void, SqlError>
  readonly notified: (
    id: string,
    notes: ReadonlyArray<{ readonly address: string; readonly notifyNum: number; readonly nextNotifyMs: number | null }>
  ) => Effect.Effect<void, SqlError>
  readonly dsnSent: (id: string, addresses: ReadonlyArray<string>) => Effect.Effect<void, SqlError>
  readonly markStarted: (id: string) => Effect.Effect<void, SqlError>
  readonly markDone: (id: string) => Effect.Effect<void, SqlError>
  /**
   * Messages stored but whose workflow was not started (enqueued by a client, or before a crash), oldest first,
   * taken for the sweeper `token` until `untilMs` (or still its own): each is begun by one runner, not by all.
   */
  readonly unstarted: (
    token: string,
    nowMs: number,
    untilMs: number,
    limit: number
  ) => Effect.Effect<ReadonlyArray<string>, SqlError>
  /**
   * Messages begun whose workflow made no progress: a pending recipient due since `beforeMs` or earlier that no
   * attempt holds, and not revived since `beforeMs`. Oldest first.
   */
  readonly stalled: (nowMs: number, beforeMs: number, limit: number) => Effect.Effect<ReadonlyArray<Stalled>, SqlError>
  /** A new generation of the message's workflow (a new execution id), returned. */
  readonly nextGeneration: (id: string) => Effect.Effect<number, SqlError>
  /** The watchdog revived the message's workflow at `nowMs` (it is not looked at again before the bound). */
  /**
   * Takes the revival of a stalled message for this sweep: true for the one runner whose write changed the row (not
   * revived since `beforeMs`); the others leave it.
   */
  readonly takeRevival: (id: string, nowMs: number, beforeMs: number) => Effect.Effect<boolean, SqlError>
  /** Messages newest first, `limit` of them, optionally only those not done. */
  readonly list: (
    options: { readonly limit: number; readonly pendingOnly: boolean }
  ) => Effect.Effect<ReadonlyArray<{ readonly message: MessageRow; readonly done: boolean }>, SqlError>
}

/** @internal */
export const make = (
  prefix: string,
  announcer: Announcer
): Effect.Effect<Store, StartFailure, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = tables(prefix)
    yield* migrate(prefix)
    const M = sql(t.messages)
    const R = sql(t.recipients)
    const A = sql(t.attempts)
    // Every write of recipients' states announces what it changed: in its transaction (so that the announcement is
    // made if and only if the change commits, in commit order), and once it committed: the commit and that
    // announcement are one uninterruptible region, so that no interruption between them loses the event (the write
    // itself stays interruptible: it rolls back, and there is nothing to announce).
    const announced = <A>(write: Effect.Effect<readonly [A, ReadonlyArray<RecordedEvent>], SqlError>) =>
      Effect.uninterruptibleMask((restore) =>
        sql.withTransaction(restore(Effect.tap(write, ([, events]) => announcer.recording(events)))).pipe(
          Effect.tap(([, events]) => announcer.recorded(events)),
          Effect.map(([a]) => a)
        )
      )
    const store: Store = {
      tables: t,
      insert: (message, recipients) =>
        announced(Effect.gen(function*() {
          const existing = yield* sql`SELECT id FROM ${M} WHERE id = ${message.id}`
          if (existing.length > 0) return [false, []] as const
          yield* sql`INSERT INTO ${M} (id, sender, body, require_tls, created_ms, dsn_of, started, done, revived_ms, generation, start_claim, start_until) VALUES (${message.id}, ${message.sender}, ${message.body}, ${
            message.requireTls ? 1 : 0
          }, ${message.createdMs}, ${message.dsnOf}, 0, 0, NULL, 0, NULL, NULL)`
          let position = 0
          for (const r of recipients) {
            yield* sql`INSERT INTO ${R} (message_id, address, domain, position, state, retry_num, last_error, next_attempt_ms, expires_ms, notify_num, next_notify_ms, result, dsn_sent, updated_ms, claim, claim_until) VALUES (${message.id}, ${r.address}, ${r.domain}, ${position++}, 'queued', 0, 'none', ${r.nextAttemptMs}, ${r.expiresMs}, 0, ${r.nextNotifyMs}, NULL, 0, ${message.createdMs}, NULL, NULL)`
          }
          return [
            true,
            recipients.map((r): RecordedEvent => ({
              id: message.id,
              address: r.address,
              state: "queued",
              retryNum: 0,
              nextAttemptMs: r.nextAttemptMs,
              error: null,
              atMs: message.createdMs,
              version: 0
            }))
          ] as const
        })),
      message: (id) =>
        Effect.map(sql`SELECT * FROM ${M} WHERE id = ${id}`, (rows) => Option.map(Option.fromNullable(rows[0]), messageRow)),
      recipients: (id) =>
        Effect.map(sql`SELECT * FROM ${R} WHERE message_id = ${id} ORDER BY position`, (rows) => rows.map(recipientRow)),
      attempts: (id) =>
        Effect.map(
          sql`SELECT * FROM ${A} WHERE message_id = ${id} ORDER BY started_ms, generation, step, domain`,
          (rows) => rows.map(attemptRow)
        ),
      recordDomain: (id, updates, attempt, nowMs) =>
        announced(Effect.gen(function*() {
          const events: Array<RecordedEvent> = []
          for (const u of updates) {
            // A delivery is a fact: recorded whatever another attempt recorded meanwhile (an expiry, a deferral of
            // an attempt whose lease had lapsed), and never overwritten; any other result only over a pending state.
            const over = u.state === "delivered" ? sql`state <> 'delivered'` : sql`state IN ('queued', 'deferred')`
            // Nor again: a write made again after its commit's reply was lost (a PostgreSQL restart) changes nothing
            // the second time, so it announces nothing twice. Every column it writes is compared: another write of the
            // same millisecond (and state) is not taken for this one.
            const again = sql`NOT (state = ${u.state} AND retry_num = ${u.retryNum} AND updated_ms = ${nowMs} AND last_error = ${u.lastError} AND next_attempt_ms IS NOT DISTINCT FROM ${u.nextAttemptMs} AND result IS NOT DISTINCT FROM ${u.result})`
            const expires = u.expiresMs === undefined ? sql`` : sql`expires_ms = ${u.expiresMs}, `
            const changed = yield* sql`UPDATE ${R} SET state = ${u.state}, retry_num = ${u.retryNum}, last_error = ${u.lastError}, next_attempt_ms = ${u.nextAttemptMs}, ${expires}result = ${u.result}, updated_ms = ${nowMs}, version = version + 1, claim = NULL, claim_until = NULL WHERE message_id = ${id} AND address = ${u.address} AND ${over} AND ${again} RETURNING address, version`
            // Only what the statement changed: a result another attempt's outcome kept out is not announced.
            if (changed.length > 0) {
              events.push({
                id,
                address: u.address,
                state: u.state,
                retryNum: u.retryNum,
                nextAttemptMs: u.nextAttemptMs,
                error: errorOf(u.result),
                atMs: nowMs,
                version: num((changed[0] as any).version)
              })
            }
          }
          yield* sql`INSERT INTO ${A} (message_id, generation, step, domain, started_ms, report) VALUES (${attempt.messageId}, ${attempt.generation}, ${attempt.step}, ${attempt.domain}, ${attempt.startedMs}, ${attempt.report}) ON CONFLICT DO NOTHING`
          // Progress: a later stall is a first one again for the watchdog (a revival, not a new generation).
          yield* sql`UPDATE ${M} SET revived_ms = NULL WHERE id = ${id} AND revived_ms IS NOT NULL`
          return [undefined, events] as const
        })),
      claim: (id, domain, token, nowMs, untilMs) =>
        Effect.asVoid(
          sql`UPDATE ${R} SET claim = ${token}, claim_until = ${untilMs} WHERE message_id = ${id} AND domain = ${domain} AND state IN ('queued', 'deferred') AND next_attempt_ms <= ${nowMs} AND (claim IS NULL OR claim = ${token} OR claim_until < ${nowMs})`
        ),
      renew: (tokens, untilMs) =>
        Effect.forEach(
          Arr.chunksOf(tokens, 500),
          (chunk) => sql`UPDATE ${R} SET claim_until = ${untilMs} WHERE ${sql.in("claim", chunk)}`,
          { discard: true }
        ),
      expire: (id, addresses, nowMs) =>
        addresses.length === 0 ? Effect.void : announced(Effect.map(
          sql`UPDATE ${R} SET state = 'expired', next_attempt_ms = NULL, updated_ms = ${nowMs}, version = version + 1 WHERE message_id = ${id} AND state IN ('queued', 'deferred') AND (claim IS NULL OR claim_until < ${nowMs}) AND ${
            sql.in("address", addresses)
          } RETURNING address, retry_num, result, version`,
          // Only the recipients it expired: one an attempt holds is left to the attempt's outcome.
          (rows) =>
            [
              undefined,
              rows.map((r: any): RecordedEvent => ({
                id,
                address: r.address,
                state: "expired",
                retryNum: num(r.retry_num),
                nextAttemptMs: null,
                error: errorOf(r.result ?? null),
                atMs: nowMs,
                version: num(r.version)
              }))
            ] as const
        )),
      notified: (id, notes) =>
        sql.withTransaction(Effect.forEach(notes, (n) =>
          sql`UPDATE ${R} SET notify_num = ${n.notifyNum}, next_notify_ms = ${n.nextNotifyMs} WHERE message_id = ${id} AND address = ${n.address}`, {
          discard: true
        })),
      dsnSent: (id, addresses) =>
        addresses.length === 0 ? Effect.void : Effect.asVoid(
          sql`UPDATE ${R} SET dsn_sent = 1 WHERE message_id = ${id} AND ${sql.in("address", addresses)}`
        ),
      markStarted: (id) => Effect.asVoid(sql`UPDATE ${M} SET started = 1 WHERE id = ${id}`),
      markDone: (id) => Effect.asVoid(sql`UPDATE ${M} SET done = 1, started = 1 WHERE id = ${id}`),
      unstarted: (token, nowMs, untilMs, limit) => {
        // The conditions twice: PostgreSQL checks the outer ones again on a row another sweeper took meanwhile.
        const free = sql`started = 0 AND (start_claim IS NULL OR start_claim = ${token} OR start_until < ${nowMs})`
        return sql`UPDATE ${M} SET start_claim = ${token}, start_until = ${untilMs} WHERE id IN (SELECT id FROM ${M} WHERE ${free} ORDER BY created_ms LIMIT ${limit}) AND ${free}`
          .pipe(
            Effect.zipRight(sql`SELECT id FROM ${M} WHERE started = 0 AND start_claim = ${token} ORDER BY created_ms LIMIT ${limit}`),
            Effect.map((rows) => rows.map((r: any) => r.id as string))
          )
      },
      stalled: (nowMs, beforeMs, limit) =>
        Effect.map(
          sql`SELECT r.message_id AS id, r.domain AS domain, m.created_ms AS created_ms, m.generation AS generation, m.revived_ms AS revived_ms FROM ${R} r JOIN ${M} m ON m.id = r.message_id WHERE r.state IN ('queued', 'deferred') AND r.next_attempt_ms <= ${beforeMs} AND (r.claim IS NULL OR r.claim_until < ${nowMs}) AND m.started = 1 AND m.done = 0 AND (m.revived_ms IS NULL OR m.revived_ms <= ${beforeMs}) ORDER BY m.created_ms, r.message_id LIMIT ${limit}`,
          (rows) => {
            const byId = new Map<string, { domains: Set<string>; generation: number; revivedBefore: boolean }>()
            for (const r of rows as ReadonlyArray<any>) {
              const entry = byId.get(r.id) ??
                { domains: new Set<string>(), generation: num(r.generation), revivedBefore: r.revived_ms !== null }
              entry.domains.add(r.domain)
              byId.set(r.id, entry)
            }
            return Array.from(byId, ([id, e]): Stalled => ({
              id,
              domains: Array.from(e.domains),
              generation: e.generation,
              revivedBefore: e.revivedBefore
            }))
          }
        ),
      nextGeneration: (id) =>
        Effect.map(
          sql`UPDATE ${M} SET generation = generation + 1 WHERE id = ${id} RETURNING generation`,
          (rows) => num((rows[0] as any)?.generation ?? 0)
        ),
      takeRevival: (id, nowMs, beforeMs) =>
        Effect.map(
          sql`UPDATE ${M} SET revived_ms = ${nowMs} WHERE id = ${id} AND done = 0 AND (revived_ms IS NULL OR revived_ms <= ${beforeMs}) RETURNING id`,
          (rows) => rows.length > 0
        ),
      list: ({ limit, pendingOnly }) =>
        Effect.map(
          pendingOnly
            ? sql`SELECT * FROM ${M} WHERE done = 0 ORDER BY created_ms DESC, id DESC LIMIT ${limit}`
            : sql`SELECT * FROM ${M} ORDER BY created_ms DESC, id DESC LIMIT ${limit}`,
          (rows) => rows.map((r: any) => ({ message: messageRow(r), done: num(r.done) === 1 }))
        )
    }
    return store
  })
