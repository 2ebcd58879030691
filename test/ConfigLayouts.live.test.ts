/**
 * Settings of the v0.13–v0.15 and v0.16 layouts reaching the wire: a real DNS server and real SMTP servers (npm
 * smtp-server) on loopback.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Connector from "../src/Connector.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Transport from "../src/Transport.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import { startSmtpServer } from "./fixtures/smtpServer.js"

const deliver = (config: string, file: string, dns: string, port: number, recipients: ReadonlyArray<string>) =>
  Transport.deliver({ message: "Subject: x\r\n\r\nx\r\n", sender: "a@origin.test", recipients }).pipe(
    Effect.provide(Layer.mergeAll(
      Layer.orDie(OutboundConfig.layerFromText(config, file)),
      Transport.layer({ dns: { servers: [dns] } })
    )),
    Effect.provideService(Transport.TransportOptions, { port, ca: undefined, domainConcurrency: 1, mtaStsPort: 443 })
  )

const zones = {
  "example.test": { mx: [{ exchange: "mx.example.test", priority: 10 }] },
  "mx.example.test": { a: ["127.0.0.1"] }
}

describe("per-source-address EHLO names (live)", () => {
  const strategies = `
[server]
hostname = "server.example.org"
[queue.connection.default]
source-ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
timeout.connect = "5s"
timeout.greeting = "5s"
[queue.source-ip."127.0.0.2"]
ehlo-hostname = "two.example.org"
[queue.source-ip."127.0.0.3"]
ehlo-hostname = "three.example.org"
[queue.tls.default]
mta-sts = "disable"
`
  const json = JSON.stringify({
    SystemSettings: { defaultHostname: "server.example.org" },
    MtaConnectionStrategy: [{
      name: "default",
      sourceIps: {
        0: { sourceIp: "127.0.0.2", ehloHostname: "two.example.org" },
        1: { sourceIp: "127.0.0.3", ehloHostname: "three.example.org" },
        2: { sourceIp: "127.0.0.4" }
      },
      connectTimeout: 5000,
      greetingTimeout: 5000
    }],
    MtaTlsStrategy: [{ name: "default", mtaSts: "disable" }]
  })
  const expected: { readonly [ip: string]: string } = {
    "127.0.0.2": "two.example.org",
    "127.0.0.3": "three.example.org",
    "127.0.0.4": "server.example.org"
  }

  for (const [layout, config, file] of [["strategies", strategies, "v0.15.toml"], ["json", json, "v0.16.json"]] as const) {
    it.scopedLive(`${layout}: the receiver sees the EHLO name of the source address each connection was bound to`, () =>
      Effect.gen(function*() {
        const smtp = yield* startSmtpServer({ host: "127.0.0.1" })
        const dns = yield* DnsServer.scoped({ zones })
        // One source picked at random per connection: 24 deliveries see all three (a miss has odds 3 x (2/3)^24).
        // Each has a layer of its own (no connection reuse), six at a time: each waits on the server most of its time.
        const reports = yield* Effect.forEach(
          Array.from({ length: 24 }),
          () => deliver(config, file, dns.server, smtp.port, ["b@example.test"]),
          { concurrency: 6 }
        )
        for (const report of reports) {
          expect(report.recipients.map((r) => r.status)).toEqual(["delivered"])
          expect(report.attempts[0]!.ehlo).toBe(expected[report.attempts[0]!.source!])
        }
        const sessions = yield* smtp.sessions
        const seen = sessions.map((s) => [s.remoteAddress.replace(/^::ffff:/, ""), s.clientHostname] as const)
        for (const [ip, name] of seen) expect([ip, name]).toEqual([ip, expected[ip]])
        expect(new Set(seen.map(([ip]) => ip))).toEqual(new Set(Object.keys(expected)))
        expect(yield* Connector.openConnections).toBe(0)
      }))
  }
})

describe("a v0.13 TLS strategy (live)", () => {
  it.scopedLive("starttls = \"require\" against a server without STARTTLS defers the mail; nothing is sent", () =>
    Effect.gen(function*() {
      const smtp = yield* startSmtpServer({ host: "127.0.0.1", hide: { starttls: true } })
      const dns = yield* DnsServer.scoped({ zones })
      const config = `
[queue.strategy]
tls = [ { if = "rcpt_domain == 'example.test'", then = "'strict'" }, { else = "'default'" } ]
[queue.tls.strict]
starttls = "require"
mta-sts = "disable"
[queue.connection.default]
ehlo-hostname = "client.example.org"
timeout.connect = "5s"
`
      const report = yield* deliver(config, "v0.13.toml", dns.server, smtp.port, ["b@example.test"])
      expect(report.recipients.map((r) => [r.status, r.error?.phase, r.error?.kind, r.error?.permanent])).toEqual([
        ["deferred", "tls", "policy", false]
      ])
      expect(report.plan.layout).toBe("strategies")
      expect(report.plan.domains[0]!.strategies).toEqual({ route: "mx", tls: "strict", schedule: "remote" })
      const sessions = yield* smtp.sessions
      expect(sessions.flatMap((s) => s.transactions)).toEqual([])
      expect(yield* Connector.openConnections).toBe(0)
    }))
})
