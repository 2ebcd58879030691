/**
 * The outbox's SQL store on SQLite in memory: the writes the watchdog and the workflow rely on to act once when
 * several runners (or generations) see the same state.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Record } from "effect"
import * as Events from "../src/internal/outbox/events.js"
import * as Store from "../src/internal/outbox/store.js"

const withStore = <A, E>(f: (store: Store.Store) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const store = yield* Store.make("t", yield* Events.local)
    yield* store.insert(
      { id: "m1", sender: "s@origin.test", body: "", requireTls: false, createdMs: 0, dsnOf: "" },
      [{ address: "r@a.test", domain: "a.test", nextAttemptMs: 0, expiresMs: null, nextNotifyMs: null }]
    )
    yield* store.markStarted("m1")
    return yield* f(store)
  }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" })))

describe("outbox store", () => {
  it.effect("a stalled message's revival is taken by one sweep; it is free again a bound later, or after progress", () =>
    withStore((store) =>
      Effect.gen(function*() {
        // Two runners' watchdogs at 30 s (bound 20 s): one takes it.
        expect(yield* store.takeRevival("m1", 30_000, 10_000)).toBe(true)
        expect(yield* store.takeRevival("m1", 30_000, 10_000)).toBe(false)
        // Within the bound of that revival, nobody; a bound later, one again.
        expect(yield* store.takeRevival("m1", 45_000, 25_000)).toBe(false)
        expect(yield* store.takeRevival("m1", 50_000, 30_000)).toBe(true)
        // A revived message shows as revived before (the next stall begins a new generation) …
        expect((yield* store.stalled(80_000, 60_000, 20)).map((s) => [s.id, s.revivedBefore])).toEqual([["m1", true]])
        // … unless an attempt was recorded since: progress makes the next stall a first one.
        yield* store.recordDomain(
          "m1",
          [{ address: "r@a.test", state: "deferred", retryNum: 1, lastError: "connection", nextAttemptMs: 0, result: null }],
          { messageId: "m1", generation: 0, step: 0, domain: "a.test", startedMs: 55_000, report: "{}" },
          55_000
        )
        expect((yield* store.stalled(80_000, 60_000, 20)).map((s) => [s.id, s.revivedBefore])).toEqual([["m1", false]])
        // Two generations number their steps from 0: both attempts are kept.
        yield* store.recordDomain(
          "m1",
          [],
          { messageId: "m1", generation: 1, step: 0, domain: "a.test", startedMs: 56_000, report: "{}" },
          56_000
        )
        expect((yield* store.attempts("m1")).map((a) => [a.generation, a.step])).toEqual([[0, 0], [1, 0]])
        expect([yield* store.nextGeneration("m1"), yield* store.nextGeneration("m1")]).toEqual([1, 2])
      })
    ))

  it.effect("a database at the first migration, or made before the outbox had migrations, is brought to the latest with its rows", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const all = Store.migrations(Store.tables("t"))
      const first = Record.filter(all, (_, key) => key.startsWith("1_"))
      const ids = (prefix: string) =>
        Effect.map(sql`SELECT migration_id FROM ${sql(`${prefix}_migrations`)} ORDER BY migration_id`, (rows) =>
          rows.map((r: any) => Number(r.migration_id)))
      const claimIndex = (prefix: string) =>
        Effect.map(
          sql`SELECT name FROM sqlite_master WHERE type = 'index' AND name = ${`${prefix}_recipients_claim`}`,
          (rows) => rows.length === 1
        )
      const row = (prefix: string) =>
        Effect.all([
          sql`INSERT INTO ${sql(`${prefix}_messages`)} (id, sender, body, require_tls, created_ms, dsn_of, started, done, revived_ms, generation, start_claim, start_until) VALUES ('m0', 's@origin.test', '', 0, 5, '', 1, 0, NULL, 0, NULL, NULL)`,
          sql`INSERT INTO ${sql(`${prefix}_recipients`)} (message_id, address, domain, position, state, retry_num, last_error, next_attempt_ms, expires_ms, notify_num, next_notify_ms, result, dsn_sent, claim, claim_until, updated_ms) VALUES ('m0', 'r@a.test', 'a.test', 0, 'deferred', 2, 'connection', 7, NULL, 0, NULL, NULL, 0, NULL, NULL, 5)`
        ])
      // "t": at the first migration (as a release with only that one left it), with a message.
      yield* Store.migrate("t", first)
      expect([yield* ids("t"), yield* claimIndex("t")]).toEqual([[1], false])
      yield* row("t")
      // "u": its tables made as before the migrations (what the first one does, with no record), with a message.
      yield* Store.migrations(Store.tables("u"))["1_tables"]!
      yield* row("u")
      const latest = Object.keys(all).map((k) => Number.parseInt(k, 10))
      for (const prefix of ["t", "u"]) {
        const store = yield* Store.make(prefix, yield* Events.local)
        expect([yield* ids(prefix), yield* claimIndex(prefix)]).toEqual([latest, true])
        expect(Option.map(yield* store.message("m0"), (m) => [m.sender, m.createdMs])).toEqual(Option.some(["s@origin.test", 5]))
        expect((yield* store.recipients("m0")).map((r) => [r.address, r.state, r.retryNum, r.nextAttemptMs])).toEqual([
          ["r@a.test", "deferred", 2, 7]
        ])
        // Made again (a second start): nothing to apply, nothing changed.
        yield* Store.make(prefix, yield* Events.local)
        expect(yield* ids(prefix)).toEqual(latest)
      }
    }).pipe(Effect.provide(SqliteClient.layer({ filename: ":memory:" }))))
})
