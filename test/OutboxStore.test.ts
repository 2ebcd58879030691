/**
 * The outbox's SQL store on SQLite in memory: the writes the watchdog and the workflow rely on to act once when
 * several runners (or generations) see the same state.
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Events from "../src/internal/outbox/events.js"
import * as Store from "../src/internal/outbox/store.js"

const withStore = <A, E>(f: (store: Store.Store) => Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const store = yield* Store.make("t", yield* Events.local)
    yield* Store.migrate(Store.tables("t"))
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
})
