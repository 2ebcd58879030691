/**
 * Connection reuse on virtual time: the pool's limits (messages per connection, idle time, age), RSET after a
 * transaction that did not end cleanly, an idle connection the server gave up on, and QUIT when the layer's scope
 * closes. Scripted peers count the connections and record every command.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Exit, Fiber, Layer, Stream, TestClock } from "effect"
import * as nodeTls from "node:tls"
import * as ConnectionPool from "../src/ConnectionPool.js"
import * as ConnectorTest from "../src/ConnectorTest.js"
import type * as Dane from "../src/Dane.js"
import { Script, type Step } from "../src/ConnectorTest.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import { sessionKey } from "../src/internal/transport/host.js"
import { startTlsCa } from "../src/internal/transport/trust.js"
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

const layers = (reuse: string, peers: ConnectorTest.TestPeers) => layersOf(config(reuse), zones, peers)

const layersOf = (text: string, zones: Dns.Zones, peers: ConnectorTest.TestPeers) =>
  Layer.mergeAll(
    ConnectionPool.layer,
    Layer.orDie(OutboundConfig.layerFromText(text)),
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

describe("the pool key: the host's name and its DANE decision", () => {
  it.effect("two MX hosts on one address: a session is reused only for the host it was opened for", () =>
    Effect.gen(function*() {
      const reports = []
      for (const rcpt of ["x@a.test", "x@b.test", "y@a.test", "y@b.test"]) reports.push(yield* Transport.deliver(request(rcpt)))
      expect(reports.map((r) => [r.attempts[0]!.host, r.attempts[0]!.connection, r.attempts[0]!.reused])).toEqual([
        ["mx.a.test", "c1", false],
        ["mx.b.test", "c2", false],
        ["mx.a.test", "c1", true],
        ["mx.b.test", "c2", true]
      ])
      expect((yield* connections).map((c) => c.ip)).toEqual([IP, IP])
    }).pipe(Effect.provide(layersOf(config("messages = 10"), {
      ...zones,
      "b.test": { mx: [{ exchange: "mx.b.test", priority: 10 }] },
      "mx.b.test": { a: [IP] }
    }, {
      [IP]: [
        { script: [...opening, ...transaction(), ...transaction(), ...quit] },
        { script: [...opening, ...transaction(), ...transaction(), ...quit] }
      ]
    }))))

  it("the key names the certificate's host and the DANE status and records; equal only when all are equal", () => {
    const tls = { starttls: "optional", allowInvalidCerts: false, required: false } as const
    const record = { usage: 3, selector: 1, matchingType: 1, data: "ab".repeat(32) }
    const dane = (status: Dane.HostDane["status"], records: ReadonlyArray<Dane.TlsaRecord>): Dane.HostDane => ({
      status,
      name: "_25._tcp.mx.a.test",
      secure: status !== "insecure",
      records,
      reason: "",
      authenticate: status === "usable" ? { records, names: ["mx.a.test", "a.test"] } : null,
      requireTls: status === "usable" || status === "unusable",
      error: null
    })
    const key = (servername: string, d: Dane.HostDane | null) => sessionKey({ tls, servername }, d)
    const usable = dane("usable", [record])
    const keys = [
      key("mx.a.test", null),
      key("mx.b.test", null),
      key("mx.a.test", usable),
      key("mx.a.test", dane("usable", [{ ...record, data: "cd".repeat(32) }])),
      key("mx.a.test", dane("unusable", [{ ...record, usage: 1 }])),
      key("mx.a.test", dane("none", [])),
      key("mx.a.test", dane("insecure", []))
    ]
    expect(new Set(keys).size).toBe(keys.length)
    expect(key("mx.a.test", usable)).toBe(key("mx.a.test", dane("usable", [{ ...record }])))
  })

  it("the key names the trusted CAs: Node's roots and the extra ones, as startTlsCa lists them, or any other list", () => {
    const tls = { starttls: "optional", allowInvalidCerts: false, required: false } as const
    const key = (ca: ReadonlyArray<string> | undefined) =>
      sessionKey({ tls: { ...tls, ca }, servername: "mx.a.test" }, null)
    const roots = nodeTls.rootCertificates
    const lists = [
      undefined,
      startTlsCa(["A"], undefined),
      startTlsCa(["B"], undefined),
      startTlsCa(["A", "B"], undefined),
      startTlsCa([], ["A", "C"]),
      // lists startTlsCa does not make: written out whole, never equal to one it makes
      ["A"],
      roots.slice(1),
      [...roots.slice(0, -1), "A"],
      [...roots.slice(0, -1), "A", "B"],
      [...roots, "roots+"]
    ]
    const keys = lists.map(key)
    expect(new Set(keys).size).toBe(keys.length)
    expect(key(startTlsCa(["A"], ["B"]))).toBe(key(startTlsCa([], ["A", "B"])))
    expect(key(startTlsCa(["A"], undefined))).toBe(key([...roots, "A"]))
  })
})

describe("the plaintext session after a failed STARTTLS", () => {
  const tlsConfig = config("").replace("starttls = \"disable\"", "starttls = \"optional\"")
  const offering: ReadonlyArray<Step> = [
    Script.reply("220 mx.a.test ESMTP"),
    Script.expect("EHLO client.test"),
    Script.reply("250-mx.a.test", "250 STARTTLS")
  ]
  const failingTls: ReadonlyArray<Step> = [...offering, Script.expect("STARTTLS"), Script.reply("220 go"), Script.handshakeFails]

  it.effect("is pooled under a plaintext key: the next opportunistic delivery takes it, one that requires TLS never", () =>
    Effect.gen(function*() {
      const first = yield* Transport.deliver(request())
      expect(first.attempts.map((a) => [a.connection, a.reused, a.phase, a.outcome, a.tls])).toEqual([
        ["c1", false, "tls", "failed", null],
        ["c2", false, "quit", "completed", null]
      ])
      expect(yield* idle).toBe(1)
      // Under the same opportunistic TLS: the plaintext session, without a second failed handshake.
      const second = yield* Transport.deliver(request())
      expect(second.recipients[0]!.status).toBe("delivered")
      expect(second.attempts.map((a) => [a.connection, a.reused, a.tls])).toEqual([["c2", true, null]])
      // REQUIRETLS: TLS or nothing. The plaintext session is not for it; a new connection, whose handshake fails.
      const strict = yield* Transport.deliver({ ...request(), requireTls: true })
      expect(strict.recipients[0]!.status).not.toBe("delivered")
      expect(strict.attempts.map((a) => [a.connection, a.reused, a.phase])).toEqual([["c3", false, "tls"]])
      const conns = yield* connections
      expect(conns).toHaveLength(3)
      expect(conns[1]!.commands.filter((c) => c.startsWith("MAIL"))).toHaveLength(2)
      expect(conns[1]!.commands).not.toContain("STARTTLS")
      expect(conns[1]!.closed).toBe(false)
      expect(yield* idle).toBe(1)
    }).pipe(Effect.provide(layersOf(tlsConfig, zones, {
      [IP]: [
        { script: failingTls },
        { script: [...offering, ...transaction(), ...transaction(), ...quit] },
        { script: failingTls }
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

describe("Transport.deliverAll when its input fails", () => {
  it.effect("the delivery under way finishes and is reported, nothing starts after, then the input's error", () =>
    Effect.gen(function*() {
      const outcomes: Array<Transport.Outcome<string>> = []
      const input = Stream.concat(
        Stream.make({ id: "slow", request: request("slow@a.test") }),
        Stream.fail("input broke" as const)
      )
      const fiber = yield* Transport.deliverAll(input, { concurrency: 2 }).pipe(
        Stream.runForEach((o) => Effect.sync(() => outcomes.push(o))),
        Effect.fork
      )
      yield* TestClock.adjust(Duration.seconds(2))
      const exit = yield* Fiber.await(fiber)
      expect(exit).toEqual(Exit.fail("input broke"))
      // the message went after the input failed: its reply came, and it is reported delivered
      expect(outcomes.map((o) => [o.id, Either.getOrThrow(o.report).recipients[0]!.status])).toEqual([
        ["slow", "delivered"]
      ])
      const [conn] = yield* connections
      expect(conn!.commands.filter((c) => c.startsWith("MAIL"))).toHaveLength(1)
    }).pipe(Effect.provide(layers("", {
      [IP]: {
        script: [
          ...opening,
          Script.expect(/^MAIL FROM/),
          Script.reply("250 ok"),
          Script.expect(/^RCPT TO:<slow@/),
          Script.reply("250 ok"),
          Script.expect("DATA"),
          Script.reply("354 go"),
          Script.expectData,
          Script.delay("1 second"),
          Script.reply("250 queued"),
          ...quit
        ]
      }
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

describe("relay routes", () => {
  // Three relays at one address and port: r1 and r2 log in as the same user with different secrets, r3 as another
  // user. A session logged in is reused only for the same relay credentials; LMTP's per-recipient reply ends each
  // transaction.
  const RELAY = "192.0.2.9"
  const relays = `
[queue.outbound]
hostname = "'client.test'"
next-hop = [ { if = "rcpt_domain == 'b.test'", then = "'r2'" },
             { if = "rcpt_domain == 'c.test'", then = "'r3'" },
             { else = "'r1'" } ]
[queue.outbound.tls]
starttls = "disable"
mta-sts = "disable"
${["r1 u p1", "r2 u p2", "r3 v p1"].map((line) => {
    const [id, user, secret] = line.split(" ")
    return `[remote.${id}]
address = "${RELAY}"
port = 2525
protocol = "lmtp"
tls.implicit = false
auth.username = "${user}"
auth.secret = "${secret}"
auth.allow-plaintext = true
`
  }).join("")}`
  const login = (user: string, secret: string): ReadonlyArray<Step> => [
    Script.reply("220 relay.test LMTP"),
    Script.expect("LHLO client.test"),
    Script.reply("250-relay.test", "250 AUTH PLAIN"),
    Script.expect(`AUTH PLAIN ${Buffer.from(`\0${user}\0${secret}`).toString("base64")}`),
    Script.reply("235 2.7.0 ok")
  ]
  const lmtp: ReadonlyArray<Step> = [
    Script.expect(/^MAIL FROM:<s@origin\.test>/),
    Script.reply("250 ok"),
    Script.expect(/^RCPT TO:</),
    Script.reply("250 ok"),
    Script.expect("DATA"),
    Script.reply("354 go"),
    Script.expectData,
    Script.reply("250 2.0.0 delivered")
  ]
  // No DNS zone: a relay given as an IP address is not looked up.
  const relayLayers = (peers: ConnectorTest.TestPeers) => layersOf(relays, {}, peers)

  it.effect("a session is pooled at the relay's port and reused only under the same credentials", () =>
    Effect.gen(function*() {
      const reports = []
      for (const rcpt of ["x@a.test", "y@a.test", "x@b.test", "x@c.test", "z@a.test"]) {
        reports.push(yield* Transport.deliver(request(rcpt)))
      }
      expect(reports.map((r) => r.recipients[0]!.status)).toEqual(Array(5).fill("delivered"))
      expect(reports.map((r) => [r.attempts[0]!.connection, r.attempts[0]!.reused])).toEqual([
        ["c1", false],
        ["c1", true],
        ["c2", false],
        ["c3", false],
        ["c1", true]
      ])
      const conns = yield* connections
      expect(conns.map((c) => c.port)).toEqual([2525, 2525, 2525])
      // One login per connection, none again when the session is reused.
      expect(conns.map((c) => c.commands.filter((command) => command.startsWith("AUTH")).length)).toEqual([1, 1, 1])
      expect(conns[0]!.commands.filter((c) => c.startsWith("MAIL"))).toHaveLength(3)
      expect(conns.flatMap((c) => c.mismatches)).toEqual([])
      expect(yield* idle).toBe(3)
    }).pipe(Effect.provide(relayLayers({
      [RELAY]: [
        { script: [...login("u", "p1"), ...lmtp, ...lmtp, ...lmtp, ...quit] },
        { script: [...login("u", "p2"), ...lmtp, ...quit] },
        { script: [...login("v", "p1"), ...lmtp, ...quit] }
      ]
    }))))

  it.effect("an LMTP recipient's 421 after the message: the connection is not pooled", () =>
    Effect.gen(function*() {
      const report = yield* Transport.deliver({ ...request(), recipients: ["x@a.test", "y@a.test"] })
      expect(report.recipients.map((r) => r.status)).toEqual(["delivered", "deferred"])
      expect(yield* idle).toBe(0)
      const conns = yield* connections
      expect(conns).toHaveLength(1)
      expect(conns[0]!.closed).toBe(true)
    }).pipe(Effect.provide(relayLayers({
      [RELAY]: {
        script: [
          ...login("u", "p1"),
          ...lmtp.slice(0, 4),
          Script.expect(/^RCPT TO:</),
          Script.reply("250 ok"),
          ...lmtp.slice(4),
          // The second recipient's own reply: the server is closing the connection.
          Script.reply("421 4.3.0 shutting down"),
          ...quit
        ]
      }
    }))))
})
