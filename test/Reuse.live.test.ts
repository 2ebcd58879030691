/**
 * Connection reuse and `Transport.deliverAll` over real sockets on loopback: a real DNS server, a counting SMTP
 * server that sees every connection, real time.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Stream } from "effect"
import * as Connector from "../src/Connector.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Transport from "../src/Transport.js"
import { startCountingServer } from "./fixtures/countingServer.js"
import * as DnsServer from "./fixtures/dnsServer.js"

const CONFIG = (extra = "") => `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.tls]
starttls = "disable"
mta-sts = "disable"
[queue.outbound.timeouts]
connect = "2s"
greeting = "2s"
${extra}
`

const requests = (n: number) =>
  Stream.range(1, n).pipe(Stream.map((i) => ({
    id: `m${i}`,
    request: {
      message: `Subject: ${i}\r\n\r\nmessage ${i}\r\n`,
      sender: "s@origin.test",
      recipients: [`r${i}@reuse.test`]
    }
  })))

const deliverAll = (port: number, dns: string, config: string, n: number, concurrency: number, dnsCache = true) =>
  Transport.deliverAll(requests(n), { concurrency }).pipe(
    Stream.runCollect,
    Effect.map((chunk) => Array.from(chunk)),
    Effect.provide(Layer.mergeAll(
      Layer.orDie(OutboundConfig.layerFromText(config)),
      Transport.layer({ dns: dnsCache ? { servers: [dns] } : { servers: [dns], cache: false } })
    )),
    Effect.provideService(Transport.TransportOptions, {
      port,
      ca: undefined,
      domainConcurrency: 8,
      mtaStsPort: 443
    })
  )

const zones = {
  "reuse.test": { mx: [{ exchange: "mx.reuse.test", priority: 10 }] },
  "mx.reuse.test": { a: ["127.0.0.1"] }
}

const delivered = (outcomes: ReadonlyArray<Transport.Outcome<string>>) =>
  outcomes.filter((o) => Either.isRight(o.report) && o.report.right.recipients[0]!.status === "delivered").length

describe("connection reuse (live)", () => {
  it.scopedLive("50 messages to one domain, one at a time: 5 connections of reuse.messages = 10", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer()
      const dns = yield* DnsServer.scoped({ zones })
      const outcomes = yield* deliverAll(server.port, dns.server, CONFIG("[queue.outbound.reuse]\nmessages = 10"), 50, 1)
      expect(delivered(outcomes)).toBe(50)
      expect(server.connections()).toBe(5)
      expect(server.perConnection()).toEqual([10, 10, 10, 10, 10])
      expect(Array.from(server.messages().values()).every((n) => n === 1)).toBe(true)
      // Attempts name their connection: ten messages per id.
      const ids = new Map<string, number>()
      for (const o of outcomes) {
        const id = Either.getOrThrow(o.report).attempts[0]!.connection!
        ids.set(id, (ids.get(id) ?? 0) + 1)
      }
      expect(Array.from(ids.values())).toEqual([10, 10, 10, 10, 10])
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scopedLive("DNS: the layer's caches look a domain up once; with the resolver cache off, every message does", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer()
      const dns = yield* DnsServer.scoped({ zones })
      expect(delivered(yield* deliverAll(server.port, dns.server, CONFIG(), 5, 1))).toBe(5)
      expect([dns.count("reuse.test", "MX"), dns.count("mx.reuse.test", "A")]).toEqual([1, 1])
      // `cache: false`: no plan cache either (it would keep the plan for the answers' TTL).
      expect(delivered(yield* deliverAll(server.port, dns.server, CONFIG(), 5, 1, false))).toBe(5)
      expect([dns.count("reuse.test", "MX"), dns.count("mx.reuse.test", "A")]).toEqual([6, 6])
    }))

  it.scopedLive("50 messages, 5 at a time: no more connections open than deliveries running, every message once", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer({ dataDelayMs: 5 })
      const dns = yield* DnsServer.scoped({ zones })
      const outcomes = yield* deliverAll(server.port, dns.server, CONFIG(), 50, 5)
      expect(delivered(outcomes)).toBe(50)
      expect(server.maxOpen()).toBeLessThanOrEqual(5)
      expect(server.connections()).toBeLessThanOrEqual(10)
      expect(server.messages().size).toBe(50)
      expect(Array.from(server.messages().values()).every((n) => n === 1)).toBe(true)
    }))

  it.scopedLive("a server closing idle connections while one layer delivers: nothing lost, nothing twice", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer({ closeAfterFirst: true })
      const dns = yield* DnsServer.scoped({ zones })
      const outcomes = yield* Transport.deliverAll(
        requests(20).pipe(Stream.tap(() => Effect.sleep("40 millis"))),
        { concurrency: 1 }
      ).pipe(
        Stream.runCollect,
        Effect.map((chunk) => Array.from(chunk)),
        Effect.provide(Layer.mergeAll(
          Layer.orDie(OutboundConfig.layerFromText(CONFIG())),
          Transport.layer({ dns: { servers: [dns.server] } })
        )),
        Effect.provideService(Transport.TransportOptions, {
          port: server.port,
          ca: undefined,
          domainConcurrency: 8,
          mtaStsPort: 443
        })
      )
      expect(delivered(outcomes)).toBe(20)
      expect(server.messages().size).toBe(20)
      expect(Array.from(server.messages().values()).every((n) => n === 1)).toBe(true)
      // Each later message first met the closed idle connection, then went over a new one.
      const reusedFailures = outcomes.flatMap((o) => Either.getOrThrow(o.report).attempts).filter((a) => a.reused)
      expect(reusedFailures.length).toBeGreaterThan(0)
      expect(reusedFailures.every((a) => a.outcome === "failed" && a.error?.kind === "reset")).toBe(true)
    }))

  it.scopedLive("421 at the second MAIL: every message delivered once", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer({ refuseSecondMail: true })
      const dns = yield* DnsServer.scoped({ zones })
      const outcomes = yield* deliverAll(server.port, dns.server, CONFIG(), 10, 1)
      expect(delivered(outcomes)).toBe(10)
      expect(server.messages().size).toBe(10)
      expect(Array.from(server.messages().values()).every((n) => n === 1)).toBe(true)
      expect(server.perConnection().every((n) => n === 1)).toBe(true)
      const refused = outcomes.flatMap((o) => Either.getOrThrow(o.report).attempts).filter((a) => a.reused)
      expect(refused.map((a) => a.error?.code)).toEqual(Array(9).fill(421))
    }))

  it.scopedLive("concurrency = 1 on remote_ip, two messages at once: one connection, two transactions", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer({ dataDelayMs: 20 })
      const dns = yield* DnsServer.scoped({ zones })
      const config = CONFIG(`[queue.limiter.outbound.per-ip]\nkey = ["remote_ip"]\nconcurrency = 1`)
      const outcomes = yield* deliverAll(server.port, dns.server, config, 2, 2)
      expect(delivered(outcomes)).toBe(2)
      // The second waited for the address's permit and took the connection the first gave back.
      expect(server.connections()).toBe(1)
      expect(server.perConnection()).toEqual([2])
      const attempts = outcomes.map((o) => Either.getOrThrow(o.report).attempts)
      expect(attempts.map((a) => a.length)).toEqual([1, 1])
      expect(attempts.map((a) => a[0]!.reused).sort()).toEqual([false, true])
      expect(attempts[0]![0]!.connection).toBe(attempts[1]![0]!.connection)
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scopedLive("a concurrency = 2 limiter on mx: the server never sees a third connection", () =>
    Effect.gen(function*() {
      const server = yield* startCountingServer({ dataDelayMs: 20 })
      const dns = yield* DnsServer.scoped({ zones })
      const config = CONFIG(`[queue.limiter.outbound.mx]\nkey = ["mx"]\nconcurrency = 2`)
      const outcomes = yield* deliverAll(server.port, dns.server, config, 30, 10)
      expect(delivered(outcomes)).toBe(30)
      expect(server.maxOpen()).toBe(2)
      expect(server.connections()).toBe(2)
      expect(Array.from(server.messages().values()).every((n) => n === 1)).toBe(true)
    }))
})
