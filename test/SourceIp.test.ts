import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import * as SourceIp from "../src/SourceIp.js"

const lists = {
  v4: ["192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13"],
  v6: ["2001:db8::10", "2001:db8::11"]
}

describe("SourceIp.pick", () => {
  it.effect("picks from the list of the remote address's family", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 50; i++) {
        expect(lists.v4).toContain(yield* SourceIp.pick("198.51.100.1", lists))
        expect(lists.v6).toContain(yield* SourceIp.pick("2001:db8:ffff::1", lists))
        // an IPv4-mapped address is an IPv6 destination to the socket
        expect(lists.v6).toContain(yield* SourceIp.pick("::ffff:198.51.100.1", lists))
      }
    }).pipe(Effect.withRandom(Random.make(7))))

  it.effect("is null when the family's list is empty: no bind, no fallback to the other family", () =>
    Effect.gen(function*() {
      expect(yield* SourceIp.pick("198.51.100.1", { v4: [], v6: ["2001:db8::10"] })).toBeNull()
      expect(yield* SourceIp.pick("2001:db8::1", { v4: ["192.0.2.10"], v6: [] })).toBeNull()
      expect(yield* SourceIp.pick("not-an-ip", lists)).toBeNull()
      expect(yield* SourceIp.pick("198.51.100.1", { v4: ["192.0.2.99"], v6: [] })).toBe("192.0.2.99")
    }).pipe(Effect.withRandom(Random.make(1))))

  it.effect("is uniform over 10,000 picks (chi-square, 3 degrees of freedom, p = 0.001)", () =>
    Effect.gen(function*() {
      const counts = new Map<string, number>(lists.v4.map((ip) => [ip, 0]))
      for (let i = 0; i < 10_000; i++) {
        const ip = (yield* SourceIp.pick("198.51.100.1", lists))!
        counts.set(ip, counts.get(ip)! + 1)
      }
      const expected = 10_000 / lists.v4.length
      const chiSquare = [...counts.values()].reduce((sum, n) => sum + (n - expected) ** 2 / expected, 0)
      expect([...counts.keys()]).toEqual(lists.v4)
      expect(chiSquare).toBeLessThan(16.266)
      // and not suspiciously perfect either (p = 0.999 lower tail)
      expect(chiSquare).toBeGreaterThan(0.0243)
    }).pipe(Effect.withRandom(Random.make("source-ip-uniformity"))))

  it.effect("the seed fixes the sequence", () =>
    Effect.gen(function*() {
      const run = Effect.all(Array.from({ length: 20 }, () => SourceIp.pick("198.51.100.1", lists)))
      const a = yield* run.pipe(Effect.withRandom(Random.make(99)))
      const b = yield* run.pipe(Effect.withRandom(Random.make(99)))
      expect(a).toEqual(b)
      expect(new Set(a).size).toBeGreaterThan(1)
    }))

  it("family", () => {
    expect(SourceIp.family("192.0.2.1")).toBe(4)
    expect(SourceIp.family("2001:db8::1")).toBe(6)
    expect(SourceIp.family("example.test")).toBeNull()
  })
})
