/**
 * MTA-STS enforced inside a real delivery: a real HTTPS policy server, a real DNS server that alone knows where
 * `mta-sts.<domain>` and the MX hosts are, and real SMTP servers (npm smtp-server) with STARTTLS certificates from a
 * CA made at test time. Everything on loopback.
 */
import { expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as https from "node:https"
import type { AddressInfo } from "node:net"
import * as Connector from "../src/Connector.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Transport from "../src/Transport.js"
import { type Certificates, makeCertificates } from "./fixtures/certs.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import { startSmtpServer } from "./fixtures/smtpServer.js"

const policies: Record<string, string> = {
  "enforce.test": "version: STSv1\nmode: enforce\nmx: mx2.enforce.test\nmax_age: 86400\n",
  "notls.test": "version: STSv1\nmode: enforce\nmx: mx2.notls.test\nmax_age: 86400\n",
  "testing.test": "version: STSv1\nmode: testing\nmx: mx2.testing.test\nmax_age: 86400\n",
  "nolisted.test": "version: STSv1\nmode: enforce\nmx: elsewhere.test\nmax_age: 86400\n"
}
const domains = Object.keys(policies)

/** mx1 on 127.0.0.3, mx2 on 127.0.0.4, same port; mx1 preferred. */
const zonesFor = (domain: string): DnsServer.StartOptions["zones"] => ({
  [domain]: { mx: [{ exchange: `mx1.${domain}`, priority: 10 }, { exchange: `mx2.${domain}`, priority: 20 }] },
  [`mx1.${domain}`]: { a: ["127.0.0.3"] },
  [`mx2.${domain}`]: { a: ["127.0.0.4"] },
  [`_mta-sts.${domain}`]: { txt: ["v=STSv1; id=20261129T000000;"] },
  [`mta-sts.${domain}`]: { a: ["127.0.0.1"] }
})

/**
 * What every test shares, started once for the suite (`layer`): the CA and certificates, the HTTPS policy server with
 * the log of the hosts it was asked for, and one DNS server with every domain's zones. Each test starts its own MX
 * servers, whose sessions it inspects.
 */
class Suite extends Context.Tag("test/MtaStsDeliverySuite")<Suite, {
  readonly pki: Certificates
  readonly policyPort: number
  readonly policyRequests: ReadonlyArray<string>
  readonly dns: string
}>() {}

const SuiteLive = Layer.scoped(
  Suite,
  Effect.gen(function*() {
    const pki = makeCertificates({
      hostnames: domains.flatMap((d) => [`mta-sts.${d}`, `mx1.${d}`, `mx2.${d}`])
    })
    const policyRequests: Array<string> = []
    const policyServer = yield* Effect.acquireRelease(
      Effect.async<https.Server>((resume) => {
        const server = https.createServer({ key: pki.keyPem, cert: pki.certPem }, (req, res) => {
          const host = (req.headers.host ?? "").replace(/:\d+$/, "")
          policyRequests.push(host)
          const body = policies[host.replace(/^mta-sts\./, "")]
          if (body === undefined || req.url !== "/.well-known/mta-sts.txt") {
            res.writeHead(404)
            res.end()
            return
          }
          res.writeHead(200, { "content-type": "text/plain" })
          res.end(body)
        })
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
      }),
      (server) =>
        Effect.async<void>((resume) => {
          server.close(() => resume(Effect.void))
        })
    )
    const dns = yield* DnsServer.scoped({ zones: Object.assign({}, ...domains.map(zonesFor)) })
    return { pki, policyPort: (policyServer.address() as AddressInfo).port, policyRequests, dns: dns.server }
  })
)

const CONFIG = `
[queue.outbound]
hostname = "'client.example.org'"
[queue.outbound.tls]
# even this does not weaken an enforced policy
allow-invalid-certs = true
[queue.outbound.timeouts]
connect = "2s"
greeting = "2s"
mta-sts = "5s"
`

const deliverTo = (domain: string, options: { readonly tls: boolean }) =>
  Effect.gen(function*() {
    const { dns, pki, policyPort } = yield* Suite
    const tls = options.tls ? { key: pki.keyPem, cert: pki.certPem } : undefined
    const mx2 = yield* startSmtpServer({ host: "127.0.0.4", name: `mx2.${domain}`, tls })
    const mx1 = yield* startSmtpServer({ host: "127.0.0.3", port: mx2.port, name: `mx1.${domain}`, tls })
    const report = yield* Transport.deliver({
      message: "Subject: policy\r\n\r\nbody\r\n",
      sender: "a@origin.test",
      recipients: [`rcpt@${domain}`]
    }).pipe(
      Effect.provide(Layer.mergeAll(
        Layer.orDie(OutboundConfig.layerFromText(CONFIG)),
        Transport.layer({ dns: { servers: [dns] } })
      )),
      Effect.provideService(Transport.TransportOptions, {
        port: mx2.port,
        ca: [pki.caPem],
        domainConcurrency: 8,
        mtaStsPort: policyPort
      })
    )
    return { report, mx1: yield* mx1.sessions, mx2: yield* mx2.sessions }
  })

// Live services (real time): the deliveries run on real sockets and timers.
layer(SuiteLive, { excludeTestServices: true })("MTA-STS in a delivery (live)", (it) => {
  it.scoped("enforce: the unlisted MX is never contacted; the listed one gets verified TLS", () =>
    Effect.gen(function*() {
      const { mx1, mx2, report } = yield* deliverTo("enforce.test", { tls: true })
      expect(report.recipients.map((r) => [r.status, r.host])).toEqual([["delivered", "mx2.enforce.test"]])
      expect(mx1).toEqual([])
      expect(mx2.map((s) => [s.secure, s.servername])).toEqual([[true, "mx2.enforce.test"]])
      const plan = report.plan.domains[0]!
      expect(plan.mtaSts).toMatchObject({ status: "found", source: "fetched", policy: { mode: "enforce" } })
      expect(plan.hosts.map((h) => [h.host, h.mtaSts, h.error?.kind ?? null])).toEqual([
        ["mx1.enforce.test", "mismatch", "policy"],
        ["mx2.enforce.test", "match", null]
      ])
      expect(report.attempts.map((a) => [a.host, a.tls?.verified, a.outcome])).toEqual([["mx2.enforce.test", true, "completed"]])
      expect((yield* Suite).policyRequests).toContain("mta-sts.enforce.test")
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scoped("enforce: STARTTLS not offered means no delivery in plaintext; deferred, never bounced", () =>
    Effect.gen(function*() {
      const { mx1, mx2, report } = yield* deliverTo("notls.test", { tls: false })
      expect(report.recipients.map((r) => [r.status, r.host])).toEqual([["deferred", "mx2.notls.test"]])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "tls", kind: "policy", permanent: false })
      expect(mx1).toEqual([])
      // mx2 was reached, but no transaction ever started on it
      expect(mx2.flatMap((s) => s.transactions)).toEqual([])
    }))

  it.scoped("enforce: no listed MX left fails the domain permanently without any connection", () =>
    Effect.gen(function*() {
      const { mx1, mx2, report } = yield* deliverTo("nolisted.test", { tls: true })
      expect(report.recipients.map((r) => r.status)).toEqual(["failed"])
      expect(report.recipients[0]!.error).toMatchObject({ phase: "mta-sts", kind: "policy", permanent: true })
      expect([mx1, mx2]).toEqual([[], []])
      expect(report.attempts).toEqual([])
    }))

  it.scoped("testing: delivered to the preferred, unlisted MX; the mismatch is in the trace", () =>
    Effect.gen(function*() {
      const { mx1, mx2, report } = yield* deliverTo("testing.test", { tls: true })
      expect(report.recipients.map((r) => [r.status, r.host])).toEqual([["delivered", "mx1.testing.test"]])
      expect(mx1.length).toBe(1)
      expect(mx2).toEqual([])
      expect(report.plan.domains[0]!.hosts[0]!.mtaSts).toBe("mismatch")
      expect(report.warnings).toContain("MTA-STS (testing): mx1.testing.test is not listed in the policy of testing.test")
    }))
})
