/**
 * One attempt for one recipient domain of one message: what the entity of the domain's primary MX host runs, on the
 * runner that owns its shard (so that the runner's `Transport` layer, its connection pool and its limiters, see every
 * delivery to the host in the cluster).
 *
 * The order is the guarantee: the recipients still pending are read from SQL, `Transport.deliver` runs for them, and
 * its results are written before anything else happens. A replay (a crash, another runner taking the shard) reads
 * SQL again and sends only to recipients not recorded final; what remains is the window between the server's reply
 * to the final dot and the write (RFC 5321 §6.1's duplicate window).
 */
import type { SqlError } from "@effect/sql/SqlError"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as Connector from "../../Connector.js"
import type { DeliveryReport, RecipientResult, ReportError } from "../../DeliveryReport.js"
import type * as Dns from "../../Dns.js"
import type * as MtaSts from "../../MtaSts.js"
import { OutboundConfig } from "../../OutboundConfig.js"
import type * as PolicyCache from "../../PolicyCache.js"
import type { DeliverySchedule } from "../../Settings.js"
import * as Transport from "../../Transport.js"
import type { Kind } from "../../TransportError.js"
import { Core } from "./core.js"
import type { RecipientRow, RecipientUpdate } from "./store.js"

/** @internal */
export interface DomainJob {
  readonly id: string
  readonly domain: string
  /** The workflow's step: with the id and the domain, the attempt's identity (a replayed step is the same attempt). */
  readonly step: number
  /** The workflow's generation (the watchdog's new execution counts its steps from 0 again). */
  readonly generation: number
}

/** What `Transport.deliver` needs besides the configuration. @internal */
export type TransportServices =
  | OutboundConfig
  | Dns.Dns
  | Connector.Connector
  | MtaSts.PolicyFetcher
  | PolicyCache.PolicyCache

/** Stalwart's `last_error` category of a transport error kind (`queue/mod.rs`'s `Error` kinds). @internal */
export const category = (kind: Kind): string => {
  switch (kind) {
    case "dns":
      return "dns"
    case "reply":
      return "unexpected-reply"
    case "tls":
      return "tls"
    case "dane":
      return "dane"
    case "policy":
      return "mta-sts"
    case "concurrency":
      return "concurrency"
    case "rate":
      return "rate"
    case "route":
    case "input":
    case "bind":
    case "local-address":
      return "io"
    default:
      return "connection"
  }
}

/** The durable writes wait out a storage outage (a PostgreSQL restart) rather than lose a result. @internal */
export const storageRetry = Schedule.exponential("100 millis", 2).pipe(
  Schedule.union(Schedule.spaced("2 seconds")),
  Schedule.upTo("5 minutes")
)

/**
 * A storage operation made again until it succeeds (up to `storageRetry`'s five minutes): its failures and its
 * defects alike, since a transaction whose connection died (a PostgreSQL restart) fails its ROLLBACK as a defect.
 *
 * @internal
 */
export const durably = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, never, R> =>
  effect.pipe(
    // Only storage errors: anything else (a runner shutting down) must not be retried for minutes.
    Effect.catchAllDefect((defect) => isSqlError(defect) ? Effect.fail(defect) : Effect.die(defect)),
    Effect.retry({ schedule: storageRetry, while: isSqlError }),
    Effect.orDie
  )

/** A write retried for as long as storage fails it, every 2 s: what must not be lost once the server answered. */
const untilWritten = <A, R>(effect: Effect.Effect<A, SqlError, R>): Effect.Effect<A, never, R> =>
  effect.pipe(
    Effect.catchAllDefect((defect) => isSqlError(defect) ? Effect.fail(defect as SqlError) : Effect.die(defect)),
    Effect.retry({ schedule: Schedule.spaced("2 seconds"), while: isSqlError }),
    Effect.orDie
  )

/**
 * A transaction whose connection died (a PostgreSQL restart) fails its ROLLBACK as a defect: made a storage error,
 * like any other, so that the retries around it see it.
 *
 * @internal
 */
export const storageDefects = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | SqlError, R> =>
  Effect.catchAllDefect(effect, (defect) => isSqlError(defect) ? Effect.fail(defect as SqlError) : Effect.die(defect))

const isSqlError = (u: unknown): boolean =>
  typeof u === "object" && u !== null && (u as { readonly _tag?: unknown })._tag === "SqlError"

/** A pending recipient's schedule, evaluated with its variables after an attempt (Stalwart's `set_rcpt_status`). @internal */
export const scheduleFor = (
  config: OutboundConfig["Type"],
  variables: { readonly [name: string]: string | number | ReadonlyArray<string> }
): DeliverySchedule => config.schedule(variables as any).settings

/** The wait after the attempt numbered `n` (0 for the first): the last entry repeats. @internal */
export const retryWait = (schedule: DeliverySchedule, n: number): Duration.Duration =>
  schedule.retry[Math.min(n, schedule.retry.length - 1)] ?? Duration.minutes(2)

const decodeBody = (body: string): Uint8Array => new Uint8Array(Buffer.from(body, "base64"))

/** The variables of a recipient's schedule (Stalwart's rcpt variables). @internal */
export const recipientVariables = (
  sender: string,
  row: Pick<RecipientRow, "address" | "domain" | "retryNum" | "lastError" | "notifyNum">,
  recipients: ReadonlyArray<string>,
  extra: { readonly createdMs: number; readonly nowMs: number; readonly expiresMs: number | null; readonly dsn: boolean }
) => ({
  sender,
  sender_domain: sender.includes("@") ? sender.slice(sender.lastIndexOf("@") + 1).toLowerCase() : "",
  rcpt: row.address,
  rcpt_domain: row.domain,
  recipients,
  priority: 0,
  retry_num: row.retryNum,
  last_error: row.lastError,
  last_status: row.lastError === "none" ? "Scheduled" : "TemporaryFailure",
  notify_num: row.notifyNum,
  expires_in: extra.expiresMs === null ? 0 : Math.max(0, Math.floor((extra.expiresMs - extra.nowMs) / 1000)),
  queue_name: "default",
  queue_age: Math.max(0, Math.floor((extra.nowMs - extra.createdMs) / 1000)),
  source: extra.dsn ? "dsn" : "local"
})

const isPending = (row: RecipientRow) => row.state === "queued" || row.state === "deferred"

/**
 * How long an attempt's claim on its recipients lasts without renewal (renewed every third of it): a runner that
 * died releases its recipients after this; a storage outage longer than this while a transaction runs could let a
 * second execution send again (docs/outbox.md).
 */
const LEASE_MS = 15_000

const newToken = Effect.map(
  Effect.all([Random.nextIntBetween(0, 0x1_0000_0000), Random.nextIntBetween(0, 0x1_0000_0000)]),
  ([a, b]) => `${a.toString(16).padStart(8, "0")}${b.toString(16).padStart(8, "0")}`
)

/**
 * How an attempt waits for its turn: `hold` claims its recipients for the attempt's `token` before it waits (and
 * the claim is renewed while it waits), `effect` runs once it is its turn. @internal
 */
export type WithPermit = (
  token: string,
  hold: Effect.Effect<void, SqlError>
) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | SqlError, R>

/** No waiting (the in-memory engine's attempts run in place). @internal */
export const noPermit: WithPermit = () => (effect) => effect

/**
 * A runner's attempt permits, `concurrency` of them. An attempt that finds none free claims its recipients before it
 * waits for one, so that a recipient waiting in a backlog is held, not taken by the watchdog for lost
 * (docs/outbox.md); the claims of the attempts waiting are renewed together every 5 s, one statement per 500 of
 * them.
 *
 * @internal
 */
export const makePermits = (concurrency: number): Effect.Effect<WithPermit, never, Core | Scope.Scope> =>
  Effect.gen(function*() {
    const { store } = yield* Core
    const semaphore = yield* Effect.makeSemaphore(concurrency)
    const waiting = new Set<string>()
    yield* Effect.forkScoped(Effect.repeat(
      Effect.suspend(() =>
        waiting.size === 0
          ? Effect.void
          : Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.ignore(store.renew([...waiting], now + LEASE_MS)))
      ),
      Schedule.spaced(Duration.millis(LEASE_MS / 3))
    ))
    const done = (token: string) => Effect.sync(() => void waiting.delete(token))
    return (token, hold) => (effect) =>
      Effect.flatMap(semaphore.withPermitsIfAvailable(1)(effect), (ran) =>
        Option.isSome(ran) ? Effect.succeed(ran.value) : Effect.acquireUseRelease(
          Effect.zipRight(hold, Effect.sync(() => void waiting.add(token))),
          // Once it has its permit, the attempt renews its own claim.
          () => semaphore.withPermits(1)(Effect.zipRight(done(token), effect)),
          () => done(token)
        ))
  })

/**
 * Delivers the domain's due recipients of the message once and records the outcome, the transaction after
 * `withPermit`'s wait. Never fails: a storage error that outlasts the retries is a defect (the workflow's activity
 * replays the step, which replays this attempt).
 *
 * @internal
 */
export const deliverDomain = (
  job: DomainJob,
  withPermit: WithPermit = noPermit
): Effect.Effect<void, never, Core | TransportServices> =>
  // The token is drawn once: a run made again after a storage error claims with the same one, so the claim its
  // first run may have written (the reply lost with the connection) does not hold it up.
  Effect.flatMap(newToken, (token) => deliverWith(job, token, withPermit)).pipe(Effect.withSpan("outbox.attempt"))

const deliverWith = (
  job: DomainJob,
  token: string,
  withPermit: WithPermit
): Effect.Effect<void, never, Core | TransportServices> =>
  Effect.gen(function*() {
    const { attempts, store } = yield* Core
    const config = yield* OutboundConfig
    const message = yield* store.message(job.id)
    if (Option.isNone(message)) return
    const msg = message.value
    // Read again at the attempt: a replay of the step finds the recipients the first run recorded final. What
    // another execution of this attempt holds (an entity message delivered again while the first still runs) is
    // waited for, not sent: its claim ends when it records, or when it stops renewing (its runner died). `null`
    // when nothing is this attempt's and something is held elsewhere: the caller waits without its permit.
    const claimDue = Effect.gen(function*() {
      const startMs = yield* Clock.currentTimeMillis
      yield* store.claim(job.id, job.domain, token, startMs, startMs + LEASE_MS)
      const rows = yield* store.recipients(job.id)
      const due = rows.filter((r) => r.domain === job.domain && r.claim === token && isPending(r))
      const heldElsewhere = rows.some((r) =>
        r.domain === job.domain && isPending(r) && (r.nextAttemptMs ?? 0) <= startMs && r.claim !== token &&
        r.claimUntilMs !== null && r.claimUntilMs >= startMs
      )
      return due.length > 0 || !heldElsewhere ? { due, rows, startMs } : null
    }).pipe(Effect.withSpan("outbox.claim"))
    // From here to the write of the results, nothing may stop the attempt half-way (a runner stopping, a shard
    // taken away): a transaction sent and not recorded would be sent again. It runs as a fiber of the outbox's
    // attempt set, which outlives the cluster and whose close waits for it, and this handler waits for it without
    // being interruptible.
    const attempt = ({ due, rows, startMs }: NonNullable<Effect.Effect.Success<typeof claimDue>>) => Effect.gen(function*() {
      // The claim is renewed while the attempt runs (a transaction may take minutes), in this attempt's scope.
      yield* Effect.forkScoped(
        Effect.repeat(
          Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.ignore(store.renew([token], now + LEASE_MS))),
          Schedule.spaced(Duration.millis(LEASE_MS / 3))
        )
      )
      // One transaction carries the domain's recipients, so they share one attempt's variables: the largest count.
      const first = due.reduce((a, b) => (b.retryNum > a.retryNum ? b : a))
      const expiresMs = due.reduce<number | null>(
        (min, r) => (r.expiresMs === null ? min : min === null ? r.expiresMs : Math.min(min, r.expiresMs)),
        null
      )
      const report = yield* Transport.deliver({
        message: decodeBody(msg.body),
        sender: msg.sender,
        recipients: due.map((r) => r.address),
        requireTls: msg.requireTls,
        attempt: {
          retryNum: first.retryNum,
          lastError: first.lastError,
          lastStatus: first.lastError === "none" ? "Scheduled" : "TemporaryFailure",
          expiresIn: expiresMs === null ? 0 : Math.max(0, Math.floor((expiresMs - startMs) / 1000))
        }
      }).pipe(
        // Checked at enqueue; a request that became invalid (an edited row) fails its recipients rather than loop.
        Effect.catchAll((error) => Effect.succeed(invalidReport(due, error.message))),
        Effect.withSpan("outbox.smtp")
      )
      const endMs = yield* Clock.currentTimeMillis
      const byAddress = new Map(report.recipients.map((r) => [r.address, r] as const))
      const all = rows.map((r) => r.address)
      const updates: Array<RecipientUpdate> = []
      for (const row of due) {
        const result = byAddress.get(row.address)!
        updates.push(update(config, msg.sender, msg.createdMs, msg.dsnOf !== "", row, result, all, endMs))
      }
      const attempt = {
        messageId: job.id,
        generation: job.generation,
        step: job.step,
        domain: job.domain,
        startedMs: startMs,
        report: JSON.stringify({ recipients: report.recipients, attempts: report.attempts })
      }
      // The transaction is done: its outcome is written however long storage is away (an attempt made again for a
      // lost write would send again what the server took); only the process ending stops this.
      yield* untilWritten(store.recordDomain(job.id, updates, attempt, endMs)).pipe(Effect.withSpan("outbox.record"))
    }).pipe(Effect.scoped)
    // An attempt that waits for its turn holds its recipients meanwhile (`withPermit`): a recipient waiting in a
    // backlog is not one the watchdog takes for lost. They are claimed again once the turn comes (`claimDue`): what
    // lapsed meanwhile and another execution took is not sent.
    const hold = Effect.flatMap(Clock.currentTimeMillis, (nowMs) =>
      store.claim(job.id, job.domain, token, nowMs, nowMs + LEASE_MS))
    // `false` while another execution holds the recipients. It is waited for outside the permit: that execution
    // may itself be waiting for a permit, holding its claim (with `concurrency = 1`, waiting with the permit held
    // would wait for ever, the claim renewed all along).
    const turn = withPermit(token, hold)(Effect.flatMap(claimDue, (claimed) =>
      claimed === null ? Effect.succeed(false) : claimed.due.length === 0 ? Effect.succeed(true) : Effect.as(
        Effect.uninterruptible(
          Effect.flatMap(FiberSet.run(attempts, Effect.interruptible(attempt(claimed))), Fiber.join)
        ),
        true
      )))
    while (!(yield* turn)) yield* Effect.sleep("500 millis")
  }).pipe(
    // A storage outage (a PostgreSQL restart) before the attempt: the reads are made again. After the transaction,
    // the write has its own retries above; nothing is sent before the claim is in SQL.
    durably,
    // Never a defect in the entity: its reply is stored, and a replayed request would get it again. The step finds
    // the recipients still due and tries again (after its floor wait).
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.interrupt
        : Effect.logError(`outbox: the attempt of ${job.id} for ${job.domain} failed: ${Cause.pretty(cause)}`)
    )
  )

const invalidReport = (due: ReadonlyArray<RecipientRow>, message: string): DeliveryReport => ({
  recipients: due.map((r): RecipientResult => ({
    address: r.address,
    status: "failed",
    host: null,
    reply: null,
    error: { phase: "dns", kind: "input", message, permanent: true, code: null, enhanced: null }
  })),
  attempts: [],
  plan: { layout: "outbound", domains: [] } as any,
  warnings: []
})

/** The recipient's new row after the attempt: Stalwart's `set_rcpt_status`. */
const update = (
  config: OutboundConfig["Type"],
  sender: string,
  createdMs: number,
  dsn: boolean,
  row: RecipientRow,
  result: RecipientResult,
  all: ReadonlyArray<string>,
  nowMs: number
): RecipientUpdate => {
  const saved = JSON.stringify({ reply: result.reply, error: result.error, host: result.host })
  if (result.status === "delivered") {
    return { address: row.address, state: "delivered", retryNum: row.retryNum, lastError: row.lastError, nextAttemptMs: null, result: saved }
  }
  const error: ReportError | null = result.error
  const lastError = error === null ? "unexpected-reply" : category(error.kind)
  if (result.status === "failed") {
    return { address: row.address, state: "failed", retryNum: row.retryNum + 1, lastError, nextAttemptMs: null, result: saved }
  }
  // Deferred. The schedule sees the new last_error and the old retry_num; limiter deferrals do not count.
  const counted = error === null || (error.kind !== "concurrency" && error.kind !== "rate")
  const schedule = scheduleFor(
    config,
    recipientVariables(sender, { ...row, lastError }, all, { createdMs, nowMs, expiresMs: row.expiresMs, dsn })
  )
  const retryNum = counted ? row.retryNum + 1 : row.retryNum
  if (schedule.expiry._tag === "Attempts" && retryNum >= schedule.expiry.maxAttempts) {
    return { address: row.address, state: "expired", retryNum, lastError, nextAttemptMs: null, result: saved }
  }
  const next = nowMs + Duration.toMillis(retryWait(schedule, row.retryNum))
  // The expiry is the schedule's as evaluated now (Stalwart's set_rcpt_status: `rcpt.expires = queue.expiry` after
  // each temporary failure): a TTL from the message's creation, or none under max-attempts.
  const expiresMs = schedule.expiry._tag === "Ttl" ? createdMs + Duration.toMillis(schedule.expiry.ttl) : null
  return {
    address: row.address,
    state: "deferred",
    retryNum,
    lastError,
    // Past the TTL there is no attempt: the step expires the recipient at its expiry.
    nextAttemptMs: expiresMs === null ? next : Math.min(next, expiresMs),
    expiresMs,
    result: saved
  }
}
