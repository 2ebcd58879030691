/**
 * Runners starting at once on a new prefix of one PostgreSQL database (127.0.0.1:5432, database `test`): each makes
 * the outbox's tables (`@effect/sql`'s Migrator) and the cluster's (`@effect/cluster`'s storage) when it starts.
 * Without the prefix's start lock two of three failed on PostgreSQL's catalog, every time.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Outbox from "../src/Outbox.js"
import * as Transport from "../src/Transport.js"
import { dropTables, freePort, psql } from "./utils/outbox.js"

const url = "postgres://postgres@127.0.0.1:5432/test"
const prefix = `obm_${process.pid.toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`

afterAll(() => dropTables(prefix), 30_000)

describe("outbox migrations on PostgreSQL", () => {
  it.live("three runners start at once on a new prefix: each starts, the tables are made once", () =>
    Effect.gen(function*() {
      const ports = yield* Effect.all([freePort, freePort, freePort])
      const runner = (port: number) =>
        Outbox.layerPg({ url, prefix, runner: { host: "127.0.0.1", port } }).pipe(
          Layer.provide(Layer.merge(OutboundConfig.layerDefault, Transport.layer()))
        )
      // Each built and closed in its own scope, all three at once.
      const started = yield* Effect.all(
        ports.map((port) => Effect.exit(Effect.scoped(Effect.asVoid(Layer.build(runner(port)))))),
        { concurrency: "unbounded" }
      )
      expect(started.map((exit) => Exit.isSuccess(exit) ? "started" : String(exit.cause))).toEqual([
        "started",
        "started",
        "started"
      ])
      // Each migration applied once, in order, for the outbox and for the cluster's messages.
      expect(psql(`SELECT migration_id FROM ${prefix}_migrations ORDER BY migration_id`).trim().split("\n")).toEqual(["1", "2", "3"])
      expect(psql(`SELECT count(*) FROM ${prefix}_cluster_migrations`).trim()).not.toBe("0")
    }), 60_000)
})
