/**
 * Issue 17 in memory: the chain verification against TLSA records (certificates made at test time), RFC 7672 §2.2's
 * decision table over `Dns.layerTest` zones marked secure, insecure or bogus, and the transport's use of it on
 * virtual time with scripted peers.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, TestClock } from "effect"
import * as crypto from "node:crypto"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script, type Step } from "../src/ConnectorTest.js"
import * as Dane from "../src/Dane.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as MxPlan from "../src/MxPlan.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as Transport from "../src/Transport.js"
import { makeCertificates } from "./fixtures/certs.js"

const certs = makeCertificates({ hostnames: ["mx.dane.test"] })
const der = (pem: string) => new crypto.X509Certificate(pem).raw
const spki = (pem: string) => new crypto.X509Certificate(pem).publicKey.export({ type: "spki", format: "der" })
const sha256 = (bytes: Uint8Array) => crypto.createHash("sha256").update(bytes).digest("hex")
const sha512 = (bytes: Uint8Array) => crypto.createHash("sha512").update(bytes).digest("hex")
const tlsa = (usage: number, selector: number, matchingType: number, data: string): Dane.TlsaRecord => ({
  usage,
  selector,
  matchingType,
  data
})

const leaf = der(certs.certPem)
const ca = der(certs.caPem)
const now = Date.now()
const names = ["mx.dane.test", "dane.test"]

describe("Dane.verify", () => {
  it("DANE-EE 3 1 1 and 3 0 2 match the leaf's key and certificate; names and dates are ignored (RFC 7672 §3.1.1)", () => {
    const ee = tlsa(3, 1, 1, sha256(spki(certs.certPem)))
    expect(Dane.verify([leaf], [ee], names, now)).toEqual({ status: "verified", record: Dane.format(ee), reason: null })
    const full = tlsa(3, 0, 2, sha512(leaf))
    expect(Dane.verify([leaf], [full], ["other.test"], now).status).toBe("verified")
    // three days later the certificate (valid for two) has expired: DANE-EE does not care
    expect(Dane.verify([leaf], [ee], ["other.test"], now + 3 * 86_400_000).status).toBe("verified")
  })

  it("DANE-EE mismatch: failed, with the reason", () => {
    const wrong = tlsa(3, 1, 1, sha256(spki(certs.wrongCaPem)))
    expect(Dane.verify([leaf], [wrong], names, now)).toEqual({
      status: "failed",
      record: null,
      reason: "no DANE-EE record matches the server's certificate"
    })
  })

  it("DANE-TA 2 0 1: the chain must reach the matching CA, carry the name, and be within its dates (§3.1.2, §3.2)", () => {
    const ta = tlsa(2, 0, 1, sha256(ca))
    expect(Dane.verify([leaf, ca], [ta], names, now)).toEqual({ status: "verified", record: Dane.format(ta), reason: null })
    // the server did not send its CA: nothing in the chain matches
    expect(Dane.verify([leaf], [ta], names, now).reason).toBe("no DANE-TA record matches a certificate of the server's chain")
    // the name is checked under DANE-TA
    expect(Dane.verify([leaf, ca], [ta], ["elsewhere.test"], now).reason).toContain("does not carry elsewhere.test")
    // and the dates
    expect(Dane.verify([leaf, ca], [ta], names, now + 3 * 86_400_000).reason).toContain("has expired")
    // a CA that did not sign the leaf, even sent along and matching, is no anchor for it
    const other = der(certs.wrongCaPem)
    expect(Dane.verify([leaf, other], [tlsa(2, 0, 1, sha256(other))], names, now).reason).toContain("the chain is broken")
  })

  it("DANE-TA 2 1 0: the anchor's key, even when the server does not send the anchor", () => {
    const key = tlsa(2, 1, 0, Buffer.from(spki(certs.caPem)).toString("hex"))
    expect(Dane.verify([leaf], [key], names, now).status).toBe("verified")
    expect(Dane.verify([leaf], [tlsa(2, 1, 0, Buffer.from(spki(certs.wrongCaPem)).toString("hex"))], names, now).status)
      .toBe("failed")
  })

  it("usable records: DANE-TA and DANE-EE, selectors 0/1, matching types 0/1/2 with data of the right length", () => {
    const digest = sha256(leaf)
    expect(Dane.isUsable(tlsa(3, 1, 1, digest))).toBe(true)
    expect(Dane.isUsable(tlsa(2, 0, 1, digest))).toBe(true)
    expect(Dane.isUsable(tlsa(1, 1, 1, digest))).toBe(false) // PKIX-EE: unusable for SMTP (§3.1.3)
    expect(Dane.isUsable(tlsa(0, 1, 1, digest))).toBe(false)
    expect(Dane.isUsable(tlsa(3, 2, 1, digest))).toBe(false)
    expect(Dane.isUsable(tlsa(3, 1, 3, digest))).toBe(false)
    expect(Dane.isUsable(tlsa(3, 1, 1, digest.slice(2)))).toBe(false)
    expect(Dane.isUsable(tlsa(3, 1, 2, digest))).toBe(false)
    expect(Dane.verify([leaf], [tlsa(1, 1, 1, sha256(spki(certs.certPem)))], names, now)).toEqual({
      status: "failed",
      record: null,
      reason: "no usable TLSA records"
    })
    expect(Dane.format(tlsa(3, 0, 0, "ab".repeat(40)))).toBe(`3 0 0 ${"ab".repeat(8)}…${"ab".repeat(4)}`)
  })
})

// -----------------------------------------------------------------------------
// The decision table (RFC 7672 §2.2) over in-memory zones
// -----------------------------------------------------------------------------

const ee = tlsa(3, 1, 1, sha256(spki(certs.certPem)))
const secureHost = (name: string, records: Dns.Rdata<Dane.TlsaRecord> | undefined): Dns.Zones => ({
  [name]: { a: ["192.0.2.1"], dnssec: "secure" },
  [`_25._tcp.${name}`]: records === undefined ? { dnssec: "secure" } : { tlsa: records, dnssec: "secure" }
})
const zones: Dns.Zones = {
  "dane.test": { mx: [{ exchange: "mx.dane.test", priority: 10 }], dnssec: "secure" },
  ...secureHost("mx.dane.test", [ee]),
  "unusable.test": { mx: [{ exchange: "mx.unusable.test", priority: 10 }], dnssec: "secure" },
  ...secureHost("mx.unusable.test", [tlsa(1, 1, 1, ee.data)]),
  "notlsa.test": { mx: [{ exchange: "mx.notlsa.test", priority: 10 }], dnssec: "secure" },
  "mx.notlsa.test": { a: ["192.0.2.1"], dnssec: "secure" },
  "_25._tcp.mx.notlsa.test": { rcode: "NXDOMAIN", dnssec: "secure" },
  "unsigned.test": { mx: [{ exchange: "mx.dane.test", priority: 10 }] },
  "insecurehost.test": { mx: [{ exchange: "mx.insecurehost.test", priority: 10 }], dnssec: "secure" },
  "mx.insecurehost.test": { a: ["192.0.2.1"] },
  "_25._tcp.mx.insecurehost.test": { tlsa: [ee] },
  "bogushost.test": { mx: [{ exchange: "mx.bogushost.test", priority: 10 }], dnssec: "secure" },
  "mx.bogushost.test": { a: ["192.0.2.1"], dnssec: "bogus" },
  "servfail.test": { mx: [{ exchange: "mx.servfail.test", priority: 10 }], dnssec: "secure" },
  ...secureHost("mx.servfail.test", "SERVFAIL"),
  "bogustlsa.test": { mx: [{ exchange: "mx.bogustlsa.test", priority: 10 }], dnssec: "secure" },
  "mx.bogustlsa.test": { a: ["192.0.2.1"], dnssec: "secure" },
  "_25._tcp.mx.bogustlsa.test": { tlsa: [ee], dnssec: "bogus" },
  "insecuretlsa.test": { mx: [{ exchange: "mx.insecuretlsa.test", priority: 10 }], dnssec: "secure" },
  "mx.insecuretlsa.test": { a: ["192.0.2.1"], dnssec: "secure" },
  "_25._tcp.mx.insecuretlsa.test": { tlsa: [ee] },
  // no MX: the domain is its own host, and the absence of MX records must be signed
  "implicit.test": { a: ["192.0.2.1"], dnssec: "secure" },
  "_25._tcp.implicit.test": { tlsa: [ee], dnssec: "secure" },
  "implicitunsigned.test": { a: ["192.0.2.1"] }
}

// As the host stage does it: the MX plan first (it says whether the MX lookup validated), then the host's decision.
const decide = (domain: string, host: string, policy: "optional" | "require" = "optional", implicit = false) =>
  Effect.flatMap(
    MxPlan.plan(domain, 5),
    (plan) =>
      Dane.lookupHost({ policy, domain: plan.domain, mxSecure: plan.secure === true, host, implicit, families: ["A"], port: 25 })
  )

describe("Dane.lookupHost: RFC 7672 §2.2", () => {
  it.effect("secure MX, secure address, secure usable TLSA: authenticate by the usable records, STARTTLS mandatory", () =>
    Effect.gen(function*() {
      const d = yield* decide("dane.test", "mx.dane.test")
      expect(d).toEqual({
        status: "usable",
        name: "_25._tcp.mx.dane.test",
        secure: true,
        records: [ee],
        reason: "1 usable TLSA record at _25._tcp.mx.dane.test",
        authenticate: { records: [ee], names: ["mx.dane.test", "dane.test"] },
        requireTls: true,
        error: null
      })
      // implicit MX: the signed absence of MX records, then the domain's own address and TLSA records
      const implicit = yield* decide("implicit.test", "implicit.test", "optional", true)
      expect([implicit.status, implicit.authenticate?.names]).toEqual(["usable", ["implicit.test"]])
    }).pipe(Effect.provide(Dns.layerTest({ ...zones, "implicit.test": { ...zones["implicit.test"], mx: "NODATA" } }))))

  it.effect("an insecure lookup anywhere means no DANE: the MX, the address records, the TLSA records", () =>
    Effect.gen(function*() {
      const reasons = [
        yield* decide("unsigned.test", "mx.dane.test"),
        yield* decide("insecurehost.test", "mx.insecurehost.test"),
        yield* decide("insecuretlsa.test", "mx.insecuretlsa.test"),
        yield* decide("implicitunsigned.test", "implicitunsigned.test", "optional", true)
      ].map((d) => [d.status, d.reason, d.requireTls, d.error])
      expect(reasons).toEqual([
        ["insecure", "the MX records of unsigned.test are not signed", false, null],
        ["insecure", "the address records of mx.insecurehost.test are not signed", false, null],
        ["insecure", "the TLSA records of _25._tcp.mx.insecuretlsa.test are not signed", false, null],
        ["insecure", "implicitunsigned.test has no MX records signed as absent", false, null]
      ])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("no TLSA records (authenticated denial): none; only unusable records: STARTTLS mandatory, not authenticated", () =>
    Effect.gen(function*() {
      const none = yield* decide("notlsa.test", "mx.notlsa.test")
      expect([none.status, none.reason, none.requireTls, none.error]).toEqual([
        "none",
        "mx.notlsa.test has no TLSA records (authenticated denial)",
        false,
        null
      ])
      const unusable = yield* decide("unusable.test", "mx.unusable.test")
      expect([unusable.status, unusable.authenticate, unusable.requireTls, unusable.error]).toEqual(["unusable", null, true, null])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("a bogus address RRset, a TLSA SERVFAIL, bogus TLSA records: the host is deferred (kind dane), never plaintext", () =>
    Effect.gen(function*() {
      const errors = [
        yield* decide("bogushost.test", "mx.bogushost.test"),
        yield* decide("servfail.test", "mx.servfail.test"),
        yield* decide("bogustlsa.test", "mx.bogustlsa.test")
      ].map((d) => [d.status, d.error?.phase, d.error?.kind, d.error?.permanent, d.error?.message])
      expect(errors).toEqual([
        ["failed", "dane", "dane", false, "dane: the address records of mx.bogushost.test are bogus (A mx.bogushost.test: ESERVFAIL (DNSSEC bogus))"],
        ["failed", "dane", "dane", false, "dane: the TLSA lookup of _25._tcp.mx.servfail.test failed (TLSA _25._tcp.mx.servfail.test: ESERVFAIL)"],
        ["failed", "dane", "dane", false, "dane: the TLSA records of _25._tcp.mx.bogustlsa.test are bogus (TLSA _25._tcp.mx.bogustlsa.test: ESERVFAIL (DNSSEC bogus))"]
      ])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("tls.dane = require: anything but usable records defers the host", () =>
    Effect.gen(function*() {
      const results = [
        yield* decide("dane.test", "mx.dane.test", "require"),
        yield* decide("unsigned.test", "mx.dane.test", "require"),
        yield* decide("notlsa.test", "mx.notlsa.test", "require"),
        yield* decide("unusable.test", "mx.unusable.test", "require")
      ].map((d) => d.error?.message ?? null)
      expect(results).toEqual([
        null,
        "dane: the MX records of unsigned.test are not signed, and tls.dane = require",
        "dane: mx.notlsa.test has no TLSA records (authenticated denial), and tls.dane = require",
        expect.stringMatching(/^dane: _25\._tcp\.mx\.unusable\.test has no usable TLSA records .*, and tls\.dane = require$/)
      ])
    }).pipe(Effect.provide(Dns.layerTest(zones))))

  it.effect("the lookups go through the resolver cache: the MX and address answers the plan fetched are not asked again", () =>
    Effect.gen(function*() {
      const dns = yield* Dns.Dns
      yield* dns.mx("dane.test")
      yield* dns.a("mx.dane.test")
      yield* dns.aaaa("mx.dane.test").pipe(Effect.ignore)
      const log = yield* Dns.TestDns
      yield* log.reset
      yield* decide("dane.test", "mx.dane.test")
      expect(yield* log.queries).toEqual([{ rrtype: "TLSA", name: "_25._tcp.mx.dane.test" }])
      // the answers keep their DNSSEC status in the cache
      expect((yield* dns.answer!("A", "mx.dane.test")).secure).toBe(true)
    }).pipe(Effect.provide(Dns.layerTest(zones, { cache: {} }))))
})

// -----------------------------------------------------------------------------
// The transport with DANE, on virtual time
// -----------------------------------------------------------------------------

const CONFIG = `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.tls]
mta-sts = "disable"
`

const twoHosts: Dns.Zones = {
  "a.test": {
    mx: [{ exchange: "mx1.a.test", priority: 10 }, { exchange: "mx2.a.test", priority: 20 }],
    dnssec: "secure"
  },
  "mx1.a.test": { a: ["192.0.2.1"], dnssec: "secure" },
  "_25._tcp.mx1.a.test": { tlsa: [ee], dnssec: "secure" },
  "mx2.a.test": { a: ["192.0.2.2"], dnssec: "secure" },
  "_25._tcp.mx2.a.test": { rcode: "NXDOMAIN", dnssec: "secure" }
}

const layers = (z: Dns.Zones, peers: ConnectorTest.TestPeers, config = CONFIG) =>
  Layer.mergeAll(
    Layer.orDie(OutboundConfig.layerFromText(config)),
    Dns.layerTest(z),
    ConnectorTest.layer(peers),
    PolicyCache.layer,
    MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" }))
  )

const run = Effect.gen(function*() {
  const fiber = yield* Effect.fork(Transport.deliver({
    message: "Subject: hi\r\n\r\nhello\r\n",
    sender: "sender@origin.test",
    recipients: ["rcpt@a.test"]
  }))
  yield* TestClock.adjust(Duration.minutes(30))
  return yield* Fiber.join(fiber)
})

const greetEhlo = (...keywords: ReadonlyArray<string>): ReadonlyArray<Step> => [
  Script.reply("220 mx.test ESMTP"),
  Script.expect("EHLO client.test"),
  Script.reply(...["mx.test", ...keywords].map((k, i, all) => `250${i === all.length - 1 ? " " : "-"}${k}`))
]
const delivered: ReadonlyArray<Step> = [
  Script.expect(/^MAIL FROM:/),
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

describe("Transport.deliver with DANE", () => {
  it.effect("a DANE host that does not offer STARTTLS is deferred (kind dane); the next host, without TLSA, takes the mail", () =>
    Effect.gen(function*() {
      const report = yield* run
      expect(report.recipients.map((r) => [r.status, r.host])).toEqual([["delivered", "mx2.a.test"]])
      expect(report.attempts.map((a) => [a.host, a.phase, a.outcome, a.error?.kind ?? null, a.tls])).toEqual([
        ["mx1.a.test", "tls", "failed", "dane", null],
        ["mx2.a.test", "quit", "completed", null, null]
      ])
      expect(report.attempts[0]!.error!.message).toBe("tls: STARTTLS not advertised, and mx1.a.test has DANE TLSA records")
      expect(report.plan.domains[0]!.hosts.map((h) => [h.host, h.dane?.status, h.dane?.records])).toEqual([
        ["mx1.a.test", "usable", [Dane.format(ee)]],
        ["mx2.a.test", "none", []]
      ])
    }).pipe(Effect.provide(layers(twoHosts, {
      "192.0.2.1": { script: greetEhlo("PIPELINING") },
      "192.0.2.2": { script: [...greetEhlo("PIPELINING"), ...delivered] }
    }))))

  it.effect("a certificate that matches no TLSA record: deferred with last error dane, whatever tls.allow-invalid-certs says", () =>
    Effect.gen(function*() {
      const report = yield* run
      expect(report.recipients.map((r) => [r.status, r.error?.kind])).toEqual([["deferred", "dane"]])
      const [attempt] = report.attempts
      expect([attempt!.phase, attempt!.error?.kind, attempt!.error?.permanent, attempt!.tls?.dane]).toEqual([
        "tls",
        "dane",
        false,
        // a scripted peer presents no certificate
        { status: "failed", record: null, reason: "the server presented no certificate" }
      ])
    }).pipe(Effect.provide(layers(
      { ...twoHosts, "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }], dnssec: "secure" } },
      {
        "192.0.2.1": {
          script: [...greetEhlo("STARTTLS"), Script.expect("STARTTLS"), Script.reply("220 go"), Script.handshake]
        }
      },
      CONFIG + `allow-invalid-certs = true\n`
    ))))

  it.effect("a TLSA SERVFAIL defers the host without connecting to it; tls.dane = disable makes no DANE lookup", () =>
    Effect.gen(function*() {
      const servfail: Dns.Zones = { ...twoHosts, "_25._tcp.mx1.a.test": { tlsa: "SERVFAIL", dnssec: "secure" } }
      const report = yield* run.pipe(Effect.provide(layers(servfail, {
        "192.0.2.2": { script: [...greetEhlo("PIPELINING"), ...delivered] }
      })))
      expect(report.recipients.map((r) => [r.status, r.host])).toEqual([["delivered", "mx2.a.test"]])
      expect(report.attempts.map((a) => a.host)).toEqual(["mx2.a.test"])
      expect(report.plan.domains[0]!.hosts[0]!.dane?.status).toBe("failed")
      expect(report.plan.domains[0]!.hosts[0]!.error?.kind).toBe("dane")

      const disabled = yield* Effect.gen(function*() {
        const report = yield* run
        const queries = yield* Effect.flatMap(Dns.TestDns, (t) => t.queries)
        return { report, queries }
      }).pipe(Effect.provide(layers(servfail, {
        "192.0.2.1": { script: [...greetEhlo("PIPELINING"), ...delivered] }
      }, CONFIG + `dane = "disable"\n`)))
      expect(disabled.report.recipients.map((r) => [r.status, r.host])).toEqual([["delivered", "mx1.a.test"]])
      expect(disabled.queries.filter((q) => q.rrtype === "TLSA")).toEqual([])
      expect(disabled.report.plan.domains[0]!.hosts[0]!.dane).toBeNull()
    }))

  it.effect("tls.dane = require on an unsigned domain: every host deferred, no connection", () =>
    Effect.gen(function*() {
      const report = yield* run
      expect(report.recipients.map((r) => [r.status, r.error?.kind, r.error?.message])).toEqual([[
        "deferred",
        "dane",
        "dane: the MX records of a.test are not signed, and tls.dane = require"
      ]])
      expect(report.attempts).toEqual([])
    }).pipe(Effect.provide(layers({
      "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }] },
      "mx1.a.test": { a: ["192.0.2.1"] }
    }, {}, CONFIG + `dane = "require"\n`))))
})
