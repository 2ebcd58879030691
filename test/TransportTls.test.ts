/**
 * Issue 14 on virtual time: opportunistic TLS (RFC 7435), downgrade-proof deferrals, SMTPUTF8 as Postfix decides,
 * settings that cannot work said before the first connection, and the report items (host, phase, MX order,
 * warnings).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as tls from "node:tls"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script, type Step, type TestPeer } from "../src/ConnectorTest.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as Transport from "../src/Transport.js"
import { run, statuses } from "./utils/delivery.js"

const CONFIG = `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.tls]
mta-sts = "disable"
`
const REQUIRE = CONFIG + `starttls = "require"\n`

const zones: Dns.Zones = {
  "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }, { exchange: "mx2.a.test", priority: 20 }] },
  "mx1.a.test": { a: ["192.0.2.1"] },
  "mx2.a.test": { a: ["192.0.2.2"] }
}

const layers = (peers: ConnectorTest.TestPeers, config = CONFIG, z: Dns.Zones = zones) =>
  Layer.mergeAll(
    Layer.orDie(OutboundConfig.layerFromText(config)),
    Dns.layerTest(z),
    ConnectorTest.layer(peers),
    PolicyCache.layer,
    MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" }))
  )

const request = (over: Partial<Transport.DeliveryRequest> = {}): Transport.DeliveryRequest => ({
  message: "Subject: hi\r\n\r\nhello\r\n",
  sender: "sender@origin.test",
  recipients: ["rcpt@a.test"],
  ...over
})

const connections = Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)

const greet = [Script.reply("220 mx.test ESMTP")]
const ehlo = (...keywords: ReadonlyArray<string>) => [
  Script.expect("EHLO client.test"),
  Script.reply(...["mx.test", ...keywords].map((k, i, all) => `250${i === all.length - 1 ? " " : "-"}${k}`))
]
const transaction: ReadonlyArray<Step> = [
  Script.expect(/^MAIL FROM:<sender@origin\.test>/),
  Script.reply("250 ok"),
  Script.expect("RCPT TO:<rcpt@a.test>"),
  Script.reply("250 ok"),
  Script.expect("DATA"),
  Script.reply("354 go"),
  Script.expectData,
  Script.reply("250 2.0.0 queued"),
  Script.expect("QUIT"),
  Script.reply("221 bye")
]
const quit = [Script.expect("QUIT"), Script.reply("221 bye")]
const starttls = (handshake: Step): ReadonlyArray<Step> => [
  ...greet,
  ...ehlo("STARTTLS"),
  Script.expect("STARTTLS"),
  Script.reply("220 go"),
  handshake
]
const peer = (script: ReadonlyArray<Step>): TestPeer => ({ script })

describe("opportunistic TLS (RFC 7435) under tls.starttls = optional", () => {
  for (const reason of ["self-signed", "name-mismatch", "expired", "untrusted-root"]) {
    it.effect(`a ${reason} certificate: delivered over TLS, the attempt says unverified and why`, () =>
      Effect.gen(function*() {
        const report = yield* run(request())
        expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
        expect(report.attempts.map((a) => [a.host, a.phase, a.outcome, a.tls])).toEqual([
          ["mx1.a.test", "quit", "completed", {
            version: "TLSv1.3",
            cipher: "TLS_AES_256_GCM_SHA384",
            verified: false,
            reason,
            dane: { status: "insecure", record: null, reason: "the MX records of a.test are not signed" }
          }]
        ])
        const [c] = yield* connections
        expect(c!.startTls.map((o) => o.rejectUnauthorized)).toEqual([false])
      }).pipe(Effect.provide(layers({
        "192.0.2.1": peer([...starttls(Script.handshakeUnverified(reason)), ...ehlo(), ...transaction])
      }))))
  }

  it.effect("a verified certificate says verified: true", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(report.attempts[0]!.tls).toMatchObject({ verified: true, reason: null })
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer([...starttls(Script.handshake), ...ehlo(), ...transaction])
    }))))

  it.effect("a handshake that fails outright: plaintext on a new connection to the same address, both in the trace", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      expect(report.attempts.map((a) => [a.host, a.ip, a.phase, a.outcome, a.error?.kind ?? null, a.tls])).toEqual([
        ["mx1.a.test", "192.0.2.1", "tls", "failed", "tls", null],
        ["mx1.a.test", "192.0.2.1", "quit", "completed", null, null]
      ])
      const all = yield* connections
      expect(all.map((c) => [c.ip, c.closed, c.written.includes("STARTTLS"), c.written.includes("MAIL FROM")])).toEqual([
        ["192.0.2.1", true, true, false],
        ["192.0.2.1", true, false, true]
      ])
    }).pipe(Effect.provide(layers({
      "192.0.2.1": [
        peer(starttls(Script.handshakeFails)),
        peer([...greet, ...ehlo("STARTTLS"), ...transaction])
      ]
    }))))

  it.effect("the plaintext retry that cannot connect: the next host, the retry's failure in the trace", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      expect(report.attempts.map((a) => [a.host, a.phase, a.outcome, a.error?.kind ?? null])).toEqual([
        ["mx1.a.test", "tls", "failed", "tls"],
        ["mx1.a.test", "connect", "failed", "refused"],
        ["mx2.a.test", "quit", "completed", null]
      ])
    }).pipe(Effect.provide(layers({
      "192.0.2.1": [peer(starttls(Script.handshakeFails)), { connect: "refuse" }],
      "192.0.2.2": peer([...greet, ...ehlo(), ...transaction])
    }))))
})

describe("TLS required: strict verification, and a downgrade defers", () => {
  it.effect("require: an unverifiable certificate is a temporary tls failure, never plaintext", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
      expect(report.recipients[0]).toMatchObject({ host: "mx2.a.test", error: { phase: "tls", kind: "tls", permanent: false } })
      const all = yield* connections
      expect(all.map((c) => [c.ip, c.startTls.map((o) => o.rejectUnauthorized), c.written.includes("MAIL")])).toEqual([
        ["192.0.2.1", [true], false],
        ["192.0.2.2", [true], false]
      ])
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer(starttls(Script.handshakeUnverified("self-signed"))),
      "192.0.2.2": peer(starttls(Script.handshakeFails))
    }, REQUIRE))))

  it.effect("require with allow-invalid-certs: the certificate is accepted, and recorded as unverified", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      expect(report.attempts[0]!.tls).toMatchObject({ verified: false, reason: "self-signed" })
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer([...starttls(Script.handshakeUnverified("self-signed")), ...ehlo(), ...transaction])
    }, REQUIRE + "allow-invalid-certs = true\n"))))

  it.effect("require: STARTTLS stripped from every host's EHLO reply: deferred (4.7.4), never failed", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
      expect(report.recipients[0]).toMatchObject({ host: "mx2.a.test", error: { phase: "tls", kind: "policy", permanent: false } })
      expect(report.attempts.map((a) => [a.host, a.phase, a.outcome])).toEqual([
        ["mx1.a.test", "tls", "failed"],
        ["mx2.a.test", "tls", "failed"]
      ])
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer([...greet, ...ehlo("PIPELINING"), ...quit]),
      "192.0.2.2": peer([...greet, ...ehlo("PIPELINING"), ...quit])
    }, REQUIRE))))

  it.effect("require: STARTTLS answered with 5xx on every host (a rewritten command): deferred, never failed", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
      expect(report.recipients[0]).toMatchObject({ error: { phase: "tls", kind: "reply", permanent: false, code: 554 } })
      expect((yield* connections).every((c) => !c.written.includes("MAIL"))).toBe(true)
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer([...greet, ...ehlo("STARTTLS"), Script.expect("STARTTLS"), Script.reply("502 5.5.1 no"), ...quit]),
      "192.0.2.2": peer([...greet, ...ehlo("STARTTLS"), Script.expect("STARTTLS"), Script.reply("554 5.7.0 no"), ...quit])
    }, REQUIRE))))

  it.effect("REQUIRETLS: a host with TLS but without REQUIRETLS is passed over for the next MX host, which takes it", () =>
    Effect.gen(function*() {
      const report = yield* run(request({ requireTls: true }))
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      expect(report.attempts.map((a) => [a.host, a.phase, a.outcome, a.error?.permanent ?? null])).toEqual([
        ["mx1.a.test", "mail-from", "failed", true],
        ["mx2.a.test", "quit", "completed", null]
      ])
      const [first] = yield* connections
      expect(first!.written.includes("MAIL")).toBe(false)
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer([...starttls(Script.handshake), ...ehlo("PIPELINING"), ...quit]),
      "192.0.2.2": peer([...starttls(Script.handshake), ...ehlo("REQUIRETLS"), ...transaction])
    }))))

  it.effect("REQUIRETLS with allow-invalid-certs: the certificate must still verify (RFC 8689)", () =>
    Effect.gen(function*() {
      const report = yield* run(request({ requireTls: true }))
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
      const all = yield* connections
      expect(all.map((c) => c.startTls.map((o) => o.rejectUnauthorized))).toEqual([[true], [true]])
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer(starttls(Script.handshakeUnverified("self-signed"))),
      "192.0.2.2": peer(starttls(Script.handshakeUnverified("self-signed")))
    }, CONFIG + "allow-invalid-certs = true\n"))))

  it.effect("REQUIRETLS: permanent when no MX host offered it", () =>
    Effect.gen(function*() {
      const report = yield* run(request({ requireTls: true }))
      expect(statuses(report)).toEqual([["rcpt@a.test", "failed"]])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "tls", kind: "policy", permanent: true })
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer([...greet, ...ehlo(), ...quit]),
      "192.0.2.2": peer([...greet, ...ehlo(), ...quit])
    }))))

  it.effect("REQUIRETLS: a host without STARTTLS and one unreachable: deferred", () =>
    Effect.gen(function*() {
      const report = yield* run(request({ requireTls: true }))
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer([...greet, ...ehlo(), ...quit]),
      "192.0.2.2": { connect: "refuse" }
    }))))

  it.effect("REQUIRETLS: a failed handshake is never retried in plaintext", () =>
    Effect.gen(function*() {
      const report = yield* run(request({ requireTls: true }))
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
      const all = yield* connections
      expect(all.map((c) => c.ip)).toEqual(["192.0.2.1", "192.0.2.2"])
      expect(all.every((c) => !c.written.includes("MAIL"))).toBe(true)
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer(starttls(Script.handshakeFails)),
      "192.0.2.2": peer(starttls(Script.handshakeFails))
    }))))
})

describe("SMTPUTF8 as Postfix decides", () => {
  const utf8Header = "From: Jörg <sender@origin.test>\r\nSubject: hi\r\n\r\nhello\r\n"

  it.effect("UTF-8 only in a header, no SMTPUTF8 offered: delivered as 8BITMIME", () =>
    Effect.gen(function*() {
      const report = yield* run(request({ message: utf8Header }))
      expect(statuses(report)).toEqual([["rcpt@a.test", "delivered"]])
      const [c] = yield* connections
      expect(c!.commands.find((l) => l.startsWith("MAIL"))).toBe("MAIL FROM:<sender@origin.test> BODY=8BITMIME")
    }).pipe(Effect.provide(layers({ "192.0.2.1": peer([...greet, ...ehlo("8BITMIME"), ...transaction]) }))))

  it.effect("UTF-8 in a header and SMTPUTF8 offered: asked for", () =>
    Effect.gen(function*() {
      yield* run(request({ message: utf8Header }))
      const [c] = yield* connections
      expect(c!.commands.find((l) => l.startsWith("MAIL"))).toBe("MAIL FROM:<sender@origin.test> BODY=8BITMIME SMTPUTF8")
    }).pipe(Effect.provide(layers({ "192.0.2.1": peer([...greet, ...ehlo("8BITMIME", "SMTPUTF8"), ...transaction]) }))))

  it.effect("a UTF-8 recipient and no SMTPUTF8: failed (policy), the address named; the attempt stopped before MAIL", () =>
    Effect.gen(function*() {
      const report = yield* run(request({ recipients: ["jörg@a.test"] }))
      expect(statuses(report)).toEqual([["jörg@a.test", "failed"]])
      expect(report.recipients[0]).toMatchObject({
        host: "mx1.a.test",
        error: { kind: "policy", permanent: true, message: "mail-from: jörg@a.test needs SMTPUTF8 and the server does not advertise it" }
      })
      expect(report.attempts.map((a) => [a.phase, a.outcome, a.error?.kind])).toEqual([["mail-from", "failed", "policy"]])
      const [c] = yield* connections
      expect(c!.written).not.toMatch(/MAIL FROM/)
    }).pipe(Effect.provide(layers({ "192.0.2.1": peer([...greet, ...ehlo("8BITMIME"), ...quit]) }))))
})

describe("settings that cannot work, and the report", () => {
  it.effect("a source address not on this machine: the connection fails with kind local-address, said plainly", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(statuses(report)).toEqual([["rcpt@a.test", "deferred"]])
      expect(report.attempts[0]).toMatchObject({
        source: "192.0.2.10",
        phase: "connect",
        outcome: "failed",
        error: { kind: "local-address", message: "connect: 192.0.2.10 is not an address of this machine" }
      })
    }).pipe(Effect.provide(layers(
      { "192.0.2.1": { connect: "local-address" }, "192.0.2.2": { connect: "local-address" } },
      CONFIG.replace("[queue.outbound.tls]", "source-ip.v4 = \"['192.0.2.10']\"\n[queue.outbound.tls]")
    ))))

  it.effect("explain warns of a source address not on this machine (127.x counts as local)", () =>
    Effect.gen(function*() {
      const plan = yield* Transport.explain(request())
      expect(plan.warnings).toContain("source-ip: 192.0.2.10 is not an address of this machine")
      expect(plan.warnings.some((w) => w.includes("127.0.0.9"))).toBe(false)
    }).pipe(Effect.provide(layers({}, CONFIG.replace(
      "[queue.outbound.tls]",
      "source-ip.v4 = \"['192.0.2.10', '127.0.0.9']\"\n[queue.outbound.tls]"
    )))))

  it.effect("an EHLO name that is not a FQDN: a warning in the report and in explain", () =>
    Effect.gen(function*() {
      const warning = "EHLO name \"vm\" is not a fully qualified domain name: many receivers reject it (set queue.outbound.hostname)"
      const report = yield* run(request())
      expect(report.warnings).toContain(warning)
      const plan = yield* Transport.explain(request())
      expect(plan.warnings.filter((w) => w === warning)).toHaveLength(1)
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer([
        ...greet,
        Script.expect("EHLO vm"),
        Script.reply("250 mx.test"),
        ...transaction
      ])
    }, CONFIG.replace("'client.test'", "'vm'")))))

  it.effect("a FQDN as EHLO name: no warning; an empty message: a warning", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(report.warnings).toEqual([])
      const empty = yield* run(request({ message: "\r\n" }))
      expect(empty.warnings).toEqual(["the message is empty"])
    }).pipe(Effect.provide(layers({
      "192.0.2.1": peer([...greet, ...ehlo(), ...transaction]),
      "192.0.2.2": peer([...greet, ...ehlo(), ...transaction])
    }))))

  it.effect("recipients[].host is the host that answered, also when it failed at greeting", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(report.recipients[0]).toMatchObject({ status: "deferred", host: "mx2.a.test", error: { phase: "greeting" } })
      expect(report.attempts.map((a) => [a.host, a.phase, a.outcome])).toEqual([
        ["mx1.a.test", "connect", "failed"],
        ["mx2.a.test", "greeting", "failed"]
      ])
    }).pipe(Effect.provide(layers({
      "192.0.2.1": { connect: "refuse" },
      "192.0.2.2": peer([Script.reply("421 busy"), ...quit])
    }))))

  it.effect("no host answered: host null", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(report.recipients[0]).toMatchObject({ status: "deferred", host: null, error: { kind: "refused" } })
    }).pipe(Effect.provide(layers({ "192.0.2.1": { connect: "refuse" }, "192.0.2.2": { connect: "refuse" } }))))

  it.effect("MX records listed in preference order, whatever the DNS answer's order", () =>
    Effect.gen(function*() {
      const report = yield* run(request())
      expect(report.plan.domains[0]!.mx).toEqual([
        { exchange: "mx1.a.test", priority: 10 },
        { exchange: "mx2.a.test", priority: 20 }
      ])
    }).pipe(Effect.provide(layers(
      { "192.0.2.1": peer([...greet, ...ehlo(), ...transaction]) },
      CONFIG,
      { ...zones, "a.test": { mx: [{ exchange: "mx2.a.test", priority: 20 }, { exchange: "mx1.a.test", priority: 10 }] } }
    ))))

  it.effect("TransportOptions.ca is added to Node's roots for STARTTLS", () =>
    Effect.gen(function*() {
      yield* run(request())
      const [c] = yield* connections
      const ca = c!.startTls[0]!.ca!
      expect(ca.slice(-1)).toEqual(["PEM"])
      expect(ca.length).toBe(tls.rootCertificates.length + 1)
    }).pipe(
      Effect.provide(layers({ "192.0.2.1": peer([...starttls(Script.handshake), ...ehlo(), ...transaction]) })),
      Effect.provideService(Transport.TransportOptions, {
        port: 25,
        ca: ["PEM"],
        domainConcurrency: 1,
        mtaStsPort: 443
      })
    ))
})
