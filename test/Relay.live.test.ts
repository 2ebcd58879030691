import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Logger, LogLevel } from "effect"
import * as Connector from "../src/Connector.js"
import type { DeliveryReport } from "../src/DeliveryReport.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as Transport from "../src/Transport.js"
import { makeCertificates } from "./fixtures/certs.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import { type SmtpServerOptions, startSmtpServer } from "./fixtures/smtpServer.js"
import { recorder } from "./fixtures/tracer.js"

/**
 * Relay routes against npm smtp-server on loopback: AUTH (PLAIN, LOGIN, XOAUTH2) over STARTTLS and over implicit
 * TLS, AUTH refused, plaintext AUTH refused unless allowed, LMTP with per-recipient replies, a relay by host name;
 * and the secret nowhere in the report, the logs or the spans.
 */

const certs = makeCertificates({ hostnames: ["relay.test", "127.0.0.1"] })
const tls = { key: certs.keyPem, cert: certs.certPem }
const USER = "relay-user"
const SECRET = "Tr0ub4dor-and-3-horse-battery-staple"
const MESSAGE = "From: a@origin.test\r\nTo: b@dest.test\r\nSubject: relayed\r\n\r\nThrough the relay.\r\n"

/** The secret and every encoding of it AUTH puts on the wire. */
const secretForms = [
  SECRET,
  Buffer.from(SECRET).toString("base64"),
  Buffer.from(`\u0000${USER}\u0000${SECRET}`).toString("base64"),
  Buffer.from(`user=${USER}\u0001auth=Bearer ${SECRET}\u0001\u0001`).toString("base64")
]

const config = (remote: string, outbound = "") => `
[queue.outbound]
hostname = "'client.example.org'"
next-hop = "'relay'"
${outbound}
[queue.outbound.timeouts]
connect = "3s"
greeting = "3s"
ehlo = "3s"
tls = "3s"
[remote.relay]
${remote}
`

interface Run {
  readonly report: DeliveryReport
  /** Every log line at Debug, the transcript included. */
  readonly logs: ReadonlyArray<string>
  /** Every span's name, attributes and events, as JSON. */
  readonly spans: string
}

const deliver = (
  text: string,
  recipients: ReadonlyArray<string> = ["b@dest.test"],
  dns?: { readonly server: string }
) =>
  Effect.gen(function*() {
    const logs: Array<string> = []
    const capture = Logger.make(({ annotations, message }) => {
      logs.push(JSON.stringify({ message, annotations: Object.fromEntries(annotations) }))
    })
    const { recorded, tracer } = yield* recorder
    const report = yield* Transport.deliver({ message: MESSAGE, sender: "a@origin.test", recipients }).pipe(
      Effect.provide(Layer.mergeAll(
        Layer.orDie(OutboundConfig.layerFromText(text)),
        Transport.layer({ ca: [certs.caPem], ...(dns === undefined ? {} : { dns: { servers: [dns.server] } }) })
      )),
      Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
      Logger.withMinimumLogLevel(LogLevel.Debug),
      Effect.withTracer(tracer)
    )
    const json = (value: unknown) => JSON.stringify(value, (_, v) => typeof v === "bigint" ? String(v) : v)
    const spans = json(recorded.spans.map((s) => ({
      name: s.name,
      attributes: Object.fromEntries(s.attributes),
      status: s.status._tag === "Ended" ? String(s.status.exit) : null
    }))) + json(recorded.events.map((e) => ({ span: e.span.name, name: e.name, attributes: e.attributes })))
    expect(yield* Connector.openConnections).toBe(0)
    return { report, logs, spans } satisfies Run
  })

/** The secret in none of its forms, anywhere. */
const expectNoSecret = (run: Run) => {
  const places = { report: JSON.stringify(run.report), logs: run.logs.join("\n"), spans: run.spans }
  for (const [place, text] of Object.entries(places)) {
    for (const form of secretForms) expect(text.includes(form), `${place} holds ${form}`).toBe(false)
  }
}

const server = (options: SmtpServerOptions) => startSmtpServer({ name: "relay.test", ...options })

const auth = (methods: ReadonlyArray<"PLAIN" | "LOGIN" | "XOAUTH2">, extra: { readonly allowInsecure?: boolean } = {}) => ({
  methods,
  username: USER,
  secret: SECRET,
  ...extra
})

const credentials = `auth.username = "${USER}"\nauth.secret = "${SECRET}"`

describe("relay route: AUTH over STARTTLS", () => {
  for (const method of ["PLAIN", "LOGIN"] as const) {
    it.scopedLive(`AUTH ${method} after a verified STARTTLS; the route in the plan, the secret nowhere`, () =>
      Effect.gen(function*() {
        const smtp = yield* server({ tls, auth: auth([method]) })
        const run = yield* deliver(config(`address = "127.0.0.1"\nport = ${smtp.port}\ntls.implicit = false\n${credentials}`))
        expect(run.report.recipients.map((r) => [r.address, r.status, r.host])).toEqual([
          ["b@dest.test", "delivered", "127.0.0.1"]
        ])
        const sessions = yield* smtp.sessions
        expect(sessions.map((s) => [s.secure, s.user, s.transactions.length])).toEqual([[true, USER, 1]])
        expect(run.report.plan.domains[0]!.route).toEqual({
          type: "relay",
          name: "relay",
          address: "127.0.0.1",
          port: smtp.port,
          protocol: "smtp",
          tls: "starttls",
          allowInvalidCerts: false,
          auth: true
        })
        expect(run.report.attempts.map((a) => [a.host, a.phase, a.outcome, a.tls?.verified])).toEqual([
          ["127.0.0.1", "quit", "completed", true]
        ])
        // The transcript was logged (Debug), with the credentials replaced.
        expect(run.logs.some((l) => l.includes(`C: AUTH ${method === "PLAIN" ? "PLAIN <credentials>" : "LOGIN"}`))).toBe(true)
        expectNoSecret(run)
      }))
  }

  it.scopedLive("AUTH refused (535): deferred, phase auth, kind auth; nothing sent; the secret nowhere", () =>
    Effect.gen(function*() {
      const smtp = yield* server({ tls, auth: { ...auth(["PLAIN", "LOGIN"]), secret: "another-password" } })
      const run = yield* deliver(config(`address = "127.0.0.1"\nport = ${smtp.port}\ntls.implicit = false\n${credentials}`))
      expect(run.report.recipients.map((r) => [r.status, r.error?.phase, r.error?.kind, r.error?.code, r.host])).toEqual([
        ["deferred", "auth", "auth", 535, "127.0.0.1"]
      ])
      expect(run.report.attempts.map((a) => [a.phase, a.outcome, a.error?.kind])).toEqual([["auth", "failed", "auth"]])
      const sessions = yield* smtp.sessions
      expect(sessions.map((s) => [s.user, s.transactions.length])).toEqual([[null, 0]])
      expectNoSecret(run)
    }))
})

describe("relay route: implicit TLS", () => {
  it.scopedLive("TLS from the first byte (tls.implicit defaults to true), then AUTH; a relay named in DNS", () =>
    Effect.gen(function*() {
      const smtp = yield* server({ tls, secure: true, auth: auth(["PLAIN"]) })
      const dns = yield* DnsServer.scoped({ zones: { "relay.test": { a: ["127.0.0.1"] } } })
      const run = yield* deliver(
        config(`address = "relay.test"\nport = ${smtp.port}\n${credentials}`, "ip-strategy = \"ipv4_only\""),
        ["b@dest.test", "c@dest.test"],
        dns
      )
      expect(run.report.recipients.map((r) => [r.address, r.status, r.host])).toEqual([
        ["b@dest.test", "delivered", "relay.test"],
        ["c@dest.test", "delivered", "relay.test"]
      ])
      const sessions = yield* smtp.sessions
      expect(sessions.map((s) => [s.secure, s.servername, s.user, s.clientHostname])).toEqual([
        [true, "relay.test", USER, "client.example.org"]
      ])
      expect(sessions[0]!.transactions[0]!.rcptTo.map((r) => r.address)).toEqual(["b@dest.test", "c@dest.test"])
      const domain = run.report.plan.domains[0]!
      expect([domain.route?.type, domain.route?.type === "relay" ? domain.route.tls : null]).toEqual(["relay", "implicit"])
      // No MX lookup, no MTA-STS for a relay: its one host, resolved by A.
      expect([domain.mx, domain.mtaSts, domain.hosts.map((h) => [h.host, h.addresses])]).toEqual([
        [],
        null,
        [["relay.test", ["127.0.0.1"]]]
      ])
      expectNoSecret(run)
    }))

  it.scopedLive("a certificate that does not verify: deferred at tls, never sent the credentials", () =>
    Effect.gen(function*() {
      const other = makeCertificates({ hostnames: ["elsewhere.test"] })
      const smtp = yield* server({ tls: { key: other.keyPem, cert: other.certPem }, secure: true, auth: auth(["PLAIN"]) })
      const run = yield* deliver(config(`address = "127.0.0.1"\nport = ${smtp.port}\n${credentials}`))
      expect(run.report.recipients.map((r) => [r.status, r.error?.phase, r.error?.kind])).toEqual([
        ["deferred", "tls", "tls"]
      ])
      // smtp-server opens a session only once the handshake is through: there was none to log in to.
      expect((yield* smtp.sessions).filter((s) => s.user !== null)).toEqual([])
      expectNoSecret(run)
    }))
})

describe("relay route: AUTH only over TLS unless allowed", () => {
  it.scopedLive("no TLS: AUTH is not sent (deferred, phase auth, kind policy)", () =>
    Effect.gen(function*() {
      const smtp = yield* server({ auth: auth(["PLAIN"], { allowInsecure: true }) })
      const run = yield* deliver(config(`address = "127.0.0.1"\nport = ${smtp.port}\ntls.implicit = false\n${credentials}`))
      expect(run.report.recipients.map((r) => [r.status, r.error?.phase, r.error?.kind])).toEqual([
        ["deferred", "auth", "policy"]
      ])
      expect(run.report.recipients[0]!.error?.message).toContain("auth.allow-plaintext")
      const sessions = yield* smtp.sessions
      expect(sessions.map((s) => [s.secure, s.user, s.transactions.length])).toEqual([[false, null, 0]])
      expectNoSecret(run)
    }))

  it.scopedLive("auth.allow-plaintext = true: AUTH in plaintext, delivered", () =>
    Effect.gen(function*() {
      const smtp = yield* server({ auth: auth(["LOGIN"], { allowInsecure: true }) })
      const run = yield* deliver(config(
        `address = "127.0.0.1"\nport = ${smtp.port}\ntls.implicit = false\n${credentials}\nauth.allow-plaintext = true`
      ))
      expect(run.report.recipients.map((r) => r.status)).toEqual(["delivered"])
      const sessions = yield* smtp.sessions
      expect(sessions.map((s) => [s.secure, s.user, s.transactions.length])).toEqual([[false, USER, 1]])
      expectNoSecret(run)
    }))
})

describe("relay route: XOAUTH2", () => {
  it.scopedLive("auth.token is sent with XOAUTH2; a refused token is deferred, kind auth", () =>
    Effect.gen(function*() {
      const smtp = yield* server({ tls, secure: true, auth: auth(["XOAUTH2"]) })
      const remote = (token: string) =>
        config(`address = "127.0.0.1"\nport = ${smtp.port}\nauth.username = "${USER}"\nauth.token = "${token}"`)
      const good = yield* deliver(remote(SECRET))
      expect(good.report.recipients.map((r) => r.status)).toEqual(["delivered"])
      expectNoSecret(good)
      const bad = yield* deliver(remote("expired-token"))
      expect(bad.report.recipients.map((r) => [r.status, r.error?.phase, r.error?.kind, r.error?.code])).toEqual([
        ["deferred", "auth", "auth", 535]
      ])
      expect((yield* smtp.sessions).map((s) => s.user)).toEqual([USER, null])
    }))
})

describe("relay route: LMTP", () => {
  it.scopedLive("LHLO; one reply per recipient after the message, each recipient reported by its own", () =>
    Effect.gen(function*() {
      const smtp = yield* server({
        lmtp: true,
        lmtpReply: (rcpt) =>
          rcpt === "full@dest.test"
            ? { code: 452, message: "4.2.2 Mailbox full" }
            : rcpt === "gone@dest.test"
            ? { code: 550, message: "5.1.1 No such mailbox" }
            : undefined
      })
      const run = yield* deliver(
        config(`address = "127.0.0.1"\nport = ${smtp.port}\nprotocol = "lmtp"\ntls.implicit = false`),
        ["b@dest.test", "gone@dest.test", "full@dest.test"]
      )
      expect(run.report.recipients.map((r) => [r.address, r.status, r.reply?.code, r.error?.phase ?? null])).toEqual([
        ["b@dest.test", "delivered", 250, null],
        ["gone@dest.test", "failed", 550, "data"],
        ["full@dest.test", "deferred", 452, "data"]
      ])
      const sessions = yield* smtp.sessions
      expect(sessions.map((s) => [s.openingCommand, s.clientHostname])).toEqual([["LHLO", "client.example.org"]])
      expect(sessions[0]!.transactions[0]!.rcptTo.map((r) => r.address)).toEqual([
        "b@dest.test",
        "gone@dest.test",
        "full@dest.test"
      ])
      expect(run.report.plan.domains[0]!.route).toMatchObject({ type: "relay", protocol: "lmtp", auth: false })
      expect(run.report.attempts.map((a) => [a.phase, a.outcome])).toEqual([["quit", "completed"]])
    }))

  it.scopedLive("a recipient refused at RCPT keeps its RCPT reply; the others get theirs after the message", () =>
    Effect.gen(function*() {
      const smtp = yield* startSmtpServer({
        lmtp: true,
        hooks: { rcptTo: (a) => a.address === "no@dest.test" ? { code: 550, message: "5.1.1 unknown" } : undefined },
        lmtpReply: (rcpt) => rcpt === "c@dest.test" ? { code: 554, message: "5.6.0 rejected" } : undefined
      })
      const run = yield* deliver(
        config(`address = "127.0.0.1"\nport = ${smtp.port}\nprotocol = "lmtp"\ntls.implicit = false`),
        ["b@dest.test", "no@dest.test", "c@dest.test"]
      )
      expect(run.report.recipients.map((r) => [r.address, r.status, r.reply?.code, r.error?.phase ?? null])).toEqual([
        ["b@dest.test", "delivered", 250, null],
        ["no@dest.test", "failed", 550, "rcpt-to"],
        ["c@dest.test", "failed", 554, "data"]
      ])
    }))
})
