/**
 * The outbox's status events across processes on PostgreSQL (127.0.0.1:5432, database `test`): a runner (`outbox
 * serve`, a process of its own) delivers to a counting SMTP sink; a client layer in this process, which runs nothing,
 * hears every change through PostgreSQL's notifications alone, each once, in order — also after another subscriber of
 * the same layer stopped, past payloads on the channel that are no notice, and after its listening connection was
 * killed (`pg_terminate_backend`). The tables have a prefix of this run's, dropped at the end.
 *
 * Another suite restarts PostgreSQL (OutboxCluster.live, which runs beside this one): the changes recorded while a
 * listener is away are not heard (docs/outbox.md), so a round of this test that a restart overlapped (the server's
 * start time changed) is made again, at most three times; so is the runner's start, once.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Context, Effect, Either, ExecutionStrategy, Exit, Fiber, Layer, Option, Scope, Stream } from "effect"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Outbox from "../src/Outbox.js"
import { startCountingServer } from "./fixtures/countingServer.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import { tempFiles } from "./utils/files.js"
import { dropTables, pgUrl as url, psqlRows, startPgRunner } from "./utils/outbox.js"

const { file } = tempFiles("outbox-events")
const prefix = `obe_${process.pid.toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`

/** `psql`, or nothing while PostgreSQL is away (another suite restarts it: OutboxCluster.live). */
const psqlOrNone = (command: string) => {
  try {
    return psqlRows(command)
  } catch {
    return []
  }
}

afterAll(() => dropTables(prefix), 60_000)

const zones = { "one.test": { mx: [{ exchange: "mx.one.test", priority: 10 }] }, "mx.one.test": { a: ["127.0.0.1"] } }
const config = file("events.toml", `[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.tls]
starttls = "disable"
mta-sts = "disable"
`)

/** The sessions LISTENing on this prefix's channel (one a layer's listening session), idle. */
const listeners = () =>
  psqlOrNone(`SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN "${prefix}_events%' AND state = 'idle'`)

/** Polls `check` every 50 ms, at most `polls` times; whether it held. */
const until = (check: () => boolean, polls = 300) =>
  Effect.gen(function*() {
    for (let i = 0; i < polls && !check(); i++) yield* Effect.sleep("50 millis")
    return check()
  })

describe("outbox events on PostgreSQL", () => {
  it.scopedLive("a client hears a runner's changes through PostgreSQL, each once, also after its connection was lost", () =>
    Effect.gen(function*() {
      const sink = yield* startCountingServer()
      const dns = yield* DnsServer.scoped({ zones })
      const startTime = () => psqlOrNone("SELECT pg_postmaster_start_time()")[0]
      // A start that a restart overlapped (the server's start time changed, or it was away) is made once more: the
      // runner waits for PostgreSQL at its start (bounded, docs/outbox.md), but this case is not about that (the
      // cluster suite is); a runner that failed is stopped before the next.
      const runner = yield* Effect.gen(function*() {
        for (let attempt = 0;; attempt++) {
          const started = startTime()
          const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
          const start = yield* Effect.either(
            Scope.extend(startPgRunner(prefix, { config, dns: dns.server, port: sink.port }), scope)
          )
          if (Either.isRight(start)) return start.right
          yield* Scope.close(scope, Exit.void)
          if (attempt > 0 || (started !== undefined && started === startTime())) return yield* Effect.fail(start.left)
        }
      })
      const client = yield* Layer.build(Outbox.layerClient({ db: url, prefix }).pipe(
        Layer.provide(OutboundConfig.layer(config)),
        Layer.provide(NodeContext.layer)
      ))
      const outbox = Context.get(client, Outbox.Outbox)
      const heard: Array<Outbox.StatusEvent> = []
      yield* Effect.forkScoped(Stream.runForEach(outbox.events, (e) => Effect.sync(() => void heard.push(e))))
      // A second subscriber of the same layer, which stops below: the first must go on hearing.
      const other: Array<Outbox.StatusEvent> = []
      const stops = yield* Effect.forkScoped(
        Stream.runForEach(outbox.events, (e) => Effect.sync(() => void other.push(e)))
      )

      const send = (tag: string) =>
        outbox.enqueue({
          message: `Message-ID: <${tag}@origin.test>\r\nSubject: ${tag}\r\n\r\nbody\r\n`,
          sender: "a@origin.test",
          recipients: [`${tag}@one.test`]
        })
      const statesOf = (id: string) => heard.filter((e) => e.id === id).map((e) => e.state)
      const printed = (id: string) =>
        runner.stdout().split("\n").filter((l) => l.includes(`"id":"${id}"`)).map((l) => JSON.parse(l).state as string)

      /**
       * A message enqueued here, delivered there, once the runner and the client listen (`before`, then waiting for
       * two listening sessions other than `old`): what the client heard of it and what the runner printed.
       */
      const sent: Array<string> = []
      const round = (tag: string, before: Effect.Effect<ReadonlyArray<string>> = Effect.succeed([])) =>
        Effect.gen(function*() {
          for (let attempt = 0;; attempt++) {
            const started = startTime()
            const old = yield* before
            const listening = yield* until(() => listeners().filter((pid) => !old.includes(pid)).length >= 2, 400)
            const id = yield* send(`${tag}${attempt}`)
            sent.push(id)
            const heard = yield* until(() => statesOf(id).includes("delivered") && printed(id).includes("delivered"))
            if ((started === undefined || started !== startTime()) && attempt < 2) continue
            expect([listening, heard]).toEqual([true, true])
            return { id, old }
          }
        })

      // Both subscribers listen once each has heard an enqueue of this layer's (one enqueued before they listened is
      // not heard: enqueued again, at most 20 times).
      let warm = false
      const warmIds: Array<string> = []
      for (let i = 0; i < 20 && !warm; i++) {
        const id = yield* send(`warm${i}`)
        warmIds.push(id)
        warm = yield* until(() => statesOf(id).includes("queued") && other.some((e) => e.id === id), 40)
      }
      expect(warm).toBe(true)
      // One stops: the layer's listening session goes on for the other (a LISTEN of its own would be UNLISTENed).
      yield* Fiber.interrupt(stops)
      // Payloads on the channel that are no notice of a write (a foreign one, a probe of another session) end nothing
      // and are no event.
      const channel = `${prefix}_events`
      for (const payload of ["not json", `{"_tag":"events","id":"m"}`, `{"_tag":"probe","session":"elsewhere"}`]) {
        psqlOrNone(`SELECT pg_notify('${channel}', '${payload}')`)
      }

      // The client hears both changes, in order, once; the runner hears the client's enqueue the same way (`serve`
      // prints every change of the cluster), and its own delivery once: nothing from an in-process copy besides.
      const { id: first } = yield* round("first")
      expect(statesOf(first)).toEqual(["queued", "delivered"])
      expect(printed(first)).toEqual(["queued", "delivered"])
      // Nothing but the changes of this layer's enqueues (the foreign payloads are none); a round made again after a
      // restart enqueued more than one.
      expect(heard.filter((e) => !sent.includes(e.id) && !warmIds.includes(e.id))).toEqual([])
      const status = Option.getOrThrow(yield* outbox.status(first))
      expect(heard.find((e) => e.id === first && e.state === "delivered")!.atMs).toBe(status.recipients[0]!.updatedMs)

      // Both listening connections die; each listener notices (its probes stop coming back) and listens again.
      const kill = Effect.sync(() =>
        psqlOrNone(
          `SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN "${prefix}_events%' AND pg_terminate_backend(pid)`
        )
      )
      const { id: second, old: killed } = yield* round("second", kill)
      expect(killed.length).toBeGreaterThanOrEqual(2)
      expect(statesOf(second)).toEqual(["queued", "delivered"])
      expect(printed(second)).toEqual(["queued", "delivered"])
    }), 90_000)
})
