import * as MessageStorage from "@effect/cluster/MessageStorage"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as Runners from "@effect/cluster/Runners"
import * as RunnerStorage from "@effect/cluster/RunnerStorage"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import {
  Clock,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  Random,
  Scheduler,
  type Scope,
  Stream,
  TestClock,
  type TestServices
} from "effect"
import * as ConnectionPool from "../src/ConnectionPool.js"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script, type Step, type TestPeer } from "../src/ConnectorTest.js"
import * as Dns from "../src/Dns.js"
import * as Limiter from "../src/Limiter.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as OutboxService from "../src/internal/outbox/service.js"
import * as Outbox from "../src/Outbox.js"
import * as PolicyCache from "../src/PolicyCache.js"
import type { Variables } from "../src/Expression.js"
import type { DeliverySchedule } from "../src/Settings.js"

// The workflow logic on the in-memory workflow engine and SQLite in memory, on TestClock: a schedule of minutes or
// days takes no time, and every attempt's start is exactly where the schedule puts it.

// The EHLO name tells which attempt the expressions thought it was: retry_num and last_error reach them.
const CONFIG = `
[queue.outbound]
hostname = [ { if = "retry_num > 0 && last_error == 'connection'", then = "'retry-' + retry_num + '.test'" },
             { else = "'client.test'" } ]
`

const ms = (d: Duration.DurationInput) => Duration.toMillis(Duration.decode(d))

const schedule = (s: {
  retry: ReadonlyArray<Duration.DurationInput>
  notify?: ReadonlyArray<Duration.DurationInput>
  ttl?: Duration.DurationInput
  maxAttempts?: number
}): DeliverySchedule => ({
  name: "test",
  retry: s.retry.map(Duration.decode),
  notify: (s.notify ?? []).map(Duration.decode),
  expiry: s.maxAttempts !== undefined
    ? { _tag: "Attempts", maxAttempts: s.maxAttempts }
    : { _tag: "Ttl", ttl: Duration.decode(s.ttl ?? "5 days") }
})

/** A whole accepted session; `ehlo` is the name expected. */
const session = (ehlo: string | RegExp, rcpts: ReadonlyArray<string>, data = "250 2.0.0 queued"): ReadonlyArray<Step> => [
  Script.reply("220 mx ESMTP"),
  Script.expect(ehlo instanceof RegExp ? ehlo : `EHLO ${ehlo}`),
  Script.reply("250 mx"),
  Script.expect(/^MAIL FROM:/),
  Script.reply("250 ok"),
  ...rcpts.flatMap((r) => [Script.expect(new RegExp(`^RCPT TO:<${r}>`)), Script.reply("250 ok")]),
  Script.expect("DATA"),
  Script.reply("354 go"),
  Script.expectData,
  Script.reply(data),
  Script.expect("QUIT"),
  Script.reply("221 bye")
]

const refuse: TestPeer = { connect: "refuse" }

/** A session that refuses the recipient for good at RCPT; `mailFrom` is the MAIL command expected. */
const refuseRcpt = (rcpt: string, mailFrom: string | RegExp = /^MAIL FROM:/): ReadonlyArray<Step> => [
  Script.reply("220 mx ESMTP"),
  Script.expect("EHLO client.test"),
  Script.reply("250 mx"),
  Script.expect(mailFrom),
  Script.reply("250 ok"),
  Script.expect(`RCPT TO:<${rcpt}>`),
  Script.reply("550 5.1.1 no such user"),
  Script.expect("QUIT"),
  Script.reply("221 bye")
]

const zones: Dns.Zones = {
  "a.test": { mx: [{ exchange: "mx.a.test", priority: 10 }] },
  "mx.a.test": { a: ["192.0.2.1"] },
  "b.test": { mx: [{ exchange: "mx.b.test", priority: 10 }] },
  "mx.b.test": { a: ["192.0.2.2"] },
  // Where the DSNs to the sender go.
  "origin.test": { mx: [{ exchange: "mx.origin.test", priority: 10 }] },
  "mx.origin.test": { a: ["192.0.2.9"] }
}

/** What a runner delivers with: the configuration, with the schedule given (its own is Stalwart's default). */
const runnerServices = (
  peers: ConnectorTest.TestPeers,
  s: DeliverySchedule | ((variables: Variables) => DeliverySchedule),
  extra = ""
) => {
  const config = Layer.effect(
    OutboundConfig.OutboundConfig,
    Effect.map(
      Effect.orDie(Effect.suspend(() => OutboundConfig.parse(CONFIG + extra))),
      (c): OutboundConfig.Config => ({
        ...c,
        schedule: (variables) => ({ settings: typeof s === "function" ? s(variables) : s, warnings: [] })
      })
    )
  )
  const transport = Layer.mergeAll(
    Dns.layerTest(zones),
    ConnectorTest.layer(peers),
    PolicyCache.layer,
    MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" })),
    ConnectionPool.layer,
    Limiter.layer
  )
  return Layer.merge(config, transport)
}

/** The in-memory workflow engine's outbox (`layerTest`) and what it delivers with. */
const services = (
  peers: ConnectorTest.TestPeers,
  s: DeliverySchedule | ((variables: Variables) => DeliverySchedule),
  extra = ""
) => Layer.provideMerge(Outbox.layerTest({ reportingMta: "mta.test" }), runnerServices(peers, s, extra))

const request = (...recipients: ReadonlyArray<string>) => ({
  message: "Message-ID: <m1@origin.test>\r\nSubject: hi\r\n\r\nhello\r\n",
  sender: "sender@origin.test",
  recipients
})

/** Moves the clock in one-second steps (each step lets the workflow's fibers run), up to `total`. */
const advance = (total: Duration.DurationInput, stepSize: Duration.DurationInput = "30 seconds") =>
  Effect.gen(function*() {
    const n = Math.ceil(ms(total) / ms(stepSize))
    for (let i = 0; i < n; i++) yield* TestClock.adjust(stepSize)
  })

const statusOf = (id: string) =>
  Effect.flatMap(Outbox.Outbox, (o) => o.status(id)).pipe(Effect.map(Option.getOrThrow))

const connectionsTo = (ip: string) =>
  Effect.map(ConnectorTest.ConnectorTest, (t) => Effect.map(t.connections, (cs) => cs.filter((c) => c.ip === ip))).pipe(
    Effect.flatten
  )

/** The events from now on, collected; subscribed once the clock's adjustment found every fiber waiting. */
const subscribe = Effect.gen(function*() {
  const outbox = yield* Outbox.Outbox
  const events: Array<Outbox.StatusEvent> = []
  yield* Effect.forkScoped(Stream.runForEach(outbox.events, (e) => Effect.sync(() => events.push(e))))
  yield* TestClock.adjust(0)
  return events
})

/**
 * A case's fibers (its own, its layers', the engine's and the cluster's, which inherit it) run on microtasks.
 * Effect's default scheduler hands a fiber's next run to a timer (`setTimeout(0)`) after 2,048 microtask turns in a
 * row; TestClock waits for the fibers between two wake-ups with timers of its own (`setTimeout(0)`), and which of two
 * such timers runs first depends on the milliseconds each took to be set, that is on the machine's load: a workflow
 * replaying its steps after a wake-up could then be overtaken by the clock's next step and sleep from a later
 * instant (a retry one step late, in loaded runs only). On microtasks only, TestClock's timer runs once every fiber
 * has suspended, so the clock moves only when nothing is left to run.
 */
// A finite bound: a fiber that never suspends (a bug) still lets the event loop, and the test's timeout, run.
const onMicrotasks = new Scheduler.MixedScheduler(1_000_000)
const scoped = <A, E>(
  name: string,
  self: () => Effect.Effect<A, E, Scope.Scope | TestServices.TestServices>
) => it.scoped(name, () => Effect.withScheduler(self(), onMicrotasks))

describe("Outbox workflow", () => {
  scoped("retries exactly on the schedule, with retry_num and last_error reaching the expressions", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const id = yield* outbox.enqueue(request("you@a.test"))
      yield* advance("10 minutes")
      const status = yield* statusOf(id)
      expect(status.done).toBe(true)
      expect(status.recipients.map((r) => [r.address, r.state, r.retryNum, r.lastError])).toEqual([
        ["you@a.test", "delivered", 2, "connection"]
      ])
      // Attempts at 0, then 1m after the first (retry[0]), then 5m after the second (retry[1]).
      expect(status.attempts.map((a) => [a.step, a.domain, a.startedMs])).toEqual([
        [0, "a.test", 0],
        [1, "a.test", ms("1 minute")],
        [2, "a.test", ms("6 minutes")]
      ])
      expect(status.attempts.map((a) => a.recipients[0]!.status)).toEqual(["deferred", "deferred", "delivered"])
      expect(status.recipients[0]!.reply).toEqual({ code: 250, enhanced: "2.0.0", text: "queued" })
      const connections = yield* connectionsTo("192.0.2.1")
      expect(connections.map((c) => c.outcome)).toEqual(["refuse", "refuse", "accept"])
      expect(connections[2]!.mismatches).toEqual([])
      // Nothing else happened: no DSN, nothing left.
      expect((yield* outbox.list()).map((m) => m.id)).toEqual([id])
    }).pipe(Effect.provide(services({
      "192.0.2.1": [refuse, refuse, { script: session("retry-2.test", ["you@a.test"]) }]
    }, schedule({ retry: ["1 minute", "5 minutes"] })))))

  scoped("a delivered recipient is never sent again; the deferred domain alone is retried", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const id = yield* outbox.enqueue(request("one@a.test", "two@b.test"))
      yield* advance("5 minutes")
      const status = yield* statusOf(id)
      expect(status.recipients.map((r) => [r.address, r.state])).toEqual([
        ["one@a.test", "delivered"],
        ["two@b.test", "delivered"]
      ])
      expect((yield* connectionsTo("192.0.2.1")).length).toBe(1)
      expect((yield* connectionsTo("192.0.2.2")).map((c) => c.outcome)).toEqual(["refuse", "accept"])
      expect(status.attempts.map((a) => [a.step, a.domain, a.startedMs])).toEqual([
        [0, "a.test", 0],
        [0, "b.test", 0],
        [1, "b.test", ms("2 minutes")]
      ])
    }).pipe(Effect.provide(services({
      "192.0.2.1": [{ script: session("client.test", ["one@a.test"]) }],
      "192.0.2.2": [refuse, { script: session("retry-1.test", ["two@b.test"]) }]
    }, schedule({ retry: ["2 minutes"] })))))

  scoped("expires at the TTL into `expired`, and the sender gets a failure DSN through the outbox", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const id = yield* outbox.enqueue(request("you@a.test"))
      yield* advance("12 minutes")
      const status = yield* statusOf(id)
      expect(status.recipients.map((r) => [r.state, r.retryNum])).toEqual([["expired", 4]])
      // 0, 3, 6, 9; at 10 the TTL ends.
      expect(status.attempts.map((a) => a.startedMs)).toEqual([0, 3, 6, 9].map((m) => ms(`${m} minutes`)))
      expect(status.recipients[0]!.updatedMs).toBe(ms("10 minutes"))
      const all = yield* outbox.list()
      const dsn = all.find((m) => m.dsnOf === id)!
      expect(dsn.sender).toBe("")
      expect(dsn.recipients.map((r) => [r.address, r.state])).toEqual([["sender@origin.test", "delivered"]])
      const [sent] = yield* connectionsTo("192.0.2.9")
      const text = new TextDecoder().decode(sent!.data[0])
      expect(text).toContain("multipart/report")
      expect(text).toContain("Action: failed")
      expect(text).toContain("Status: 5.4.7")
      expect(text).toContain("Final-Recipient: rfc822; you@a.test")
      expect(text).toContain("Subject: hi")
      expect(sent!.commands).toContain("MAIL FROM:<>")
    }).pipe(Effect.provide(services({
      "192.0.2.1": refuse,
      "192.0.2.9": [{ script: session("client.test", ["sender@origin.test"]) }]
    }, schedule({ retry: ["3 minutes"], ttl: "10 minutes" })))))

  scoped("the expiry is the schedule's as evaluated after each attempt (Stalwart's set_rcpt_status)", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const id = yield* outbox.enqueue(request("you@a.test"))
      yield* advance("20 minutes")
      const status = yield* statusOf(id)
      // Enqueued under a 1-hour TTL; the deferral of the second attempt (retry_num 1) evaluates a 10-minute one.
      expect(status.recipients.map((r) => [r.state, r.retryNum])).toEqual([["expired", 4]])
      expect(status.attempts.map((a) => a.startedMs)).toEqual([0, 3, 6, 9].map((m) => ms(`${m} minutes`)))
      expect(status.recipients[0]!.updatedMs).toBe(ms("10 minutes"))
    }).pipe(Effect.provide(services(
      {
        "192.0.2.1": refuse,
        "192.0.2.9": [{ script: session("client.test", ["sender@origin.test"]) }]
      },
      (variables) =>
        schedule({ retry: ["3 minutes"], ttl: Number(variables["retry_num"] ?? 0) >= 1 ? "10 minutes" : "1 hour" })
    ))))

  scoped("each next notify point is the schedule's next interval after the last notice", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const id = yield* outbox.enqueue(request("you@a.test"))
      yield* advance("12 minutes")
      const dsns = (yield* outbox.list()).filter((m) => m.dsnOf === id)
      // notify = [5m, 5m]: at 5 minutes, then 5 minutes after that notice (not 5 minutes after enqueue).
      expect(dsns.map((d) => d.createdMs).sort((a, b) => a - b)).toEqual([ms("5 minutes"), ms("10 minutes")])
    }).pipe(Effect.provide(services({
      "192.0.2.1": refuse,
      "192.0.2.9": [
        { script: session("client.test", ["sender@origin.test"]) },
        { script: session("client.test", ["sender@origin.test"]) }
      ]
    }, schedule({ retry: ["4 minutes"], notify: ["5 minutes", "5 minutes"], ttl: "1 hour" })))))

  scoped("a delay DSN at each notify point while the recipient is still deferred", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const id = yield* outbox.enqueue(request("you@a.test"))
      yield* advance("9 minutes")
      const status = yield* statusOf(id)
      expect(status.recipients.map((r) => r.state)).toEqual(["delivered"])
      const dsns = (yield* outbox.list()).filter((m) => m.dsnOf === id)
      expect(dsns.length).toBe(1)
      const [sent] = yield* connectionsTo("192.0.2.9")
      const text = new TextDecoder().decode(sent!.data[0])
      expect(text).toContain("Action: delayed")
      expect(text).toContain("Will-Retry-Until:")
      // The notify point (5m) is a wake-up of its own, between attempts at 4m and 8m.
      expect(status.attempts.map((a) => a.startedMs)).toEqual([0, 4, 8].map((m) => ms(`${m} minutes`)))
      expect(dsns[0]!.createdMs).toBe(ms("5 minutes"))
    }).pipe(Effect.provide(services({
      "192.0.2.1": [refuse, refuse, { script: session(/^EHLO /, ["you@a.test"]) }],
      "192.0.2.9": [{ script: session("client.test", ["sender@origin.test"]) }]
    }, schedule({ retry: ["4 minutes"], notify: ["5 minutes", "1 day"], ttl: "1 hour" })))))

  scoped("max-attempts expiry; a permanent refusal fails at once; no DSN for the null sender", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const id = yield* outbox.enqueue({ ...request("you@a.test", "no@b.test"), sender: "" })
      yield* advance("10 minutes")
      const status = yield* statusOf(id)
      expect(status.recipients.map((r) => [r.address, r.state, r.retryNum])).toEqual([
        ["you@a.test", "expired", 2],
        ["no@b.test", "failed", 1]
      ])
      expect(status.recipients[1]!.reply?.code).toBe(550)
      expect((yield* outbox.list()).length).toBe(1)
    }).pipe(Effect.provide(services({
      "192.0.2.1": refuse,
      "192.0.2.2": [{ script: refuseRcpt("no@b.test", "MAIL FROM:<>") }]
    }, schedule({ retry: ["1 minute"], maxAttempts: 2 })))))

  scoped("an invalid request is refused at enqueue, with every problem", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const result = yield* Effect.either(outbox.enqueue(request("not an address", "x@a.test", "x@a.test")))
      expect(Either.isLeft(result)).toBe(true)
      expect((yield* outbox.list()).length).toBe(0)
    }).pipe(Effect.provide(services({}, schedule({ retry: ["1 minute"] })))))

  scoped("status events follow each recipient's state", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const events = yield* subscribe
      const id = yield* outbox.enqueue(request("you@a.test"))
      yield* advance("2 minutes")
      expect(events.map((e) => [e.id === id, e.address, e.state, e.retryNum, e.atMs])).toEqual([
        [true, "you@a.test", "queued", 0, 0],
        [true, "you@a.test", "deferred", 1, 0],
        [true, "you@a.test", "delivered", 1, ms("1 minute")]
      ])
      expect(events[1]!.nextAttemptMs).toBe(ms("1 minute"))
    }).pipe(Effect.provide(services({
      "192.0.2.1": [refuse, { script: session("retry-1.test", ["you@a.test"]) }]
    }, schedule({ retry: ["1 minute"] })))))

  scoped("every recorded change of a recipient's state is one event: enqueue, attempts, expiry, the DSNs", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const events = yield* subscribe
      const id = yield* outbox.enqueue(request("you@a.test", "no@b.test"))
      yield* advance("12 minutes")
      const messages = yield* outbox.list()
      const dsns = messages.filter((m) => m.dsnOf === id).sort((a, b) => a.createdMs - b.createdMs)
      expect(dsns.length).toBe(2)
      const name = (e: { readonly id: string }) => e.id === id ? "message" : `dsn ${dsns.findIndex((d) => d.id === e.id)}`
      // Per recipient, in the order recorded (the domains' attempts are transactions of their own, in either order).
      const byRecipient = new Map<string, Array<string>>()
      for (const e of events) {
        const key = `${name(e)} ${e.address}`
        byRecipient.set(key, [...(byRecipient.get(key) ?? []), e.state])
      }
      expect(Object.fromEntries(byRecipient)).toEqual({
        "message you@a.test": ["queued", "deferred", "deferred", "deferred", "deferred", "expired"],
        "message no@b.test": ["queued", "failed"],
        "dsn 0 sender@origin.test": ["queued", "delivered"],
        "dsn 1 sender@origin.test": ["queued", "delivered"]
      })
      // The last event of each recipient is what `status` reads from SQL.
      for (const m of messages) {
        for (const r of m.recipients) {
          const last = events.filter((e) => e.id === m.id && e.address === r.address).at(-1)!
          expect([last.state, last.retryNum, last.atMs, last.error]).toEqual([r.state, r.retryNum, r.updatedMs, r.error])
        }
      }
    }).pipe(Effect.provide(services({
      "192.0.2.1": refuse,
      "192.0.2.2": [{ script: refuseRcpt("no@b.test") }],
      "192.0.2.9": [
        { script: session("client.test", ["sender@origin.test"]) },
        { script: session("client.test", ["sender@origin.test"]) }
      ]
    }, schedule({ retry: ["3 minutes"], ttl: "10 minutes" })))))

  scoped("a limiter deferral does not count: retry_num stays, last_error is concurrency", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      // Two messages to one domain at once, one permit: the second attempt is deferred by the limiter.
      const first = yield* outbox.enqueue({ ...request("one@a.test"), message: "Subject: 1\r\n\r\n1\r\n" })
      const second = yield* outbox.enqueue({ ...request("two@a.test"), message: "Subject: 2\r\n\r\n2\r\n" })
      yield* advance("3 minutes")
      const statuses = [yield* statusOf(first), yield* statusOf(second)]
      expect(statuses.map((m) => m.recipients[0]!.state)).toEqual(["delivered", "delivered"])
      const deferred = statuses.find((m) => m.attempts.length === 2)!
      expect(deferred.attempts[0]!.recipients[0]!.error?.kind).toBe("concurrency")
      // Not counted: the retry still sees retry_num 0 (EHLO client.test), and the wait was retry[0], from the end of
      // the attempt (which waited its limiter-wait, 1 s, for the permit).
      expect(deferred.recipients[0]!.retryNum).toBe(0)
      expect(deferred.recipients[0]!.lastError).toBe("concurrency")
      expect(deferred.attempts[1]!.startedMs).toBe(ms("1 second") + ms("1 minute"))
      expect((yield* connectionsTo("192.0.2.1")).map((c) => c.mismatches)).toEqual([[], []])
    }).pipe(Effect.provide(services({
      "192.0.2.1": [
        {
          script: [
            ...session("client.test", [/(one|two)@a\.test/.source]).slice(0, 10),
            Script.delay("10 seconds"),
            ...session("client.test", [/(one|two)@a\.test/.source]).slice(10)
          ]
        },
        { script: session("client.test", [/(one|two)@a\.test/.source]) }
      ]
    }, schedule({ retry: ["1 minute"] }), `limiter-wait = "1s"
[queue.limiter.outbound.one]
key = ["rcpt_domain"]
concurrency = 1
`))))
})

// The watchdog on `@effect/cluster` in memory (its message storage, one runner: what `layerSqlite` runs) and SQLite
// in memory, on TestClock: a stall, each revival and each generation exactly where the bound puts them.

/**
 * A runner of the in-memory cluster, its watchdog on (a bound of 10 s), `concurrency` attempts at once. Its sweeps
 * and storage polls are 5 s apart, and the cluster's own timers as sparse as they go: each wake-up costs TestClock
 * milliseconds of waiting (real ones) for the cluster's fibers to settle.
 */
const clusterServices = (
  peers: ConnectorTest.TestPeers,
  s: DeliverySchedule,
  options: { readonly concurrency?: number; readonly extra?: string } = {}
) => {
  const cluster = Sharding.layer.pipe(
    Layer.provideMerge(Runners.layerNoop),
    Layer.provideMerge(MessageStorage.layerMemory),
    Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
    Layer.provide(ShardingConfig.layer({
      shardsPerGroup: 10,
      entityMessagePollInterval: "5 seconds",
      entityReplyPollInterval: "5 seconds",
      refreshAssignmentsInterval: "30 seconds",
      entityTerminationTimeout: "3 seconds"
    }))
  )
  const runner = OutboxService.clusterRunnerLayer(
    "t",
    { reportingMta: "mta.test" },
    options.concurrency ?? 100,
    { every: "5 seconds", stallAfter: "10 seconds" }
  ).pipe(Layer.provide(cluster), Layer.provideMerge(SqliteClient.layer({ filename: ":memory:" })))
  return Layer.provideMerge(runner, runnerServices(peers, s, options.extra))
}

/** The message's workflow generation and when the watchdog last revived it (SQL's). */
const watchdogState = (id: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql`SELECT generation, revived_ms FROM t_messages WHERE id = ${id}`).pipe(
    Effect.map((rows) => rows.map((r: any) => [Number(r.generation), r.revived_ms === null ? null : Number(r.revived_ms)]))
  )

/**
 * A wake-up the workflow will not have: its recipients due now in SQL while the workflow sleeps the wait of its
 * schedule. Nothing the watchdog does to the run (its messages read again, the run resumed) brings the wake-up
 * nearer: the message stays stalled past a revival, as one whose run hangs on a runner.
 */
const lostWakeUp = (id: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const now = yield* Clock.currentTimeMillis
    yield* sql`UPDATE t_recipients SET next_attempt_ms = ${now} WHERE message_id = ${id} AND state IN ('queued', 'deferred') AND next_attempt_ms > ${now}`
  })

/**
 * The cluster's runs in a tick of TestClock are ordered by their shards, and so by the messages' ids, which are
 * random: a seed of its own keeps the order of one run of a test the order of the next.
 */
const seeded = Effect.withRandom(Random.make("outbox watchdog"))

// Concurrent: each case has its own clock, and its time is mostly the clock's waits for the cluster's fibers.
describe.concurrent("Outbox watchdog", () => {
  // (The times asserted are bounds the watchdog cannot beat, kept from before the cases ran on microtasks (above),
  // when a sweep could see a write one tick late.)
  scoped("a workflow stalled past its revival is begun anew, which sends to the recipients still pending, once", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const id = yield* outbox.enqueue(request("one@a.test", "two@b.test"))
      yield* advance("5 seconds", "5 seconds")
      yield* lostWakeUp(id)
      // Due at 5 s: a bound (10 s) later the watchdog revives it (the run, suspended, is resumed and sleeps again),
      // and a bound after that, still stalled, begins it anew: generation 1 sends to the recipient still pending.
      yield* advance("15 seconds", "5 seconds")
      expect((yield* watchdogState(id)).map(([generation]) => generation)).toEqual([0])
      yield* advance("25 seconds", "5 seconds")
      const status = yield* statusOf(id)
      expect(status.recipients.map((r) => [r.address, r.state])).toEqual([["one@a.test", "delivered"], ["two@b.test", "delivered"]])
      expect(status.attempts.map((a) => [a.step, a.domain])).toEqual([[0, "a.test"], [0, "b.test"], [0, "b.test"]])
      expect(status.attempts[2]!.startedMs).toBeGreaterThanOrEqual(ms("25 seconds"))
      expect((yield* watchdogState(id)).map(([generation]) => generation)).toEqual([1])
      // The first generation's wake-up, a minute after its attempt, finds nothing to send.
      yield* advance("60 seconds", "5 seconds")
      expect((yield* connectionsTo("192.0.2.1")).length).toBe(1)
      expect((yield* connectionsTo("192.0.2.2")).map((c) => c.outcome)).toEqual(["refuse", "accept"])
      expect((yield* statusOf(id)).attempts.length).toBe(3)
    }).pipe(Effect.provide(clusterServices({
      "192.0.2.1": [{ script: session("client.test", ["one@a.test"]) }],
      "192.0.2.2": [refuse, { script: session("retry-1.test", ["two@b.test"]) }]
    }, schedule({ retry: ["1 minute"] }))), seeded))

  scoped("a message that stalls in every generation has three, then revivals only", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const id = yield* outbox.enqueue(request("two@b.test"))
      // Every attempt defers it, and every wake-up is lost: each generation stalls in turn. Stalls (sweeps 5 s
      // apart) at 15 s (a revival), 25 s (generation 1), 35 s (a revival), 45 s (generation 2), then a revival
      // every bound where a generation 3 would have been.
      for (let i = 0; i < 18; i++) {
        yield* TestClock.adjust("5 seconds")
        yield* lostWakeUp(id)
      }
      const status = yield* statusOf(id)
      expect(status.recipients.map((r) => r.state)).toEqual(["deferred"])
      expect(status.attempts.map((a) => a.step)).toEqual([0, 0, 0])
      const starts = status.attempts.map((a) => a.startedMs)
      // A generation a revival and a bound after the last attempt at the earliest.
      expect([starts[1]! - starts[0]!, starts[2]! - starts[1]!].every((gap) => gap >= ms("20 seconds"))).toBe(true)
      const [[generation, revivedMs]] = (yield* watchdogState(id)) as Array<[number, number | null]>
      expect(generation).toBe(2)
      expect(revivedMs).toBeGreaterThan(starts[2]!)
      expect((yield* connectionsTo("192.0.2.2")).length).toBe(3)
    }).pipe(Effect.provide(clusterServices({ "192.0.2.2": refuse }, schedule({ retry: ["1 hour"] }))), seeded))

  scoped("an attempt whose recipients another execution holds waits for them without the runner's permit", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      const sql = yield* SqlClient.SqlClient
      // The first attempt is refused; the retry (due at 60 s) finds its recipient claimed by another execution of
      // the attempt (one that waits for a permit holds its claim so), until 120 s.
      const held = yield* outbox.enqueue(request("one@a.test"))
      yield* advance("5 seconds", "5 seconds")
      yield* sql`UPDATE t_recipients SET claim = 'another', claim_until = ${ms("10 minutes")} WHERE message_id = ${held}`
      yield* advance("55 seconds", "5 seconds")
      // With one permit, a message enqueued meanwhile is sent at once: the held attempt waits without the permit.
      const other = yield* outbox.enqueue(request("two@b.test"))
      yield* advance("20 seconds", "5 seconds")
      expect((yield* statusOf(other)).recipients.map((r) => r.state)).toEqual(["delivered"])
      expect((yield* statusOf(held)).recipients.map((r) => r.state)).toEqual(["deferred"])
      // The other execution lets go (it recorded nothing): the waiting attempt takes the recipient and sends it.
      yield* sql`UPDATE t_recipients SET claim = NULL, claim_until = NULL WHERE message_id = ${held}`
      yield* advance("10 seconds", "5 seconds")
      const status = yield* statusOf(held)
      expect(status.recipients.map((r) => r.state)).toEqual(["delivered"])
      expect(status.attempts.map((a) => a.startedMs >= ms("80 seconds"))).toEqual([false, true])
      expect((yield* connectionsTo("192.0.2.1")).map((c) => c.outcome)).toEqual(["refuse", "accept"])
    }).pipe(
      Effect.provide(clusterServices({
        "192.0.2.1": [refuse, { script: session("retry-1.test", ["one@a.test"]) }],
        "192.0.2.2": [{ script: session("client.test", ["two@b.test"]) }]
      }, schedule({ retry: ["1 minute"] }), { concurrency: 1 })),
      seeded
    ))

  scoped("a message waiting in a backlog for the runner's attempt permit is held, not revived", () =>
    Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      // The runner has one permit; the first message's server takes 30 s to answer its final dot.
      const first = yield* outbox.enqueue(request("one@a.test"))
      yield* advance("5 seconds", "5 seconds")
      const second = yield* outbox.enqueue(request("two@b.test"))
      // The second is due from 5 s and waits for the permit until the first ends, past the bound (10 s) twice: its
      // recipient is held by its attempt meanwhile, and the watchdog leaves it alone.
      yield* advance("45 seconds", "5 seconds")
      const statuses = [yield* statusOf(first), yield* statusOf(second)]
      expect(statuses.map((m) => m.recipients.map((r) => r.state))).toEqual([["delivered"], ["delivered"]])
      expect(statuses[1]!.attempts.length).toBe(1)
      expect(statuses[1]!.attempts[0]!.startedMs).toBeGreaterThanOrEqual(ms("30 seconds"))
      expect([yield* watchdogState(first), yield* watchdogState(second)]).toEqual([[[0, null]], [[0, null]]])
      expect((yield* connectionsTo("192.0.2.2")).length).toBe(1)
    }).pipe(
      Effect.provide(clusterServices({
        "192.0.2.1": [{
          script: [
            ...session("client.test", ["one@a.test"]).slice(0, 10),
            Script.delay("30 seconds"),
            ...session("client.test", ["one@a.test"]).slice(10)
          ]
        }],
        "192.0.2.2": [{ script: session("client.test", ["two@b.test"]) }]
      }, schedule({ retry: ["1 minute"] }), { concurrency: 1 })),
      seeded
    ))
})
