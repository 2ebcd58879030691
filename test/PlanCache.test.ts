/**
 * The plan cache on virtual time: consecutive deliveries to a domain skip the MX and address lookups while the
 * answers' TTL lasts and make them again after it; behind a resolver cache the queries are exactly those made
 * without a plan cache; what depends on Random (a shuffled MX group), an answer without a TTL and a configuration's
 * limits are never taken from it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, TestClock } from "effect"
import * as ConnectionPool from "../src/ConnectionPool.js"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script, type Step } from "../src/ConnectorTest.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PlanCache from "../src/PlanCache.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as Transport from "../src/Transport.js"
import { recorder } from "./fixtures/tracer.js"

const IP = "192.0.2.1"
const IP2 = "192.0.2.2"

const config = () => `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.tls]
starttls = "disable"
mta-sts = "disable"
[queue.outbound.reuse]
idle = "1h"
age = "1h"
`

const opening: ReadonlyArray<Step> = [
  Script.reply("220 mx.a.test ESMTP"),
  Script.expect("EHLO client.test"),
  Script.reply("250-mx.a.test", "250 8BITMIME")
]
const transaction: ReadonlyArray<Step> = [
  Script.expect(/^MAIL FROM:<s@origin\.test>/),
  Script.reply("250 ok"),
  Script.expect(/^RCPT TO:</),
  Script.reply("250 ok"),
  Script.expect("DATA"),
  Script.reply("354 go"),
  Script.expectData,
  Script.reply("250 queued")
]
/** One connection per address carrying `n` transactions (the pool keeps it between deliveries). */
const peers = (n: number, ...ips: ReadonlyArray<string>): ConnectorTest.TestPeers =>
  Object.fromEntries(ips.map((ip) => [ip, [{ script: [...opening, ...Array.from({ length: n }, () => transaction).flat()] }]]))

const layers = (
  options: {
    readonly zones: Dns.Zones
    readonly peers: ConnectorTest.TestPeers
    readonly config?: string
    readonly dnsCache?: boolean | Dns.CacheOptions
    readonly plans?: boolean
  }
) =>
  Layer.mergeAll(
    ConnectionPool.layer,
    Layer.orDie(OutboundConfig.layerFromText(options.config ?? config())),
    Dns.layerTest(
      options.zones,
      options.dnsCache === true ? { cache: {} } : options.dnsCache ? { cache: options.dnsCache } : {}
    ),
    ConnectorTest.layer(options.peers),
    PolicyCache.layer,
    MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" })),
    options.plans === false ? Layer.empty : PlanCache.layer
  )

const zones = (ttl: number | undefined): Dns.Zones => ({
  "a.test": { mx: [{ exchange: "mx.a.test", priority: 10 }], ...(ttl === undefined ? {} : { ttl }) },
  "mx.a.test": { a: [IP], ...(ttl === undefined ? {} : { ttl }) }
})

const request: Transport.DeliveryRequest = {
  message: "Subject: hi\r\n\r\nhello\r\n",
  sender: "s@origin.test",
  recipients: ["r@a.test"]
}

/** The queries made since the last call, as `TYPE name` lines. */
const queriesSince = Effect.flatMap(Dns.TestDns, (t) =>
  Effect.map(Effect.zipLeft(t.queries, t.reset), (qs) => qs.map((q) => `${q.rrtype} ${q.name}`)))

const delivered = Effect.map(Transport.deliver(request), (report) => {
  expect(report.recipients[0]!.status).toBe("delivered")
  return report
})

describe("PlanCache", () => {
  it.effect("keeps a domain's plan and its host's addresses for the answers' TTL, less a second", () =>
    Effect.gen(function*() {
      yield* delivered
      expect(yield* queriesSince).toEqual(["MX a.test", "A mx.a.test"])
      yield* delivered
      yield* TestClock.adjust(Duration.millis(58_999))
      const report = yield* delivered
      expect(yield* queriesSince).toEqual([])
      // The report is the one the lookups give.
      expect(report.plan.domains[0]!.mx).toEqual([{ exchange: "mx.a.test", priority: 10 }])
      expect(report.plan.domains[0]!.hosts.map((h) => [h.host, h.addresses])).toEqual([["mx.a.test", [IP]]])
      yield* TestClock.adjust(Duration.millis(1))
      yield* delivered
      expect(yield* queriesSince).toEqual(["MX a.test", "A mx.a.test"])
      yield* delivered
      expect(yield* queriesSince).toEqual([])
    }).pipe(Effect.provide(layers({ zones: zones(60), peers: peers(5, IP) }))))

  it.effect("behind a resolver cache, makes exactly the queries made without it", () =>
    Effect.gen(function*() {
      const run = (plans: boolean) =>
        Effect.gen(function*() {
          const log: Array<ReadonlyArray<string>> = []
          for (const ms of [0, 30_000, 29_500, 500, 1_000, 60_000]) {
            yield* TestClock.adjust(Duration.millis(ms))
            yield* delivered
            log.push(yield* queriesSince)
          }
          return log
        }).pipe(Effect.provide(layers({ zones: zones(60), peers: peers(6, IP), dnsCache: true, plans })))
      const without = yield* run(false)
      expect(yield* run(true)).toEqual(without)
      expect(without.filter((qs) => qs.length > 0)).toHaveLength(3)
    }))

  it.effect("behind a resolver cache whose maxTtl is below the zone's TTL: kept no longer than that cache keeps", () =>
    Effect.gen(function*() {
      // A TTL of 2 hours, a resolver cache that keeps answers 60 s: each delivery 61 s after the last must look up
      // again, with the plan cache as without it.
      const run = (plans: boolean) =>
        Effect.gen(function*() {
          const log: Array<ReadonlyArray<string>> = []
          for (const ms of [0, 30_000, 31_000, 61_000]) {
            yield* TestClock.adjust(Duration.millis(ms))
            yield* delivered
            log.push(yield* queriesSince)
          }
          return log
        }).pipe(Effect.provide(layers({
          zones: zones(7200),
          peers: peers(4, IP),
          dnsCache: { maxTtl: "60 seconds" },
          plans
        })))
      const without = yield* run(false)
      expect(without).toEqual([["MX a.test", "A mx.a.test"], [], ["MX a.test", "A mx.a.test"], ["MX a.test", "A mx.a.test"]])
      expect(yield* run(true)).toEqual(without)
    }))

  it.effect("is not used where the delivery's spans record: every message makes its lookups, each in its span", () =>
    Effect.gen(function*() {
      const { recorded, tracer } = yield* recorder
      for (let i = 0; i < 3; i++) {
        yield* delivered.pipe(Effect.withTracer(tracer))
        expect(yield* queriesSince).toEqual(["MX a.test", "A mx.a.test"])
      }
      const names = recorded.spans.map((span) => span.name)
      expect(names.filter((n) => n === "MxPlan.plan")).toHaveLength(3)
      expect(names.filter((n) => n === "Candidates.resolveHost")).toHaveLength(3)
      // Without the tracer, the same layer's cache takes over.
      yield* delivered
      expect(yield* queriesSince).toEqual(["MX a.test", "A mx.a.test"])
      yield* delivered
      expect(yield* queriesSince).toEqual([])
    }).pipe(Effect.provide(layers({ zones: zones(60), peers: peers(5, IP) }))))

  it.effect("never keeps an answer without a TTL", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 3; i++) {
        yield* delivered
        expect(yield* queriesSince).toEqual(["MX a.test", "A mx.a.test"])
      }
    }).pipe(Effect.provide(layers({ zones: zones(undefined), peers: peers(3, IP) }))))

  it.effect("never keeps a plan whose hosts of equal preference were shuffled; keeps their addresses", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 3; i++) {
        yield* delivered
        const queries = yield* queriesSince
        expect(queries[0]).toBe("MX a.test")
        expect(queries.filter((q) => q.startsWith("MX"))).toHaveLength(1)
      }
    }).pipe(Effect.provide(layers({
      zones: {
        "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }, { exchange: "mx2.a.test", priority: 10 }], ttl: 60 },
        "mx1.a.test": { a: [IP], ttl: 60 },
        "mx2.a.test": { a: [IP2], ttl: 60 }
      },
      peers: peers(3, IP, IP2),
      config: config().replace("[queue.outbound.tls]", "[queue.outbound.limits]\nmx = 1\n[queue.outbound.tls]")
    }))))

  it.effect("is keyed by what the configuration decides (another limits.mx is another plan), and bounded", () =>
    Effect.gen(function*() {
      const cache = PlanCache.make()
      const plan = { domain: "a.test", records: [], hosts: [], dropped: [] }
      cache.setMxPlan("a.test", 5, plan, 1_000)
      expect(cache.mxPlan("a.test", 5, 999)).toBe(plan)
      expect(cache.mxPlan("a.test", 2, 999)).toBeUndefined()
      expect(cache.mxPlan("a.test", 5, 1_000)).toBeUndefined()
      const resolution = { host: { name: "mx.a.test", preference: 10, implicit: false, literal: false }, ipStrategy: "ipv4_only" as const, addresses: [IP], truncated: [], lookups: [] }
      cache.setAddresses("mx.a.test", "ipv4_only", 2, resolution, 1_000)
      expect(cache.addresses("mx.a.test", "ipv4_only", 2, 0)).toBe(resolution)
      expect(cache.addresses("mx.a.test", "ipv6_only", 2, 0)).toBeUndefined()
      expect(cache.addresses("mx.a.test", "ipv4_only", 1, 0)).toBeUndefined()
      // Bounded: the plan stored first goes first.
      const small = PlanCache.make(2)
      for (const d of ["a.test", "b.test", "c.test"]) small.setMxPlan(d, 5, { ...plan, domain: d }, 1_000)
      expect(small.mxPlan("a.test", 5, 0)).toBeUndefined()
      expect(small.mxPlan("b.test", 5, 0)?.domain).toBe("b.test")
      expect(small.mxPlan("c.test", 5, 0)?.domain).toBe("c.test")
      expect(PlanCache.keepMs(null)).toBe(0)
      expect(PlanCache.keepMs(1)).toBe(0)
      expect(PlanCache.keepMs(300)).toBe(299_000)
    }))
})
