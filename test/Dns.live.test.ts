import { describe, expect, it, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as dgram from "node:dgram"
import * as Dns from "../src/Dns.js"
import * as MxPlan from "../src/MxPlan.js"
import * as TransportError from "../src/TransportError.js"
import { type DnsServer, scoped, start } from "./fixtures/dnsServer.js"
import { reasonOf } from "./utils/dns.js"

const zones: Dns.Zones = {
  "example.test": {
    mx: [{ exchange: "mx1.example.test", priority: 10 }, { exchange: "mx2.example.test", priority: 20 }],
    txt: ["v=spf1 -all", "x".repeat(300)],
    ttl: 120
  },
  "mx1.example.test": { a: ["192.0.2.1", "192.0.2.2"], aaaa: ["2001:db8::1"], ttl: 90 },
  "nullmx.test": { mx: [{ exchange: ".", priority: 0 }] },
  "servfail.test": { rcode: "SERVFAIL" },
  "silent.test": { a: ["192.0.2.3"], delay: Duration.infinity },
  "cancel.test": { a: ["192.0.2.4"], delay: Duration.infinity },
  "cached.test": { a: ["192.0.2.5"], ttl: 60 },
  "slow.test": { a: ["192.0.2.6"], delay: "300 millis" },
  "slow2.test": { a: ["192.0.2.7"], delay: "300 millis" }
}

/** The DNS server the first block's cases share (`layer`): started once for them, closed after the last. */
class Server extends Context.Tag("Dns.live/Server")<Server, DnsServer>() {}

/** The live layer against the shared server. */
const live = (options: Dns.LayerOptions = {}) =>
  Layer.unwrapEffect(
    Effect.map(Server, (server) => Dns.layer({ servers: [server.server], timeout: "2 seconds", ...options }))
  )

const ServerLive = Layer.scoped(Server, scoped({ zones }))

// Live services (real time, `excludeTestServices`): `it.effect` here runs on the real clock, as `it.live` does.
layer(ServerLive, { excludeTestServices: true })("Dns.layer against a real DNS server on 127.0.0.1", (it) => {
  it.effect("answers MX, A (with TTL), AAAA and TXT (character-strings joined)", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      expect(yield* dns.mx("example.test")).toEqual([
        { exchange: "mx1.example.test", priority: 10 },
        { exchange: "mx2.example.test", priority: 20 }
      ])
      expect(yield* dns.answer!("A", "mx1.example.test")).toEqual({ records: ["192.0.2.1", "192.0.2.2"], ttl: 90, secure: false })
      expect(yield* dns.aaaa("mx1.example.test")).toEqual(["2001:db8::1"])
      expect(yield* dns.txt("example.test")).toEqual(["v=spf1 -all", "x".repeat(300)])
    }).pipe(Effect.provide(live({ cache: false }))))

  it.effect("NXDOMAIN → NotFound, NODATA → NoData, SERVFAIL → Temporary", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const nx = yield* Effect.flip(dns.a("nowhere.test"))
      expect(nx).toEqual(
        new Dns.DnsError({ reason: "NotFound", name: "nowhere.test", rrtype: "A", message: "A nowhere.test: no such domain" })
      )
      expect(reasonOf(yield* Effect.exit(dns.mx("mx1.example.test")))).toBe("NoData")
      const servfail = yield* Effect.flip(dns.mx("servfail.test"))
      expect(servfail).toEqual(
        new Dns.DnsError({ reason: "Temporary", name: "servfail.test", rrtype: "MX", message: "MX servfail.test: ESERVFAIL" })
      )
    }).pipe(Effect.provide(live({ cache: false }))))

  it.effect("a server that does not answer: Temporary after the query's timeout", () =>
    Effect.gen(function*() {
      const server = yield* Server
      const dns = yield* Dns.Dns
      const started = Date.now()
      const error = yield* Effect.flip(dns.a("silent.test"))
      const elapsed = Date.now() - started
      expect(error.reason).toBe("Temporary")
      expect(error.name).toBe("silent.test")
      expect(elapsed).toBeGreaterThanOrEqual(250)
      expect(elapsed).toBeLessThan(2000)
      expect(server.count("silent.test", "A")).toBe(1)
    }).pipe(Effect.provide(live({ timeout: "400 millis", tries: 1, cache: false }))))

  it.effect("interruption cancels the query: no retransmission follows, other queries go on", () =>
    Effect.gen(function*() {
      const server = yield* Server
      const dns = yield* Dns.Dns
      // c-ares would retransmit every second (4 s budget / 4 tries) if the query were still alive. A second, not
      // less: on a loaded machine an answer due at 300 ms (slow.test, below) can come later than a shorter interval.
      const fiber = yield* Effect.fork(dns.a("cancel.test"))
      yield* Effect.sleep("150 millis")
      const interruptStarted = Date.now()
      yield* Fiber.interrupt(fiber)
      expect(Date.now() - interruptStarted).toBeLessThan(100)
      yield* Effect.sleep("1500 millis")
      expect(server.count("cancel.test", "A")).toBe(1)
      // the resolver the cancelled query borrowed is reusable
      expect(yield* dns.a("mx1.example.test")).toEqual(["192.0.2.1", "192.0.2.2"])
    }).pipe(Effect.provide(live({ timeout: "4 seconds", tries: 4, cache: false }))))

  it.effect("queries share channels: interrupting one stops it alone, the others in flight still answer, sent once", () =>
    Effect.gen(function*() {
      const server = yield* Server
      const dns = yield* Dns.Dns
      const before = server.count("cancel.test", "A")
      const slowBefore = server.count("slow.test", "A")
      const cancelled = yield* Effect.fork(dns.a("cancel.test"))
      const other = yield* Effect.fork(dns.a("slow.test"))
      yield* Effect.sleep("150 millis")
      yield* Fiber.interrupt(cancelled)
      // answered on the channel it was sent on; that answer, the channel's last, cancels the channel (at 300 ms,
      // before c-ares's retransmission of cancel.test at 1 s)
      expect(yield* Fiber.join(other)).toEqual(["192.0.2.6"])
      expect(server.count("slow.test", "A") - slowBefore).toBe(1)
      yield* Effect.sleep("1500 millis")
      expect(server.count("cancel.test", "A") - before).toBe(1)
    }).pipe(Effect.provide(live({ timeout: "4 seconds", tries: 4, cache: false }))))

  it.effect("a query that times out leaves its channel alone: the others in flight are answered, sent once", () =>
    Effect.gen(function*() {
      const server = yield* Server
      const dns = yield* Dns.Dns
      const silentBefore = server.count("silent.test", "A")
      const slowBefore = server.count("slow2.test", "A")
      const silent = yield* Effect.fork(Effect.flip(dns.a("silent.test")))
      yield* Effect.sleep("800 millis")
      // due at 1.1 s, on the channel of the silent query, which times out at 1 s
      const other = yield* Effect.fork(dns.a("slow2.test"))
      expect((yield* Fiber.join(silent)).reason).toBe("Temporary")
      expect(yield* Fiber.join(other)).toEqual(["192.0.2.7"])
      expect(server.count("slow2.test", "A") - slowBefore).toBe(1)
      expect(server.count("silent.test", "A") - silentBefore).toBe(1)
    }).pipe(Effect.provide(live({ timeout: "1 second", tries: 1, cache: false }))))

  it.effect("the cache is on by default: a second lookup makes no query", () =>
    Effect.gen(function*() {
      const server = yield* Server
      const before = server.count("cached.test", "A")
      const dns = yield* Dns.Dns
      const results = yield* Effect.all(Array.from({ length: 10 }, () => dns.a("cached.test")), {
        concurrency: "unbounded"
      })
      expect(results).toEqual(Array.from({ length: 10 }, () => ["192.0.2.5"]))
      expect(yield* dns.answer!("A", "cached.test")).toMatchObject({ records: ["192.0.2.5"] })
      expect(server.count("cached.test", "A") - before).toBe(1)
    }).pipe(Effect.provide(live())))

  it.effect("the cache: when the caller running a query is interrupted, a waiter runs it again and gets the answer", () =>
    Effect.gen(function*() {
      const server = yield* Server
      const dns = yield* Dns.Dns
      const before = server.count("slow.test", "A")
      const runner = yield* Effect.fork(dns.a("slow.test"))
      yield* Effect.sleep("20 millis")
      const waiter = yield* Effect.fork(dns.answer!("A", "slow.test"))
      yield* Effect.sleep("100 millis")
      yield* Fiber.interrupt(runner)
      expect(yield* Fiber.join(waiter)).toEqual({ records: ["192.0.2.6"], ttl: 300, secure: false })
      expect(server.count("slow.test", "A") - before).toBe(2)
      // the answer the waiter's query got is cached
      expect(yield* dns.a("slow.test")).toEqual(["192.0.2.6"])
      expect(server.count("slow.test", "A") - before).toBe(2)
    }).pipe(Effect.provide(live())))

  it.effect("without the cache every lookup is a query (Node's resolver caches nothing)", () =>
    Effect.gen(function*() {
      const server = yield* Server
      const before = server.count("cached.test", "A")
      const dns = yield* Dns.Dns
      yield* dns.a("cached.test")
      yield* dns.a("cached.test")
      expect(server.count("cached.test", "A") - before).toBe(2)
    }).pipe(Effect.provide(live({ cache: false }))))

  it.effect("MxPlan over the live layer: ordering, and Node's rendering of a null MX", () =>
    Effect.gen(function*() {
      const plan = yield* MxPlan.plan("Example.Test.", 5)
      expect(plan.hosts.map((h) => h.name)).toEqual(["mx1.example.test", "mx2.example.test"])
      const nullMx = yield* Effect.flip(MxPlan.plan("nullmx.test", 5))
      expect(nullMx).toEqual(TransportError.make("dns", "dns", MxPlan.nullMxMessage, true))
      const implicit = yield* MxPlan.plan("nowhere.test", 5)
      expect(implicit.hosts).toEqual([{ name: "nowhere.test", preference: 0, implicit: true, literal: false }])
    }).pipe(Effect.provide(live())))
})

interface Packet {
  readonly port: number
  readonly at: number
  readonly message: Buffer
}

// A UDP server on 127.0.0.1 that never answers: it records each packet's source port and arrival, closed with the
// scope.
const blackHole = Effect.acquireRelease(
  Effect.async<{ readonly server: string; readonly packets: ReadonlyArray<Packet>; readonly socket: dgram.Socket }>(
    (resume) => {
      const socket = dgram.createSocket("udp4")
      const packets: Array<Packet> = []
      socket.on("message", (message, remote) => {
        packets.push({ port: remote.port, at: Date.now(), message })
      })
      socket.bind(0, "127.0.0.1", () => {
        resume(Effect.succeed({ server: `127.0.0.1:${socket.address().port}`, packets, socket }))
      })
    }
  ),
  ({ socket }) =>
    Effect.async<void>((resume) => {
      socket.close(() => resume(Effect.void))
    })
)

// A query's name as its first label's text, enough to tell the test's queries apart.
const asks = (label: string) => (packet: Packet) => packet.message.includes(label)

describe("Dns.layer against a server that never answers", () => {
  it.scopedLive("n lookups that all time out send n × tries packets, from one shared socket, a query's retry from its own", () =>
    Effect.gen(function*() {
      const hole = yield* blackHole
      const n = 30
      const tries = 2
      const exits = yield* Effect.all(
        Array.from({ length: n }, (_, i) => Effect.flatMap(Dns.Dns, (dns) => Effect.exit(dns.a(`q${i}.silent.test`)))),
        { concurrency: "unbounded" }
      ).pipe(Effect.provide(Dns.layer({ servers: [hole.server], timeout: "1 second", tries, cache: false })))
      expect(exits.map(reasonOf)).toEqual(Array.from({ length: n }, () => "Temporary"))
      // wait past the budget for any late send
      yield* Effect.sleep("1500 millis")
      expect(hole.packets.length).toBe(n * tries)
      // queries in flight together share a socket (a fresh one every 100 queries), so 30 come from one port
      expect(new Set(hole.packets.map((p) => p.port)).size).toBe(1)
      for (let i = 0; i < n; i++) {
        const label = Buffer.from(`q${i}`)
        const own = hole.packets.filter((p) => p.message.includes(Buffer.concat([Buffer.from([label.length]), label])))
        expect(own.length).toBe(tries)
        expect(new Set(own.map((p) => p.port)).size).toBe(1)
      }
    }))

  it.scopedLive("an interrupted query sends nothing more; the others in flight (on its socket) go on with their tries", () =>
    Effect.gen(function*() {
      const hole = yield* blackHole
      const dns = yield* Dns.Dns.pipe(
        // sends at 0, 250, 500 and 750 ms
        Effect.provide(Dns.layer({ servers: [hole.server], timeout: "1 second", tries: 4, cache: false }))
      )
      const interrupted = yield* Effect.fork(dns.a("interrupted.test"))
      const other = yield* Effect.fork(Effect.flip(dns.a("other.test")))
      yield* Effect.sleep("100 millis")
      yield* Fiber.interrupt(interrupted)
      expect((yield* Fiber.join(other)).reason).toBe("Temporary")
      yield* Effect.sleep("500 millis")
      expect(hole.packets.filter(asks("interrupted")).length).toBe(1)
      expect(hole.packets.filter(asks("other")).length).toBe(4)
      expect(new Set(hole.packets.map((p) => p.port)).size).toBe(1)
    }))

  it.scopedLive("a socket serves at most 100 queries: the 101st in flight goes out from a fresh port", () =>
    Effect.gen(function*() {
      const hole = yield* blackHole
      const n = 150
      yield* Effect.all(
        Array.from({ length: n }, (_, i) => Effect.flatMap(Dns.Dns, (dns) => Effect.exit(dns.a(`r${i}.silent.test`)))),
        { concurrency: "unbounded" }
      ).pipe(Effect.provide(Dns.layer({ servers: [hole.server], timeout: "300 millis", tries: 1, cache: false })))
      // The hole is in this process: a packet sent is recorded when the event loop delivers it, which on a loaded
      // machine can be after the lookups have timed out. Wait for them (bounded), then count.
      for (let waited = 0; hole.packets.length < n && waited < 2_000; waited += 10) yield* Effect.sleep("10 millis")
      expect(hole.packets.length).toBe(n)
      const ports = hole.packets.map((p) => p.port)
      expect(new Set(ports).size).toBe(2)
      expect(ports.filter((p) => p === ports[0]).length).toBe(100)
    }))
})

describe("dnsServer fixture", () => {
  it.live("an answer due after close() is dropped, not sent (dns2 would crash the process)", () =>
    Effect.gen(function*() {
      const own = yield* Effect.promise(() => start({ zones: { "late.test": { a: ["192.0.2.8"], delay: "150 millis" } } }))
      const fiber = yield* Effect.fork(
        Effect.flatMap(Dns.Dns, (dns) => Effect.exit(dns.a("late.test"))).pipe(
          Effect.provide(Dns.layer({ servers: [own.server], timeout: "600 millis", tries: 1, cache: false }))
        )
      )
      yield* Effect.sleep("50 millis")
      expect(own.queries).toEqual([{ name: "late.test", type: "A", transport: "udp" }])
      yield* Effect.promise(() => own.close())
      expect(reasonOf(yield* Fiber.join(fiber))).toBe("Temporary")
      yield* Effect.sleep("200 millis")
      expect(own.count("late.test")).toBe(1)
    }))
})
