import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Connector from "../src/Connector.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Transport from "../src/Transport.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import { blackHole } from "./fixtures/blackHole.js"
import { startSmtpServer } from "./fixtures/smtpServer.js"

/**
 * The whole pipeline through the live layers: a real DNS server and a real SMTP server (npm smtp-server) on
 * loopback, real sockets, real time.
 */
describe("Transport.deliver (live)", () => {
  it.scopedLive("ipv6_then_ipv4: ::1 refuses, 127.0.0.1 delivers; the trace shows both", () =>
    Effect.gen(function*() {
      const smtp = yield* startSmtpServer({ host: "127.0.0.1" })
      const dns = yield* DnsServer.scoped({
        zones: {
          "example.test": { mx: [{ exchange: "mx.example.test", priority: 10 }] },
          "mx.example.test": { aaaa: ["::1"], a: ["127.0.0.1"] }
        }
      })
      const config = `
[queue.outbound]
hostname = "'client.example.org'"
ip-strategy = [ { if = "retry_num == 0", then = "ipv6_then_ipv4" }, { else = "ipv4_only" } ]
# Long enough that an IPv4 attempt started before it can only have been started by the refusal.
connection-attempt-delay = "5s"
[queue.outbound.tls]
mta-sts = "disable"
[queue.outbound.timeouts]
connect = "2s"
greeting = "2s"
`
      const message = "From: a@origin.test\r\nTo: b@example.test\r\nSubject: live\r\n\r\nHello over IPv4.\r\n"
      const report = yield* Transport.deliver({
        message,
        sender: "a@origin.test",
        recipients: ["b@example.test", "c@example.test"]
      }).pipe(
        Effect.provide(Layer.mergeAll(
          Layer.orDie(OutboundConfig.layerFromText(config)),
          Transport.layer({ dns: { servers: [dns.server] } })
        )),
        Effect.provideService(Transport.TransportOptions, {
          port: smtp.port,
          ca: undefined,
          domainConcurrency: 8,
          mtaStsPort: 443
        })
      )
      expect(report.recipients.map((r) => [r.address, r.status, r.host, r.reply?.code])).toEqual([
        ["b@example.test", "delivered", "mx.example.test", 250],
        ["c@example.test", "delivered", "mx.example.test", 250]
      ])
      expect(report.attempts.map((a) => [a.ip, a.phase, a.outcome, a.error?.kind ?? null, a.ehlo])).toEqual([
        ["::1", "connect", "failed", "refused", null],
        ["127.0.0.1", "quit", "completed", null, "client.example.org"]
      ])
      // The refusal freed the slot at once: the IPv4 attempt did not sit out the 5 s delay.
      expect(report.attempts[1]!.startMs).toBeLessThan(2_500)
      expect(report.plan.domains[0]!.hosts[0]).toMatchObject({
        strategy: "ipv6_then_ipv4",
        addresses: ["::1", "127.0.0.1"]
      })
      const sessions = yield* smtp.sessions
      expect(sessions.map((s) => [s.remoteAddress.replace(/^::ffff:/, ""), s.clientHostname])).toEqual([
        ["127.0.0.1", "client.example.org"]
      ])
      const received = sessions[0]!.transactions[0]!
      expect(received.rcptTo.map((r) => r.address)).toEqual(["b@example.test", "c@example.test"])
      expect(new TextDecoder().decode(received.message)).toBe(message)
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scopedLive("a black-holed ::1 is overtaken by 127.0.0.1 after the 250 ms attempt delay, not the connect timeout", () =>
    Effect.gen(function*() {
      const smtp = yield* startSmtpServer({ host: "127.0.0.1" })
      // Same port on ::1, where nothing ever answers.
      yield* blackHole("::1", smtp.port)
      const dns = yield* DnsServer.scoped({
        zones: {
          "example.test": { mx: [{ exchange: "mx.example.test", priority: 10 }] },
          "mx.example.test": { aaaa: ["::1"], a: ["127.0.0.1"] }
        }
      })
      const config = `
[queue.outbound]
hostname = "'client.example.org'"
ip-strategy = "ipv6_then_ipv4"
[queue.outbound.tls]
mta-sts = "disable"
[queue.outbound.timeouts]
connect = "20s"
`
      const started = Date.now()
      const report = yield* Transport.deliver({ message: "Subject: x\r\n\r\nx\r\n", sender: "", recipients: ["b@example.test"] }).pipe(
        Effect.provide(Layer.mergeAll(
          Layer.orDie(OutboundConfig.layerFromText(config)),
          Transport.layer({ dns: { servers: [dns.server] } })
        )),
        Effect.provideService(Transport.TransportOptions, { port: smtp.port, ca: undefined, domainConcurrency: 8, mtaStsPort: 443 })
      )
      const elapsed = Date.now() - started
      expect(report.recipients.map((r) => r.status)).toEqual(["delivered"])
      expect(report.attempts.map((a) => [a.ip, a.phase, a.outcome])).toEqual([
        ["::1", "connect", "cancelled"],
        ["127.0.0.1", "quit", "completed"]
      ])
      expect(report.attempts[1]!.startMs).toBeGreaterThanOrEqual(250)
      // Far below the 20 s connect timeout a sequential client would have waited.
      expect(elapsed).toBeLessThan(5_000)
      expect(yield* Connector.openConnections).toBe(0)
    }))
})
