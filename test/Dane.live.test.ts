/**
 * Issue 17 against real parts: a zone signed at test time (ldns-signzone) served by authoritative unbound on
 * 127.0.0.61, an unsigned child zone delegated without DS on 127.0.0.62, a validating unbound resolver on 127.0.0.1
 * that trusts the zone's key, and smtp-server instances with certificates made at test time on 127.0.0.71–79, all on
 * one port (the TLSA names carry it).
 */
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as crypto from "node:crypto"
import * as net from "node:net"
import * as Connector from "../src/Connector.js"
import * as Dane from "../src/Dane.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as Transport from "../src/Transport.js"
import { makeCertificates } from "./fixtures/certs.js"
import { startSmtpServer, type TestSmtpServer } from "./fixtures/smtpServer.js"
import { dnssecBed, type DnssecBed } from "./fixtures/unbound.js"

const ZONE = "dane.test"
const ee = makeCertificates({ hostnames: ["mx-ee.dane.test"] })
const ta = makeCertificates({ hostnames: ["mx-ta.dane.test"] })
const spkiSha256 = (pem: string) =>
  crypto.createHash("sha256").update(new crypto.X509Certificate(pem).publicKey.export({ type: "spki", format: "der" }))
    .digest("hex")
const certSha256 = (pem: string) => crypto.createHash("sha256").update(new crypto.X509Certificate(pem).raw).digest("hex")

const EE_RECORD = `3 1 1 ${spkiSha256(ee.certPem)}`
const WRONG_RECORD = `3 1 1 ${spkiSha256(ee.wrongCaPem)}`
const TA_RECORD = `2 0 1 ${certSha256(ta.caPem)}`

// host → loopback address; every SMTP server listens on the same port
const hosts = {
  "mx-ee": "127.0.0.71",
  "mx-eebad": "127.0.0.72",
  "mx-ta": "127.0.0.73",
  "mx-nostarttls": "127.0.0.74",
  "mx-bogus": "127.0.0.75",
  "mx-servfail": "127.0.0.76",
  "mx-notlsa": "127.0.0.77",
  "mx.unsigned": "127.0.0.78"
} as const

const freePort = (host: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const probe = net.createServer()
    probe.once("error", reject)
    probe.listen(0, host, () => {
      const address = probe.address()
      probe.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })

/**
 * The test bed, started once for the suite (`layer`, below) and stopped after its last test: the signed zone and its
 * unbound instances, the SMTP servers, and the port they all listen on.
 */
class Bed extends Context.Tag("test/DaneLiveBed")<Bed, {
  readonly bed: DnssecBed
  readonly port: number
  readonly servers: Readonly<Record<keyof typeof hosts, TestSmtpServer>>
}>() {}

const BedLive = Layer.scoped(
  Bed,
  Effect.gen(function*() {
    const port = yield* Effect.promise(() => freePort(hosts["mx-ee"]))
    const tlsa = (host: string, record: string) => `_${port}._tcp.${host} IN TLSA ${record}`
    const mx = (domain: string, host: string) => `${domain} IN MX 10 ${host}.${ZONE}.`
    const records = [
      ...Object.entries(hosts).filter(([h]) => !h.endsWith(".unsigned")).map(([h, ip]) => `${h} IN A ${ip}`),
      mx("ee", "mx-ee"),
      tlsa("mx-ee", EE_RECORD),
      mx("eebad", "mx-eebad"),
      tlsa("mx-eebad", WRONG_RECORD),
      mx("ta", "mx-ta"),
      tlsa("mx-ta", TA_RECORD),
      mx("nostarttls", "mx-nostarttls"),
      tlsa("mx-nostarttls", EE_RECORD),
      mx("bogus", "mx-bogus"),
      tlsa("mx-bogus", EE_RECORD),
      mx("servfail", "mx-servfail"),
      mx("notlsa", "mx-notlsa"),
      // more TLSA records than a 1232-byte UDP answer holds: the resolver truncates, the client asks again over TCP
      ...Array.from({ length: 24 }, (_, i) => tlsa("big", `3 1 2 ${i.toString(16).padStart(2, "0").repeat(64)}`)),
      // MTA-STS domains served by DANE hosts
      mx("sts", "mx-eebad"),
      `_mta-sts.sts IN TXT "v=STSv1; id=1"`,
      mx("stsenforce", "mx-ee"),
      `_mta-sts.stsenforce IN TXT "v=STSv1; id=1"`,
      // an insecure delegation: NS and glue, no DS
      "unsigned IN NS ns.unsigned.dane.test.",
      "ns.unsigned IN A 127.0.0.62"
    ]
    const bed = yield* dnssecBed({
        authAddresses: ["127.0.0.61", "127.0.0.62"],
        signed: {
          name: ZONE,
          records,
          // the TLSA record of mx-bogus changed after signing: its signature no longer verifies
          corrupt: (text) =>
            text.replace(
              new RegExp(`^(_${port}\\._tcp\\.mx-bogus\\.dane\\.test\\.\\s+\\d+\\s+IN\\s+TLSA\\s+3 1 1 )[0-9a-f]+`, "m"),
              `$1${"0".repeat(64)}`
            )
        },
        unsigned: [{
          name: `unsigned.${ZONE}`,
          records: [`@ IN MX 10 mx.unsigned.${ZONE}.`, `mx IN A ${hosts["mx.unsigned"]}`, tlsa("mx", WRONG_RECORD)]
        }],
        refused: [`_${port}._tcp.mx-servfail.${ZONE}`]
      })
    const eeTls = { key: ee.keyPem, cert: ee.certPem }
    const options: Record<string, Parameters<typeof startSmtpServer>[0]> = {
      "mx-ee": { tls: eeTls },
      "mx-eebad": { tls: eeTls },
      // the chain up to the anchor: leaf and CA
      "mx-ta": { tls: { key: ta.keyPem, cert: ta.certPem + ta.caPem } },
      "mx-nostarttls": {},
      "mx-bogus": { tls: eeTls },
      "mx-servfail": { tls: eeTls },
      "mx-notlsa": { tls: eeTls },
      "mx.unsigned": { tls: eeTls }
    }
    const servers: Partial<Record<keyof typeof hosts, TestSmtpServer>> = {}
    for (const [host, ip] of Object.entries(hosts) as Array<[keyof typeof hosts, string]>) {
      servers[host] = yield* startSmtpServer({ host: ip, port, name: `${host}.${ZONE}`, ...options[host] })
    }
    return { bed, port, servers: servers as Record<keyof typeof hosts, TestSmtpServer> }
  })
)

const CONFIG = `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.timeouts]
connect = "3s"
greeting = "3s"
tls = "3s"
`

const policy = (mode: string, mx: string) => `version: STSv1\nmode: ${mode}\nmx: ${mx}\nmax_age: 86400\n`

const deliver = (domain: string, config = CONFIG) =>
  Effect.flatMap(Bed, ({ bed, port }) => Transport.deliver({ message: "Subject: dane\r\n\r\nbody\r\n", sender: "a@origin.test", recipients: [`rcpt@${domain}`] })
    .pipe(
      Effect.provide(Layer.mergeAll(
        Layer.orDie(OutboundConfig.layerFromText(config)),
        Connector.layer,
        PolicyCache.layer,
        MtaSts.layerTest((request) =>
          Effect.succeed(
            request.domain === `sts.${ZONE}`
              ? { body: policy("testing", `mx-eebad.${ZONE}`) }
              : request.domain === `stsenforce.${ZONE}`
              ? { body: policy("enforce", `mx-ee.${ZONE}`) }
              : { status: 404, body: "" }
          )
        ),
        Dns.layer({ servers: [bed.resolver], timeout: "5 seconds" })
      )),
      Effect.provideService(Transport.TransportOptions, { port, ca: undefined, domainConcurrency: 8, mtaStsPort: 443 })
    ))

const sessions = (host: keyof typeof hosts) => Effect.flatMap(Bed, ({ servers }) => servers[host].sessions)

// Live services (real time, `excludeTestServices`): `it.effect` here runs on the real clock, as `it.live` does. The
// bed takes a while to start on a loaded machine (zone signing, three unbound processes): its own timeout.
layer(BedLive, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
  describe("the validating resolver (unbound) through Dns.layer", () => {
    it.effect("secure answers carry the AD bit (over TCP too); the unsigned delegation is insecure; a bad signature and a refused zone fail", () =>
      Effect.gen(function*() {
        const { port } = yield* Bed
        const dns = yield* Dns.Dns
        const answer = dns.answer!
        const tlsa = yield* answer("TLSA", `_${port}._tcp.mx-ee.${ZONE}`)
        expect(tlsa.secure).toBe(true)
        expect(tlsa.records.map(Dane.format)).toEqual([Dane.format({ usage: 3, selector: 1, matchingType: 1, data: spkiSha256(ee.certPem) })])
        expect((yield* answer("MX", `ee.${ZONE}`)).secure).toBe(true)
        expect((yield* answer("A", `mx-ee.${ZONE}`)).secure).toBe(true)
        expect((yield* answer("MX", `unsigned.${ZONE}`)).secure).toBe(false)
        // an authenticated denial: NODATA with the AD bit
        const nodata = yield* Effect.flip(answer("TLSA", `_${port}._tcp.mx-notlsa.${ZONE}`))
        expect([nodata.reason, nodata.dnssec]).toEqual(["NotFound", "secure"])
        const bogus = yield* Effect.flip(answer("TLSA", `_${port}._tcp.mx-bogus.${ZONE}`))
        expect([bogus.reason, bogus.dnssec]).toEqual(["Temporary", "bogus"])
        // unbound says why (RFC 8914)
        expect(bogus.message).toMatch(/^TLSA _\d+\._tcp\.mx-bogus\.dane\.test: ESERVFAIL \(DNSSEC bogus: .+\)$/)
        const big = yield* answer("TLSA", `_${port}._tcp.big.${ZONE}`)
        expect([big.records.length, big.secure]).toEqual([24, true])
        const servfail = yield* Effect.flip(answer("TLSA", `_${port}._tcp.mx-servfail.${ZONE}`))
        expect(servfail.reason).toBe("Temporary")
        expect(servfail.message).toContain("ESERVFAIL")
      }).pipe(Effect.provide(Layer.unwrapEffect(
        Effect.map(Bed, ({ bed }) => Dns.layer({ servers: [bed.resolver], cache: false }))
      ))))
  })

  describe("DANE in a delivery (live)", () => {
    it.effect("DANE-EE 3 1 1 match: delivered over TLS the CA roots do not trust; the attempt says verified and which record", () =>
      Effect.gen(function*() {
        const { port } = yield* Bed
        const report = yield* deliver(`ee.${ZONE}`)
        expect(report.recipients.map((r) => [r.status, r.host])).toEqual([["delivered", `mx-ee.${ZONE}`]])
        const [attempt] = report.attempts
        expect(attempt!.tls).toMatchObject({ verified: false, dane: { status: "verified", record: Dane.format({ usage: 3, selector: 1, matchingType: 1, data: spkiSha256(ee.certPem) }), reason: null } })
        expect(report.plan.domains[0]!.hosts[0]!.dane).toMatchObject({ status: "usable", secure: true, name: `_${port}._tcp.mx-ee.${ZONE}` })
      }))

    it.effect("DANE-EE mismatch: deferred, last error dane, no message sent, whatever allow-invalid-certs says", () =>
      Effect.gen(function*() {
        const before = (yield* sessions("mx-eebad")).length
        const report = yield* deliver(`eebad.${ZONE}`, CONFIG + `[queue.outbound.tls]\nallow-invalid-certs = true\n`)
        expect(report.recipients.map((r) => [r.status, r.error?.kind])).toEqual([["deferred", "dane"]])
        expect(report.attempts[0]!.tls?.dane).toMatchObject({ status: "failed", record: null })
        const after = (yield* sessions("mx-eebad")).slice(before)
        expect(after.flatMap((s) => s.transactions)).toEqual([])
      }))

    it.effect("DANE-TA 2 0 1: a chain from a CA made at test time, the name checked: delivered", () =>
      Effect.gen(function*() {
        const report = yield* deliver(`ta.${ZONE}`)
        expect(report.recipients.map((r) => r.status)).toEqual(["delivered"])
        expect(report.attempts[0]!.tls?.dane).toEqual({ status: "verified", record: TA_RECORD, reason: null })
      }))

    it.effect("a bogus TLSA signature and a TLSA SERVFAIL: deferred (kind dane) without connecting, never plaintext", () =>
      Effect.gen(function*() {
        const bogusBefore = (yield* sessions("mx-bogus")).length
        const servfailBefore = (yield* sessions("mx-servfail")).length
        const bogus = yield* deliver(`bogus.${ZONE}`)
        const servfail = yield* deliver(`servfail.${ZONE}`)
        for (const report of [bogus, servfail]) {
          expect(report.recipients.map((r) => [r.status, r.error?.phase, r.error?.kind])).toEqual([["deferred", "dane", "dane"]])
          expect(report.attempts).toEqual([])
          expect(report.plan.domains[0]!.hosts[0]!.dane?.status).toBe("failed")
        }
        expect(bogus.recipients[0]!.error?.message).toContain("bogus")
        expect((yield* sessions("mx-bogus")).length).toBe(bogusBefore)
        expect((yield* sessions("mx-servfail")).length).toBe(servfailBefore)
      }))

    it.effect("an insecure (unsigned) delegation: its TLSA records are ignored, delivered under the other TLS policies", () =>
      Effect.gen(function*() {
        const report = yield* deliver(`unsigned.${ZONE}`)
        expect(report.recipients.map((r) => r.status)).toEqual(["delivered"])
        expect(report.attempts[0]!.tls?.dane).toEqual({
          status: "insecure",
          record: null,
          reason: `the MX records of unsigned.${ZONE} are not signed`
        })
      }))

    it.effect("a DANE host that stops offering STARTTLS: deferred (kind dane), nothing sent in plaintext", () =>
      Effect.gen(function*() {
        const before = (yield* sessions("mx-nostarttls")).length
        const report = yield* deliver(`nostarttls.${ZONE}`)
        expect(report.recipients.map((r) => [r.status, r.error?.kind])).toEqual([["deferred", "dane"]])
        expect(report.attempts[0]!.error?.message).toContain("STARTTLS not advertised")
        expect((yield* sessions("mx-nostarttls")).slice(before).flatMap((s) => s.transactions)).toEqual([])
      }))

    it.effect("tls.dane = require with no TLSA records: deferred; optional: delivered, the attempt says none", () =>
      Effect.gen(function*() {
        const required = yield* deliver(`notlsa.${ZONE}`, CONFIG + `[queue.outbound.tls]\ndane = "require"\n`)
        expect(required.recipients.map((r) => [r.status, r.error?.kind])).toEqual([["deferred", "dane"]])
        expect(required.attempts).toEqual([])
        const optional = yield* deliver(`notlsa.${ZONE}`)
        expect(optional.recipients.map((r) => r.status)).toEqual(["delivered"])
        expect(optional.attempts[0]!.tls?.dane?.status).toBe("none")
      }))

    it.effect("DANE takes precedence over MTA-STS: a testing policy does not let a TLSA mismatch through; an enforced one does not stop a DANE-EE match", () =>
      Effect.gen(function*() {
        const testing = yield* deliver(`sts.${ZONE}`)
        expect(testing.plan.domains[0]!.mtaSts).toMatchObject({ status: "found", policy: { mode: "testing" } })
        expect(testing.recipients.map((r) => [r.status, r.error?.kind])).toEqual([["deferred", "dane"]])
        // without DANE the testing policy would deliver
        const withoutDane = yield* deliver(`sts.${ZONE}`, CONFIG + `[queue.outbound.tls]\ndane = "disable"\n`)
        expect(withoutDane.recipients.map((r) => r.status)).toEqual(["delivered"])
        // enforce requires a certificate the CA roots verify, which mx-ee's is not: DANE authenticates it instead
        const enforced = yield* deliver(`stsenforce.${ZONE}`)
        expect(enforced.plan.domains[0]!.mtaSts).toMatchObject({ status: "found", policy: { mode: "enforce" } })
        expect(enforced.recipients.map((r) => r.status)).toEqual(["delivered"])
        expect(enforced.attempts[0]!.tls?.dane?.status).toBe("verified")
      }))
  })
})
