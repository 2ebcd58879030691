/**
 * A message's delivery as a durable workflow (`@effect/workflow`): a loop of steps, each an activity whose result the
 * engine records, with a durable sleep between them (`DurableClock`, a clock entity message delivered at its time
 * when the wait is long, an in-memory sleep replayed from its start when it is short).
 *
 * A step: recipients past their TTL expire; every recipient domain with a due recipient gets one attempt, sent to the
 * entity of the domain's primary MX host (one runner holds each host at a time) or, on the in-memory engine, run
 * in place; then the delay DSNs whose `notify` point has come and the failure DSNs are enqueued through the outbox;
 * the step returns when the next thing is due. Everything it decides is read from SQL, so a replayed step decides
 * the same or, after a partial run, only what is left.
 */
import * as ClusterSchema from "@effect/cluster/ClusterSchema"
import { createHash } from "node:crypto"
import * as Entity from "@effect/cluster/Entity"
import { EntityId } from "@effect/cluster/EntityId"
import { MessageStorage } from "@effect/cluster/MessageStorage"
import * as Sharding from "@effect/cluster/Sharding"
import * as Rpc from "@effect/rpc/Rpc"
import * as Activity from "@effect/workflow/Activity"
import * as DurableClock from "@effect/workflow/DurableClock"
import * as Workflow from "@effect/workflow/Workflow"
import * as WorkflowEngine from "@effect/workflow/WorkflowEngine"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type { ReportError, ReportReply } from "../../DeliveryReport.js"
import * as Dns from "../../Dns.js"
import * as OutboundConfig from "../../OutboundConfig.js"
import { Core } from "./core.js"
import {
  deliverDomain,
  type DomainJob,
  durably,
  makePermits,
  recipientVariables,
  scheduleFor,
  storageRetry,
  type TransportServices
} from "./delivery.js"
import * as Dsn from "./dsn.js"
import { insertMessage } from "./enqueue.js"
import type { RecipientRow, Stalled, Store } from "./store.js"

/** How a step reaches a domain's attempt: an entity in a cluster (keyed by `key`), a direct call in memory. @internal */
export class Dispatch extends Context.Tag("effect-smtp-transport/internal/OutboxDispatch")<
  Dispatch,
  (job: DomainJob, key: string) => Effect.Effect<void>
>() {}

/**
 * Where a domain's attempts run: the entity of its primary MX host (the lowest preference, then the first name), so
 * that one runner holds every domain an MX host serves and an `mx`-keyed limiter counts them all; the domain itself
 * when it has no MX record or the lookup fails (its attempt then finds out why).
 *
 * @internal
 */
export const routingKey = (domain: string): Effect.Effect<string> =>
  Effect.flatMap(Effect.serviceOption(Dns.Dns), (dns) =>
    Option.match(dns, {
      onNone: () => Effect.succeed(domain),
      onSome: (dns) =>
        dns.mx(domain.toLowerCase()).pipe(
          Effect.map((records) => {
            const sorted = [...records].sort((a, b) =>
              a.priority - b.priority || a.exchange.localeCompare(b.exchange)
            )
            const primary = sorted[0]?.exchange.toLowerCase().replace(/\.$/, "")
            return primary === undefined || primary === "" ? domain : `mx:${primary}`
          }),
          Effect.orElseSucceed(() => domain)
        )
    }))

/** @internal */
export const DeliveryWorkflow = Workflow.make({
  name: "effect-smtp-transport/Outbox/Delivery",
  // `generation`: 0, or the watchdog's new execution of a message whose workflow hung (a new execution id).
  payload: { id: Schema.String, generation: Schema.Number },
  idempotencyKey: ({ generation, id }) => (generation === 0 ? id : `${id}#${generation}`)
})

/**
 * One attempt of a message for one recipient domain, sent to the entity of the domain's primary MX host (the entity
 * id). The primary key makes a replayed step's request the same request.
 *
 * @internal
 */
export const DeliverRpc = Rpc.make("deliver", {
  payload: { id: Schema.String, generation: Schema.Number, step: Schema.Number, domain: Schema.String },
  // The generation too: a new generation counts its steps from 0 again, and its requests must not be taken for
  // (and answered with the replies of) the old one's.
  primaryKey: ({ domain, generation, id, step }) => `${id}/${generation}/${step}/${domain}`
})
  .annotate(ClusterSchema.Persisted, true)
  // A runner that stops lets the transaction under way finish (no attempt abandoned mid-transaction).
  .annotate(ClusterSchema.Uninterruptible, true)

/** @internal */
export const DomainEntity = Entity.make("effect-smtp-transport/OutboxDestination", [DeliverRpc])

/**
 * The domain entity's handlers, on this runner's `Transport` layer: at most `concurrency` attempts at once on the
 * runner, whatever their domains (a domain's attempts of many messages run side by side, under the runner's
 * limiters); an attempt claims its recipients before it waits for its turn (`makePermits`).
 *
 * @internal
 */
export const domainEntityLayer = (concurrency: number) =>
  Layer.unwrapScoped(Effect.map(makePermits(concurrency), (withPermit) =>
    DomainEntity.toLayer(
      Effect.gen(function*() {
        const context = yield* Effect.context<Core | TransportServices>()
        return {
          deliver: (request) =>
            deliverDomain({
              id: request.payload.id,
              generation: request.payload.generation,
              step: request.payload.step,
              domain: request.payload.domain
            }, withPermit).pipe(Effect.provide(context))
        }
      }),
      { concurrency: "unbounded", maxIdleTime: "1 minute" }
    )))

/** Dispatch through the domain entities (requires `Sharding`). @internal */
export const dispatchEntity = Layer.effect(
  Dispatch,
  Effect.map(DomainEntity.client, (client) => (job: DomainJob, key: string) =>
    client(key).deliver({ id: job.id, generation: job.generation, step: job.step, domain: job.domain }).pipe(
      // The entity's request and reply through the cluster (storage, and the network when another runner holds it).
      Effect.withSpan("outbox.dispatch"),
      // A few seconds of retries (a full mailbox, storage): then the step's floor wait and the next step.
      Effect.retry(Schedule.intersect(storageRetry, Schedule.recurs(8))),
      // The step reads the outcome from SQL: an attempt that could not be sent is due again at the next step.
      Effect.catchAllCause((cause) =>
        Cause.isInterruptedOnly(cause)
          ? Effect.interrupt
          : Effect.logWarning(`outbox: the attempt of ${job.id} for ${job.domain} was not made: ${Cause.pretty(cause)}`)
      )
    ))
)

/** Dispatch in place (the in-memory engine, tests). @internal */
export const dispatchLocal = Layer.effect(
  Dispatch,
  Effect.map(Effect.context<Core | TransportServices>(), (context) => (job: DomainJob) =>
    Effect.provide(deliverDomain(job), context))
)

/**
 * Brings a stalled message's workflow back (the watchdog of service.ts calls it for a message whose recipients are
 * overdue and that no attempt holds): `domains` are its pending recipient domains. Says what it did, for the log.
 *
 * @internal
 */
export class Revive extends Context.Tag("effect-smtp-transport/internal/OutboxRevive")<
  Revive,
  (stalled: Stalled) => Effect.Effect<string, unknown>
>() {}

/** Generations of a message's workflow the watchdog begins at most (the first included). @internal */
export const MAX_GENERATIONS = 3

/**
 * Revival on `@effect/cluster` (requires `Sharding` and its `MessageStorage`), through their public API and the
 * workflow's: nothing here names the engine's entity types (`ClusterWorkflowEngine` keeps them to itself). The ways
 * a workflow stalls there, and what undoes each:
 *
 * - A message to an entity (the workflow's run, its activities, its clock, a domain attempt) was read from storage
 *   and then not processed: the read marks it (`last_read`) and storage hands it out again only after ten minutes.
 *   It happens when the reading runner stops, or loses the shard, or its connection dies (a PostgreSQL restart)
 *   between the read and the processing. The marks of the shards that hold those messages are cleared
 *   (`MessageStorage.resetShards`, what a runner does for the shards it takes): the workflow's shard (its run,
 *   activities and clock share its execution id, so its shard) and each domain entity's. Their owners read them at
 *   their next poll; a message being processed is skipped, not processed twice.
 * - The run was never stored (a start whose write failed after the message was marked begun): `execute` stores it.
 *   A run stored already is the same request (its primary key), left as it is.
 * - The run is suspended and nothing resumed it (a clock whose wake-up was lost): `Workflow.resume`.
 * - The run has a result although the message is not done (the workflow ended on a defect): a run with a result is
 *   not run again by the public API, so a new generation of the workflow is begun (a new execution id).
 * - Still stalled a bound after a revival: the run is held by a runner but hangs there (seen after a PostgreSQL
 *   restart: the run under way, its next activity request never stored, and the entity skipping the run as being
 *   processed). Nothing outside the runner can end it: a new generation; the hung one, should it wake, finds in SQL
 *   what the new one did.
 *
 * Each is idempotent: the workflow's execution id is the message's, a run already under way is left alone, and the
 * attempts' claims keep two executions from sending to one recipient. Generations are bounded (`MAX_GENERATIONS`).
 *
 * @internal
 */
export const reviveCluster = Layer.effect(
  Revive,
  Effect.gen(function*() {
    const sharding = yield* Sharding.Sharding
    const storage = yield* MessageStorage
    const engine = yield* WorkflowEngine.WorkflowEngine
    const { store } = yield* Core
    const withEngine = Effect.provideService(WorkflowEngine.WorkflowEngine, engine)
    const workflowGroup = Context.get(DeliveryWorkflow.annotations, ClusterSchema.ShardGroup)
    const shardOf = (entityId: string, group: (id: EntityId) => string) => {
      const id = EntityId.make(entityId)
      return sharding.getShardId(id, group(id))
    }
    return ({ domains, generation, id, revivedBefore }: Stalled) => {
      const anew = (why: string) =>
        Effect.gen(function*() {
          const next = yield* store.nextGeneration(id)
          yield* withEngine(DeliveryWorkflow.execute({ id, generation: next }, { discard: true }))
          return `begun anew as generation ${next} (${why})`
        })
      // Bounded: each generation is one more workflow for the same permits, and a message that hangs in every one
      // has something no generation undoes.
      const more = generation + 1 < MAX_GENERATIONS
      return Effect.gen(function*() {
        if (revivedBefore && more) return yield* anew("still stalled after a revival")
        const executionId = yield* DeliveryWorkflow.executionId({ id, generation })
        const shards = [shardOf(executionId, workflowGroup)]
        for (const domain of domains) {
          shards.push(shardOf(yield* routingKey(domain), (eid) => DomainEntity.getShardGroup(eid)))
        }
        yield* storage.resetShards(shards)
        yield* withEngine(DeliveryWorkflow.execute({ id, generation }, { discard: true }))
        const result = yield* withEngine(DeliveryWorkflow.poll(executionId))
        if (result?._tag === "Suspended") {
          yield* withEngine(DeliveryWorkflow.resume(executionId))
          return "resumed (its run was suspended)"
        }
        if (result?._tag === "Complete") {
          return more
            ? yield* anew("its run has a result, the message is not done")
            : `its run has a result, the message is not done, and it had ${MAX_GENERATIONS} generations`
        }
        yield* sharding.pollStorage
        return "its shards' messages read again (its run begun, had it not been stored)"
      })
    }
  })
)

const StepResult = Schema.Struct({ done: Schema.Boolean, waitMs: Schema.Number })

const isPending = (r: RecipientRow) => r.state === "queued" || r.state === "deferred"

interface Saved {
  readonly reply: ReportReply | null
  readonly error: ReportError | null
  readonly host: string | null
}

const saved = (row: RecipientRow): Saved =>
  row.result === null ? { reply: null, error: null, host: null } : JSON.parse(row.result) as Saved

const asReply = (reply: ReportReply | null) =>
  reply === null ? undefined : { code: reply.code, enhanced: reply.enhanced, lines: reply.text.split("\n") }

/** The step numbered `n` of message `id`. @internal */
export const step = (
  id: string,
  n: number,
  generation = 0
): Effect.Effect<
  typeof StepResult.Type,
  never,
  Core | Dispatch | OutboundConfig.OutboundConfig | WorkflowEngine.WorkflowEngine
> =>
  Effect.gen(function*() {
    const core = yield* Core
    const { store } = core
    const dispatch = yield* Dispatch
    const config = yield* OutboundConfig.OutboundConfig
    const message = yield* store.message(id)
    if (Option.isNone(message)) return { done: true, waitMs: 0 }
    const msg = message.value
    const startMs = yield* Clock.currentTimeMillis

    // 1. Past its TTL, a recipient is not tried again (Stalwart checks expiry at the start of an attempt).
    let rows = yield* store.recipients(id)
    const expired = rows.filter((r) => isPending(r) && r.expiresMs !== null && r.expiresMs <= startMs)
    if (expired.length > 0) {
      yield* store.expire(id, expired.map((r) => r.address), startMs)
      rows = yield* store.recipients(id)
    }

    // 2. One attempt per domain with a due recipient, the domains at once.
    const domains = Array.from(new Set(
      rows.filter((r) => isPending(r) && (r.nextAttemptMs ?? 0) <= startMs).map((r) => r.domain)
    ))
    yield* Effect.forEach(domains, (domain) =>
      Effect.flatMap(routingKey(domain), (key) => dispatch({ id, domain, step: n, generation }, key)), {
      concurrency: "unbounded",
      discard: true
    })
    rows = yield* store.recipients(id)
    const nowMs = yield* Clock.currentTimeMillis
    const all = rows.map((r) => r.address)
    const reportingMta = core.options.reportingMta ??
      OutboundConfig.evaluateConnection(config, { sender: msg.sender }).settings.ehloName
    const body = Buffer.from(msg.body, "base64")

    // 3. Failure DSN: recipients given up whose sender was not told yet (none for the null sender).
    const failed = rows.filter((r) => (r.state === "failed" || r.state === "expired") && !r.dsnSent)
    if (failed.length > 0) {
      const dsn = yield* Dsn.make({
        reportingMta,
        sender: msg.sender,
        arrivalDate: msg.createdMs,
        original: body,
        recipients: failed.map((r) => {
          const s = saved(r)
          return {
            address: r.address,
            action: "failed" as const,
            status: Dsn.statusOf({
              reply: asReply(s.reply) ?? null,
              kind: s.error?.kind,
              permanent: true,
              expired: r.state === "expired"
            }),
            diagnostic: asReply(s.reply),
            remoteMta: s.host ?? undefined,
            lastAttempt: r.updatedMs
          }
        })
      })
      if (Option.isSome(dsn)) yield* enqueueDsn(store, dsnId(id, "failed", failed), dsn.value, nowMs, id, config)
      yield* store.dsnSent(id, failed.map((r) => r.address))
    }

    // 4. Delay DSN at each recipient's notify point (the first one the schedule's first `notify` after enqueue; each
    // next one that schedule's next interval after this notice, as Stalwart's `update_next_dsn`).
    const delayed = rows.filter((r) => isPending(r) && r.nextNotifyMs !== null && r.nextNotifyMs <= nowMs)
    if (delayed.length > 0) {
      const dsn = yield* Dsn.make({
        reportingMta,
        sender: msg.sender,
        arrivalDate: msg.createdMs,
        original: body,
        recipients: delayed.map((r) => {
          const s = saved(r)
          return {
            address: r.address,
            action: "delayed" as const,
            status: Dsn.statusOf({ reply: asReply(s.reply) ?? null, kind: s.error?.kind, permanent: false }),
            diagnostic: asReply(s.reply),
            remoteMta: s.host ?? undefined,
            willRetryUntil: r.expiresMs ?? undefined,
            // When its last attempt ended (the row's last write); none before a first attempt (RFC 3464 §2.3.7).
            lastAttempt: r.updatedMs === msg.createdMs ? undefined : r.updatedMs
          }
        })
      })
      if (Option.isSome(dsn)) yield* enqueueDsn(store, dsnId(id, "delayed", delayed), dsn.value, nowMs, id, config)
      // The next point of each recipient's schedule, evaluated now with notify_num advanced, from now.
      yield* store.notified(id, delayed.map((r) => {
        const notifyNum = r.notifyNum + 1
        const schedule = scheduleFor(
          config,
          recipientVariables(msg.sender, { ...r, notifyNum }, all, {
            createdMs: msg.createdMs,
            nowMs,
            expiresMs: r.expiresMs,
            dsn: msg.dsnOf !== ""
          })
        )
        const point = schedule.notify[notifyNum]
        return {
          address: r.address,
          notifyNum,
          nextNotifyMs: point === undefined ? null : nowMs + Duration.toMillis(point)
        }
      }))
      rows = yield* store.recipients(id)
    }

    // 5. Done, or the time of the next thing due: an attempt, an expiry, a notify point.
    const pending = rows.filter(isPending)
    if (pending.length === 0) {
      yield* store.markDone(id)
      return { done: true, waitMs: 0 }
    }
    const due = Math.min(
      ...pending.flatMap((r) => [r.nextAttemptMs ?? nowMs, r.expiresMs ?? Infinity, r.nextNotifyMs ?? Infinity])
    )
    // Something due now that this step did not settle (its attempt failed, or could not be sent): a floor, so that
    // a storage outage is not a loop of steps.
    return { done: false, waitMs: due <= nowMs ? RETRY_FLOOR_MS : due - nowMs }
  }).pipe(durably, Effect.withSpan("outbox.step"))

const RETRY_FLOOR_MS = 5_000

/**
 * A DSN's id is what it reports, not the step that made it: the recipients (each with the notices it had), so that a
 * step run again after an engine failure, a replay or a second generation of the workflow making the same notice
 * store it once (an id stored already is left as it is).
 */
const dsnId = (id: string, kind: "failed" | "delayed", rows: ReadonlyArray<RecipientRow>) => {
  const what = rows.map((r) => `${r.address} ${r.notifyNum}`).sort().join("\n")
  return `${id}.${kind}.${createHash("sha256").update(what).digest("hex").slice(0, 16)}`
}

/**
 * A DSN goes through the outbox: stored (once: its id is the step's), then its own workflow begun, outside this one
 * (not as a child: the report's delivery must not be tied to the reported message's workflow).
 */
const enqueueDsn = (
  store: Store,
  id: string,
  dsn: Dsn.Dsn,
  nowMs: number,
  dsnOf: string,
  config: OutboundConfig.Config
) =>
  insertMessage(store, id, { ...dsn, recipients: [...dsn.recipients] }, nowMs, dsnOf, config).pipe(
    Effect.catchTag("InvalidRequest", (e) =>
      Effect.as(Effect.logWarning(`outbox: the DSN of ${dsnOf} cannot be sent: ${e.message}`), false)),
    Effect.zipRight(DeliveryWorkflow.execute({ id, generation: 0 }, { discard: true })),
    Effect.zipRight(store.markStarted(id)),
    Effect.mapInputContext((context: Context.Context<WorkflowEngine.WorkflowEngine>) =>
      Context.omit(WorkflowEngine.WorkflowInstance)(context) as Context.Context<WorkflowEngine.WorkflowEngine>
    )
  )

/**
 * The workflow's body: steps until every recipient is final, sleeping durably between them.
 *
 * The engine's own work can fail where a step cannot: the write of an activity's request or of a clock message
 * (a PostgreSQL restart), a runner stopping under it. Such a failure is a defect in this body, and a defect ends the
 * workflow for good (the cluster stores it as the workflow's result, and nothing would run it again: the message
 * would stay pending with no workflow). So a step or a wait that dies is followed by the next step after the floor
 * wait: every step reads what is left from SQL, so skipping to the next one loses nothing, and a replay takes the
 * same path from the recorded results. Interruption (a suspension, the runner stopping) passes through.
 */
export const workflowLayer = DeliveryWorkflow.toLayer(({ generation, id }) =>
  Effect.gen(function*() {
    // Failures in a row: a storage outage passes, a failure that repeats this often is a defect of its own (a bug),
    // which then ends the workflow (the watchdog's generations, bounded, take it from there) rather than loop.
    let failures = 0
    const survive = <A, E, R>(effect: Effect.Effect<A, E, R>, what: string, fallback: A) =>
      Effect.catchAllCause(Effect.tap(effect, () => {
        failures = 0
      }), (cause) => {
        if (Cause.isInterruptedOnly(cause) || ++failures > MAX_FAILURES) return Effect.failCause(cause)
        return Effect.as(
          Effect.logWarning(`outbox: ${id}: the workflow's ${what} failed; the next step goes on: ${Cause.pretty(cause)}`),
          fallback
        )
      })
    for (let n = 0;; n++) {
      const result: typeof StepResult.Type = yield* survive(
        // The engine runs an activity uninterruptible; a step is made interruptible again, so that a runner that
        // stops does not wait for it (a reply from a domain entity whose shard cannot move until this runner lets
        // go, storage retries after a PostgreSQL restart): every step is replayable (it reads what is left from SQL,
        // and each write is one statement), and the SMTP transaction it dispatches protects itself in the domain
        // entity (deliverDomain). An interrupted step is made again where the workflow resumes.
        Activity.make({ name: `step/${n}`, success: StepResult, execute: Effect.interruptible(step(id, n, generation)) }),
        `step ${n}`,
        // The wait after a failed step, durable, growing with the failures in a row (5 s, 10 s, … 10 minutes).
        { done: false, waitMs: Math.min(RETRY_FLOOR_MS * 2 ** Math.min(failures, 10), 600_000) }
      )
      if (result.done) return
      const slept = yield* survive(
        // Always on the durable clock (the workflow suspended, woken by the clock entity), never in memory: a
        // wait of 60 s or less would otherwise be an uninterruptible activity sleeping in the entity, and a runner
        // that stops would wait for it to end.
        Effect.as(
          DurableClock.sleep({ name: `wait/${n}`, duration: Duration.millis(result.waitMs), inMemoryThreshold: Duration.zero }),
          true
        ),
        `wait ${n}`,
        false
      )
      // A wait that failed is made in memory (not durable: a replay makes it again), so that the next step is not
      // at once.
      if (!slept) yield* Effect.sleep(Duration.millis(RETRY_FLOOR_MS))
    }
  })
)

/** Engine failures in a row a workflow survives (about an hour of durable waits, growing from 5 s to 10 minutes). */
const MAX_FAILURES = 12
