import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import * as Dns from "../src/Dns.js"
import * as dnsName from "../src/internal/dnsName.js"
import { Lru } from "../src/internal/lru.js"
import { queries, reasonOf } from "./utils/dns.js"

const zones: Dns.Zones = {
  "example.test": {
    mx: [{ exchange: "mx1.example.test", priority: 10 }, { exchange: "mx2.example.test", priority: 20 }],
    txt: ["v=spf1 -all"]
  },
  "MX1.Example.Test.": { a: ["192.0.2.1", "192.0.2.2"], aaaa: ["2001:db8::1"], ttl: 60 },
  "nodata.test": { a: "NODATA", aaaa: [] },
  "broken.test": { mx: "SERVFAIL", a: "NXDOMAIN" },
  "down.test": { rcode: "SERVFAIL", a: ["192.0.2.9"] },
  "gone.test": { rcode: "NXDOMAIN", a: ["192.0.2.9"] },
  "slow.test": { a: ["192.0.2.3"], delay: "10 seconds", ttl: 30 },
  "never.test": { a: ["192.0.2.4"], delay: Duration.infinity }
}

describe("Dns.layerTest", () => {
  it.effect("answers records, NXDOMAIN, NODATA and SERVFAIL from the zones", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      expect(yield* dns.mx("example.test")).toEqual([
        { exchange: "mx1.example.test", priority: 10 },
        { exchange: "mx2.example.test", priority: 20 }
      ])
      expect(yield* dns.a("mx1.example.test")).toEqual(["192.0.2.1", "192.0.2.2"])
      expect(yield* dns.aaaa("MX1.EXAMPLE.TEST.")).toEqual(["2001:db8::1"])
      expect(yield* dns.txt("example.test")).toEqual(["v=spf1 -all"])
      expect(yield* dns.aaaa("nodata.test")).toEqual([])
      const error = yield* Effect.flip(dns.a("nowhere.test"))
      expect(error).toEqual(
        new Dns.DnsError({ reason: "NotFound", name: "nowhere.test", rrtype: "A", message: "A nowhere.test: no such domain" })
      )
      expect(reasonOf(yield* Effect.exit(dns.mx("mx1.example.test")))).toBe("NoData")
      expect(reasonOf(yield* Effect.exit(dns.a("nodata.test")))).toBe("NoData")
      expect(reasonOf(yield* Effect.exit(dns.mx("broken.test")))).toBe("Temporary")
      expect(reasonOf(yield* Effect.exit(dns.a("broken.test")))).toBe("NotFound")
      expect(reasonOf(yield* Effect.exit(dns.a("down.test")))).toBe("Temporary")
      expect(reasonOf(yield* Effect.exit(dns.a("gone.test")))).toBe("NotFound")
      expect(yield* queries).toEqual([
        { rrtype: "MX", name: "example.test" },
        { rrtype: "A", name: "mx1.example.test" },
        { rrtype: "AAAA", name: "mx1.example.test" },
        { rrtype: "TXT", name: "example.test" },
        { rrtype: "AAAA", name: "nodata.test" },
        { rrtype: "A", name: "nowhere.test" },
        { rrtype: "MX", name: "mx1.example.test" },
        { rrtype: "A", name: "nodata.test" },
        { rrtype: "MX", name: "broken.test" },
        { rrtype: "A", name: "broken.test" },
        { rrtype: "A", name: "down.test" },
        { rrtype: "A", name: "gone.test" }
      ])
      yield* Effect.flatMap(Dns.TestDns, (t) => t.reset)
      expect(yield* queries).toEqual([])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("answer() carries the zone's TTL, or null without one", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      expect(yield* dns.answer!("A", "mx1.example.test")).toEqual({ records: ["192.0.2.1", "192.0.2.2"], ttl: 60, secure: false })
      expect(yield* dns.answer!("MX", "example.test")).toEqual({
        records: [{ exchange: "mx1.example.test", priority: 10 }, { exchange: "mx2.example.test", priority: 20 }],
        ttl: null,
        secure: false
      })
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("a per-name delay runs on the TestClock", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const fiber = yield* Effect.fork(dns.a("slow.test"))
      yield* TestClock.adjust("9999 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      expect(yield* queries).toEqual([{ rrtype: "A", name: "slow.test" }])
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(fiber)).toEqual(["192.0.2.3"])
    }).pipe(Effect.provide(Dns.layerTest(zones))))
})

describe("Dns timeout", () => {
  it.effect("a slow resolver is cut by its timeout on virtual time", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const fiber = yield* Effect.fork(Effect.exit(dns.a("slow.test")))
      yield* TestClock.adjust("4999 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("1 millis")
      const exit = yield* Fiber.join(fiber)
      expect(exit).toEqual(
        Exit.fail(
          new Dns.DnsError({ reason: "Temporary", name: "slow.test", rrtype: "A", message: "A slow.test: no answer within 5s" })
        )
      )
      // a fast name is unaffected
      expect(yield* dns.a("mx1.example.test")).toEqual(["192.0.2.1", "192.0.2.2"])
    }).pipe(Effect.provide(Dns.layerTest(zones, { timeout: "5 seconds" }))))

  it.effect("withTimeout wraps any Dns, and a never-answering name times out", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const fiber = yield* Effect.fork(Effect.exit(dns.a("never.test")))
      yield* TestClock.adjust("2 seconds")
      expect(reasonOf(yield* Fiber.join(fiber))).toBe("Temporary")
    }).pipe(Effect.provide(Dns.withTimeout("2 seconds").pipe(Layer.provide(Dns.layerTest(zones))))))
})

describe("Dns cache", () => {
  const cachedZones = Dns.layerTest(zones, { cache: {} })

  it.effect("serves an answer without a query until its TTL passes on virtual time", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      expect(yield* dns.answer!("A", "mx1.example.test")).toEqual({ records: ["192.0.2.1", "192.0.2.2"], ttl: 60, secure: false })
      yield* TestClock.adjust("30 seconds")
      // the remaining TTL is handed on
      expect(yield* dns.answer!("A", "MX1.example.test.")).toEqual({ records: ["192.0.2.1", "192.0.2.2"], ttl: 30, secure: false })
      yield* TestClock.adjust("29999 millis")
      expect(yield* dns.a("mx1.example.test")).toEqual(["192.0.2.1", "192.0.2.2"])
      expect((yield* queries).length).toBe(1)
      yield* TestClock.adjust("1 millis")
      expect(yield* dns.a("mx1.example.test")).toEqual(["192.0.2.1", "192.0.2.2"])
      expect(yield* queries).toEqual([{ rrtype: "A", name: "mx1.example.test" }, { rrtype: "A", name: "mx1.example.test" }])
      // each type is its own entry
      yield* dns.aaaa("mx1.example.test")
      expect((yield* queries).length).toBe(3)
    }).pipe(Effect.provide(cachedZones)))

  it.effect("answers without a TTL (MX, TXT) are kept for the default 5 minutes", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      yield* dns.mx("example.test")
      yield* TestClock.adjust("299 seconds")
      yield* dns.mx("example.test")
      expect((yield* queries).length).toBe(1)
      yield* TestClock.adjust("1 second")
      yield* dns.mx("example.test")
      expect((yield* queries).length).toBe(2)
    }).pipe(Effect.provide(cachedZones)))

  it.effect("TTLs are capped by maxTtl", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      yield* dns.a("long.test")
      yield* TestClock.adjust("9 seconds")
      yield* dns.a("long.test")
      expect((yield* queries).length).toBe(1)
      yield* TestClock.adjust("1 second")
      yield* dns.a("long.test")
      expect((yield* queries).length).toBe(2)
    }).pipe(
      Effect.provide(Dns.layerTest({ "long.test": { a: ["192.0.2.5"], ttl: 86400 } }, { cache: { maxTtl: "10 seconds" } }))
    ))

  it.effect("ten concurrent lookups of one name make one query", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const fiber = yield* Effect.fork(Effect.all(Array.from({ length: 10 }, () => dns.a("slow.test")), {
        concurrency: "unbounded"
      }))
      yield* TestClock.adjust("10 seconds")
      const results = yield* Fiber.join(fiber)
      expect(results).toEqual(Array.from({ length: 10 }, () => ["192.0.2.3"]))
      expect(yield* queries).toEqual([{ rrtype: "A", name: "slow.test" }])
    }).pipe(Effect.provide(cachedZones)))

  it.effect("NXDOMAIN and NODATA are cached for the negative TTL; SERVFAIL is not cached", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const lookups = Effect.all([
        Effect.exit(dns.a("nowhere.test")),
        Effect.exit(dns.mx("mx1.example.test")),
        Effect.exit(dns.a("down.test"))
      ])
      expect((yield* lookups).map(reasonOf)).toEqual(["NotFound", "NoData", "Temporary"])
      yield* TestClock.adjust("59 seconds")
      expect((yield* lookups).map(reasonOf)).toEqual(["NotFound", "NoData", "Temporary"])
      expect(yield* queries).toEqual([
        { rrtype: "A", name: "nowhere.test" },
        { rrtype: "MX", name: "mx1.example.test" },
        { rrtype: "A", name: "down.test" },
        { rrtype: "A", name: "down.test" }
      ])
      yield* TestClock.adjust("1 second")
      yield* lookups
      expect((yield* queries).length).toBe(7)
    }).pipe(Effect.provide(cachedZones)))

  it.effect("the negative TTL is configurable", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      yield* Effect.exit(dns.a("nowhere.test"))
      yield* TestClock.adjust("9 seconds")
      yield* Effect.exit(dns.a("nowhere.test"))
      expect((yield* queries).length).toBe(1)
      yield* TestClock.adjust("1 second")
      yield* Effect.exit(dns.a("nowhere.test"))
      expect((yield* queries).length).toBe(2)
    }).pipe(Effect.provide(Dns.layerTest(zones, { cache: { negativeTtl: "10 seconds" } }))))

  it.effect("concurrent lookups share a temporary failure, which a later lookup retries", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const fiber = yield* Effect.fork(
        Effect.all(Array.from({ length: 3 }, () => Effect.exit(dns.a("slowfail.test"))), { concurrency: "unbounded" })
      )
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(fiber)).map(reasonOf)).toEqual(["Temporary", "Temporary", "Temporary"])
      expect((yield* queries).length).toBe(1)
      const again = yield* Effect.fork(Effect.exit(dns.a("slowfail.test")))
      yield* TestClock.adjust("1 second")
      expect(reasonOf(yield* Fiber.join(again))).toBe("Temporary")
      expect((yield* queries).length).toBe(2)
    }).pipe(
      Effect.provide(Dns.layerTest({ "slowfail.test": { a: "SERVFAIL", delay: "1 second" } }, { cache: {} }))
    ))

  it.effect("an interrupted waiter leaves the query running for the others", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const first = yield* Effect.fork(dns.a("slow.test"))
      const second = yield* Effect.fork(dns.a("slow.test"))
      yield* TestClock.adjust("5 seconds")
      yield* Fiber.interrupt(second)
      yield* TestClock.adjust("5 seconds")
      expect(yield* Fiber.join(first)).toEqual(["192.0.2.3"])
      expect(yield* queries).toEqual([{ rrtype: "A", name: "slow.test" }])
    }).pipe(Effect.provide(cachedZones)))

  it.effect("an interrupted first caller hands over: a waiter runs the query again and gets its answer", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const first = yield* Effect.fork(dns.a("slow.test"))
      const second = yield* Effect.fork(dns.a("slow.test"))
      const third = yield* Effect.fork(dns.a("slow.test"))
      yield* TestClock.adjust("5 seconds")
      yield* Fiber.interrupt(first)
      // the query went with its runner; the two waiters share one new query, started now
      yield* TestClock.adjust("9999 millis")
      expect(Option.isNone(yield* Fiber.poll(second))).toBe(true)
      yield* TestClock.adjust("1 millis")
      expect(yield* Fiber.join(second)).toEqual(["192.0.2.3"])
      expect(yield* Fiber.join(third)).toEqual(["192.0.2.3"])
      expect(yield* queries).toEqual([{ rrtype: "A", name: "slow.test" }, { rrtype: "A", name: "slow.test" }])
      // and the answer is cached
      expect(yield* dns.a("slow.test")).toEqual(["192.0.2.3"])
      expect((yield* queries).length).toBe(2)

      // nobody waits: the query is abandoned and the next lookup starts afresh
      const lone = yield* Effect.fork(dns.a("never.test"))
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(lone)
      const next = yield* Effect.fork(dns.a("never.test"))
      yield* TestClock.adjust("1 second")
      expect(Option.isNone(yield* Fiber.poll(next))).toBe(true)
      expect((yield* queries).slice(2)).toEqual([{ rrtype: "A", name: "never.test" }, { rrtype: "A", name: "never.test" }])
      yield* Fiber.interrupt(next)
    }).pipe(Effect.provide(cachedZones)))

  it.effect("the underlying query is interrupted with the caller running it, never with a waiter", () =>
    Effect.gen(function*() {
      let started = 0
      let interrupted = 0
      const hanging: Dns.Dns.Service = {
        mx: () => Effect.succeed([]),
        a: () =>
          Effect.sync(() => {
            started += 1
          }).pipe(
            Effect.zipRight(Effect.never),
            Effect.onInterrupt(() =>
              Effect.sync(() => {
                interrupted += 1
              })
            )
          ),
        aaaa: () => Effect.succeed([]),
        txt: () => Effect.succeed([])
      }
      yield* Effect.gen(function*() {
        const dns = yield* Dns.Dns
        const one = yield* Effect.fork(dns.a("hang.test"))
        const two = yield* Effect.fork(dns.a("hang.test"))
        const three = yield* Effect.fork(dns.a("hang.test"))
        yield* TestClock.adjust("1 second")
        expect(started).toBe(1)
        yield* Fiber.interrupt(three) // a waiter
        expect(interrupted).toBe(0)
        yield* Fiber.interrupt(one) // the runner: its query goes, and the waiter left runs it again
        yield* TestClock.adjust("1 second")
        expect(interrupted).toBe(1)
        expect(started).toBe(2)
        yield* Fiber.interrupt(two)
        expect(interrupted).toBe(2)
        // no fiber keeps a query alive in the background
        yield* TestClock.adjust("1 second")
        expect(started).toBe(2)
      }).pipe(Effect.provide(Dns.cached().pipe(Layer.provide(Layer.succeed(Dns.Dns, hanging)))))
    }))

  it.effect("the cache is bounded: the least recently used entry goes first", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      yield* dns.a("a.test")
      yield* dns.a("b.test")
      yield* dns.a("a.test") // hit: a is now the most recent
      yield* dns.a("c.test") // evicts b
      expect((yield* queries).map((q) => q.name)).toEqual(["a.test", "b.test", "c.test"])
      yield* dns.a("a.test")
      yield* dns.a("b.test")
      expect((yield* queries).map((q) => q.name)).toEqual(["a.test", "b.test", "c.test", "b.test"])
    }).pipe(
      Effect.provide(
        Dns.layerTest({ "a.test": { a: ["192.0.2.1"] }, "b.test": { a: ["192.0.2.2"] }, "c.test": { a: ["192.0.2.3"] } }, {
          cache: { maxEntries: 2 }
        })
      )
    ))

  it.effect("Dns.cached works over a hand-written Dns without TTLs", () =>
    Effect.gen(function*() {
      let calls = 0
      const plain: Dns.Dns.Service = {
        mx: () => Effect.succeed([]),
        a: (host) =>
          Effect.sync(() => {
            calls += 1
            return [host === "x.test" ? "192.0.2.7" : "192.0.2.8"]
          }),
        aaaa: () => Effect.succeed([]),
        txt: () => Effect.succeed([])
      }
      const program = Effect.gen(function*() {
        const dns = yield* Dns.Dns
        expect(yield* dns.a("x.test")).toEqual(["192.0.2.7"])
        expect(yield* dns.answer!("A", "x.test")).toEqual({ records: ["192.0.2.7"], ttl: 60, secure: false })
        expect(calls).toBe(1)
        yield* TestClock.adjust("60 seconds")
        expect(yield* dns.a("x.test")).toEqual(["192.0.2.7"])
        expect(calls).toBe(2)
      })
      yield* program.pipe(
        Effect.provide(Dns.cached({ defaultTtl: "60 seconds" }).pipe(Layer.provide(Layer.succeed(Dns.Dns, plain))))
      )
    }))
})

describe("internal/lru (the one LRU: resolver cache and MTA-STS policy store)", () => {
  it("evicts the least recently used key beyond its capacity; get and set both count as a use", () => {
    const lru = new Lru<string, number>(2)
    lru.set("a", 1)
    lru.set("b", 2)
    expect(lru.get("a")).toBe(1) // a is now the most recent
    lru.set("c", 3) // evicts b
    expect([...lru.keys()]).toEqual(["a", "c"])
    expect(lru.get("b")).toBeUndefined()
    lru.set("a", 10) // an update is a use too
    lru.set("d", 4) // evicts c
    expect([...lru.keys()]).toEqual(["a", "d"])
    expect(lru.get("a")).toBe(10)
    lru.delete("a")
    expect(lru.size).toBe(1)
  })

  it("capacity 0 keeps nothing", () => {
    const lru = new Lru<string, number>(0)
    lru.set("a", 1)
    expect(lru.get("a")).toBeUndefined()
    expect(lru.size).toBe(0)
  })

  it.effect("maxEntries 0 turns the resolver cache's storage off but still coalesces", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      const fiber = yield* Effect.fork(Effect.all([dns.a("slow.test"), dns.a("slow.test")], { concurrency: 2 }))
      yield* TestClock.adjust("10 seconds")
      yield* Fiber.join(fiber)
      expect((yield* queries).length).toBe(1)
      yield* dns.a("mx1.example.test")
      yield* dns.a("mx1.example.test")
      expect((yield* queries).length).toBe(3)
    }).pipe(Effect.provide(Dns.layerTest(zones, { cache: { maxEntries: 0 } }))))
})

describe("internal/dnsName (the one host-name validator)", () => {
  it("hostnameProblem: RFC 1123 host names, with the reason when not one", () => {
    expect(dnsName.hostnameProblem("mx1.example.org")).toBeNull()
    expect(dnsName.hostnameProblem("MX-1.Example.ORG")).toBeNull()
    expect(dnsName.hostnameProblem("localhost")).toBeNull()
    expect(dnsName.hostnameProblem(`${"a".repeat(63)}.test`)).toBeNull()
    expect(dnsName.hostnameProblem("")).toBe("it is empty")
    expect(dnsName.hostnameProblem("mx.example.org\r\nQUIT")).toBe("it contains CR, LF or NUL")
    expect(dnsName.hostnameProblem("mx example.org")).toBe("it contains white space")
    expect(dnsName.hostnameProblem(`${"a.".repeat(128)}a`)).toBe("it is longer than 255 characters")
    expect(dnsName.hostnameProblem("mx_1.example.org")).toBe("it contains the character \"_\"")
    expect(dnsName.hostnameProblem("bücher.example")).toBe("it contains the character \"ü\"")
    expect(dnsName.hostnameProblem("mx.example.org.")).toBe("it has an empty label (leading, trailing or double dot)")
    expect(dnsName.hostnameProblem("mx..example.org")).toBe("it has an empty label (leading, trailing or double dot)")
    expect(dnsName.hostnameProblem(`${"a".repeat(64)}.test`)).toBe(
      `its label "${"a".repeat(20)}…" is longer than 63 characters`
    )
    expect(dnsName.hostnameProblem("-mx.example.org")).toBe("its label \"-mx\" starts or ends with a hyphen")
  })

  it("isHostname accepts one trailing dot (a fully qualified name); toAscii gives the A-label form", () => {
    expect(dnsName.isHostname("mx.example.org.")).toBe(true)
    expect(dnsName.isHostname("mx.example.org..")).toBe(false)
    expect(dnsName.isHostname("[192.0.2.1]")).toBe(false)
    expect(dnsName.toAscii("Bücher.Example")).toBe("xn--bcher-kva.example")
    expect(dnsName.toAscii("a b.example")).toBeNull()
  })

  it("addressLiteral: IPv4 and IPv6 literals, null for a bracketed text that is neither, undefined for a name", () => {
    expect(dnsName.addressLiteral("[192.0.2.1]")).toBe("192.0.2.1")
    expect(dnsName.addressLiteral("[IPv6:2001:DB8::1]")).toBe("2001:db8::1")
    expect(dnsName.addressLiteral("[2001:db8::1]")).toBeNull()
    expect(dnsName.addressLiteral("[IPv6:192.0.2.1]")).toBeNull()
    expect(dnsName.addressLiteral("[192.0.2.1")).toBeNull()
    expect(dnsName.addressLiteral("example.org")).toBeUndefined()
  })
})
