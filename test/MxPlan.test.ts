import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Random from "effect/Random"
import * as TestClock from "effect/TestClock"
import * as Dns from "../src/Dns.js"
import * as MxPlan from "../src/MxPlan.js"
import * as TransportError from "../src/TransportError.js"
import { queries } from "./utils/dns.js"
import { failure } from "./utils/exit.js"

const mx = (priority: number, exchange: string): Dns.MxRecord => ({ exchange, priority })
const host = (name: string, preference: number): MxPlan.MxHost => ({ name, preference, implicit: false, literal: false })

const zones: Dns.Zones = {
  "four.test": { mx: [mx(10, "a.four.test"), mx(10, "b.four.test"), mx(20, "c.four.test"), mx(5, "d.four.test")] },
  "null.test": { mx: [mx(0, ".")] },
  "null-node.test": { mx: [mx(0, "")] },
  "null-plus.test": { mx: [mx(10, "mx.null-plus.test"), mx(0, ".")] },
  "dot-late.test": { mx: [mx(10, "."), mx(20, "mx.dot-late.test")] },
  "dot-only.test": { mx: [mx(10, ".")] },
  "nodata.test": { a: ["192.0.2.1"] },
  "empty.test": { mx: [] },
  "servfail.test": { mx: "SERVFAIL", a: ["192.0.2.1"] },
  "slow.test": { mx: [mx(10, "mx.slow.test")], delay: "1 minute" },
  "case.test": { mx: [mx(10, "MX1.Case.TEST."), mx(20, "mx1.case.test"), mx(30, "Mx2.case.test.")] }
}

describe("MxPlan.plan", () => {
  it.effect("10 a, 10 b, 20 c, 5 d with limits.mx = 3: d, then {a, b}, never c", () =>
    Effect.gen(function*() {
      const orders = new Set<string>()
      for (let seed = 0; seed < 40; seed++) {
        const plan = yield* MxPlan.plan("four.test", 3).pipe(Effect.withRandom(Random.make(seed)))
        expect(plan.domain).toBe("four.test")
        expect(plan.records).toEqual(zones["four.test"]!.mx)
        expect(plan.hosts[0]).toEqual(host("d.four.test", 5))
        expect(plan.hosts.slice(1).map((h) => h.preference)).toEqual([10, 10])
        expect(plan.hosts.slice(1).map((h) => h.name).sort()).toEqual(["a.four.test", "b.four.test"])
        expect(plan.dropped).toEqual([host("c.four.test", 20)])
        orders.add(plan.hosts.map((h) => h.name).join(" "))
        // the seed fixes the order
        const again = yield* MxPlan.plan("four.test", 3).pipe(Effect.withRandom(Random.make(seed)))
        expect(again).toEqual(plan)
      }
      expect([...orders].sort()).toEqual([
        "d.four.test a.four.test b.four.test",
        "d.four.test b.four.test a.four.test"
      ])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("the limit counts hosts across groups", () =>
    Effect.gen(function*() {
      const one = yield* MxPlan.plan("four.test", 1)
      expect(one.hosts).toEqual([host("d.four.test", 5)])
      expect(one.dropped.map((h) => h.name).slice(2)).toEqual(["c.four.test"])
      expect(one.dropped.length).toBe(3)
      const all = yield* MxPlan.plan("four.test", 10)
      expect(all.hosts.map((h) => h.preference)).toEqual([5, 10, 10, 20])
      expect(all.dropped).toEqual([])
      // below 1 means 1: a plan always has a host to try
      expect((yield* MxPlan.plan("four.test", 0)).hosts.length).toBe(1)
    }).pipe(Effect.withRandom(Random.make(3)), Effect.provide(Dns.layerTest(zones))))

  it.effect("null MX fails the domain permanently, and nothing else is looked up", () =>
    Effect.gen(function*() {
      for (const domain of ["null.test", "null-node.test", "null-plus.test"]) {
        const error = failure(yield* Effect.exit(MxPlan.plan(domain, 5)))
        expect(error).toEqual(TransportError.make("dns", "dns", MxPlan.nullMxMessage, true))
        expect(error?.message).toBe("domain does not accept mail (null MX, RFC 7505)")
      }
      expect(yield* queries).toEqual([
        { rrtype: "MX", name: "null.test" },
        { rrtype: "MX", name: "null-node.test" },
        { rrtype: "MX", name: "null-plus.test" }
      ])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("a root exchange elsewhere names no host and is skipped", () =>
    Effect.gen(function*() {
      const plan = yield* MxPlan.plan("dot-late.test", 5)
      expect(plan.hosts).toEqual([host("mx.dot-late.test", 20)])
      expect(plan.records).toEqual([mx(10, ""), mx(20, "mx.dot-late.test")])
      const error = failure(yield* Effect.exit(MxPlan.plan("dot-only.test", 5)))
      expect(error).toEqual(TransportError.make("dns", "dns", "dot-only.test: the MX records name no host", true))
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("NXDOMAIN, NODATA or an empty answer give the implicit MX: the domain itself", () =>
    Effect.gen(function*() {
      for (const domain of ["nowhere.test", "nodata.test", "empty.test"]) {
        expect(yield* MxPlan.plan(domain, 5)).toEqual({
          domain,
          records: [],
          hosts: [{ name: domain, preference: 0, implicit: true, literal: false }],
          dropped: [],
          // unsigned zones: the absence of MX records is not authenticated
          secure: false
        })
      }
      expect((yield* queries).map((q) => q.rrtype)).toEqual(["MX", "MX", "MX"])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("secure: whether the resolver validated the MX RRset, or the denial behind an implicit MX", () =>
    Effect.gen(function*() {
      expect((yield* MxPlan.plan("signed.test", 5)).secure).toBe(true)
      expect((yield* MxPlan.plan("signed-none.test", 5)).secure).toBe(true)
      expect((yield* MxPlan.plan("unsigned-none.test", 5)).secure).toBe(false)
      // a bogus MX RRset: no hosts to trust, a temporary failure as a SERVFAIL is
      const bogus = yield* Effect.flip(MxPlan.plan("bogus.test", 5))
      expect([bogus.phase, bogus.kind, bogus.permanent]).toEqual(["dns", "dns", false])
    }).pipe(Effect.provide(Dns.layerTest({
      "signed.test": { mx: [{ exchange: "mx.signed.test", priority: 10 }], dnssec: "secure" },
      "signed-none.test": { a: ["192.0.2.1"], dnssec: "secure" },
      "unsigned-none.test": { a: ["192.0.2.1"] },
      "bogus.test": { mx: [{ exchange: "mx.bogus.test", priority: 10 }], dnssec: "bogus" }
    }))))

  it.effect("SERVFAIL is a temporary failure, with no implicit MX", () =>
    Effect.gen(function*() {
      const error = failure(yield* Effect.exit(MxPlan.plan("servfail.test", 5)))
      expect(error).toEqual(
        TransportError.make("dns", "dns", "MX lookup for servfail.test failed: MX servfail.test: ESERVFAIL", false)
      )
      expect(yield* queries).toEqual([{ rrtype: "MX", name: "servfail.test" }])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("an MX lookup timeout is a temporary failure", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Effect.exit(MxPlan.plan("slow.test", 5)))
      yield* TestClock.adjust("5 seconds")
      const error = failure(yield* Fiber.join(fiber))
      expect(error?.permanent).toBe(false)
      expect(error?.phase).toBe("dns")
      expect(error?.message).toBe("MX lookup for slow.test failed: MX slow.test: no answer within 5s")
    }).pipe(Effect.provide(Dns.layerTest(zones, { timeout: "5 seconds" }))))

  it.effect("address-literal domains skip DNS", () =>
    Effect.gen(function*() {
      expect(yield* MxPlan.plan("[192.0.2.1]", 5)).toEqual({
        domain: "[192.0.2.1]",
        records: [],
        hosts: [{ name: "192.0.2.1", preference: 0, implicit: false, literal: true }],
        dropped: []
      })
      expect(yield* MxPlan.plan("[IPv6:2001:DB8::1]", 5)).toEqual({
        domain: "[ipv6:2001:db8::1]",
        records: [],
        hosts: [{ name: "2001:db8::1", preference: 0, implicit: false, literal: true }],
        dropped: []
      })
      for (const bad of ["[300.1.2.3]", "[IPv6:192.0.2.1]", "[2001:db8::1]", "[mail.test]", "[192.0.2.1"]) {
        const error = failure(yield* Effect.exit(MxPlan.plan(bad, 5)))
        expect(error).toEqual(
          TransportError.make("dns", "dns", `${bad.toLowerCase()}: not a usable address literal`, true)
        )
      }
      expect(yield* queries).toEqual([])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("names are lowercased without trailing dots, and a host listed twice is kept at its best preference", () =>
    Effect.gen(function*() {
      const plan = yield* MxPlan.plan("Case.TEST.", 5)
      expect(plan.domain).toBe("case.test")
      expect(plan.records).toEqual([mx(10, "mx1.case.test"), mx(20, "mx1.case.test"), mx(30, "mx2.case.test")])
      expect(plan.hosts).toEqual([host("mx1.case.test", 10), host("mx2.case.test", 30)])
      expect(yield* queries).toEqual([{ rrtype: "MX", name: "case.test" }])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("an empty domain is refused", () =>
    Effect.gen(function*() {
      const error = failure(yield* Effect.exit(MxPlan.plan(".", 5)))
      expect(error).toEqual(TransportError.make("dns", "dns", "empty recipient domain", true))
    }).pipe(Effect.provide(Dns.layerTest(zones))))
})
