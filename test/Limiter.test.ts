/**
 * Outbound limiters on virtual time: concurrency (a third delivery waits until one of two finishes), rate windows,
 * the wait bound that defers with kind `concurrency` or `rate` without connecting, and the configuration's two
 * syntaxes with their errors.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Either, Fiber, Layer, TestClock } from "effect"
import * as ConnectionPool from "../src/ConnectionPool.js"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script, type Step } from "../src/ConnectorTest.js"
import type { DeliveryReport } from "../src/DeliveryReport.js"
import * as Dns from "../src/Dns.js"
import * as Format from "../src/cli/format.js"
import * as Expression from "../src/Expression.js"
import * as Limiter from "../src/Limiter.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as Transport from "../src/Transport.js"

const IP = "192.0.2.1"
const zones: Dns.Zones = {
  "a.test": { mx: [{ exchange: "mx.a.test", priority: 10 }] },
  "b.test": { mx: [{ exchange: "mx.a.test", priority: 10 }] },
  "c.test": { mx: [{ exchange: "mx.a.test", priority: 10 }] },
  "mx.a.test": { a: [IP] }
}

const config = (limiters: string, outbound = "") => `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
${outbound}
[queue.outbound.tls]
starttls = "disable"
mta-sts = "disable"
${limiters}
`

/** A connection that takes `transactions` messages, each answered after `delay`. */
const peer = (transactions: number, delay: Duration.DurationInput = 0): ConnectorTest.TestPeer => ({
  script: [
    Script.reply("220 mx.a.test ESMTP"),
    Script.expect("EHLO client.test"),
    Script.reply("250-mx.a.test", "250 8BITMIME"),
    ...Array.from({ length: transactions }, (): ReadonlyArray<Step> => [
      Script.expect(/^MAIL FROM/),
      Script.reply("250 ok"),
      Script.expect(/^RCPT TO/),
      Script.reply("250 ok"),
      Script.expect("DATA"),
      Script.reply("354 go"),
      Script.expectData,
      Script.delay(delay),
      Script.reply("250 queued")
    ]).flat(),
    Script.expect("QUIT"),
    Script.reply("221 bye")
  ]
})

const layers = (text: string, peers: ReadonlyArray<ConnectorTest.TestPeer>) =>
  Layer.mergeAll(
    ConnectionPool.layer,
    Limiter.layer,
    Layer.orDie(OutboundConfig.layerFromText(text)),
    Dns.layerTest(zones),
    ConnectorTest.layer({ [IP]: peers }),
    PolicyCache.layer,
    MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" }))
  )

const request = (rcpt: string): Transport.DeliveryRequest => ({
  message: "Subject: hi\r\n\r\nhello\r\n",
  sender: "s@origin.test",
  recipients: [rcpt]
})

/** Delivers concurrently; the clock moves in steps of 1 s until all are done. Reports with their end times. */
const deliverConcurrently = (rcpts: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const ends: Array<number> = rcpts.map(() => -1)
    const fiber = yield* Effect.fork(Effect.forEach(rcpts, (rcpt, i) =>
      Effect.tap(Transport.deliver(request(rcpt)), () =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          ends[i] = now / 1000
        })), { concurrency: "unbounded" }))
    for (let t = 0; t <= 120; t++) {
      yield* TestClock.adjust(Duration.seconds(1))
      if (ends.every((e) => e >= 0)) break
    }
    const reports: ReadonlyArray<DeliveryReport> = yield* Fiber.join(fiber)
    return { reports, ends }
  })

const status = (r: DeliveryReport) => r.recipients[0]!.status

describe("outbound limiters", () => {
  it.effect("concurrency = 2 on rcpt_domain: the third delivery waits until one of two finishes", () =>
    Effect.gen(function*() {
      const { ends, reports } = yield* deliverConcurrently(["r1@a.test", "r2@a.test", "r3@a.test"])
      expect(reports.map(status)).toEqual(["delivered", "delivered", "delivered"])
      // Two at once, 10 s each; the third starts when one finishes, on the connection it leaves.
      expect(ends).toEqual([10, 10, 20])
      expect(reports[2]!.attempts[0]!.reused).toBe(true)
      expect(yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)).toHaveLength(2)
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.per-domain]\nkey = ["rcpt_domain"]\nconcurrency = 2`),
      [peer(2, "10 seconds"), peer(2, "10 seconds")]
    ))))

  it.effect("a relay route: mx is the relay's address; the second domain waits, then takes the relay connection", () =>
    Effect.gen(function*() {
      // Two domains, one relay: concurrency 1 on the relay (mx) serializes them, on one connection at the relay's port.
      const { ends, reports } = yield* deliverConcurrently(["r1@a.test", "r2@b.test"])
      expect(reports.map(status)).toEqual(["delivered", "delivered"])
      expect(ends).toEqual([10, 20])
      expect(reports.map((r) => [r.attempts[0]!.host, r.attempts[0]!.reused])).toEqual([[IP, false], [IP, true]])
      const conns = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(conns.map((c) => c.port)).toEqual([2525])
    }).pipe(Effect.provide(layers(
      config(
        `[queue.limiter.outbound.relay]
key = "mx"
match = "mx == '${IP}'"
concurrency = 1
[remote.relay]
address = "${IP}"
port = 2525
tls.implicit = false
`,
        `next-hop = "'relay'"`
      ),
      [peer(2, "10 seconds")]
    ))))

  it.effect("concurrency = 1 on remote_ip: the waiting delivery takes the connection just freed", () =>
    Effect.gen(function*() {
      const { ends, reports } = yield* deliverConcurrently(["r1@a.test", "r2@a.test"])
      expect(reports.map(status)).toEqual(["delivered", "delivered"])
      expect(ends).toEqual([10, 20])
      // One connection, two transactions: the second waited for the address's permit, then took the connection the
      // first gave back, rather than opening one beside it.
      expect(reports.map((r) => r.attempts.map((a) => [a.connection, a.reused, a.outcome]))).toEqual([
        [["c1", false, "completed"]],
        [["c1", true, "completed"]]
      ])
      expect(yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)).toHaveLength(1)
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.per-ip]\nkey = ["remote_ip"]\nconcurrency = 1`),
      [peer(2, "10 seconds")]
    ))))

  it.effect("concurrency = 1 on local_ip: likewise, one connection", () =>
    Effect.gen(function*() {
      const { ends, reports } = yield* deliverConcurrently(["r1@a.test", "r2@a.test", "r3@b.test"])
      expect(reports.map(status)).toEqual(["delivered", "delivered", "delivered"])
      expect(ends).toEqual([10, 20, 30])
      expect(reports.map((r) => r.attempts[0]!.connection)).toEqual(["c1", "c1", "c1"])
      expect(yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)).toHaveLength(1)
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.per-source]\nkey = "local_ip"\nconcurrency = 1`),
      [peer(3, "10 seconds")]
    ))))

  it.effect("a delivery that comes while another waits for the address does not take the idle connection from it", () =>
    Effect.gen(function*() {
      // r1 holds the address's one permit until 10 s, r2 waits for it. r3 starts in r1's fiber the moment r1 is
      // done: its connection is idle and the permit has gone to r2, which has not run yet. r3 must not hold that
      // connection while it waits (r2 would find the pool empty and open a second one): it gives it back and queues,
      // and each takes the one connection in turn.
      const ends: Array<number> = [-1, -1, -1]
      const one = (rcpt: string, i: number) =>
        Effect.tap(Transport.deliver(request(rcpt)), () =>
          Effect.map(Clock.currentTimeMillis, (now) => {
            ends[i] = now / 1000
          }))
      const fiber = yield* Effect.fork(Effect.all([
        Effect.zip(one("r1@a.test", 0), one("r3@a.test", 2)),
        one("r2@a.test", 1)
      ], { concurrency: "unbounded" }))
      for (let t = 0; t <= 60 && ends.some((e) => e < 0); t++) yield* TestClock.adjust(Duration.seconds(1))
      const [[r1, r3], r2] = yield* Fiber.join(fiber)
      const reports = [r1, r2, r3]
      expect(reports.map(status)).toEqual(["delivered", "delivered", "delivered"])
      expect(ends).toEqual([10, 20, 30])
      expect(reports.map((r) => r.attempts.map((a) => a.connection))).toEqual([["c1"], ["c1"], ["c1"]])
      expect(yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)).toHaveLength(1)
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.per-ip]\nkey = ["remote_ip"]\nconcurrency = 1`),
      [peer(3, "10 seconds"), peer(3, "10 seconds")]
    ))))

  it.effect("concurrency = 1 on mx: the waiting delivery takes the connection just freed", () =>
    Effect.gen(function*() {
      const { reports } = yield* deliverConcurrently(["r1@a.test", "r2@a.test"])
      expect(reports.map((r) => r.attempts.map((a) => [a.connection, a.reused]))).toEqual([[["c1", false]], [["c1", true]]])
      expect(yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)).toHaveLength(1)
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.per-mx]\nkey = ["mx"]\nconcurrency = 1`),
      [peer(2, "10 seconds")]
    ))))

  it.effect("the key separates counts: another domain does not wait", () =>
    Effect.gen(function*() {
      const { ends } = yield* deliverConcurrently(["r1@a.test", "r2@a.test", "r3@b.test"])
      expect(ends).toEqual([10, 20, 10])
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.per-domain]\nkey = "rcpt_domain"\nconcurrency = 1`),
      [peer(2, "10 seconds"), peer(1, "10 seconds")]
    ))))

  it.effect("concurrency = 2 on mx: never a third connection", () =>
    Effect.gen(function*() {
      const { reports } = yield* deliverConcurrently(["r1@a.test", "r2@a.test", "r3@b.test", "r4@b.test", "r5@a.test"])
      expect(reports.map(status)).toEqual(Array(5).fill("delivered"))
      expect(yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)).toHaveLength(2)
    }).pipe(Effect.provide(layers(
      config(`[[queue.throttle]]\nkey = ["mx"]\nconcurrency = 2\nenable = true`),
      [peer(3, "1 second"), peer(2, "1 second")]
    ))))

  it.effect("rate = 2/10s: the third start waits for the window", () =>
    Effect.gen(function*() {
      const { ends } = yield* deliverConcurrently(["r1@a.test", "r2@a.test", "r3@a.test"])
      expect(ends).toEqual([0, 0, 10])
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.r]\nkey = ["rcpt_domain"]\nrate = "2/10s"`),
      [peer(3)]
    ))))

  it.effect("a wait past limiter-wait defers with kind concurrency, without connecting", () =>
    Effect.gen(function*() {
      const { ends, reports } = yield* deliverConcurrently(["r1@a.test", "r2@a.test"])
      expect(ends).toEqual([60, 5])
      expect(reports.map(status)).toEqual(["delivered", "deferred"])
      expect(reports[1]!.recipients[0]!.error?.kind).toBe("concurrency")
      expect(reports[1]!.attempts).toEqual([])
      expect(yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)).toHaveLength(1)
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.one]\nconcurrency = 1`, `limiter-wait = "5s"`),
      [peer(1, "60 seconds")]
    ))))

  it.effect("a rate window longer than limiter-wait defers at once with kind rate", () =>
    Effect.gen(function*() {
      const { ends, reports } = yield* deliverConcurrently(["r1@a.test", "r2@a.test"])
      expect(ends).toEqual([0, 0])
      expect(reports.map(status)).toEqual(["delivered", "deferred"])
      expect(reports[1]!.recipients[0]!.error?.kind).toBe("rate")
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.slow]\nkey = ["mx"]\nrate = "1/1h"`, `limiter-wait = "1m"`),
      [peer(1)]
    ))))

  it.effect("match: only the deliveries it selects are limited", () =>
    Effect.gen(function*() {
      const { ends } = yield* deliverConcurrently(["r1@a.test", "r2@a.test", "r3@b.test", "r4@b.test"])
      expect(ends).toEqual([10, 20, 10, 10])
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.a-only]\nkey = ["rcpt_domain"]\nmatch = "rcpt_domain = 'a.test'"\nconcurrency = 1`),
      [peer(2, "10 seconds"), peer(1, "10 seconds"), peer(1, "10 seconds")]
    ))))

  it.effect("enable = false: the limiter is off", () =>
    Effect.gen(function*() {
      const { ends } = yield* deliverConcurrently(["r1@a.test", "r2@a.test"])
      expect(ends).toEqual([10, 10])
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.off]\nconcurrency = 1\nenable = false`),
      [peer(1, "10 seconds"), peer(1, "10 seconds")]
    ))))
})

describe("sender limiters count messages", () => {
  /** Delivers each list of recipients as one message from s@origin.test, all at once; each one's end time. */
  const messages = (...rcpts: ReadonlyArray<ReadonlyArray<string>>) =>
    Effect.gen(function*() {
      const ends: Array<number> = rcpts.map(() => -1)
      const fiber = yield* Effect.fork(Effect.forEach(rcpts, (recipients, i) =>
        Effect.tap(Transport.deliver({ ...request(recipients[0]!), recipients }), () =>
          Effect.map(Clock.currentTimeMillis, (now) => {
            ends[i] = now / 1000
          })), { concurrency: "unbounded" }))
      for (let t = 0; t <= 120 && ends.some((e) => e < 0); t++) yield* TestClock.adjust(Duration.seconds(1))
      return { reports: yield* Fiber.join(fiber), ends }
    })
  const noReuse = "reuse.messages = 1"

  it.effect("concurrency = 1 on sender: a message to three domains is one; the next message waits for all three", () =>
    Effect.gen(function*() {
      const { ends, reports } = yield* messages(["r1@a.test", "r2@b.test", "r3@c.test"], ["r4@a.test"])
      expect(reports.map((r) => r.recipients.map((x) => x.status))).toEqual([
        ["delivered", "delivered", "delivered"],
        ["delivered"]
      ])
      // The three domains of the first message at once (one count), the second message after them.
      expect(ends).toEqual([10, 20])
      expect(reports[0]!.attempts.map((a) => a.startMs)).toEqual([0, 0, 0])
      expect(reports[1]!.attempts.map((a) => a.startMs)).toEqual([10_000])
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.per-sender]\nkey = "sender"\nconcurrency = 1`, noReuse),
      Array.from({ length: 4 }, () => peer(1, "10 seconds"))
    ))))

  it.effect("rate = 2/1h on sender_domain: a message to three domains is one start; the third message is deferred", () =>
    Effect.gen(function*() {
      const { ends, reports } = yield* messages(["r1@a.test", "r2@b.test", "r3@c.test"], ["r4@a.test"], ["r5@b.test"])
      expect(reports.map((r) => r.recipients.map((x) => x.status))).toEqual([
        ["delivered", "delivered", "delivered"],
        ["delivered"],
        ["deferred"]
      ])
      expect(ends).toEqual([0, 0, 0])
      const third = reports[2]!
      expect(third.recipients[0]!.error).toMatchObject({ kind: "rate", phase: "connect", permanent: false })
      expect(third.recipients[0]!.error!.message).toContain("outbound limiter per-sender-domain (rate)")
      // Nothing looked up, nothing contacted: the plan says why.
      expect(third.attempts).toEqual([])
      expect(third.plan.domains.map((d) => [d.domain, d.mx, d.error?.kind])).toEqual([["b.test", [], "rate"]])
      expect(yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)).toHaveLength(4)
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.per-sender-domain]\nkey = "sender_domain"\nrate = "2/1h"`, `${noReuse}\nlimiter-wait = "1m"`),
      Array.from({ length: 4 }, () => peer(1))
    ))))

  it.effect("a limiter that reads rcpt_domain in its match still counts per domain", () =>
    Effect.gen(function*() {
      const { ends, reports } = yield* messages(["r1@a.test", "r2@b.test"], ["r3@a.test"])
      // Only the a.test groups are limited, one count each: one of the two waits for the other (either may go first),
      // b.test goes at once.
      expect([...ends].sort()).toEqual([10, 20])
      const starts = reports.flatMap((r) => r.attempts.map((a) => [a.domain, a.startMs]))
      expect(starts.filter(([d]) => d === "b.test")).toEqual([["b.test", 0]])
    }).pipe(Effect.provide(layers(
      config(`[queue.limiter.outbound.a-sender]\nkey = "sender"\nmatch = "rcpt_domain == 'a.test'"\nconcurrency = 1`, noReuse),
      Array.from({ length: 3 }, () => peer(1, "10 seconds"))
    ))))
})

describe("limiters in the plan", () => {
  it.effect("explain shows, per domain and per host, the limiters that apply with their key values; plan prints them", () =>
    Effect.gen(function*() {
      const plan = yield* Transport.explain(request("r@a.test")).pipe(Effect.provide(layers(
        config(`
[queue.limiter.outbound.per-domain]
key = "rcpt_domain"
rate = "10/1m"
[queue.limiter.outbound.per-mx]
key = ["mx"]
concurrency = 2
[queue.limiter.outbound.per-ip]
key = ["remote_ip"]
concurrency = 1
match = "remote_ip != '${IP}'"
[queue.limiter.outbound.per-ip-all]
key = ["remote_ip", "local_ip"]
concurrency = 3
[queue.limiter.outbound.other-sender]
key = "sender"
concurrency = 1
match = "sender_domain == 'elsewhere.test'"
[queue.limiter.outbound.per-sender-domain]
key = "sender_domain"
concurrency = 5
`, "limiter-wait = \"2m\""),
        []
      )))
      // Sender limiters once for the message, not per domain; other-sender's match is false for this sender.
      expect(plan.limiters).toEqual([
        { id: "per-sender-domain", stage: "message", key: { sender_domain: "origin.test" }, concurrency: 5, rate: null }
      ])
      const [domain] = plan.domains
      expect(domain!.limiters).toEqual([
        { id: "per-domain", stage: "domain", key: { rcpt_domain: "a.test" }, concurrency: null, rate: { count: 10, periodMs: 60_000 } }
      ])
      expect(domain!.limiterWaitMs).toBe(120_000)
      // per-ip's match is false for the host's address; other-sender's for this sender.
      expect(domain!.hosts.map((h) => h.limiters)).toEqual([[
        { id: "per-mx", stage: "host", key: { mx: "mx.a.test" }, concurrency: 2, rate: null },
        // Connection-stage ones for the first address, no source bound.
        { id: "per-ip-all", stage: "connection", key: { remote_ip: IP, local_ip: "0.0.0.0" }, concurrency: 3, rate: null }
      ]])
      const text = Format.explain(plan, { from: "s@origin.test", recipients: ["r@a.test"], retryNum: 0 })
      expect(text).toContain("  limiter per-domain (domain stage; rcpt_domain=a.test): rate 10/1m\n  limiter-wait: 2m (then deferred)")
      expect(text).toContain("    limiter per-mx (host stage; mx=mx.a.test): concurrency 2")
      expect(text).toContain(
        "Message limiters (one count for the whole message, before any domain):\n" +
          "  limiter per-sender-domain (message stage; sender_domain=origin.test): concurrency 5\n" +
          "  limiter-wait: 2m (the shortest of its domains'; then every recipient deferred)"
      )
      expect(text.match(/per-sender-domain/g)).toHaveLength(1)
    }))
})

describe("limiter configuration", () => {
  it("both syntaxes, in file order, each at its stage", () => {
    // v0.11.4+ (and v0.13–v0.15): [queue.limiter.outbound.<id>]
    const current = Either.getOrThrow(OutboundConfig.parse(`
[queue.limiter.outbound.ip]
key = ["remote_ip", "rcpt_domain"]
concurrency = 5
rate = "100/1s"
`))
    // v0.7–v0.11.3: [[queue.throttle]], beside [queue.outbound]
    const older = Either.getOrThrow(OutboundConfig.parse(`
[queue.outbound]
hostname = "'mx.example.org'"

[[queue.throttle]]
match = "sender_domain = 'foobar.org'"
key = 'sender_domain'
concurrency = 1

[[queue.throttle]]
key = ["mx"]
rate = "1/30m"
`))
    const shape = (l: Limiter.OutboundLimiter) =>
      [l.id, l.key, l.stage, l.concurrency, l.rate && Duration.toMillis(l.rate.period)]
    expect([...current.limiters, ...older.limiters].map(shape)).toEqual([
      ["ip", ["remote_ip", "rcpt_domain"], "connection", 5, 1000],
      ["throttle[0]", ["sender_domain"], "message", 1, null],
      ["throttle[1]", ["mx"], "host", null, 1_800_000]
    ])
    expect(older.layout).toBe("outbound")
    expect(older.limiters[0]!.rate).toBeNull()
  })

  it("limiters load in the strategies layout; [[queue.throttle]] there, or beside [queue.limiter], is another version", () => {
    const strategies = Either.getOrThrow(OutboundConfig.parse(`
[queue.strategy]
connection = "'default'"

[queue.limiter.outbound.mx]
key = ["mx"]
concurrency = 2
`))
    expect(strategies.layout).toBe("strategies")
    expect(strategies.limiters.map((l) => [l.id, l.stage, l.concurrency])).toEqual([["mx", "host", 2]])
    const problem = (text: string) => {
      const result = OutboundConfig.parse(text)
      if (Either.isRight(result)) throw new Error("expected a ConfigError")
      return result.left.issues.map((i) => `${i.line} ${i.path}: ${i.message}`)
    }
    expect(problem(`[queue.strategy]
connection = "'default'"

[[queue.throttle]]
key = ["mx"]
concurrency = 1
`)).toContainEqual(expect.stringMatching(/^4 queue\.throttle: .*a setting of another Stalwart version.*v0\.13–v0\.15/))
    expect(problem(`[queue.limiter.outbound.mx]
key = ["mx"]
concurrency = 1

[[queue.throttle]]
key = ["mx"]
concurrency = 1
`)).toContainEqual(expect.stringMatching(/^5 queue\.throttle: .*a setting of another Stalwart version.*this file also has/))
  })

  it("v0.16 JSON: MtaOutboundThrottle objects in the registry's shape (key set, rate in ms, match expression)", () => {
    const config = Either.getOrThrow(OutboundConfig.parse(JSON.stringify({
      MtaConnectionStrategy: [{ name: "default" }],
      MtaOutboundThrottle: [
        { description: "per mx", key: { mx: true }, rate: { count: 100, period: 1000 } },
        {
          key: { remoteIp: true, rcptDomain: true },
          rate: { count: 5, period: 60000 },
          concurrency: 2,
          match: { match: { "0": { if: "rcpt_domain == 'a.test'", then: "true" } }, else: "false" }
        },
        { description: "off", enable: false, key: { sender: true }, rate: { count: 1, period: 1 } },
        { key: { senderDomain: true }, rate: { count: 1, period: 1000 }, match: { else: "sender_domain == 'b.test'" } }
      ]
    }, null, 2)))
    const shape = (l: Limiter.OutboundLimiter) =>
      [l.id, l.key, l.stage, l.concurrency, l.rate && [l.rate.count, Duration.toMillis(l.rate.period)]]
    expect(config.limiters.map(shape)).toEqual([
      ["per mx", ["mx"], "host", null, [100, 1000]],
      ["MtaOutboundThrottle[1]", ["remote_ip", "rcpt_domain"], "connection", 2, [5, 60000]],
      ["MtaOutboundThrottle[3]", ["sender_domain"], "message", null, [1, 1000]]
    ])
    const match = config.limiters[1]!.match!
    expect([match.evaluate({ rcpt_domain: "a.test" }), match.evaluate({ rcpt_domain: "c.test" })].map(Expression.toBool))
      .toEqual([true, false])
    expect(Expression.toBool(config.limiters[2]!.match!.evaluate({ sender_domain: "b.test" }))).toBe(true)
  })

  it("v0.16 JSON: every bad field of an MtaOutboundThrottle is an error at its line", () => {
    const text = JSON.stringify({
      MtaOutboundThrottle: [
        { key: { mx: true, helo: true }, rate: { count: 0, period: 1000 } },
        { key: ["mx"], rate: "100/1s", concurency: 3 },
        { key: { mx: true } },
        { key: { mx: true }, rate: { count: 1, period: 1000 }, match: { else: "remote_ip ==" } }
      ]
    }, null, 2)
    const result = OutboundConfig.parse(text)
    if (Either.isRight(result)) throw new Error("expected a ConfigError")
    const lines = text.split("\n")
    const lineOf = (needle: string, from = 0) => lines.findIndex((l, i) => i >= from && l.includes(needle)) + 1
    expect(result.left.issues.map((i) => [i.path, i.line])).toEqual([
      ["MtaOutboundThrottle[0].key.helo", lineOf("\"helo\"")],
      ["MtaOutboundThrottle[0].rate.count", lineOf("\"count\": 0")],
      ["MtaOutboundThrottle[1].key", lineOf("\"key\": [")],
      ["MtaOutboundThrottle[1].rate", lineOf("\"rate\": \"100/1s\"")],
      ["MtaOutboundThrottle[1].concurency", lineOf("\"concurency\"")],
      ["MtaOutboundThrottle[2]", lineOf("{", lineOf("\"concurency\""))],
      ["MtaOutboundThrottle[3].match", lineOf("\"else\": \"remote_ip ==\"") - 1]
    ])
    expect(result.left.issues[0]!.message).toContain("one of mx, remoteIp, localIp, sender, senderDomain, rcptDomain")
  })

  it("every bad field is an error with its key, line, what was found and what was expected", () => {
    const result = OutboundConfig.parse(`[queue.limiter.outbound.bad]
key = ["mx", "helo"]
rate = "fast"
concurency = 3
match = "rcpt_domain = "
`)
    expect(Either.isLeft(result)).toBe(true)
    const issues = Either.isLeft(result) ? result.left.issues : []
    expect(issues.map((i) => [i.path, i.line])).toEqual([
      ["queue.limiter.outbound.bad.key[1]", 2],
      ["queue.limiter.outbound.bad.rate", 3],
      ["queue.limiter.outbound.bad.concurency", 4],
      ["queue.limiter.outbound.bad.match", 5]
    ])
    expect(issues.find((i) => i.path.endsWith("key[1]"))!.message).toContain("found the string \"helo\"")
    expect(issues.find((i) => i.path.endsWith(".rate"))!.expected).toContain("100/1s")
  })

  it("a limiter that limits nothing is an error", () => {
    const result = OutboundConfig.parse(`[[queue.throttle]]\nkey = ["mx"]\n`)
    expect(Either.isLeft(result) && result.left.issues[0]!.message).toContain("limits nothing")
  })
})
