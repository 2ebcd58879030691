import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Option } from "effect"
import * as v8 from "node:v8"
import * as vm from "node:vm"
import * as Connector from "../src/Connector.js"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script, type Step, type TestPeer } from "../src/ConnectorTest.js"
import type { AttemptRecord } from "../src/DeliveryReport.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Transport from "../src/Transport.js"
import { recorder } from "./fixtures/tracer.js"
import { run, statuses } from "./utils/delivery.js"

const CONFIG = `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv6_then_ipv4"
[queue.outbound.timeouts]
connect = "30s"
greeting = "20s"
`

const greeting = [Script.reply("220 mx.test ESMTP")]
const ehlo = [Script.expect("EHLO client.test"), Script.reply("250-mx.test", "250 8BITMIME")]
const quit = [Script.expect("QUIT"), Script.reply("221 bye")]

/** A whole session: every recipient answered as given (default 250), then DATA answered `data`. */
const session = (
  rcpts: ReadonlyArray<readonly [string, string]>,
  data: string | null = "250 2.0.0 queued"
): ReadonlyArray<Step> => [
  ...greeting,
  ...ehlo,
  Script.expect(/^MAIL FROM:<sender@origin\.test>/),
  Script.reply("250 2.1.0 ok"),
  ...rcpts.flatMap(([rcpt, reply]) => [Script.expect(new RegExp(`^RCPT TO:<${rcpt}>`)), Script.reply(reply)]),
  ...(data === null
    ? []
    : [Script.expect("DATA"), Script.reply("354 go ahead"), Script.expectData, Script.reply(data)]),
  ...quit
]

const accept = (script: ReadonlyArray<Step>): TestPeer => ({ script })

/** MTA-STS policies by domain, served by the in-memory fetcher. */
const noPolicies: Record<string, string> = {}

const layers = (zones: Dns.Zones, peers: ConnectorTest.TestPeers, config = CONFIG, policies = noPolicies) =>
  Layer.mergeAll(
    Layer.orDie(OutboundConfig.layerFromText(config)),
    Dns.layerTest(zones),
    ConnectorTest.layer(peers),
    PolicyCache.layer,
    MtaSts.layerTest((request) =>
      Effect.succeed(
        policies[request.domain] === undefined ? { status: 404, body: "" } : { body: policies[request.domain]! }
      )
    )
  )

const request = (...recipients: ReadonlyArray<string>): Transport.DeliveryRequest => ({
  message: "Subject: hi\r\n\r\nhello\r\n",
  sender: "sender@origin.test",
  recipients
})

const summary = (a: AttemptRecord) => [a.host, a.ip, a.startMs, a.phase, a.outcome, a.error?.kind ?? null]

const oneHost: Dns.Zones = {
  "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }] },
  "mx1.a.test": { aaaa: ["2001:db8::1"], a: ["192.0.2.1"] }
}

const twoHosts: Dns.Zones = {
  "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }, { exchange: "mx2.a.test", priority: 20 }] },
  "mx1.a.test": { a: ["192.0.2.1", "192.0.2.2"] },
  "mx2.a.test": { a: ["192.0.2.3"] }
}

describe("Transport.deliver: racing (RFC 8305)", () => {
  it.effect("starts the second address at exactly 250 ms when the first stalls, and closes the loser", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      expect(report.attempts.map(summary)).toEqual([
        ["mx1.a.test", "2001:db8::1", 0, "connect", "cancelled", null],
        ["mx1.a.test", "192.0.2.1", 250, "quit", "completed", null]
      ])
      const connections = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(connections.map((c) => [c.ip, c.outcome, c.closed])).toEqual([
        ["2001:db8::1", "stall", true],
        ["192.0.2.1", "accept", true]
      ])
    }).pipe(
      Effect.provide(layers(oneHost, {
        "2001:db8::1": { connect: "stall" },
        "192.0.2.1": accept(session([["rcpt@a.test", "250 2.1.5 ok"]]))
      }))
    ))

  it.effect("starts the second address as soon as the first is refused", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(report.attempts.map(summary)).toEqual([
        ["mx1.a.test", "2001:db8::1", 0, "connect", "failed", "refused"],
        ["mx1.a.test", "192.0.2.1", 10, "quit", "completed", null]
      ])
      expect(report.attempts[0]!.durationMs).toBe(10)
    }).pipe(
      Effect.provide(layers(oneHost, {
        "2001:db8::1": { connect: "refuse", delay: "10 millis" },
        "192.0.2.1": accept(session([["rcpt@a.test", "250 ok"]]))
      }))
    ))

  it.effect("with connection-attempt-delay = false, waits for the first address's connect timeout", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      expect(report.attempts.map(summary)).toEqual([
        ["mx1.a.test", "2001:db8::1", 0, "connect", "failed", "timeout"],
        ["mx1.a.test", "192.0.2.1", 30_000, "quit", "completed", null]
      ])
    }).pipe(
      Effect.provide(layers(
        oneHost,
        { "2001:db8::1": { connect: "stall" }, "192.0.2.1": accept(session([["rcpt@a.test", "250 ok"]])) },
        CONFIG.replace("[queue.outbound]\n", "[queue.outbound]\nconnection-attempt-delay = false\n")
      ))
    ))
})

describe("Transport.deliver: fallback rules", () => {
  it.effect("a refused connect moves to the next address of the same host", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      expect(report.attempts.map(summary)).toEqual([
        ["mx1.a.test", "192.0.2.1", 0, "connect", "failed", "refused"],
        ["mx1.a.test", "192.0.2.2", 0, "quit", "completed", null]
      ])
    }).pipe(
      Effect.provide(layers(twoHosts, {
        "192.0.2.1": { connect: "refuse" },
        "192.0.2.2": accept(session([["rcpt@a.test", "250 ok"]]))
      }))
    ))

  it.effect("a 421 greeting moves to the next host and skips the host's other addresses", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      expect(report.attempts.map(summary)).toEqual([
        ["mx1.a.test", "192.0.2.1", 0, "greeting", "failed", "reply"],
        ["mx2.a.test", "192.0.2.3", 0, "quit", "completed", null]
      ])
      expect(report.recipients[0]!.host).toBe("mx2.a.test")
      const connections = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(connections.map((c) => c.ip)).toEqual(["192.0.2.1", "192.0.2.3"])
    }).pipe(
      Effect.provide(layers(twoHosts, {
        "192.0.2.1": accept([Script.reply("421 4.3.2 busy"), ...quit]),
        "192.0.2.2": accept(session([["rcpt@a.test", "250 ok"]])),
        "192.0.2.3": accept(session([["rcpt@a.test", "250 ok"]]))
      }))
    ))

  it.effect("once MAIL FROM is answered 451, the domain's attempt ends: MX2 is never contacted", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(report.recipients).toEqual([{
        address: "rcpt@a.test",
        status: "deferred",
        host: "mx1.a.test",
        reply: { code: 451, enhanced: "4.3.0", text: "try later" },
        error: expect.objectContaining({ phase: "mail-from", kind: "reply", permanent: false, code: 451 })
      }])
      const connections = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(connections.map((c) => c.ip)).toEqual(["192.0.2.1"])
      expect(report.attempts.map(summary)).toEqual([["mx1.a.test", "192.0.2.1", 0, "quit", "completed", null]])
    }).pipe(
      Effect.provide(layers(twoHosts, {
        "192.0.2.1": accept([
          ...greeting,
          ...ehlo,
          Script.expect(/^MAIL FROM:/),
          Script.reply("451 4.3.0 try later"),
          ...quit
        ]),
        "192.0.2.3": accept(session([["rcpt@a.test", "250 ok"]]))
      }))
    ))

  it.effect("every host failing temporarily defers", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "greeting", code: 421 })
      expect(report.attempts.map(summary)).toEqual([
        ["mx1.a.test", "192.0.2.1", 0, "connect", "failed", "refused"],
        ["mx1.a.test", "192.0.2.2", 0, "connect", "failed", "refused"],
        ["mx2.a.test", "192.0.2.3", 0, "greeting", "failed", "reply"]
      ])
    }).pipe(
      Effect.provide(layers(twoHosts, {
        "192.0.2.1": { connect: "refuse" },
        "192.0.2.2": { connect: "refuse" },
        "192.0.2.3": accept([Script.reply("421 busy"), ...quit])
      }))
    ))

  it.effect("every host failing permanently fails", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "failed"]])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "ehlo", code: 550, permanent: true })
    }).pipe(
      Effect.provide(layers(twoHosts, {
        "192.0.2.1": accept([Script.reply("554 5.7.1 go away"), ...quit]),
        "192.0.2.3": accept([...greeting, Script.expect(/^EHLO/), Script.reply("550 5.7.1 no"), ...quit])
      }))
    ))

  it.effect("permanent and temporary host failures mixed defer (unlike Stalwart's last error wins)", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      // The last host failed permanently, yet an earlier one only temporarily: try again later.
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "greeting", code: 554, permanent: true })
    }).pipe(
      Effect.provide(layers(twoHosts, {
        "192.0.2.1": { connect: "refuse" },
        "192.0.2.2": { connect: "refuse" },
        "192.0.2.3": accept([Script.reply("554 5.7.1 go away"), ...quit])
      }))
    ))
})

describe("Transport.deliver: per-recipient results", () => {
  const mixed = [["ok@a.test", "250 2.1.5 ok"], ["gone@a.test", "550 5.1.1 no such user"], [
    "grey@a.test",
    "451 4.7.1 greylisted"
  ]] as const

  it.effect("a 550, a 451 and an accepted recipient end failed / deferred / delivered", () =>
    Effect.gen(function*() {
      const report = yield* run(request("ok@a.test", "gone@a.test", "grey@a.test"))
      expect(statuses(report)).toEqual([["ok@a.test", "delivered"], ["gone@a.test", "failed"], [
        "grey@a.test",
        "deferred"
      ]])
      expect(report.recipients.map((r) => r.reply)).toEqual([
        { code: 250, enhanced: "2.0.0", text: "queued" },
        { code: 550, enhanced: "5.1.1", text: "no such user" },
        { code: 451, enhanced: "4.7.1", text: "greylisted" }
      ])
    }).pipe(Effect.provide(layers(twoHosts, { "192.0.2.1": accept(session(mixed)) }))))

  it.effect("a DATA 554 afterwards changes only the accepted recipient", () =>
    Effect.gen(function*() {
      const report = yield* run(request("ok@a.test", "gone@a.test", "grey@a.test"))
      expect(statuses(report)).toEqual([["ok@a.test", "failed"], ["gone@a.test", "failed"], [
        "grey@a.test",
        "deferred"
      ]])
      expect(report.recipients.map((r) => r.reply?.code)).toEqual([554, 550, 451])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "data", kind: "reply", permanent: true })
    }).pipe(
      Effect.provide(layers(twoHosts, { "192.0.2.1": accept(session(mixed, "554 5.6.0 content rejected")) }))
    ))

  it.effect("no recipient is delivered when the connection drops before the end-of-data reply", () =>
    Effect.gen(function*() {
      const report = yield* run(request("ok@a.test"))
      expect(statuses(report)).toEqual([["ok@a.test", "deferred"]])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "data", permanent: false })
      expect(report.attempts.map(summary)).toEqual([["mx1.a.test", "192.0.2.1", 0, "data", "failed", "reset"]])
    }).pipe(
      Effect.provide(layers(twoHosts, {
        "192.0.2.1": accept([
          ...greeting,
          ...ehlo,
          Script.expect(/^MAIL FROM:/),
          Script.reply("250 ok"),
          Script.expect(/^RCPT TO:/),
          Script.reply("250 ok"),
          Script.expect("DATA"),
          Script.reply("354 go"),
          Script.expectData,
          Script.reset
        ])
      }))
    ))

  it.effect("domains are delivered independently, each with its own connection", () =>
    Effect.gen(function*() {
      const report = yield* run(request("x@a.test", "y@b.test", "z@c.test"))
      expect(statuses(report)).toEqual([["x@a.test", "delivered"], ["y@b.test", "delivered"], [
        "z@c.test",
        "failed"
      ]])
      expect(report.recipients[2]!.error).toMatchObject({ phase: "dns", permanent: true })
      expect(report.plan.domains.map((d) => d.domain)).toEqual(["a.test", "b.test", "c.test"])
      const connections = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(connections.map((c) => c.ip)).toEqual(["192.0.2.1", "192.0.2.1"])
    }).pipe(
      Effect.provide(layers({
        ...twoHosts,
        "b.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }] },
        "c.test": { mx: [{ exchange: ".", priority: 0 }] }
      }, {
        "192.0.2.1": [accept(session([["x@a.test", "250 ok"]])), accept(session([["y@b.test", "250 ok"]]))]
      }))
    ))

  it.effect("an address that could inject a command is refused before any connection", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Transport.deliver(request("ok@a.test", "evil@a.test>\r\nRSET")))
      expect(Exit.isFailure(exit)).toBe(true)
      const connections = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(connections).toEqual([])
    }).pipe(Effect.provide(layers(twoHosts, {}))))
})

describe("Transport.deliver: the plan and the trace", () => {
  it.effect("records the MX records, hosts, strategy and addresses", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(report.plan.domains).toEqual([{
        domain: "a.test",
        recipients: ["rcpt@a.test"],
        route: { type: "mx", name: "mx" },
        mx: [{ exchange: "mx1.a.test", priority: 10 }, { exchange: "mx2.a.test", priority: 20 }],
        hosts: [{
          host: "mx1.a.test",
          preference: 10,
          implicit: false,
          strategy: "ipv6_then_ipv4",
          addresses: ["192.0.2.1", "192.0.2.2"],
          truncated: [],
          sourceIps: { v4: [], v6: [] },
          strategies: { connection: "default", tls: "default" },
          mtaSts: null,
          // the in-memory zones are unsigned: DANE does not apply, the TLSA records are not even looked up
          dane: {
            status: "insecure",
            name: "_25._tcp.mx1.a.test",
            secure: false,
            records: [],
            reason: "the MX records of a.test are not signed"
          },
          error: null
        }],
        dropped: [],
        limits: { mx: 5, multihomed: 2 },
        strategies: { route: "mx", tls: "default", schedule: "default" },
        mtaSts: { status: "none", source: null, id: null, policy: null, error: null },
        error: null
      }])
      expect(report.attempts[0]).toMatchObject({ ehlo: "client.test", tls: null, source: null })
    }).pipe(Effect.provide(layers(twoHosts, { "192.0.2.1": accept(session([["rcpt@a.test", "250 ok"]])) }))))
})

describe("Transport.deliver: MTA-STS", () => {
  const stsZones = (mode: string): [Dns.Zones, Record<string, string>] => [{
    ...twoHosts,
    "_mta-sts.a.test": { txt: ["v=STSv1; id=20261129"] }
  }, { "a.test": `version: STSv1\nmode: ${mode}\nmx: mx2.a.test\nmax_age: 86400\n` }]

  const tlsSession = (rcpt: string): ReadonlyArray<Step> => [
    ...greeting,
    Script.expect("EHLO client.test"),
    Script.reply("250-mx.test", "250 STARTTLS"),
    Script.expect("STARTTLS"),
    Script.reply("220 go ahead"),
    Script.handshake,
    Script.expect("EHLO client.test"),
    Script.reply("250 mx.test"),
    ...session([[rcpt, "250 ok"]]).slice(greeting.length + ehlo.length)
  ]

  it.effect("enforce: an MX the policy does not list is never contacted, and TLS is required", () => {
    const [zones, policies] = stsZones("enforce")
    return Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      const connections = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(connections.map((c) => c.ip)).toEqual(["192.0.2.3"])
      expect(connections[0]!.startTls.map((o) => [o.servername, o.rejectUnauthorized])).toEqual([["mx2.a.test", true]])
      const plan = report.plan.domains[0]!
      expect(plan.mtaSts).toMatchObject({ status: "found", source: "fetched", id: "20261129" })
      expect(plan.hosts.map((h) => [h.host, h.mtaSts, h.error?.kind ?? null, h.error?.permanent ?? null])).toEqual([
        ["mx1.a.test", "mismatch", "policy", true],
        ["mx2.a.test", "match", null, null]
      ])
      expect(report.attempts[0]).toMatchObject({
        host: "mx2.a.test",
        tls: { version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", verified: true, reason: null }
      })
    }).pipe(
      Effect.provide(layers(zones, { "192.0.2.3": accept(tlsSession("rcpt@a.test")) }, CONFIG + `
[queue.outbound.tls]
allow-invalid-certs = true
`, policies))
    )
  })

  it.effect("enforce: no delivery in plaintext when STARTTLS is not offered; deferred, never bounced", () => {
    const [zones, policies] = stsZones("enforce")
    return Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "tls", kind: "policy", permanent: false })
      expect(report.recipients[0]!.host).toBe("mx2.a.test")
      const connections = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(connections[0]!.written).not.toMatch(/MAIL FROM/)
    }).pipe(
      Effect.provide(layers(zones, { "192.0.2.3": accept([...greeting, ...ehlo, ...quit]) }, CONFIG, policies))
    )
  })

  it.effect("enforce: the domain fails permanently when no listed MX remains", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "failed"]])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "mta-sts", kind: "policy", permanent: true })
      const connections = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(connections).toEqual([])
    }).pipe(
      Effect.provide(layers({
        "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }] },
        "mx1.a.test": { a: ["192.0.2.1"] },
        "_mta-sts.a.test": { txt: ["v=STSv1; id=1"] }
      }, {}, CONFIG, { "a.test": "version: STSv1\nmode: enforce\nmx: other.test\nmax_age: 86400\n" }))
    ))

  it.effect("testing: delivered to the unlisted MX, the mismatch recorded", () => {
    const [zones, policies] = stsZones("testing")
    return Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      expect(report.attempts.map((a) => a.host)).toEqual(["mx1.a.test"])
      expect(report.plan.domains[0]!.hosts[0]!.mtaSts).toBe("mismatch")
      expect(report.warnings).toContain("MTA-STS (testing): mx1.a.test is not listed in the policy of a.test")
    }).pipe(
      Effect.provide(layers(zones, { "192.0.2.1": accept(session([["rcpt@a.test", "250 ok"]])) }, CONFIG, policies))
    )
  })

  it.effect("require: a domain that publishes no policy fails permanently, nothing contacted", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "failed"]])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "mta-sts", permanent: true })
    }).pipe(
      Effect.provide(layers(twoHosts, {}, CONFIG + `
[queue.outbound.tls]
mta-sts = "require"
`))
    ))
})

describe("Transport.explain", () => {
  it.effect("evaluates every setting per domain and host without connecting", () =>
    Effect.gen(function*() {
      const report = yield* Transport.explain({ ...request("rcpt@a.test"), attempt: { retryNum: 1 } })
      const domain = report.domains[0]!
      expect(domain.hosts.map((h) => [h.host, h.strategy, h.addresses, h.settings?.ehlo, h.settings?.timeouts.connect]))
        .toEqual([
          ["mx1.a.test", "ipv4_only", ["192.0.2.1"], "retry.client.test", 5_000],
          ["mx2.a.test", "ipv4_only", ["192.0.2.3"], "retry.client.test", 5_000]
        ])
      expect(domain.hosts[0]!.truncated).toEqual(["192.0.2.2"])
      expect(domain.hosts[0]!.settings).toMatchObject({
        starttls: "optional",
        allowInvalidCerts: false,
        requireTls: false,
        connectionAttemptDelayMs: 250,
        timeouts: { greeting: 300_000, tls: 180_000, data: 600_000 }
      })
      expect(domain.limits).toEqual({ mx: 5, multihomed: 1 })
      expect(domain.mtaStsTimeoutMs).toBe(600_000)
      const connections = yield* Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
      expect(connections).toEqual([])
    }).pipe(
      Effect.provide(layers(twoHosts, {}, `
[queue.outbound]
hostname = [ { if = "retry_num > 0", then = "'retry.client.test'" }, { else = "'client.test'" } ]
ip-strategy = [ { if = "retry_num == 0", then = "ipv6_only" }, { else = "ipv4_only" } ]
limits.multihomed = 1
[queue.outbound.timeouts]
connect = [ { if = "retry_num > 0", then = "5s" }, { else = "1m" } ]
`))
    ))
})

describe("Transport: deliver and explain share one evaluation per stage", () => {
  const zones: Dns.Zones = {
    "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }] },
    "mx1.a.test": { a: ["192.0.2.1"] },
    "b.test": { mx: [{ exchange: "mx1.b.test", priority: 10 }] },
    "mx1.b.test": { a: ["192.0.2.5"] }
  }
  const fallback = "queue.outbound.limits.mx: the expression \"retry_num - 1\" gave the number -1, expected a positive " +
    "integer (it is not at least 1); used the default 5 instead"
  const config = CONFIG + "[queue.outbound.limits]\nmx = \"retry_num - 1\"\n"
  const peers = {
    "192.0.2.1": accept(session([["rcpt@a.test", "250 ok"]])),
    "192.0.2.5": accept(session([["rcpt@b.test", "250 ok"]]))
  }

  it.effect("a fallback met by every domain is one warning of the report; explain shows what deliver used", () =>
    Effect.gen(function*() {
      const delivered = yield* run(request("rcpt@a.test", "rcpt@b.test"))
      expect(statuses(delivered)).toEqual([["rcpt@a.test", "delivered"], ["rcpt@b.test", "delivered"]])
      expect(delivered.warnings).toEqual([fallback])
      expect(delivered.plan.domains.map((d) => d.limits)).toEqual([{ mx: 5, multihomed: 2 }, { mx: 5, multihomed: 2 }])

      const explained = yield* Transport.explain(request("rcpt@a.test", "rcpt@b.test"))
      expect(explained.warnings).toEqual([fallback])
      expect(explained.domains.map((d) => d.warnings)).toEqual([[fallback], [fallback]])
      const settings = explained.domains.map((d) => d.hosts[0]!.settings!)
      expect(settings.map((s) => s.ehlo)).toEqual(delivered.attempts.map((a) => a.ehlo))
      expect(settings[0]!.timeouts).toEqual({
        connect: 30_000,
        greeting: 20_000,
        tls: 180_000,
        ehlo: 300_000,
        mailFrom: 300_000,
        rcptTo: 300_000,
        data: 600_000
      })
    }).pipe(Effect.provide(layers(zones, peers, config))))
})

describe("Transport.deliver: observability", () => {
  const phases = ["smtp.connect", "smtp.greeting", "smtp.ehlo", "smtp.mail-from", "smtp.rcpt-to", "smtp.data", "smtp.quit"]

  it.effect("one span per connection attempt, its phases as events, by OpenTelemetry's attribute names", () =>
    Effect.gen(function*() {
      const { recorded, tracer } = yield* recorder
      yield* run(request("rcpt@a.test")).pipe(Effect.withTracer(tracer))
      const smtp = recorded.spans.filter((s) => s.name.startsWith("smtp."))
      expect(smtp.map((s) => s.name)).toEqual(["smtp.attempt"])
      const attempt = smtp[0]!
      expect(Object.fromEntries(attempt.attributes)).toMatchObject({
        "server.address": "mx1.a.test",
        "network.peer.address": "192.0.2.1",
        "server.port": 25
      })
      expect(attempt.status._tag).toBe("Ended")
      const domainSpan = recorded.spans.find((s) => s.name === "Transport.deliverDomain")!
      expect(Option.getOrNull(attempt.parent)).toBe(domainSpan)
      expect(recorded.events.map((e) => [e.span.name, e.name])).toEqual(phases.map((p) => ["smtp.attempt", p]))
      const greeting = recorded.events.find((e) => e.name === "smtp.greeting")!
      expect(greeting.attributes).toMatchObject({
        "server.address": "mx1.a.test",
        "network.peer.address": "192.0.2.1",
        "smtp.phase": "greeting",
        "smtp.outcome": "ok"
      })
      expect(recorded.spans.find((s) => s.name === "MxPlan.plan")?.parent).toEqual(Option.some(domainSpan))
    }).pipe(Effect.provide(layers(twoHosts, { "192.0.2.1": accept(session([["rcpt@a.test", "250 ok"]])) }))))

  it.effect("with phaseSpans, a span per phase under the attempt's, each ended with its exit", () =>
    Effect.gen(function*() {
      const { recorded, tracer } = yield* recorder
      yield* run(request("rcpt@a.test")).pipe(
        Effect.withTracer(tracer),
        Effect.provideService(Transport.TransportOptions, {
          port: 25,
          ca: undefined,
          domainConcurrency: 8,
          mtaStsPort: 443,
          phaseSpans: true
        })
      )
      const smtp = recorded.spans.filter((s) => s.name.startsWith("smtp."))
      expect(smtp.map((s) => s.name)).toEqual(["smtp.attempt", ...phases])
      const attempt = smtp[0]!
      for (const s of smtp.slice(1)) {
        expect(Option.getOrNull(s.parent)).toBe(attempt)
        expect(s.status._tag).toBe("Ended")
      }
      expect(Object.fromEntries(smtp[2]!.attributes)).toMatchObject({
        "server.address": "mx1.a.test",
        "network.peer.address": "192.0.2.1",
        "smtp.phase": "greeting",
        "smtp.timeout_ms": 20_000
      })
    }).pipe(Effect.provide(layers(twoHosts, { "192.0.2.1": accept(session([["rcpt@a.test", "250 ok"]])) }))))
})

describe("Transport.deliver: a long-lived caller", () => {
  // A connection is acquired in a Happy Eyeballs attempt fiber and released by the caller. A finalizer that carried
  // the attempt fiber's FiberRefs into the caller (Effect.addFinalizer does, docs/upstream/…) kept every connection
  // reachable from the caller's FiberRefs, 12 KB a delivery. Checked from outside: once the deliveries are done,
  // every connection they made can be collected.
  it.live("keeps nothing of its deliveries: every connection can be collected afterwards", () =>
    Effect.gen(function*() {
      v8.setFlagsFromString("--expose-gc")
      const gc = vm.runInNewContext("gc") as () => void
      const made: Array<WeakRef<object>> = []
      const tracking = Layer.effect(
        Connector.Connector,
        Effect.map(Connector.Connector, (inner) =>
          Connector.Connector.of({
            connect: (options) => Effect.tap(inner.connect(options), (connection) => Effect.sync(() => made.push(new WeakRef(connection))))
          }))
      )
      const deliveries = 40
      const program = Effect.gen(function*() {
        for (let i = 0; i < deliveries; i++) {
          const report = yield* Transport.deliver(request("rcpt@a.test"))
          expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
        }
      })
      const base = layers(oneHost, {
        "2001:db8::1": Array.from({ length: deliveries }, () => accept(session([["rcpt@a.test", "250 ok"]])))
      })
      // The same `base` twice is built once: the tracking Connector wraps the scripted one, and replaces it.
      yield* program.pipe(Effect.provide(Layer.merge(base, Layer.provide(tracking, base))))
      // WeakRefs hold their target until the current job ends: let it end, then collect. A continuation of the last
      // delivery still queued on the event loop (a loaded machine runs it later) holds its connection for a moment:
      // collect again, a bounded number of times, while one is left; a connection kept for good stays.
      const alive = () => made.filter((ref) => ref.deref() !== undefined).length
      for (let round = 0; round < 50; round++) {
        yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, round === 0 ? 0 : 20)))
        gc()
        if (alive() === 0) break
      }
      expect(made).toHaveLength(deliveries)
      expect(alive()).toBe(0)
    }))
})

describe("Transport.deliver: per-connection variables", () => {
  it.effect("local_ip is the bound source, or the unspecified address of the remote's family", () =>
    Effect.gen(function*() {
      const report = yield* run(request("rcpt@a.test"))
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      // The IPv6 attempt had no source bound (no v6 list): local_ip "::" made its connect timeout 1 s.
      expect(report.attempts.map((a) => [a.ip, a.source, a.outcome, a.durationMs])).toEqual([
        ["2001:db8::1", null, "failed", 1_000],
        ["192.0.2.1", "192.0.2.77", "completed", 0]
      ])
      expect(report.attempts[1]!.ehlo).toBe("from-192.0.2.77.client.test")
    }).pipe(
      Effect.provide(layers(oneHost, {
        "2001:db8::1": { connect: "stall" },
        "192.0.2.1": accept([
          ...greeting,
          Script.expect("EHLO from-192.0.2.77.client.test"),
          Script.reply("250 mx.test"),
          ...session([["rcpt@a.test", "250 ok"]]).slice(greeting.length + ehlo.length)
        ])
      }, `
[queue.outbound]
ip-strategy = "ipv6_then_ipv4"
connection-attempt-delay = false
hostname = [ { if = "local_ip == '192.0.2.77'", then = "'from-192.0.2.77.client.test'" }, { else = "'client.test'" } ]
source-ip.v4 = "['192.0.2.77']"
[queue.outbound.timeouts]
connect = [ { if = "local_ip == '::'", then = "1s" }, { else = "30s" } ]
`))
    ))
})
