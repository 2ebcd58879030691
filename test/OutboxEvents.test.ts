/**
 * The outbox's status events without a server: the notification payload's codec (PostgreSQL's 8000-byte limit), and
 * the store's writes on SQLite in memory announcing exactly what they changed, once each, after the commit.
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Exit, Fiber, Option, Queue, Ref, Schema, Stream, TestClock } from "effect"
import type { ReportError } from "../src/DeliveryReport.js"
import * as Events from "../src/internal/outbox/events.js"
import * as Store from "../src/internal/outbox/store.js"

const error = (message: string): ReportError => ({
  phase: "rcpt-to",
  kind: "reply",
  message,
  permanent: false,
  code: 451,
  enhanced: "4.7.1"
})

const event = (address: string, e: ReportError | null = null): Events.RecordedEvent => ({
  id: "m1",
  address,
  state: "deferred",
  retryNum: 2,
  nextAttemptMs: 180_000,
  error: e,
  atMs: 60_000,
  version: 2
})

/** An event as a subscriber hears it. */
const heard = ({ version: _, ...e }: Events.RecordedEvent): Events.StatusEvent => e

const decode = Schema.decodeSync(Events.Notice)

describe("the notification payload", () => {
  it.effect("one write's events in one payload, decoded as they were", () =>
    Effect.gen(function*() {
      const events = [event("a@x.test", error("4.7.1 try later")), { ...event("b@x.test"), state: "delivered" as const }]
      const payloads = Events.payloads(events)
      expect(payloads.length).toBe(1)
      const notice = decode(payloads[0]!)
      expect(notice._tag).toBe("events")
      expect(yield* Events.eventsOf(notice, () => Effect.die("not read"))).toEqual(events.map(heard))
    }))

  it.effect("past the limit, the addresses, split so that each payload fits; their states are read from SQL", () =>
    Effect.gen(function*() {
      // The events with their errors are far over a limit of 300 bytes; their addresses are over it too.
      const events = Array.from({ length: 40 }, (_, i) => event(`r${i}@x.test`, error("x".repeat(400))))
      const payloads = Events.payloads(events, 300)
      expect(payloads.length).toBeGreaterThan(1)
      for (const p of payloads) expect(Buffer.byteLength(p)).toBeLessThanOrEqual(300)
      const notices = payloads.map((p) => decode(p))
      expect(notices.flatMap((n) => (n._tag === "changed" ? n.recipients : []))).toEqual(
        events.map((e) => ({ address: e.address, version: 2 }))
      )
      // The rows as SQL has them: r1 was written again since (its next version, in the same millisecond); it is its
      // own notice's, not this one's.
      const rows = events.map((e, i): Events.RecipientRead => ({
        address: e.address,
        state: e.state,
        retryNum: e.retryNum,
        nextAttemptMs: e.nextAttemptMs,
        result: JSON.stringify({ reply: null, error: e.error, host: null }),
        version: i === 1 ? 3 : 2
      }))
      const read = Effect.forEach(notices, (n) => Events.eventsOf(n, () => Effect.succeed(rows)))
      expect((yield* read).flat()).toEqual(events.filter((_, i) => i !== 1).map(heard))
    }))

  it.effect("a listening session's probe is a notice of no event", () =>
    Effect.gen(function*() {
      const notice = decode(`{"_tag":"probe","session":"s1"}`)
      expect(notice).toEqual({ _tag: "probe", session: "s1" })
      expect(yield* Events.eventsOf(notice, () => Effect.die("not read"))).toEqual([])
    }))

  it("the default limit is under PostgreSQL's 8000 bytes", () => {
    const events = Array.from({ length: 200 }, (_, i) => event(`r${i}@x.test`, error("y".repeat(500))))
    for (const p of Events.payloads(events)) expect(Buffer.byteLength(p)).toBeLessThan(8000)
  })

  it("a prefix is its channel when it is a short plain name, a digest otherwise", () => {
    expect(Events.channelOf("outbox")).toBe("outbox_events")
    const long = Events.channelOf("x".repeat(60))
    expect(long).toMatch(/^outbox_events_[0-9a-f]{24}$/)
    expect(Events.channelOf("Outbox-é")).not.toBe(long)
  })
})

/**
 * A store on SQLite in memory whose announcer keeps what the writes announce: each write's events, in its transaction
 * (`recording`, where PostgreSQL notifies) and after its commit (`recorded`, where the in-process hub publishes).
 */
const withStore = <A, E>(
  f: (
    store: Store.Store,
    events: () => ReadonlyArray<string>,
    writes: () => ReadonlyArray<ReadonlyArray<Events.RecordedEvent>>
  ) => Effect.Effect<A, E>
) =>
  Effect.gen(function*() {
    const seen: Array<string> = []
    const writes: Array<ReadonlyArray<Events.RecordedEvent>> = []
    const note = (when: string) => (events: ReadonlyArray<Events.RecordedEvent>) =>
      Effect.sync(() => {
        if (events.length === 0) return
        if (when === "in") writes.push(events)
        seen.push(`${when}: ${events.map((e) => `${e.address} ${e.state} ${e.atMs}`).join(", ")}`)
      })
    const announcer: Events.Announcer = { ...(yield* Events.local), recording: note("in"), recorded: note("after") }
    const store = yield* Store.make("t", announcer)
    return yield* f(store, () => seen, () => writes)
  }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" })))

const update = (address: string, state: Store.RecipientState): Store.RecipientUpdate => ({
  address,
  state,
  retryNum: 1,
  lastError: "connection",
  nextAttemptMs: state === "deferred" ? 500 : null,
  result: JSON.stringify({ reply: null, error: null, host: null })
})

const attempt = (step: number) => ({ messageId: "m1", generation: 0, step, domain: "a.test", startedMs: 0, report: "{}" })

describe("the store's writes announce what they changed", () => {
  it.effect("enqueue, a recorded attempt, an expiry: each change once; what a write left as it was, not at all", () =>
    withStore((store, seen) =>
      Effect.gen(function*() {
        const recipient = (address: string) => ({
          address,
          domain: "a.test",
          nextAttemptMs: 0,
          expiresMs: 1000,
          nextNotifyMs: null
        })
        const message = { id: "m1", sender: "s@origin.test", body: "", requireTls: false, createdMs: 0, dsnOf: "" }
        yield* store.insert(message, [recipient("a@a.test"), recipient("b@a.test"), recipient("c@a.test")])
        // The same message again (a replayed step's DSN): nothing stored, nothing announced.
        expect(yield* store.insert(message, [recipient("a@a.test")])).toBe(false)
        yield* store.recordDomain("m1", [update("a@a.test", "delivered"), update("b@a.test", "deferred")], attempt(0), 100)
        // The same write again (its commit's reply lost): nothing changes, nothing is announced twice.
        yield* store.recordDomain("m1", [update("a@a.test", "delivered"), update("b@a.test", "deferred")], attempt(0), 100)
        // A late deferral of a delivered recipient is not recorded, so not announced.
        yield* store.recordDomain("m1", [update("a@a.test", "deferred")], attempt(1), 200)
        // c is held by an attempt under way: the expiry leaves it to the attempt.
        yield* store.claim("m1", "a.test", "token", 250, 10_000)
        yield* store.expire("m1", ["b@a.test", "c@a.test", "a@a.test"], 300)
        const writes = [
          "a@a.test queued 0, b@a.test queued 0, c@a.test queued 0",
          "a@a.test delivered 100, b@a.test deferred 100",
          "b@a.test expired 300"
        ]
        expect(seen()).toEqual(writes.flatMap((w) => [`in: ${w}`, `after: ${w}`]))
        const rows = yield* store.recipients("m1")
        expect(rows.map((r) => [r.address, r.state, r.updatedMs])).toEqual([
          ["a@a.test", "delivered", 100],
          ["b@a.test", "expired", 300],
          ["c@a.test", "queued", 0]
        ])
      })))
})

describe("an interruption right after a write's commit", () => {
  it.effect("does not lose its event: the commit and the publication are one uninterruptible region", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      // The SQLite client, whose transactions (once `armed`) interrupt their caller as soon as their commit returned:
      // an interruption that arrives between the commit and what follows it.
      const armed = yield* Ref.make(false)
      const interruptSelf = Effect.flatMap(Effect.fiberId, (id) =>
        Option.match(Fiber.getCurrentFiber(), {
          onNone: () => Effect.void,
          onSome: (fiber) => Fiber.interruptAsFork(fiber, id)
        }))
      const client = Object.assign(((...args: Parameters<typeof sql>) => sql(...args)) as typeof sql, sql, {
        withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) =>
          Effect.tap(sql.withTransaction(effect), () => Effect.whenEffect(interruptSelf, Ref.get(armed)))
      })
      // What the store publishes once a write committed (where the in-process hub publishes).
      const published: Array<Events.RecordedEvent> = []
      const announcer: Events.Announcer = {
        ...(yield* Events.local),
        recorded: (events) => Effect.sync(() => void published.push(...events))
      }
      const store = yield* Effect.provideService(Store.make("t", announcer), SqlClient.SqlClient, client)
      yield* Ref.set(armed, true)
      const message = { id: "m1", sender: "s@origin.test", body: "", requireTls: false, createdMs: 0, dsnOf: "" }
      const recipient = { address: "a@a.test", domain: "a.test", nextAttemptMs: 0, expiresMs: null, nextNotifyMs: null }
      // In a fiber of its own, the one its transaction interrupts.
      const exit = yield* Fiber.await(yield* Effect.fork(store.insert(message, [recipient])))
      expect(Exit.isInterrupted(exit)).toBe(true)
      // Committed, and announced.
      expect((yield* store.recipients("m1")).map((r) => r.state)).toEqual(["queued"])
      expect(published.map((e) => [e.address, e.state])).toEqual([["a@a.test", "queued"]])
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" }))))
})

describe("two writes of one recipient in one millisecond (certain under TestClock)", () => {
  it.effect("both are recorded and announced, and a `changed` notice's read-back tells them apart", () =>
    withStore((store, _, writes) =>
      Effect.gen(function*() {
        const message = { id: "m1", sender: "s@origin.test", body: "", requireTls: false, createdMs: 0, dsnOf: "" }
        const recipient = { address: "a@a.test", domain: "a.test", nextAttemptMs: 0, expiresMs: null, nextNotifyMs: null }
        yield* store.insert(message, [recipient])
        // Two attempts' deferrals at 100 ms, the same state and count, another server reply each.
        const deferred = (reply: string) => ({
          ...update("a@a.test", "deferred"),
          result: JSON.stringify({ reply: null, error: error(reply), host: null })
        })
        yield* store.recordDomain("m1", [deferred("first")], attempt(0), 100)
        yield* store.recordDomain("m1", [deferred("second")], attempt(1), 100)
        const [, first, second] = writes()
        expect([first, second].map((w) => w?.map((e) => e.error?.message))).toEqual([["first"], ["second"]])
        // Each as a `changed` notice (a limit that nothing fits under), read back once both are in SQL: the row is the
        // second's, so the first's notice reads nothing and the second's reads its own state, once.
        const readBack = (events: ReadonlyArray<Events.RecordedEvent>) =>
          Effect.map(
            Effect.forEach(Events.payloads(events, 1), (p) => Events.eventsOf(decode(p), (id) => store.recipients(id))),
            (read) => read.flat()
          )
        expect(yield* readBack(first!)).toEqual([])
        expect(yield* readBack(second!)).toEqual(second!.map(heard))
      })))
})

describe("a listener's probes", () => {
  /**
   * `watch` with probes that come back through `back` (or not), run for `seconds` of the test clock: whether it ended
   * (failed), and how many probes were sent and heard.
   */
  const run = (send: (back: Queue.Queue<string>) => Effect.Effect<unknown, unknown>, seconds: number) =>
    Effect.gen(function*() {
      const back = yield* Queue.unbounded<string>()
      const sent = yield* Ref.make(0)
      const heard = yield* Ref.make(0)
      const count = (n: number) => n + 1
      const probe = Effect.zipRight(Ref.update(sent, count), send(back))
      const fiber = yield* Effect.fork(Events.watch(probe, Stream.fromQueue(back), Ref.update(heard, count)))
      for (let i = 0; i < seconds; i++) yield* TestClock.adjust("1 second")
      return {
        ended: Option.map(yield* Fiber.poll(fiber), (exit) => Exit.isFailure(exit)),
        sent: yield* Ref.get(sent),
        heard: yield* Ref.get(heard)
      }
    })

  it.effect("probes that come back: the connection is alive; one a second once the first came back", () =>
    Effect.gen(function*() {
      // The first at once (its coming back is the sign that the session listens), then one each second.
      expect(yield* run((back) => Queue.offer(back, "1"), 30)).toEqual({ ended: Option.none(), sent: 31, heard: 31 })
    }))

  it.effect("a probe PostgreSQL took that does not come back: lost, 3 s after it was sent", () =>
    Effect.gen(function*() {
      // Sent at once (and again every 50 ms, none coming back); at 3 s the first is 3 s old, at 4 s more.
      expect((yield* run(() => Effect.void, 3)).ended).toEqual(Option.none())
      expect((yield* run(() => Effect.void, 4)).ended).toEqual(Option.some(true))
    }))

  it.effect("probes that cannot be sent (PostgreSQL away): nothing to conclude, no listening again for nothing", () =>
    Effect.gen(function*() {
      expect((yield* run(() => Effect.fail("connection refused"), 10)).ended).toEqual(Option.none())
    }))

  it.effect("a slow round (a pool or a process that did not run for seconds) forgives the probes not heard yet", () =>
    Effect.gen(function*() {
      expect((yield* run(() => Effect.sleep("3 seconds"), 40)).ended).toEqual(Option.none())
    }))
})
