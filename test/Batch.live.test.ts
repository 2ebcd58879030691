/**
 * `smtp-transport batch` in this process (`main`, as `bin.ts` runs it, its Console captured) against a real DNS
 * server and a counting SMTP server on loopback.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import * as Connector from "../src/Connector.js"
import { startCountingServer } from "./fixtures/countingServer.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import { runMain } from "./utils/cli.js"
import { tempFiles } from "./utils/files.js"

const { dir: tmp, file } = tempFiles("batch")
// The files are written at load and by the cases; the folder goes with the suite.
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }))

const zones = {
  "batch.test": { mx: [{ exchange: "mx.batch.test", priority: 10 }] },
  "mx.batch.test": { a: ["127.0.0.1"] }
}
const config = file("outbound.toml", `[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.tls]
starttls = "disable"
mta-sts = "disable"
`)

/** `smtp-transport batch --config … <args>` in this process; `out` its output lines. */
const batch = (args: ReadonlyArray<string>) =>
  Effect.map(runMain(["batch", "--config", config, ...args]), ({ code, lines, stderr }) => ({ code, out: lines, stderr }))

describe("smtp-transport batch", () => {
  it.scopedLive("a bad line in the middle: one output line per input line, the others delivered, exit 65", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer()
      const dns = yield* DnsServer.scoped({ zones })
      const eml = file("m1.eml", "Subject: one\r\n\r\nfirst\r\n")
      const input = file("requests.jsonl", [
        JSON.stringify({ id: "m1", from: "a@origin.test", to: ["r1@batch.test"], message: eml }),
        JSON.stringify({ id: "m2", from: "a@origin.test", to: ["r2@batch.test"], data: "Subject: two\r\n\r\nsecond\r\n" }),
        "{ not json",
        JSON.stringify({ id: "m4", to: [] , data: "x" }),
        JSON.stringify({ id: "m5", to: ["r5@batch.test"], message: path.join(tmp, "missing.eml") }),
        JSON.stringify({ id: "m6", to: ["bad address@batch.test"], data: "x" }),
        JSON.stringify({ id: "m7", from: "a@origin.test", to: ["r7@batch.test", "r8@batch.test"], data: "Subject: 7\r\n\r\n7\r\n" })
      ].join("\n") + "\n")
      const run = yield* batch(["--dns", dns.server, "--port", String(server.port), "--concurrency", "3", input])
      expect(run.code, run.stderr).toBe(65)
      const lines = run.out.map((l) => JSON.parse(l) as { line: number; id?: string; error?: { kind: string; message: string }; recipients?: Array<{ status: string }> })
      expect(lines.map((l) => l.line).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7])
      const byLine = new Map(lines.map((l) => [l.line, l]))
      expect([1, 2, 7].map((n) => byLine.get(n)!.recipients!.map((r) => r.status))).toEqual([
        ["delivered"],
        ["delivered"],
        ["delivered", "delivered"]
      ])
      expect(byLine.get(1)!.id).toBe("m1")
      expect(Object.keys(byLine.get(1)!).sort()).toEqual(["attempts", "id", "line", "plan", "recipients", "warnings"])
      for (const n of [3, 4, 5, 6]) expect(byLine.get(n)!.error!.kind).toBe("input")
      expect(byLine.get(3)!.id).toBeUndefined()
      expect(byLine.get(3)!.error!.message).toMatch(/^not JSON/)
      expect(byLine.get(4)!.id).toBe("m4")
      expect(byLine.get(4)!.error!.message).toContain("\"to\"")
      expect(byLine.get(5)!.error!.message).toContain("missing.eml")
      expect(byLine.get(6)!.error!.message).toContain("bad address@batch.test")
      expect(server.messages().size).toBe(3)
    }), 60_000)

  it.scopedLive("exit 0 when every recipient was delivered; 66 when the input cannot be read", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer()
      const dns = yield* DnsServer.scoped({ zones })
      const input = file("ok.jsonl", Array.from({ length: 20 }, (_, i) =>
        JSON.stringify({ id: `k${i}`, to: [`k${i}@batch.test`], data: `Subject: ${i}\r\n\r\n${i}\r\n` })).join("\n"))
      const run = yield* batch(["--dns", dns.server, "--port", String(server.port), "--concurrency", "2", input])
      expect(run.code, run.stderr).toBe(0)
      expect(run.out).toHaveLength(20)
      // Two at a time over shared connections: two connections for the twenty messages.
      expect(server.connections()).toBe(2)
      const missing = yield* batch([path.join(tmp, "nowhere.jsonl")])
      expect(missing.code).toBe(66)
      expect(missing.stderr).toContain("nowhere.jsonl")
    }), 60_000)

  it.scopedLive("on a terminal, progress goes to standard error: counts, rate, and a last line of its own", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer()
      const dns = yield* DnsServer.scoped({ zones })
      const input = file("progress.jsonl", [
        JSON.stringify({ id: "p1", to: ["p1@batch.test"], data: "Subject: 1\r\n\r\n1\r\n" }),
        JSON.stringify({ id: "p2", to: ["p2@batch.test", "p2@nowhere.invalid"], data: "Subject: 2\r\n\r\n2\r\n" }),
        "not json"
      ].join("\n"))
      // The executable on a pseudo-terminal (util-linux's `script`), as a user runs it: standard output and standard
      // error are the terminal, and what it shows is read back. Asynchronous: the servers run in this process.
      const command = [process.execPath, path.resolve("dist/bin.js"), "batch", "--config", config, "--dns", dns.server,
        "--port", String(server.port), input].map((arg) => `'${arg.replace(/'/g, "'\\''")}'`).join(" ")
      const run = yield* Effect.async<{ code: number; screen: string }>((resume) => {
        const child = execFile("script", ["-qec", command, "/dev/null"], { timeout: 30_000 }, (error, stdout) =>
          resume(Effect.succeed({ code: error === null ? 0 : Number(error.code), screen: stdout })))
        return Effect.sync(() => child.kill())
      })
      expect(run.code, run.screen).toBe(65)
      // The terminal turns each \n into \r\n. Each update rewrites the line (\r … erase to the end); the last one
      // ends it, after the three report lines.
      const screen = run.screen.replace(/\r\n/g, "\n")
      // (a progress update may share a screen line with a report: it erases to the end of the line, not the line)
      expect(screen.match(/\{"(id|line)":/g)).toHaveLength(3)
      expect(screen).toMatch(/\r3 done: 2 delivered, 0 deferred, 1 failed, 1 invalid \([0-9]+ messages\/s\)\x1b\[K\n$/)
    }), 60_000)

  it.scopedLive("interrupting batch leaves no open socket", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer({ dataDelayMs: 30_000 })
      const dns = yield* DnsServer.scoped({ zones })
      const input = file("slow.jsonl", Array.from({ length: 50 }, (_, i) =>
        JSON.stringify({ id: `s${i}`, to: [`s${i}@batch.test`], data: "Subject: s\r\n\r\ns\r\n" })).join("\n"))
      const fiber = yield* Effect.fork(
        batch(["--dns", dns.server, "--port", String(server.port), "--concurrency", "5", input])
      )
      // Bounded wait for five deliveries to be waiting on their end-of-data replies.
      for (let i = 0; i < 100 && server.open() < 5; i++) yield* Effect.sleep("50 millis")
      expect(server.open()).toBe(5)
      yield* Fiber.interrupt(fiber)
      expect(yield* Connector.openConnections).toBe(0)
      for (let i = 0; i < 40 && server.open() > 0; i++) yield* Effect.sleep("25 millis")
      expect(server.open()).toBe(0)
    }), 60_000)
})
