/**
 * The `Outbox` service and the layers its engines share: the store, the workflow and the domain entity, the starter
 * that begins the workflows of messages stored by a client (or by a process that stopped before it began them).
 */
import * as ClusterWorkflowEngine from "@effect/cluster/ClusterWorkflowEngine"
import type { WorkflowEngine } from "@effect/workflow/WorkflowEngine"
import * as SqlClient from "@effect/sql/SqlClient"
import type { MigrationError } from "@effect/sql/Migrator"
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import type { AttemptRecord, RecipientResult } from "../../DeliveryReport.js"
import { OutboundConfig } from "../../OutboundConfig.js"
import type { DeliveryRequest, InvalidRequest } from "../../Transport.js"
import {
  type AttemptEntry,
  Core,
  type CoreOptions,
  type MessageStatus,
  OutboxError,
  type RecipientStatus,
  type StatusEvent
} from "./core.js"
import { durably, storageDefects, storageRetry } from "./delivery.js"
import { insertMessage, newId } from "./enqueue.js"
import * as Events from "./events.js"
import * as Store from "./store.js"
import {
  DeliveryWorkflow,
  dispatchEntity,
  domainEntityLayer,
  Revive,
  reviveCluster,
  workflowLayer
} from "./workflow.js"

/** @internal */
export interface ListOptions {
  readonly limit?: number | undefined
  readonly pendingOnly?: boolean | undefined
}

/** @internal */
export interface Service {
  readonly enqueue: (request: DeliveryRequest) => Effect.Effect<string, InvalidRequest | OutboxError>
  readonly status: (id: string) => Effect.Effect<Option.Option<MessageStatus>, OutboxError>
  readonly list: (options?: ListOptions) => Effect.Effect<ReadonlyArray<MessageStatus>, OutboxError>
  readonly events: Stream.Stream<StatusEvent>
}

/** @internal */
export class Outbox extends Context.Tag("effect-smtp-transport/Outbox")<Outbox, Service>() {}

/**
 * Reads are made again a few times (about 3 s): the first statements after a PostgreSQL restart can meet a pooled
 * connection that died with it.
 */
const readRetry = <A, R>(effect: Effect.Effect<A, SqlError, R>) =>
  effect.pipe(storageDefects, Effect.retry(Schedule.intersect(storageRetry, Schedule.recurs(5))))

const storageError = (error: SqlError | MigrationError | Store.StartTimeout) =>
  new OutboxError({ message: `outbox storage: ${error.message}`, cause: error })

/**
 * How the engine announces its changes (events.ts): PostgreSQL's notifications, or this process's hub. `@effect/sql-pg`
 * is loaded only on PostgreSQL (an optional peer dependency); its client is the `SqlClient` itself.
 */
const announcerOf = (prefix: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql.onDialectOrElse({
      pg: () =>
        Effect.flatMap(Effect.promise(() => import("@effect/sql-pg/PgClient")), (pg) =>
          Effect.map(pg.PgClient, (client) => Events.postgres(sql, client, prefix))),
      orElse: () => Events.local
    }))

/** The store and the events. @internal */
export const coreLayer = (
  prefix: string,
  options: CoreOptions
): Layer.Layer<Core, OutboxError, SqlClient.SqlClient> =>
  Layer.scoped(
    Core,
    Effect.gen(function*() {
      const announcer = yield* announcerOf(prefix)
      const store = yield* Effect.mapError(Store.make(prefix, announcer), storageError)
      const events = yield* announcer.events((id) => store.recipients(id))
      // The set's own finalizer interrupts its fibers; the one added after it runs first (last-added first) and
      // waits for every attempt under way to end.
      const attempts = yield* FiberSet.make()
      yield* Effect.addFinalizer(() => FiberSet.awaitEmpty(attempts))
      return { store, events, options, attempts }
    })
  )

const parse = <A>(text: string | null, fallback: A): A => (text === null ? fallback : JSON.parse(text) as A)

const statusOf = (store: Store.Store, message: Store.MessageRow, done: boolean) =>
  Effect.gen(function*() {
    const rows = yield* store.recipients(message.id)
    const attempts = yield* store.attempts(message.id)
    const recipients = rows.map((r): RecipientStatus => {
      const saved = parse(r.result, { reply: null, error: null, host: null })
      return {
        address: r.address,
        state: r.state,
        retryNum: r.retryNum,
        lastError: r.lastError,
        nextAttemptMs: r.state === "queued" || r.state === "deferred" ? r.nextAttemptMs : null,
        expiresMs: r.expiresMs,
        reply: saved.reply,
        error: saved.error,
        host: saved.host,
        updatedMs: r.updatedMs
      }
    })
    const status: MessageStatus = {
      id: message.id,
      sender: message.sender,
      createdMs: message.createdMs,
      done: done || rows.every((r) => Store.finalStates.includes(r.state)),
      dsnOf: message.dsnOf === "" ? null : message.dsnOf,
      recipients,
      attempts: attempts.map((a): AttemptEntry => {
        const report = JSON.parse(a.report) as {
          recipients: ReadonlyArray<RecipientResult>
          attempts: ReadonlyArray<AttemptRecord>
        }
        return { step: a.step, domain: a.domain, startedMs: a.startedMs, ...report }
      })
    }
    return status
  })

/**
 * How the sweeper works: every `every` it begins the workflows of messages stored without one, and its watchdog
 * revives those of messages that stalled — begun, with a pending recipient due for longer than `stallAfter` that no
 * attempt holds. A workflow that runs makes an attempt when a recipient is due (within a step's floor wait of 5 s
 * when an attempt could not be made), so one overdue that long was lost by the engine (see `Revive`).
 *
 * @internal
 */
export interface Sweep {
  readonly every: Duration.DurationInput
  readonly stallAfter: Duration.DurationInput
}

/** @internal */
export const defaultSweep: Sweep = { every: "1 second", stallAfter: "20 seconds" }

/**
 * The service. On a runner `enqueue` begins the workflow at once, and the sweeper (`Sweep`) begins those of messages
 * stored without one (a client's `enqueue`, a process stopped in between) and revives stalled ones.
 *
 * @internal
 */
export const make = (runner: boolean, sweep: (Sweep & { readonly revive: Revive["Type"] }) | null) =>
  Effect.gen(function*() {
    const core = yield* Core
    const { store } = core
    const config = yield* OutboundConfig
    const context = yield* Effect.context<never>()
    const engine = runner ? Option.some(context as Context.Context<WorkflowEngine>) : Option.none()
    const start = (id: string) =>
      Option.match(engine, {
        onNone: () => Effect.void,
        onSome: (ctx) =>
          DeliveryWorkflow.execute({ id, generation: 0 }, { discard: true }).pipe(
            Effect.zipRight(durably(store.markStarted(id))),
            Effect.provide(ctx)
          )
      })
    const sweeping = runner && sweep !== null
    if (runner && sweep !== null) {
      // A start that fails (several runners starting one message at once, storage) is left for the next sweep:
      // the message stays unstarted until one start succeeded, and a start is idempotent (the workflow's id).
      // Bounded: after a storage outage a start can wait on the cluster (a shard with no owner yet) for as long as
      // the outage lasts, and one start held up would hold up every later sweep.
      const bounded = <A, E, R>(effect: Effect.Effect<A, E, R>, what: string) =>
        Effect.catchAllCause(
          Effect.timeoutFail(effect, { duration: "10 seconds", onTimeout: () => "timed out" }),
          (cause) =>
            Cause.isInterruptedOnly(cause)
              ? Effect.interrupt
              : Effect.as(Effect.logDebug(`outbox: ${what}: ${Cause.pretty(cause)}`), undefined)
        )
      const startOrLater = (id: string) =>
        bounded(start(id).pipe(Effect.withSpan("outbox.sweep.start")), `${id} not begun yet`)
      const stallMs = Duration.toMillis(Duration.decode(sweep.stallAfter))
      // Taken first, in one write that only one runner's sweep can make (three watchdogs see the same stall); one
      // that fails is made again a bound later, when the message is still stalled then.
      const revive = (stalled: Store.Stalled, now: number) =>
        Effect.flatMap(store.takeRevival(stalled.id, now, now - stallMs), (taken) =>
          taken
            ? bounded(
              sweep.revive(stalled).pipe(
                Effect.withSpan("outbox.revive"),
                Effect.tap((what) =>
                  Effect.logWarning(
                    `outbox: ${stalled.id} stalled (a recipient due for over ${stallMs / 1000} s, no attempt); ${what}`
                  )
                )
              ),
              `${stalled.id} stalled, not revived yet`
            )
            : Effect.void)
      // This runner's sweeper token: the messages it takes to begin are its own for 10 s (the bound of a start), so
      // that three runners do not each begin every message a client stored.
      const token = yield* Effect.map(
        Effect.all([Random.nextIntBetween(0, 0x1_0000_0000), Random.nextIntBetween(0, 0x1_0000_0000)]),
        ([a, b]) => `${a.toString(16)}.${b.toString(16)}`
      )
      const once = Effect.gen(function*() {
        const takenAt = yield* Clock.currentTimeMillis
        const ids = yield* store.unstarted(token, takenAt, takenAt + 10_000, 500)
        // Each start is a write to the cluster's storage: in parallel, or a client's batch begins at that pace.
        yield* Effect.forEach(ids, startOrLater, { discard: true, concurrency: 16 })
        const now = yield* Clock.currentTimeMillis
        // A few a sweep, oldest first: a healthy message can still look stalled (an attempt request refused by a
        // domain entity's full mailbox in a backlog of thousands to one MX host, docs/outbox.md), and reviving one
        // is harmless but not free (a few statements).
        const stalled = yield* store.stalled(now, now - stallMs, 20)
        yield* Effect.forEach(stalled, (s) => revive(s, now), { discard: true, concurrency: 4 })
      }).pipe(
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.interrupt
            : Effect.logWarning(`outbox: cannot read the messages to begin or revive: ${Cause.pretty(cause)}`)
        )
      )
      yield* Effect.forkScoped(Effect.repeat(once, Schedule.spaced(sweep.every)))
    }
    const service: Service = {
      enqueue: (request) =>
        Effect.gen(function*() {
          const id = yield* newId
          const now = yield* Clock.currentTimeMillis
          yield* insertMessage(store, id, request, now, "", config).pipe(
            storageDefects,
            Effect.retry({ schedule: storageRetry, while: (e) => e._tag === "SqlError" }),
            Effect.catchTag("SqlError", (e) => Effect.fail(storageError(e))),
            Effect.withSpan("outbox.enqueue.store")
          )
          // The message is stored: a start that fails is the sweeper's to make again (starts are idempotent), and
          // the caller gets its id — an error here would have it enqueue the same message twice.
          yield* (sweeping
            ? Effect.catchAllCause(start(id), (cause) =>
              Cause.isInterruptedOnly(cause)
                ? Effect.interrupt
                : Effect.logWarning(`outbox: ${id} stored; its start is left to the sweeper: ${Cause.pretty(cause)}`))
            : start(id)).pipe(Effect.withSpan("outbox.enqueue.start"))
          return id
        }).pipe(Effect.withSpan("outbox.enqueue")),
      status: (id) =>
        Effect.gen(function*() {
          const message = yield* store.message(id)
          if (Option.isNone(message)) return Option.none()
          return Option.some(yield* statusOf(store, message.value, false))
        }).pipe(readRetry, Effect.mapError(storageError)),
      list: (options = {}) =>
        store.list({ limit: options.limit ?? 100, pendingOnly: options.pendingOnly ?? false }).pipe(
          Effect.flatMap((rows) => Effect.forEach(rows, (r) => statusOf(store, r.message, r.done))),
          readRetry,
          Effect.mapError(storageError)
        ),
      events: core.events
    }
    return service
  })

/** A runner's service, with the sweeper. @internal */
export const runnerLayer = (sweep: Sweep = defaultSweep) =>
  Layer.scoped(Outbox, Effect.flatMap(Revive, (revive) => make(true, { ...sweep, revive })))

/** A client's service (`runner` false), or a runner's without a sweeper (the in-memory engine's). @internal */
export const serviceLayer = (runner: boolean) => Layer.scoped(Outbox, make(runner, null))

/**
 * A runner on a cluster's `Sharding` and storage: the workflow, the domain entity (`concurrency` attempts at once),
 * the service with its sweeper. @internal
 */
export const clusterRunnerLayer = (prefix: string, options: CoreOptions, concurrency: number, sweep: Sweep) =>
  runnerLayer(sweep).pipe(
    Layer.provide(reviveCluster),
    Layer.provideMerge(workflowLayer),
    Layer.provide(dispatchEntity),
    Layer.provide(domainEntityLayer(concurrency)),
    Layer.provide(ClusterWorkflowEngine.layer),
    Layer.provide(coreLayer(prefix, options))
  )
