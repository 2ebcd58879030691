/**
 * The outbox on SQLite in one process, through the CLI: `outbox serve` as a process of its own (the built
 * executable), `enqueue`, `status` and `list` in this process, against a DNS server and a counting SMTP sink on
 * loopback.
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as SqlClient from "@effect/sql/SqlClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import * as path from "node:path"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Outbox from "../src/Outbox.js"
import * as Transport from "../src/Transport.js"
import { startCountingServer } from "./fixtures/countingServer.js"
import { startSmtpServer } from "./fixtures/smtpServer.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import { outbox, startRunner, waitFor } from "./utils/outbox.js"
import { tempFiles } from "./utils/files.js"

const { dir: tmp, file } = tempFiles("outbox")

const zones = {
  "one.test": { mx: [{ exchange: "mx.one.test", priority: 10 }] },
  "two.test": { mx: [{ exchange: "mx.one.test", priority: 10 }] },
  "mx.one.test": { a: ["127.0.0.1"] }
}
const config = file("outbound.toml", `[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.tls]
starttls = "disable"
mta-sts = "disable"
`)

// The cases run at once: each has its own database file, servers and runner process, and mostly waits on them.
describe.concurrent("outbox on SQLite, one process", () => {
  it.scopedLive("serve delivers what enqueue stored, each message once; status tells; SIGTERM stops it", () =>
    Effect.gen(function*() {
      const sink = yield* startCountingServer()
      const dns = yield* DnsServer.scoped({ zones })
      const db = ["--db", `file:${path.join(tmp, "one.db")}`]
      const runner = yield* startRunner([...db, "--config", config, "--dns", dns.server, "--port", String(sink.port)])
      const ids: Array<string> = []
      for (let i = 0; i < 10; i++) {
        const eml = file(`m${i}.eml`, `Message-ID: <m${i}@origin.test>\r\nSubject: ${i}\r\n\r\nbody ${i}\r\n`)
        const to = i % 2 === 0 ? [`r${i}@one.test`] : [`r${i}@one.test`, `s${i}@two.test`]
        const run = yield* outbox(["enqueue", ...db, "--config", config, "--from", "a@origin.test", "--message", eml, ...to])
        expect(run.code, run.stderr).toBe(0)
        ids.push(run.stdout.trim())
      }
      const all = yield* waitFor(db, (ms) => ms.length === 10 && ms.every((m) => m.done))
      expect(all.filter((m) => m.done).length).toBe(10)
      expect(all.flatMap((m) => m.recipients.map((r) => r.state)).every((s) => s === "delivered")).toBe(true)
      // Each message once per recipient domain (one transaction a domain): twice for the odd ones, which have two.
      expect(Object.fromEntries(sink.byMessageId())).toEqual(
        Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`<m${i}@origin.test>`, i % 2 === 0 ? 1 : 2]))
      )

      const status = yield* outbox(["status", ...db, ids[1]!])
      expect(status.code).toBe(0)
      expect(status.stdout).toContain(`${ids[1]}: done`)
      expect(status.stdout).toMatch(/r1@one\.test\s+delivered/)
      expect(status.stdout).toMatch(/s1@two\.test\s+delivered/)
      const json = JSON.parse((yield* outbox(["status", ...db, "--json", ids[1]!])).stdout)
      expect(json.attempts.map((a: { domain: string }) => a.domain).sort()).toEqual(["one.test", "two.test"])
      // The runner printed every state change as a JSON line.
      const events = runner.stdout().trim().split("\n").map((l) => JSON.parse(l) as { state: string })
      expect(events.length).toBe(15)
      expect(events.every((e) => e.state === "delivered")).toBe(true)

      yield* runner.signal("SIGTERM")
      expect(yield* runner.exited).toBe(130)
    }), 60_000)

  it.scopedLive("SIGTERM while the server takes 4 s to answer the final dot: the stop waits, the outcome is recorded", () =>
    Effect.gen(function*() {
      // Longer than the cluster's grace for its entities (3 s): the stop must wait for the transaction and its
      // write, not cut it when the outbox's own scope closes (the reply would be lost, and the message sent again).
      const sink = yield* startCountingServer({ dataDelayMs: 4_000 })
      const dns = yield* DnsServer.scoped({ zones })
      const db = ["--db", `file:${path.join(tmp, "term.db")}`]
      const args = [...db, "--config", config, "--dns", dns.server, "--port", String(sink.port)]
      const runner = yield* startRunner(args)
      const eml = file("term.eml", "Message-ID: <term@origin.test>\r\nSubject: t\r\n\r\nbody\r\n")
      const run = yield* outbox(["enqueue", ...db, "--config", config, "--from", "a@origin.test", "--message", eml, "r@one.test"])
      expect(run.code, run.stderr).toBe(0)
      const id = run.stdout.trim()
      for (let i = 0; i < 200 && sink.maxInData() === 0; i++) yield* Effect.sleep("50 millis")
      expect(sink.maxInData()).toBe(1)
      yield* runner.signal("SIGTERM")
      expect(yield* runner.exited).toBe(130)
      // The transaction ended with its reply read, and its outcome is in SQL.
      expect(sink.byMessageId().get("<term@origin.test>")).toBe(1)
      expect(sink.cutAfterData().size).toBe(0)
      const status = JSON.parse((yield* outbox(["status", ...db, "--json", id])).stdout) as {
        recipients: ReadonlyArray<{ state: string }>
      }
      expect(status.recipients.map((r) => r.state)).toEqual(["delivered"])
    }), 60_000)

  it.scopedLive("a temporary refusal is retried on the configuration's [queue.schedule], with retry_num and last_error", () =>
    Effect.gen(function*() {
      const refused = new Set<string>()
      // Each recipient is refused once with 451, then accepted.
      const smtp = yield* startSmtpServer({
        host: "127.0.0.1",
        port: 0,
        hooks: {
          rcptTo: (address) => {
            if (refused.has(address.address)) return undefined
            refused.add(address.address)
            return { code: 451, message: "4.7.1 try again later" }
          }
        }
      })
      const dns = yield* DnsServer.scoped({ zones })
      // The EHLO name says what the expressions saw on each attempt.
      const scheduled = file("schedule.toml", `[queue.outbound]
hostname = [ { if = "retry_num > 0", then = "'retry-' + retry_num + '-' + last_error + '.test'" },
             { else = "'first.test'" } ]
ip-strategy = "ipv4_only"
[queue.outbound.tls]
starttls = "disable"
mta-sts = "disable"
[queue.schedule]
retry = ["1s"]
expire = "1m"
`)
      const db = ["--db", `file:${path.join(tmp, "retry.db")}`]
      yield* startRunner([...db, "--config", scheduled, "--dns", dns.server, "--port", String(smtp.port)])
      const eml = file("retry.eml", "Message-ID: <retry@origin.test>\r\nSubject: retry\r\n\r\nagain\r\n")
      const run = yield* outbox(["enqueue", ...db, "--config", scheduled, "--from", "a@origin.test", "--message", eml, "x@one.test"])
      expect(run.code, run.stderr).toBe(0)
      const id = run.stdout.trim()
      const [done] = yield* waitFor(db, (ms) => ms.length === 1 && ms[0]!.done)
      expect(done!.recipients.map((r) => [r.state, r.retryNum])).toEqual([["delivered", 1]])
      const status = JSON.parse((yield* outbox(["status", ...db, "--json", id])).stdout) as {
        recipients: Array<{ lastError: string }>
        attempts: Array<{ startedMs: number; recipients: Array<{ status: string }> }>
      }
      expect(status.recipients[0]!.lastError).toBe("unexpected-reply")
      expect(status.attempts.map((a) => a.recipients[0]!.status)).toEqual(["deferred", "delivered"])
      const gap = status.attempts[1]!.startedMs - status.attempts[0]!.startedMs
      expect(gap).toBeGreaterThanOrEqual(1000)
      expect(gap).toBeLessThan(10_000)
      const sessions = yield* smtp.sessions
      expect(sessions.map((s) => s.clientHostname)).toEqual(["first.test", "retry-1-unexpected-reply.test"])
    }), 60_000)

  it.effect("usage errors: unknown subcommand, an option of another subcommand, no recipient; status of no message", () =>
    Effect.gen(function*() {
      const db = ["--db", `file:${path.join(tmp, "usage.db")}`]
      expect((yield* outbox(["nope"])).code).toBe(64)
      expect((yield* outbox(["list", ...db, "--runner", "127.0.0.1:1"])).stderr).toContain("does not take --runner")
      expect((yield* outbox(["enqueue", ...db])).code).toBe(64)
      // The shard lease is the cluster's (PostgreSQL), in whole seconds; both refused before anything is opened.
      const sqliteLease = yield* outbox(["serve", ...db, "--lease", "3"])
      expect([sqliteLease.code, sqliteLease.stderr]).toEqual([64, expect.stringContaining("--lease is for a cluster")])
      const zeroLease = yield* outbox(["serve", "--db", "postgres://127.0.0.1:1/none", "--lease", "0"])
      expect([zeroLease.code, zeroLease.stderr]).toEqual([64, expect.stringContaining("--lease must be a whole number")])
      const missing = yield* outbox(["status", ...db, "nothing"])
      expect(missing.code).toBe(66)
      expect(missing.stderr).toContain("no message nothing")
      expect((yield* outbox(["list", ...db])).stdout.trim()).toBe("no messages")
    }))

  it.scopedLive("the watchdog begins again a message marked begun whose workflow the cluster does not have", () =>
    Effect.gen(function*() {
      const sink = yield* startCountingServer()
      const dns = yield* DnsServer.scoped({ zones })
      const filename = path.join(tmp, "revive.db")
      const configLayer = OutboundConfig.layer(config).pipe(Layer.provide(NodeContext.layer))
      const id = yield* Effect.flatMap(Outbox.Outbox, (o) =>
        o.enqueue({
          message: "Message-ID: <lost@origin.test>\r\nSubject: lost\r\n\r\nbody\r\n",
          sender: "a@origin.test",
          recipients: ["r@one.test"]
        })).pipe(Effect.provide(Outbox.layerClient({ db: `file:${filename}` }).pipe(Layer.provide(configLayer))))
      // What a lost workflow leaves: the message marked begun (the sweeper will not begin it), nothing in the
      // cluster's storage to run it.
      yield* Effect.flatMap(SqlClient.SqlClient, (sql) => sql`UPDATE outbox_messages SET started = 1 WHERE id = ${id}`)
        .pipe(Effect.provide(SqliteClient.layer({ filename })))
      const status = yield* Effect.gen(function*() {
        const outbox = yield* Outbox.Outbox
        for (let i = 0; i < 150; i++) {
          const s = yield* outbox.status(id)
          if (Option.isSome(s) && s.value.done) return s
          yield* Effect.sleep("100 millis")
        }
        return yield* outbox.status(id)
      }).pipe(
        Effect.provide(
          Outbox.layerSqlite({ filename, stallAfter: "1 second" }).pipe(
            Layer.provide(Layer.merge(configLayer, Transport.layer({ dns: { servers: [dns.server] } })))
          )
        ),
        Effect.provideService(Transport.TransportOptions, {
          port: sink.port,
          ca: undefined,
          domainConcurrency: 1,
          mtaStsPort: 443
        })
      )
      expect(Option.map(status, (s) => s.recipients.map((r) => r.state))).toEqual(Option.some(["delivered"]))
      expect(Object.fromEntries(sink.byMessageId())).toEqual({ "<lost@origin.test>": 1 })
    }), 60_000)
})
