/**
 * The `Outbox` service and the layers its engines share: the store, the workflow and the domain entity, the starter
 * that begins the workflows of messages stored by a client (or by a process that stopped before it began them).
 */
import type { WorkflowEngine } from "@effect/workflow/WorkflowEngine"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
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
import { durably, storageRetry } from "./delivery.js"
import { insertMessage, newId } from "./enqueue.js"
import * as Store from "./store.js"
import { DeliveryWorkflow } from "./workflow.js"

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

const storageError = (error: SqlError) => new OutboxError({ message: `outbox storage: ${error.message}`, cause: error })

/** The store and the event hub. @internal */
export const coreLayer = (
  prefix: string,
  options: CoreOptions
): Layer.Layer<Core, OutboxError, SqlClient.SqlClient> =>
  Layer.scoped(
    Core,
    Effect.gen(function*() {
      const store = yield* Effect.mapError(Store.make(prefix), storageError)
      const events = yield* PubSub.unbounded<StatusEvent>()
      return { store, events, options, scope: yield* Effect.scope }
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
 * The service. On a runner `enqueue` begins the workflow at once, and a sweeper begins those of messages stored
 * without one (a client's `enqueue`, a process stopped in between) every `sweepEvery`.
 *
 * @internal
 */
export const make = (runner: boolean, sweepEvery: Duration.DurationInput | null) =>
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
          DeliveryWorkflow.execute({ id }, { discard: true }).pipe(
            Effect.zipRight(durably(store.markStarted(id))),
            Effect.provide(ctx)
          )
      })
    const sweeping = runner && sweepEvery !== null
    if (sweeping) {
      // A start that fails (several runners starting one message at once, storage) is left for the next sweep:
      // the message stays unstarted until one start succeeded, and a start is idempotent (the workflow's id).
      // Bounded: after a storage outage a start can wait on the cluster (a shard with no owner yet) for as long as
      // the outage lasts, and one start held up would hold up every later sweep.
      const startOrLater = (id: string) =>
        Effect.catchAllCause(Effect.timeoutFail(start(id), { duration: "10 seconds", onTimeout: () => "timed out" }), (cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.interrupt
            : Effect.logDebug(`outbox: ${id} not begun yet: ${Cause.pretty(cause)}`))
      const sweep = store.unstarted(500).pipe(
        // Each start is a write to the cluster's storage: in parallel, or a client's batch begins at that pace.
        Effect.flatMap((ids) => Effect.forEach(ids, startOrLater, { discard: true, concurrency: 16 })),
        Effect.catchAllCause((cause) =>
          Cause.isInterruptedOnly(cause)
            ? Effect.interrupt
            : Effect.logWarning(`outbox: cannot read unstarted messages: ${Cause.pretty(cause)}`)
        )
      )
      yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(sweepEvery)))
    }
    const service: Service = {
      enqueue: (request) =>
        Effect.gen(function*() {
          const id = yield* newId
          const now = yield* Clock.currentTimeMillis
          yield* insertMessage(store, id, request, now, "", config).pipe(
            Effect.retry({ schedule: storageRetry, while: (e) => e._tag === "SqlError" }),
            Effect.catchTag("SqlError", (e) => Effect.fail(storageError(e)))
          )
          // The message is stored: a start that fails is the sweeper's to make again (starts are idempotent), and
          // the caller gets its id — an error here would have it enqueue the same message twice.
          yield* sweeping
            ? Effect.catchAllCause(start(id), (cause) =>
              Cause.isInterruptedOnly(cause)
                ? Effect.interrupt
                : Effect.logWarning(`outbox: ${id} stored; its start is left to the sweeper: ${Cause.pretty(cause)}`))
            : start(id)
          return id
        }),
      status: (id) =>
        Effect.gen(function*() {
          const message = yield* store.message(id)
          if (Option.isNone(message)) return Option.none()
          return Option.some(yield* statusOf(store, message.value, false))
        }).pipe(Effect.mapError(storageError)),
      list: (options = {}) =>
        store.list({ limit: options.limit ?? 100, pendingOnly: options.pendingOnly ?? false }).pipe(
          Effect.flatMap((rows) => Effect.forEach(rows, (r) => statusOf(store, r.message, r.done))),
          Effect.mapError(storageError)
        ),
      events: Stream.fromPubSub(core.events)
    }
    return service
  })

/** @internal */
export const serviceLayer = (runner: boolean, sweepEvery: Duration.DurationInput | null = "1 second") =>
  Layer.scoped(Outbox, make(runner, sweepEvery))
