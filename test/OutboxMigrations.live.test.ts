/**
 * Runners starting at once on a new prefix of one PostgreSQL database (127.0.0.1:5432, database `test`): each makes
 * the outbox's tables (`@effect/sql`'s Migrator) and the cluster's (`@effect/cluster`'s storage) when it starts.
 * Without the prefix's start lock two of three failed on PostgreSQL's catalog, every time.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer } from "effect"
import { execFileSync } from "node:child_process"
import * as net from "node:net"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Outbox from "../src/Outbox.js"
import * as Transport from "../src/Transport.js"

const url = "postgres://postgres@127.0.0.1:5432/test"
const prefix = `obm_${process.pid.toString(36)}${Math.floor(Math.random() * 1e6).toString(36)}`

const psql = (command: string) =>
  execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-Atc", command], {
    stdio: "pipe",
    timeout: 30_000
  }).toString()

afterAll(() => {
  const tables = psql(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE '${prefix}\\_%'`)
    .split("\n").filter((t) => t !== "")
  for (const table of tables) psql(`DROP TABLE IF EXISTS "${table}" CASCADE`)
}, 30_000)

/** A port free on 127.0.0.1 now (listened on, then closed). */
const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

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
      expect(psql(`SELECT migration_id FROM ${prefix}_migrations ORDER BY migration_id`).trim().split("\n")).toEqual(["1", "2"])
      expect(psql(`SELECT count(*) FROM ${prefix}_cluster_migrations`).trim()).not.toBe("0")
    }), 60_000)
})
