/**
 * Connection reuse on virtual time: the pool's limits (messages per connection, idle time, age), RSET after a
 * transaction that did not end cleanly, an idle connection the server gave up on, and QUIT when the layer's scope
 * closes. Scripted peers count the connections and record every command.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Fiber, Layer, Stream, TestClock } from "effect"
import * as ConnectionPool from "../src/ConnectionPool.js"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script, type Step } from "../src/ConnectorTest.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as Transport from "../src/Transport.js"

const IP = "192.0.2.1"
const zones: Dns.Zones = {
  "a.test": { mx: [{ exchange: "mx.a.test", priority: 10 }] },
  "mx.a.test": { a: [IP] }
}

const config = (reuse: string) => `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.tls]
starttls = "disable"
mta-sts = "disable"
[queue.outbound.reuse]
${reuse}
`

const opening: ReadonlyArray<Step> = [
  Script.reply("220 mx.a.test ESMTP"),
  Script.expect("EHLO client.test"),
  Script.reply("250-mx.a.test", "250 8BITMIME")
]
const transaction = (rcpt = "250 ok"): ReadonlyArray<Step> => [
  Script.expect(/^MAIL FROM:<s@origin\.test>/),
  Script.reply("250 ok"),
  Script.expect(/^RCPT TO:</),
  Script.reply(rcpt),
  ...(rcpt.startsWith("2")
    ? [Script.expect("DATA"), Script.reply("354 go"), Script.expectData, Script.reply("250 queued")]
    : [])
]
const quit: ReadonlyArray<Step> = [Script.expect("QUIT"), Script.reply("221 bye")]

const layers = (reuse: string, peers: ConnectorTest.TestPeers) =>
  Layer.mergeAll(
    ConnectionPool.layer,
    Layer.orDie(OutboundConfig.layerFromText(config(reuse))),
    Dns.layerTest(zones),
    ConnectorTest.layer(peers),
    PolicyCache.layer,
    MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" }))
  )

const request = (rcpt = "r@a.test"): Transport.DeliveryRequest => ({
  message: "Subject: hi\r\n\r\nhello\r\n",
  sender: "s@origin.test",
  recipients: [rcpt]
})

const connections = Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
const idle = Effect.flatMap(ConnectionPool.ConnectionPool, (p) => p.size)

describe("connection reuse", () => {
  it.effect("a connection carries reuse.messages transactions, then QUIT", () =>
    Effect.gen(function*() {
      const reports = []
      for (let i = 0; i < 5; i++) reports.push(yield* Transport.deliver(request()))
      expect(reports.map((r) => r.recipients[0]!.status)).toEqual(Array(5).fill("delivered"))
      expect(reports.map((r) => [r.attempts[0]!.connection, r.attempts[0]!.reused])).toEqual([
        ["c1", false],
        ["c1", true],
        ["c1", true],
        ["c2", false],
        ["c2", true]
      ])
      const conns = yield* connections
      expect(conns).toHaveLength(2)
      expect(conns[0]!.commands.filter((c) => c.startsWith("MAIL"))).toHaveLength(3)
      expect(conns[0]!.commands.at(-1)).toBe("QUIT")
      expect(conns[0]!.closed).toBe(true)
      expect(conns[1]!.closed).toBe(false)
      expect(yield* idle).toBe(1)
    }).pipe(Effect.provide(layers("messages = 3", {
      [IP]: [
        { script: [...opening, ...transaction(), ...transaction(), ...transaction(), ...quit] },
        { script: [...opening, ...transaction(), ...transaction(), ...quit] }
      ]
    }))))

  it.effect("an idle connection is closed with QUIT after reuse.idle, on the Clock", () =>
    Effect.gen(function*() {
      yield* Transport.deliver(request())
      yield* TestClock.adjust(Duration.millis(4_999))
      expect(yield* idle).toBe(1)
      expect((yield* connections)[0]!.closed).toBe(false)
      yield* TestClock.adjust(Duration.millis(1))
      expect(yield* idle).toBe(0)
      const [conn] = yield* connections
      expect(conn!.commands.at(-1)).toBe("QUIT")
      expect(conn!.closed).toBe(true)
      // The next delivery opens a new connection.
      const report = yield* Transport.deliver(request())
      expect(report.attempts[0]!.reused).toBe(false)
      expect(yield* connections).toHaveLength(2)
    }).pipe(Effect.provide(layers("idle = \"5s\"", {
      [IP]: [
        { script: [...opening, ...transaction(), ...quit] },
        { script: [...opening, ...transaction(), ...quit] }
      ]
    }))))

  it.effect("a connection past reuse.age takes no more messages", () =>
    Effect.gen(function*() {
      const reused = []
      for (let i = 0; i < 4; i++) {
        const report = yield* Transport.deliver(request())
        reused.push([report.attempts[0]!.connection, report.attempts[0]!.reused])
        yield* TestClock.adjust(Duration.seconds(4))
      }
      // Opened at 0 s: reused at 4 s and 8 s; at 10 s its age is up and it is closed, so 12 s opens another.
      expect(reused).toEqual([["c1", false], ["c1", true], ["c1", true], ["c2", false]])
      const conns = yield* connections
      expect(conns[0]!.commands.filter((c) => c.startsWith("MAIL"))).toHaveLength(3)
      expect(conns[0]!.closed).toBe(true)
    }).pipe(Effect.provide(layers("idle = \"5s\"\nage = \"10s\"", {
      [IP]: [
        { script: [...opening, ...transaction(), ...transaction(), ...transaction(), ...quit] },
        { script: [...opening, ...transaction(), ...quit] }
      ]
    }))))

  it.effect("RSET before the next transaction when the last one did not end cleanly", () =>
    Effect.gen(function*() {
      const first = yield* Transport.deliver(request("nobody@a.test"))
      expect(first.recipients[0]!.status).toBe("failed")
      const second = yield* Transport.deliver(request())
      expect(second.recipients[0]!.status).toBe("delivered")
      expect(second.attempts[0]!.reused).toBe(true)
      const [conn] = yield* connections
      expect(conn!.mismatches).toEqual([])
      expect(conn!.commands.filter((c) => c === "RSET")).toHaveLength(1)
    }).pipe(Effect.provide(layers("", {
      [IP]: {
        script: [
          ...opening,
          ...transaction("550 no such user"),
          Script.expect("RSET"),
          Script.reply("250 reset"),
          ...transaction(),
          ...quit
        ]
      }
    }))))

  it.effect("an idle connection the server closed: the delivery goes on over a new one, the message sent once", () =>
    Effect.gen(function*() {
      yield* Transport.deliver(request())
      const report = yield* Transport.deliver(request())
      expect(report.recipients[0]!.status).toBe("delivered")
      expect(report.attempts.map((a) => [a.connection, a.reused, a.outcome])).toEqual([
        ["c1", true, "failed"],
        ["c2", false, "completed"]
      ])
      const conns = yield* connections
      expect(conns).toHaveLength(2)
      expect(conns.flatMap((c) => c.data)).toHaveLength(2)
      expect(conns[0]!.closed).toBe(true)
      expect(yield* idle).toBe(1)
    }).pipe(Effect.provide(layers("", {
      [IP]: [
        { script: [...opening, ...transaction(), Script.close] },
        { script: [...opening, ...transaction(), ...quit] }
      ]
    }))))

  it.effect("a 421 at the second MAIL: dropped, delivered over a new connection", () =>
    Effect.gen(function*() {
      yield* Transport.deliver(request())
      const report = yield* Transport.deliver(request())
      expect(report.recipients[0]!.status).toBe("delivered")
      expect(report.attempts.map((a) => [a.connection, a.reused, a.error?.code ?? null])).toEqual([
        ["c1", true, 421],
        ["c2", false, null]
      ])
      const conns = yield* connections
      expect(conns.flatMap((c) => c.data)).toHaveLength(2)
    }).pipe(Effect.provide(layers("", {
      [IP]: [
        {
          script: [
            ...opening,
            ...transaction(),
            Script.expect(/^MAIL FROM/),
            Script.reply("421 4.3.2 shutting down"),
            Script.close
          ]
        },
        { script: [...opening, ...transaction(), ...quit] }
      ]
    }))))

  it.effect("idle connections get QUIT when the layer's scope closes", () =>
    Effect.gen(function*() {
      const peers = ConnectorTest.layer({ [IP]: { script: [...opening, ...transaction(), ...quit] } })
      const conns = yield* Effect.gen(function*() {
        yield* Effect.gen(function*() {
          yield* Transport.deliver(request())
          expect(yield* idle).toBe(1)
          expect((yield* connections)[0]!.closed).toBe(false)
        }).pipe(Effect.provide(Layer.mergeAll(
          ConnectionPool.layer,
          Layer.orDie(OutboundConfig.layerFromText(config(""))),
          Dns.layerTest(zones),
          PolicyCache.layer,
          MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" }))
        )))
        return yield* connections
      }).pipe(Effect.provide(peers))
      expect(conns[0]!.commands.at(-1)).toBe("QUIT")
      expect(conns[0]!.closed).toBe(true)
    }))

  it.effect("reuse.messages = 1: one transaction per connection", () =>
    Effect.gen(function*() {
      yield* Transport.deliver(request())
      yield* Transport.deliver(request())
      expect(yield* connections).toHaveLength(2)
      expect(yield* idle).toBe(0)
    }).pipe(Effect.provide(layers("messages = 1", {
      [IP]: [
        { script: [...opening, ...transaction(), ...quit] },
        { script: [...opening, ...transaction(), ...quit] }
      ]
    }))))
})

describe("Transport.deliverAll", () => {
  it.effect("reports in completion order with the caller's ids; an invalid request is an outcome of its own", () =>
    Effect.gen(function*() {
      const outcomes = yield* Transport.deliverAll(
        Stream.make(
          { id: "slow", request: request("slow@a.test") },
          { id: "bad", request: { ...request(), recipients: ["bad address@a.test"] } },
          { id: "fast", request: request("fast@a.test") }
        ),
        { concurrency: 3 }
      ).pipe(Stream.runCollect, Effect.fork)
      yield* TestClock.adjust(Duration.seconds(2))
      const all = Array.from(yield* outcomes.await.pipe(Effect.flatten))
      expect(all.map((o) => o.id)).toEqual(["bad", "fast", "slow"])
      expect(Either.isLeft(all[0]!.report)).toBe(true)
      expect(all.slice(1).map((o) => Either.getOrThrow(o.report).recipients[0]!.status)).toEqual([
        "delivered",
        "delivered"
      ])
    }).pipe(Effect.provide(layers("", {
      [IP]: [
        {
          script: [
            ...opening,
            Script.expect(/^MAIL FROM/),
            Script.reply("250 ok"),
            Script.expect(/^RCPT TO:<slow@/),
            Script.delay("1 second"),
            Script.reply("250 ok"),
            Script.expect("DATA"),
            Script.reply("354 go"),
            Script.expectData,
            Script.reply("250 queued"),
            ...quit
          ]
        },
        { script: [...opening, ...transaction(), ...quit] }
      ]
    }))))
})

describe("interruption", () => {
  it.effect("a delivery interrupted on a reused connection closes it; the pool does not keep it", () =>
    Effect.gen(function*() {
      yield* Transport.deliver(request())
      const fiber = yield* Effect.fork(Transport.deliver(request()))
      yield* TestClock.adjust(Duration.seconds(1))
      yield* Fiber.interrupt(fiber)
      const [conn] = yield* connections
      expect(conn!.commands.filter((c) => c.startsWith("MAIL"))).toHaveLength(2)
      expect(conn!.closed).toBe(true)
      expect(yield* idle).toBe(0)
    }).pipe(Effect.provide(layers("", {
      [IP]: { script: [...opening, ...transaction(), Script.expect(/^MAIL FROM/), Script.stall] }
    }))))
})
