import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Transport from "../src/Transport.js"
import { aiosmtpd } from "./fixtures/aiosmtpd.js"
import { makeCertificates } from "./fixtures/certs.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import { postfix, smtpSink } from "./fixtures/postfix.js"

/**
 * Real MTAs as receivers: Debian's Postfix (a private instance), Postfix's smtp-sink and aiosmtpd, each on its own
 * loopback address, found through a real DNS server. What arrived is compared byte for byte with what was sent, and
 * the report with what the receiver logged.
 */

const config = (extra = "") => `
[queue.outbound]
hostname = "'client.interop.test'"
ip-strategy = "ipv4_only"
[queue.outbound.tls]
mta-sts = "disable"
${extra}
[queue.outbound.timeouts]
connect = "5s"
greeting = "10s"
`

const deliver = (
  request: Transport.DeliveryRequest,
  options: { readonly dns: string; readonly port: number; readonly ca?: ReadonlyArray<string>; readonly config?: string }
) =>
  Transport.deliver(request).pipe(
    Effect.provide(Layer.mergeAll(
      Layer.orDie(OutboundConfig.layerFromText(options.config ?? config())),
      // The one way to trust a private CA, for STARTTLS as for MTA-STS.
      Transport.layer({ dns: { servers: [options.dns] }, ca: options.ca })
    )),
    Effect.provideService(Transport.TransportOptions, {
      port: options.port,
      ca: undefined,
      domainConcurrency: 8,
      mtaStsPort: 443
    })
  )

// Complete headers (Date, Message-ID): Postfix's cleanup adds the ones missing, which would not be the message sent.
const message = (to: string, extra = "") =>
  Buffer.from(
    `From: Sender <s@origin.test>\r\nTo: <${to}>\r\nSubject: interop\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <interop-${to}@origin.test>\r\n` +
      `${extra}\r\nFirst line.\r\n.A line that starts with a dot.\r\n..and one with two.\r\n\r\nLast line.\r\n`,
    "utf8"
  )

/**
 * Postfix prepends its own headers (Return-Path, Delivered-To, Received) and stores lines with LF ends, as a maildir
 * does; the rest is the message as sent, byte for byte.
 */
const endsWith = (stored: Buffer, sent: Buffer) => {
  const unix = Buffer.from(sent.toString("latin1").replace(/\r\n/g, "\n"), "latin1")
  return stored.length >= unix.length && stored.subarray(stored.length - unix.length).equals(unix)
}

// Each case has receivers of its own (a loopback address, an MTA instance, a DNS server): the cases of a block run
// at once, since most of their time is an MTA starting, stopping and writing its log.
describe.concurrent("Postfix (Debian) as the receiving MTA", () => {
  const certs = makeCertificates({ hostnames: ["mx.postfix.test"] })

  it.scopedLive("STARTTLS with a certificate from a CA made at test time: byte-exact in the mailbox, report = log", () =>
    Effect.gen(function*() {
      const mta = yield* postfix({
        host: "127.0.0.20",
        domain: "postfix.test",
        users: ["alice", "bob"],
        tls: { certPem: certs.certPem, keyPem: certs.keyPem }
      })
      const dns = yield* DnsServer.scoped({
        zones: {
          "postfix.test": { mx: [{ exchange: "mx.postfix.test", priority: 10 }] },
          "mx.postfix.test": { a: ["127.0.0.20"] }
        }
      })
      const sent = message("alice@postfix.test")
      const report = yield* deliver(
        { message: sent, sender: "s@origin.test", recipients: ["alice@postfix.test", "nobody@postfix.test"] },
        { dns: dns.server, port: mta.port, ca: [certs.caPem] }
      )
      expect(report.recipients.map((r) => [r.address, r.status, r.reply?.code, r.reply?.enhanced])).toEqual([
        ["alice@postfix.test", "delivered", 250, "2.0.0"],
        ["nobody@postfix.test", "failed", 550, "5.1.1"]
      ])
      expect(report.attempts.map((a) => [a.ip, a.outcome, a.tls?.verified, a.tls?.reason])).toEqual([
        ["127.0.0.20", "completed", true, null]
      ])
      const stored = yield* mta.awaitMessages("alice@postfix.test", 1)
      expect(stored).toHaveLength(1)
      expect(endsWith(stored[0]!, sent)).toBe(true)
      // The queue id Postfix gave in its 250 is the one it logged the delivery under. The local agent logs after it
      // writes the mailbox, so the log is awaited for that line itself, not for the session's end.
      const queueId = /queued as ([0-9A-F]+)/.exec(report.recipients[0]!.reply!.text)?.[1]
      expect(queueId).toBeDefined()
      yield* mta.awaitLog(/disconnect from .* quit=1/)
      const log = yield* mta.awaitLog(new RegExp(`${queueId}: to=<alice@postfix.test>.*status=sent`))
      expect(log).toMatch(/reject: RCPT from .*550 5\.1\.1 <nobody@postfix\.test>/)
      expect(log).toMatch(/disconnect from .* ehlo=2 starttls=1 mail=1 rcpt=1\/2 bdat=1 quit=1/)
      expect(log).toContain("helo=<client.interop.test>")
    }))

  it.scopedLive("plaintext when STARTTLS is disabled: delivered with BDAT (Postfix offers CHUNKING), the null sender kept", () =>
    Effect.gen(function*() {
      const mta = yield* postfix({ host: "127.0.0.21", domain: "postfix.test", users: ["bob"] })
      const dns = yield* DnsServer.scoped({
        zones: {
          "postfix.test": { mx: [{ exchange: "mx.postfix.test", priority: 10 }] },
          "mx.postfix.test": { a: ["127.0.0.21"] }
        }
      })
      const sent = message("bob@postfix.test")
      const report = yield* deliver(
        { message: sent, sender: "", recipients: ["bob@postfix.test"] },
        { dns: dns.server, port: mta.port, config: config("starttls = \"disable\"") }
      )
      expect(report.recipients.map((r) => [r.status, r.reply?.code])).toEqual([["delivered", 250]])
      expect(report.attempts.map((a) => a.tls)).toEqual([null])
      const stored = yield* mta.awaitMessages("bob@postfix.test", 1)
      expect(endsWith(stored[0]!, sent)).toBe(true)
      // The null sender arrives as such.
      expect(stored[0]!.toString("utf8")).toMatch(/^Return-Path: <>\r?\n/)
      expect(yield* mta.awaitLog(/disconnect from .* quit=1/)).toMatch(/disconnect from .* ehlo=1 mail=1 rcpt=1 bdat=1 quit=1 commands=5/)
    }))
})

/** A self-signed certificate for `name`, made with the openssl CLI (no CA): what Debian's Postfix offers. */
const selfSigned = (name: string) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "self-signed-"))
  try {
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
      "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem"), "-days", "2",
      "-subj", `/CN=${name}`, "-addext", `subjectAltName=DNS:${name}`
    ], { stdio: "ignore" })
    return {
      certPem: fs.readFileSync(path.join(dir, "cert.pem"), "utf8"),
      keyPem: fs.readFileSync(path.join(dir, "key.pem"), "utf8")
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

describe.concurrent("Postfix: opportunistic TLS and a stripped STARTTLS", () => {
  it.scopedLive("a self-signed certificate under the default settings: delivered over TLS, recorded as unverified", () =>
    Effect.gen(function*() {
      const mta = yield* postfix({
        host: "127.0.0.24",
        domain: "postfix.test",
        users: ["carol"],
        tls: selfSigned("mx.postfix.test")
      })
      const dns = yield* DnsServer.scoped({
        zones: {
          "postfix.test": { mx: [{ exchange: "mx.postfix.test", priority: 10 }] },
          "mx.postfix.test": { a: ["127.0.0.24"] }
        }
      })
      const sent = message("carol@postfix.test")
      const report = yield* deliver(
        { message: sent, sender: "s@origin.test", recipients: ["carol@postfix.test"] },
        { dns: dns.server, port: mta.port }
      )
      expect(report.recipients.map((r) => [r.status, r.host, r.reply?.code])).toEqual([["delivered", "mx.postfix.test", 250]])
      expect(report.attempts.map((a) => [a.outcome, a.tls?.verified, a.tls?.reason])).toEqual([
        ["completed", false, "self-signed"]
      ])
      expect(report.attempts[0]!.tls!.version).toMatch(/^TLSv1\.[23]$/)
      const stored = yield* mta.awaitMessages("carol@postfix.test", 1)
      expect(endsWith(stored[0]!, sent)).toBe(true)
      expect(yield* mta.awaitLog(/disconnect from .* quit=1/)).toMatch(/disconnect from .* ehlo=2 starttls=1 mail=1 rcpt=1 bdat=1 quit=1/)
    }))

  it.scopedLive("STARTTLS not offered under starttls = require: deferred (temporary), never failed, no MAIL sent", () =>
    Effect.gen(function*() {
      const mta = yield* postfix({ host: "127.0.0.25", domain: "postfix.test", users: ["dave"] })
      const dns = yield* DnsServer.scoped({
        zones: {
          "postfix.test": { mx: [{ exchange: "mx.postfix.test", priority: 10 }] },
          "mx.postfix.test": { a: ["127.0.0.25"] }
        }
      })
      const report = yield* deliver(
        { message: message("dave@postfix.test"), sender: "s@origin.test", recipients: ["dave@postfix.test"] },
        { dns: dns.server, port: mta.port, config: config("starttls = \"require\"") }
      )
      expect(report.recipients.map((r) => [r.status, r.host, r.error?.phase, r.error?.kind, r.error?.permanent])).toEqual([
        ["deferred", "mx.postfix.test", "tls", "policy", false]
      ])
      expect(report.attempts.map((a) => [a.phase, a.outcome, a.tls])).toEqual([["tls", "failed", null]])
      // The session ended after EHLO: the log's counters show no MAIL.
      expect(yield* mta.awaitLog(/disconnect from .* quit=1/)).toMatch(/disconnect from .* ehlo=1 quit=1 commands=2/)
      expect(yield* mta.mailbox("dave@postfix.test")).toEqual([])
    }))
})

describe.concurrent("Postfix's smtp-sink", () => {
  it.scopedLive("pipelined delivery of three recipients: each accepted, the dump holds the message as sent", () =>
    Effect.gen(function*() {
      const sink = yield* smtpSink("127.0.0.22")
      const dns = yield* DnsServer.scoped({
        zones: {
          "sink.test": { mx: [{ exchange: "mx.sink.test", priority: 10 }] },
          "mx.sink.test": { a: ["127.0.0.22"] }
        }
      })
      const sent = message("a@sink.test")
      const report = yield* deliver(
        { message: sent, sender: "s@origin.test", recipients: ["a@sink.test", "b@sink.test", "c@sink.test"] },
        { dns: dns.server, port: sink.port }
      )
      expect(report.recipients.map((r) => r.status)).toEqual(["delivered", "delivered", "delivered"])
      const dumps = yield* sink.dumps
      expect(dumps).toHaveLength(1)
      const dump = dumps[0]!
      expect(dump.toString("latin1")).toContain("a@sink.test")
      expect(dump.toString("latin1")).toContain("c@sink.test")
      // smtp-sink writes its own envelope lines first, then the message with LF line ends and one more LF.
      expect(dump.toString("utf8").endsWith(`${sent.toString("utf8").replace(/\r\n/g, "\n")}\n`)).toBe(true)
    }))
})

describe.concurrent("aiosmtpd as the receiving MTA", () => {
  const certs = makeCertificates({ hostnames: ["mx.aiosmtpd.test"] })

  it.scopedLive("an internationalised recipient over STARTTLS: SMTPUTF8 asked for, the bytes arrive as sent", () =>
    Effect.gen(function*() {
      const mta = yield* aiosmtpd({ host: "127.0.0.23", tls: { certPem: certs.certPem, keyPem: certs.keyPem } })
      const dns = yield* DnsServer.scoped({
        zones: {
          "aiosmtpd.test": { mx: [{ exchange: "mx.aiosmtpd.test", priority: 10 }] },
          "mx.aiosmtpd.test": { a: ["127.0.0.23"] }
        }
      })
      const sent = message("jörg@aiosmtpd.test", "X-Name: Jörg Müller\r\n")
      const report = yield* deliver(
        { message: sent, sender: "s@origin.test", recipients: ["jörg@aiosmtpd.test"] },
        { dns: dns.server, port: mta.port, ca: [certs.caPem] }
      )
      expect(report.recipients.map((r) => [r.status, r.reply?.code])).toEqual([["delivered", 250]])
      expect(report.attempts.map((a) => a.tls?.verified)).toEqual([true])
      const received = yield* mta.received
      expect(received).toHaveLength(1)
      expect(received[0]).toMatchObject({ mailFrom: "s@origin.test", rcptTos: ["jörg@aiosmtpd.test"], smtputf8: true, tls: true })
      expect(received[0]!.mailOptions).toContain("SMTPUTF8")
      expect(received[0]!.content.equals(sent)).toBe(true)
    }))

  it.scopedLive("UTF-8 in a header only, to an ASCII address: delivered, SMTPUTF8 asked for since offered", () =>
    Effect.gen(function*() {
      const mta = yield* aiosmtpd({ host: "127.0.0.26" })
      const dns = yield* DnsServer.scoped({
        zones: {
          "aiosmtpd.test": { mx: [{ exchange: "mx.aiosmtpd.test", priority: 10 }] },
          "mx.aiosmtpd.test": { a: ["127.0.0.26"] }
        }
      })
      const sent = Buffer.concat([
        Buffer.from("From: Jörg <j@example.org>\r\n", "utf8"),
        message("erin@aiosmtpd.test")
      ])
      const report = yield* deliver(
        { message: sent, sender: "j@example.org", recipients: ["erin@aiosmtpd.test"] },
        { dns: dns.server, port: mta.port }
      )
      expect(report.recipients.map((r) => [r.status, r.reply?.code])).toEqual([["delivered", 250]])
      expect(report.attempts.map((a) => a.tls)).toEqual([null])
      const received = yield* mta.received
      expect(received).toHaveLength(1)
      expect(received[0]).toMatchObject({ mailFrom: "j@example.org", rcptTos: ["erin@aiosmtpd.test"], smtputf8: true })
      expect(received[0]!.content.equals(sent)).toBe(true)
    }))
})
