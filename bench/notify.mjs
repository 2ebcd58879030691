// What announcing a write costs on PostgreSQL: the outbox's status events are a `pg_notify` inside the transaction
// that records the change, and PostgreSQL serializes the commits of notifying transactions (one lock on the
// notification queue, held through the commit). Same run, same table, interleaved rounds:
//
//   plain     BEGIN; UPDATE one row; COMMIT                                 (a write without its announcement)
//   notify    BEGIN; UPDATE one row; SELECT pg_notify(channel, ~300 B); COMMIT  (what the outbox's writes do now)
//
// with one session LISTENing on the channel (as every outbox process with a subscriber does), at `--c` transactions
// at once. Prints transactions/s per kind (median of the rounds) and the ratio.
//
// Usage: node bench/notify.mjs [--n=2000] [--c=16] [--rounds=5]
// Every loop is bounded in count and time; the table is dropped at the end.
import { Effect, Stream, Fiber, Redacted } from "effect"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as os from "node:os"
import { boundLifetime, median, parseArgs } from "./common.mjs"

const args = parseArgs(process.argv.slice(2))
const N = Number(args.n ?? 2000)
const C = Number(args.c ?? 16)
const ROUNDS = Number(args.rounds ?? 5)
boundLifetime(10 * 60 * 1000)

const table = `notify_bench_${process.pid.toString(36)}`
const channel = `${table}_events`
const payload = JSON.stringify({
  _tag: "events",
  id: "mx9iqsgh-f2ed02c6484c90d4",
  atMs: 1764885600000,
  changes: [{
    address: "someone@example.net",
    state: "deferred",
    retryNum: 1,
    nextAttemptMs: 1764885780000,
    error: { phase: "rcpt-to", kind: "reply", message: "451 4.7.1 try again later", permanent: false, code: 451, enhanced: "4.7.1" }
  }]
})

const program = Effect.gen(function*() {
  const sql = yield* PgClient.PgClient
  yield* Effect.acquireRelease(
    sql.unsafe(`CREATE TABLE ${table} (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)`),
    () => Effect.ignore(sql.unsafe(`DROP TABLE IF EXISTS ${table}`))
  )
  yield* sql.unsafe(`INSERT INTO ${table} SELECT g, 0 FROM generate_series(0, 255) g`)
  let heard = 0
  const listener = yield* Effect.fork(Stream.runForEach(sql.listen(channel), () => Effect.sync(() => void heard++)))
  yield* Effect.sleep("200 millis")
  const write = (notify) => (i) =>
    sql.withTransaction(Effect.gen(function*() {
      yield* sql`UPDATE ${sql(table)} SET v = v + 1 WHERE id = ${i % 256}`
      if (notify) yield* sql`SELECT pg_notify(${channel}, ${payload})`
    }))
  const round = (notify) =>
    Effect.gen(function*() {
      const start = performance.now()
      yield* Effect.forEach(Array.from({ length: N }, (_, i) => i), write(notify), { concurrency: C, discard: true }).pipe(
        // Another suite restarts PostgreSQL now and then: a round that meets it fails rather than hangs.
        Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => new Error("a round took over 60 s") })
      )
      return N / ((performance.now() - start) / 1000)
    })
  const rates = { plain: [], notify: [] }
  for (let r = 0; r < ROUNDS; r++) {
    // Alternating which goes first, so that neither always meets a warmer (or a busier) machine.
    const order = r % 2 === 0 ? ["plain", "notify"] : ["notify", "plain"]
    for (const kind of order) rates[kind].push(yield* round(kind === "notify"))
  }
  for (let i = 0; i < 50 && heard < N * ROUNDS; i++) yield* Effect.sleep("100 millis")
  yield* Fiber.interrupt(listener)
  return { rates, heard }
}).pipe(
  Effect.scoped,
  Effect.provide(PgClient.layer({ url: Redacted.make("postgres://postgres@127.0.0.1:5432/test"), maxConnections: C + 2 }))
)

const { heard, rates } = await Effect.runPromise(program)
const plain = median(rates.plain)
const notify = median(rates.notify)
console.log(`notify bench: N = ${N} transactions a round, c = ${C}, ${ROUNDS} rounds, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")}`)
console.log(`plain   ${plain.toFixed(0)} tx/s  (rounds: ${rates.plain.map((r) => r.toFixed(0)).join(", ")})`)
console.log(`notify  ${notify.toFixed(0)} tx/s  (rounds: ${rates.notify.map((r) => r.toFixed(0)).join(", ")})`)
console.log(`notify / plain = ${(notify / plain).toFixed(3)}; notifications heard ${heard} of ${N * ROUNDS}`)
