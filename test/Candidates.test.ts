import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Stream from "effect/Stream"
import * as Candidates from "../src/Candidates.js"
import * as Dns from "../src/Dns.js"
import type * as MxPlan from "../src/MxPlan.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Pull from "../src/Pull.js"
import type * as Settings from "../src/Settings.js"
import * as TransportError from "../src/TransportError.js"
import { queries } from "./utils/dns.js"
import { failure } from "./utils/exit.js"

const mxHost = (name: string, preference = 10): MxPlan.MxHost => ({ name, preference, implicit: false, literal: false })
const implicitHost = (name: string): MxPlan.MxHost => ({ name, preference: 0, implicit: true, literal: false })

const zones: Dns.Zones = {
  "dual.test": { a: ["192.0.2.1", "192.0.2.2"], aaaa: ["2001:db8::1", "2001:db8::2"] },
  "mostly6.test": { a: ["192.0.2.3"], aaaa: ["2001:db8::3", "2001:db8::4"] },
  "v4fail.test": { a: "SERVFAIL", aaaa: ["2001:db8::5"] },
  "v6nx.test": { a: ["192.0.2.6"], aaaa: "NXDOMAIN" },
  "mixedfail.test": { a: "SERVFAIL", aaaa: "NXDOMAIN" },
  "nodata.test": { txt: ["exists"] },
  "empty.test": { a: [], aaaa: [] },
  "mx1.plan.test": { a: ["192.0.2.11"], aaaa: ["2001:db8::11"] },
  "mx2.plan.test": { a: ["192.0.2.12"], aaaa: ["2001:db8::12"] },
  "mx3.plan.test": { a: ["192.0.2.13"] }
}

describe("Candidates.resolveHost", () => {
  it.effect("2 A + 2 AAAA, ipv4_then_ipv6, multihomed 2: only the A addresses", () =>
    Effect.gen(function*() {
      const resolution = yield* Candidates.resolveHost(mxHost("dual.test"), "ipv4_then_ipv6", 2)
      expect(resolution).toEqual({
        host: mxHost("dual.test"),
        ipStrategy: "ipv4_then_ipv6",
        addresses: ["192.0.2.1", "192.0.2.2"],
        truncated: ["2001:db8::1", "2001:db8::2"],
        lookups: [
          { rrtype: "A", addresses: ["192.0.2.1", "192.0.2.2"], error: null },
          { rrtype: "AAAA", addresses: ["2001:db8::1", "2001:db8::2"], error: null }
        ]
      })
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("1 A + 2 AAAA, ipv6_then_ipv4, multihomed 3: [v6, v6, v4]", () =>
    Effect.gen(function*() {
      const resolution = yield* Candidates.resolveHost(mxHost("mostly6.test"), "ipv6_then_ipv4", 3)
      expect(resolution.addresses).toEqual(["2001:db8::3", "2001:db8::4", "192.0.2.3"])
      expect(resolution.truncated).toEqual([])
      const two = yield* Candidates.resolveHost(mxHost("mostly6.test"), "ipv6_then_ipv4", 2)
      expect(two.addresses).toEqual(["2001:db8::3", "2001:db8::4"])
      expect(two.truncated).toEqual(["192.0.2.3"])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("ipv6_only never queries A, ipv4_only never queries AAAA", () =>
    Effect.gen(function*() {
      const v6 = yield* Candidates.resolveHost(mxHost("dual.test"), "ipv6_only", 5)
      expect(v6.addresses).toEqual(["2001:db8::1", "2001:db8::2"])
      expect(v6.truncated).toEqual([])
      expect(yield* queries).toEqual([{ rrtype: "AAAA", name: "dual.test" }])
      const v4 = yield* Candidates.resolveHost(mxHost("dual.test"), "ipv4_only", 5)
      expect(v4.addresses).toEqual(["192.0.2.1", "192.0.2.2"])
      expect(yield* queries).toEqual([{ rrtype: "AAAA", name: "dual.test" }, { rrtype: "A", name: "dual.test" }])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("an error on one family is ignored while the other yields, and kept as data", () =>
    Effect.gen(function*() {
      const a = yield* Candidates.resolveHost(mxHost("v4fail.test"), "ipv4_then_ipv6", 2)
      expect(a.addresses).toEqual(["2001:db8::5"])
      expect(a.lookups[0]!.error?.reason).toBe("Temporary")
      const b = yield* Candidates.resolveHost(mxHost("v6nx.test"), "ipv6_then_ipv4", 2)
      expect(b.addresses).toEqual(["192.0.2.6"])
      expect(b.lookups.map((l) => [l.rrtype, l.error?.reason ?? null])).toEqual([["AAAA", "NotFound"], ["A", null]])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("both families failing: NXDOMAIN is permanent (explicit and implicit host), the rest temporary", () =>
    Effect.gen(function*() {
      const resolve = (host: MxPlan.MxHost, strategy: Settings.IpStrategy = "ipv4_then_ipv6") =>
        Effect.map(Effect.exit(Candidates.resolveHost(host, strategy, 2)), failure)
      expect(yield* resolve(mxHost("gone.test"))).toEqual(
        TransportError.make(
          "dns",
          "dns",
          "MX host gone.test does not exist (A gone.test: no such domain; AAAA gone.test: no such domain)",
          true
        )
      )
      expect(yield* resolve(implicitHost("gone.test"), "ipv6_only")).toEqual(
        TransportError.make("dns", "dns", "gone.test: no MX and no address (AAAA gone.test: no such domain)", true)
      )
      expect(yield* resolve(mxHost("mixedfail.test"))).toEqual(
        TransportError.make(
          "dns",
          "dns",
          "address lookup for mixedfail.test failed: A mixedfail.test: ESERVFAIL; AAAA mixedfail.test: no such domain",
          false
        )
      )
      expect(yield* resolve(mxHost("nodata.test"))).toEqual(
        TransportError.make(
          "dns",
          "dns",
          "no IP addresses found for nodata.test (A nodata.test: no records of that type; AAAA nodata.test: no records of that type)",
          false
        )
      )
      expect(yield* resolve(implicitHost("nodata.test"))).toMatchObject({ permanent: false })
      expect(yield* resolve(mxHost("empty.test"))).toEqual(
        TransportError.make("dns", "dns", "no IP addresses found for empty.test", false)
      )
      // a *_only strategy fails on its one family alone, even when the other would have answered
      expect(yield* resolve(mxHost("v4fail.test"), "ipv4_only")).toMatchObject({ permanent: false })
      expect(yield* resolve(mxHost("v6nx.test"), "ipv6_only")).toMatchObject({ permanent: true })
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("a literal host is its own address, without DNS, whatever the strategy", () =>
    Effect.gen(function*() {
      const host: MxPlan.MxHost = { name: "2001:db8::99", preference: 0, implicit: false, literal: true }
      expect(yield* Candidates.resolveHost(host, "ipv4_only", 2)).toEqual({
        host,
        ipStrategy: "ipv4_only",
        addresses: ["2001:db8::99"],
        truncated: [],
        lookups: []
      })
      expect(yield* queries).toEqual([])
    }).pipe(Effect.provide(Dns.layerTest(zones))))
})

const plan3: MxPlan.MxPlan = {
  domain: "plan.test",
  records: [],
  hosts: [mxHost("mx1.plan.test", 10), mxHost("missing.plan.test", 20), mxHost("mx3.plan.test", 30)],
  dropped: []
}

const settings = (ipStrategy: Settings.IpStrategy, extra: Partial<Candidates.HostSettings> = {}) =>
(): Effect.Effect<Candidates.HostSettings> =>
  Effect.succeed({ ipStrategy, multihomed: 2, sourceIp: { v4: [], v6: [] }, ...extra })

/** The hosts of a plan as a Stream, and every host's candidates after it. */
const allCandidates = (pull: Pull.Pull<Candidates.HostCandidates, Dns.Dns>) =>
  Pull.toStream(pull).pipe(Stream.flatMap((h) => Pull.toStream(h.candidates)))

const drain = <A, R>(pull: Pull.Pull<A, R>) =>
  Effect.map(Stream.runCollect(Pull.toStream(pull)), Chunk.toReadonlyArray)

describe("Candidates.hosts", () => {
  it.effect("is lazy: the second host's lookups do not run when the first host's first candidate is taken", () =>
    Effect.gen(function*() {
      const evaluated: Array<string> = []
      const perHost = (host: MxPlan.MxHost) =>
        Effect.sync((): Candidates.HostSettings => {
          evaluated.push(host.name)
          return { ipStrategy: "ipv4_then_ipv6", multihomed: 2, sourceIp: { v4: [], v6: [] } }
        })
      const first = yield* allCandidates(Candidates.hosts(plan3, perHost)).pipe(Stream.take(1), Stream.runCollect)
      expect(Chunk.toReadonlyArray(first).map((c) => c.ip)).toEqual(["192.0.2.11"])
      expect(evaluated).toEqual(["mx1.plan.test"])
      expect(yield* queries).toEqual([{ rrtype: "A", name: "mx1.plan.test" }, { rrtype: "AAAA", name: "mx1.plan.test" }])

      // and pulled directly, the same
      evaluated.length = 0
      const hosts = Candidates.hosts(plan3, perHost)
      const one = Option.getOrThrow(yield* hosts.next)
      expect(Option.map(yield* one.candidates().next, (c) => c.ip)).toEqual(Option.some("192.0.2.11"))
      expect(evaluated).toEqual(["mx1.plan.test"])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("resolves host by host as it is pulled, a failed host handed out with its error", () =>
    Effect.gen(function*() {
      const hosts = Candidates.hosts(plan3, settings("ipv4_then_ipv6"))
      const next = Effect.map(hosts.next, Option.getOrThrow)
      const one = yield* next
      expect(one.host.name).toBe("mx1.plan.test")
      expect(Either.getOrThrow(one.resolution).addresses).toEqual(["192.0.2.11", "2001:db8::11"])
      expect((yield* queries).map((q) => q.name)).toEqual(["mx1.plan.test", "mx1.plan.test"])

      const two = yield* next
      expect(two.host.name).toBe("missing.plan.test")
      expect(Either.isLeft(two.resolution) && two.resolution.left.permanent).toBe(true)
      expect(yield* drain(two.candidates())).toEqual([])
      expect((yield* queries).map((q) => q.name).slice(2)).toEqual(["missing.plan.test", "missing.plan.test"])

      expect(hosts.isDone()).toBe(false)
      const three = yield* next
      expect(three.host.name).toBe("mx3.plan.test")
      expect(Either.getOrThrow(three.resolution).addresses).toEqual(["192.0.2.13"])
      expect(hosts.isDone()).toBe(true)
      expect(yield* hosts.next).toEqual(Option.none())
      expect((yield* queries).length).toBe(6)
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("candidates carry host, ip, family and a source of the remote's family", () =>
    Effect.gen(function*() {
      const plan: MxPlan.MxPlan = { domain: "dual.test", records: [], hosts: [mxHost("mostly6.test")], dropped: [] }
      const perHost = settings("ipv6_then_ipv4", { multihomed: 3, sourceIp: { v4: ["192.0.2.100"], v6: [] } })
      const all = yield* Stream.runCollect(allCandidates(Candidates.hosts(plan, perHost)))
      expect(Chunk.toReadonlyArray(all)).toEqual([
        { host: mxHost("mostly6.test"), ip: "2001:db8::3", family: 6, source: null },
        { host: mxHost("mostly6.test"), ip: "2001:db8::4", family: 6, source: null },
        { host: mxHost("mostly6.test"), ip: "192.0.2.3", family: 4, source: "192.0.2.100" }
      ])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("the source address is picked afresh on every pull", () =>
    Effect.gen(function*() {
      const plan: MxPlan.MxPlan = { domain: "x", records: [], hosts: [mxHost("mx3.plan.test")], dropped: [] }
      const sources = ["192.0.2.100", "192.0.2.101", "192.0.2.102", "192.0.2.103"]
      const [host] = yield* drain(Candidates.hosts(plan, settings("ipv4_only", { sourceIp: { v4: sources, v6: [] } })))
      const seen: Array<string | null> = []
      for (let i = 0; i < 40; i++) {
        const [candidate] = yield* drain(host!.candidates())
        seen.push(candidate!.source)
      }
      expect(new Set(seen)).toEqual(new Set(sources))
      // one resolution, many pulls
      expect((yield* queries).length).toBe(1)
    }).pipe(Effect.withRandom(Random.make(11)), Effect.provide(Dns.layerTest(zones))))

  it.effect("hands back the settings it was given, whatever else they hold", () =>
    Effect.gen(function*() {
      const plan: MxPlan.MxPlan = { domain: "x", records: [], hosts: [mxHost("mx3.plan.test")], dropped: [] }
      const wide = { ipStrategy: "ipv4_only" as const, multihomed: 1, sourceIp: { v4: [], v6: [] }, ehloName: "me.test" }
      const [host] = yield* drain(Candidates.hosts(plan, () => Effect.succeed(wide)))
      expect(host!.settings).toBe(wide)
      expect(host!.settings.ehloName).toBe("me.test")
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("`retry_num == 0 → ipv6_only, else ipv4_only`, evaluated from the configuration, switches families", () =>
    Effect.gen(function*() {
      const config = Either.getOrThrow(OutboundConfig.parse(`
[queue.outbound]
ip-strategy = [ { if = "retry_num == 0", then = "ipv6_only" }, { else = "ipv4_only" } ]
limits.multihomed = 4
`))
      const perHost = (retryNum: number) => (host: MxPlan.MxHost): Effect.Effect<Candidates.HostSettings> =>
        Effect.sync(() => {
          const vars = { retry_num: retryNum, mx: host.name }
          return {
            ipStrategy: config.ipStrategy.evaluate(vars).value,
            multihomed: config.limits.multihomed.evaluate(vars).value,
            sourceIp: { v4: config.sourceIp.v4.evaluate(vars).value, v6: config.sourceIp.v6.evaluate(vars).value }
          }
        })
      const plan: MxPlan.MxPlan = { domain: "dual.test", records: [], hosts: [mxHost("dual.test")], dropped: [] }
      const ips = (retryNum: number) =>
        allCandidates(Candidates.hosts(plan, perHost(retryNum))).pipe(
          Stream.map((c) => c.ip),
          Stream.runCollect,
          Effect.map(Chunk.toReadonlyArray)
        )
      expect(yield* ips(0)).toEqual(["2001:db8::1", "2001:db8::2"])
      expect(yield* queries).toEqual([{ rrtype: "AAAA", name: "dual.test" }])
      expect(yield* ips(1)).toEqual(["192.0.2.1", "192.0.2.2"])
      expect(yield* ips(2)).toEqual(["192.0.2.1", "192.0.2.2"])
      expect((yield* queries).map((q) => q.rrtype)).toEqual(["AAAA", "A", "A"])
    }).pipe(Effect.provide(Dns.layerTest(zones))))
})
