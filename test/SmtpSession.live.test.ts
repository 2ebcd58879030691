import { expect, layer } from "@effect/vitest"
import { Context, Duration, Effect, Either, Layer, Option } from "effect"
import * as Connector from "../src/Connector.js"
import * as dotStuff from "../src/internal/session/dotStuff.js"
import type { TlsPolicy } from "../src/Settings.js"
import * as SmtpSession from "../src/SmtpSession.js"
import { type Certificates, makeCertificates } from "./fixtures/certs.js"
import { startSmtpServer, type TestSmtpServer } from "./fixtures/smtpServer.js"

// npm smtp-server on 127.0.0.1 (random port), real sockets, real time, short timeouts.

const second = Duration.seconds(5)
interface Over {
  readonly starttls?: TlsPolicy
  readonly allowInvalidCerts?: boolean
  readonly ca?: ReadonlyArray<string>
}
const settings = (over: Over = {}): SmtpSession.SessionSettings => ({
  ehloName: "client.test",
  servername: "mx.test",
  tls: {
    starttls: over.starttls ?? "optional",
    allowInvalidCerts: over.allowInvalidCerts ?? false,
    ca: over.ca,
    required: false
  },
  timeouts: {
    connect: second,
    greeting: second,
    ehlo: second,
    tls: second,
    "mail-from": second,
    "rcpt-to": second,
    data: second
  },
  phaseSpans: false
})

/** The suite's PKI, made once (`layer`, below): a CA, a certificate for mx.test it signed, and an unrelated CA. */
class Pki extends Context.Tag("test/SmtpSessionLivePki")<Pki, Certificates>() {}
const PkiLive = Layer.sync(Pki, () => makeCertificates({ hostnames: ["mx.test"] }))

const utf8 = (s: string) => new TextEncoder().encode(s)

/** Connect, open, transact, QUIT when the dialogue allows it; the socket closes with the scope. */
const deliver = (
  server: TestSmtpServer,
  envelope: SmtpSession.Envelope,
  message: Uint8Array,
  s: SmtpSession.SessionSettings = settings(),
  localAddress?: string
) =>
  Effect.scoped(Effect.gen(function*() {
    const connection = yield* SmtpSession.connectScoped({ ip: server.host, port: server.port, localAddress }, second)
    const session = yield* SmtpSession.open(connection, s)
    const result = yield* SmtpSession.transaction(session, envelope, message, s)
    if (result.canQuit) yield* SmtpSession.quit(session)
    return { session, result }
  })).pipe(Effect.provide(Connector.layer))

/** The server records a session on close; wait (bounded) until it has seen the client go. */
const closedSessions = (server: TestSmtpServer, count: number) =>
  Effect.gen(function*() {
    for (let i = 0; i < 100; i++) {
      const sessions = yield* server.sessions
      if (sessions.length >= count && sessions.every((s) => s.closed)) return sessions
      yield* Effect.sleep(Duration.millis(20))
    }
    return yield* Effect.dieMessage("the server did not see the sessions close")
  })

const text = (b: Uint8Array) => Buffer.from(b).toString("latin1")

// every shape the smuggling and stuffing code must handle, with 8-bit content
const tricky = utf8(
  "From: a@x.test\r\nSubject: tricky\r\n\r\n.\nfirst body line was a dot\n.\r\nMAIL FROM:<evil@x>\r\n" +
    "bare\rcr\r\n..two dots\r\n.\r\nlast line without end, café"
)

// Live services (real time, `excludeTestServices`): `it.scoped` here runs on the real clock, as `it.scopedLive` does.
layer(PkiLive, { excludeTestServices: true })("SmtpSession against smtp-server", (it) => {
  it.scoped("STARTTLS with a CA made at test time: verified, EHLO again, message byte-identical", () =>
    Effect.gen(function*() {
      const certs = yield* Pki
      const server = yield* startSmtpServer({ tls: { key: certs.keyPem, cert: certs.certPem }, size: 1_000_000 })
      const { result, session } = yield* deliver(
        server,
        { sender: "a@x.test", recipients: ["b@y.test", "c@y.test"] },
        tricky,
        settings({ starttls: "require", ca: [certs.caPem] })
      )
      expect([session.tls?.verified, session.connection.isTls, session.capabilities.startTls]).toEqual([true, true, false])
      expect(result.recipients.map((r) => [r.address, r.accepted, r.reply?.code])).toEqual([
        ["b@y.test", true, 250],
        ["c@y.test", true, 250]
      ])
      expect(Either.map(result.data!, (r) => r.code)).toEqual(Either.right(250))
      const [recorded] = yield* closedSessions(server, 1)
      expect([recorded!.secure, recorded!.servername, recorded!.clientHostname]).toEqual([true, "mx.test", "client.test"])
      const [transaction] = recorded!.transactions
      expect(text(transaction!.message)).toBe(text(dotStuff.normalize(tricky)))
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scoped("require: an untrusted CA fails the tls phase with kind tls; allow-invalid-certs goes through; optional goes through", () =>
    Effect.gen(function*() {
      const certs = yield* Pki
      const server = yield* startSmtpServer({ tls: { key: certs.keyPem, cert: certs.certPem } })
      const error = yield* Effect.flip(deliver(
        server,
        { sender: "a@x.test", recipients: ["b@y.test"] },
        utf8("x\r\n"),
        settings({ ca: [certs.wrongCaPem], starttls: "require" })
      ))
      expect([error.phase, error.kind, error.permanent]).toEqual(["tls", "tls", false])
      const { session } = yield* deliver(
        server,
        { sender: "a@x.test", recipients: ["b@y.test"] },
        utf8("x\r\n"),
        settings({ ca: [certs.wrongCaPem], allowInvalidCerts: true, starttls: "require" })
      )
      // up, but unverified, and the report can say why
      expect([session.tls !== null, session.tls?.verified, session.tls?.reason]).toEqual([true, false, "untrusted-root"])
      // opportunistic (RFC 7435): the same certificate is used, and said to be unverified
      const optional = yield* deliver(
        server,
        { sender: "a@x.test", recipients: ["b@y.test"] },
        utf8("x\r\n"),
        settings({ ca: [certs.wrongCaPem], starttls: "optional" })
      )
      expect([optional.session.tls?.verified, optional.session.tls?.reason]).toEqual([false, "untrusted-root"])
      const sessions = yield* closedSessions(server, 3)
      expect(sessions.map((s) => [s.secure, s.transactions.length])).toEqual([[false, 0], [true, 1], [true, 1]])
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scoped("STARTTLS not offered: optional goes in plaintext, require fails temporarily (4.7.4)", () =>
    Effect.gen(function*() {
      const server = yield* startSmtpServer()
      const { session } = yield* deliver(server, { sender: "a@x.test", recipients: ["b@y.test"] }, utf8("x\r\n"))
      expect(session.tls).toBe(null)
      const error = yield* Effect.flip(
        deliver(server, { sender: "a@x.test", recipients: ["b@y.test"] }, utf8("x\r\n"), settings({ starttls: "require" }))
      )
      expect([error.phase, error.kind, error.permanent]).toEqual(["tls", "policy", false])
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scoped("PIPELINING with SIZE and 8BITMIME: one recipient refused, the others delivered", () =>
    Effect.gen(function*() {
      const server = yield* startSmtpServer({
        size: 1_000_000,
        hooks: {
          rcptTo: (address) => address.address === "nobody@y.test" ? { code: 550, message: "5.1.1 no such user" } : undefined
        }
      })
      const message = utf8("Subject: x\r\n\r\ncafé\r\n")
      const { result, session } = yield* deliver(
        server,
        { sender: "a@x.test", recipients: ["b@y.test", "nobody@y.test", "c@y.test"] },
        message
      )
      expect([session.capabilities.pipelining, session.capabilities.size, session.capabilities.eightBitMime]).toEqual([
        true,
        1_000_000,
        true
      ])
      expect(result.pipelined).toBe(true)
      expect(result.recipients.map((r) => [r.address, r.accepted, r.reply?.code, r.reply?.enhanced ?? null])).toEqual([
        ["b@y.test", true, 250, null],
        ["nobody@y.test", false, 550, "5.1.1"],
        ["c@y.test", true, 250, null]
      ])
      expect(Either.map(result.data!, (r) => r.code)).toEqual(Either.right(250))
      const [recorded] = yield* closedSessions(server, 1)
      const [transaction] = recorded!.transactions
      expect(transaction!.mailFrom).toEqual({
        address: "a@x.test",
        args: { SIZE: String(message.length), BODY: "8BITMIME" }
      })
      expect(transaction!.bodyType).toBe("8bitmime")
      expect(transaction!.rcptTo.map((r) => r.address)).toEqual(["b@y.test", "c@y.test"])
      expect(text(transaction!.message)).toBe(text(message))
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scoped("PIPELINING with a refused MAIL: every recipient gets MAIL's error, no message is sent", () =>
    Effect.gen(function*() {
      const server = yield* startSmtpServer({ hooks: { mailFrom: () => ({ code: 550, message: "5.7.1 sender denied" }) } })
      const { result } = yield* deliver(server, { sender: "a@x.test", recipients: ["b@y.test", "c@y.test"] }, utf8("x\r\n"))
      const error = Option.getOrThrow(Either.getLeft(result.mailFrom))
      expect([error.phase, error.kind, error.permanent, error.reply?.enhanced]).toEqual(["mail-from", "reply", true, "5.7.1"])
      expect(result.recipients.map((r) => r.error)).toEqual([error, error])
      expect([result.data, result.canQuit]).toEqual([null, true])
      const [recorded] = yield* closedSessions(server, 1)
      expect(recorded!.transactions).toEqual([])
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scoped("without PIPELINING, one command at a time, same outcomes", () =>
    Effect.gen(function*() {
      const server = yield* startSmtpServer({
        hide: { pipelining: true },
        hooks: { rcptTo: (a) => a.address === "nobody@y.test" ? { code: 450, message: "4.2.1 try later" } : undefined }
      })
      const { result } = yield* deliver(server, { sender: "", recipients: ["nobody@y.test", "b@y.test"] }, tricky)
      expect(result.pipelined).toBe(false)
      expect(result.recipients.map((r) => [r.accepted, r.reply?.code])).toEqual([[false, 450], [true, 250]])
      const [recorded] = yield* closedSessions(server, 1)
      expect(recorded!.transactions[0]!.mailFrom?.address).toBe("")
      expect(text(recorded!.transactions[0]!.message)).toBe(text(dotStuff.normalize(tricky)))
    }))

  it.scoped("a message whose first line is '.', and one that is a smuggling attempt, arrive intact", () =>
    Effect.gen(function*() {
      const server = yield* startSmtpServer()
      const messages = [
        utf8(".\r\nSubject: starts with a dot line\r\n"),
        utf8(".x\n.\n"),
        utf8("Subject: s\r\n\r\nhello\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n.\r\n")
      ]
      for (const message of messages) {
        const { result } = yield* deliver(server, { sender: "a@x.test", recipients: ["b@y.test"] }, message)
        expect(Either.map(result.data!, (r) => r.code)).toEqual(Either.right(250))
      }
      const sessions = yield* closedSessions(server, messages.length)
      expect(sessions.map((s) => s.transactions.length)).toEqual([1, 1, 1])
      expect(sessions.map((s) => text(s.transactions[0]!.message))).toEqual(
        messages.map((m) => text(dotStuff.normalize(m)))
      )
      // the smuggled envelope never became a transaction
      expect(sessions.flatMap((s) => s.transactions.flatMap((t) => t.rcptTo.map((r) => r.address)))).toEqual([
        "b@y.test",
        "b@y.test",
        "b@y.test"
      ])
    }))

  it.scoped("SMTPUTF8 for an internationalised address; permanent failure before MAIL when not offered", () =>
    Effect.gen(function*() {
      const server = yield* startSmtpServer()
      const { result } = yield* deliver(server, { sender: "a@x.test", recipients: ["jösé@y.test"] }, utf8("x\r\n"))
      expect(Either.isRight(result.data!)).toBe(true)
      const [recorded] = yield* closedSessions(server, 1)
      expect(recorded!.transactions[0]!.smtpUtf8).toBe(true)
      expect(recorded!.transactions[0]!.rcptTo.map((r) => r.address)).toEqual(["jösé@y.test"])

      const ascii = yield* startSmtpServer({ hide: { smtpUtf8: true } })
      const refused = yield* deliver(ascii, { sender: "a@x.test", recipients: ["jösé@y.test"] }, utf8("x\r\n"))
      const error = Option.getOrThrow(Either.getLeft(refused.result.mailFrom))
      expect([error.phase, error.kind, error.permanent]).toEqual(["mail-from", "policy", true])
      const [none] = yield* closedSessions(ascii, 1)
      expect(none!.transactions).toEqual([])
      expect(yield* Connector.openConnections).toBe(0)
    }))

  it.scoped("bound to 127.0.0.2: the server sees 127.0.0.2", () =>
    Effect.gen(function*() {
      const server = yield* startSmtpServer()
      yield* deliver(server, { sender: "a@x.test", recipients: ["b@y.test"] }, utf8("x\r\n"), settings(), "127.0.0.2")
      const [recorded] = yield* closedSessions(server, 1)
      expect([recorded!.remoteAddress, recorded!.clientHostname]).toEqual(["127.0.0.2", "client.test"])
      expect(yield* Connector.openConnections).toBe(0)
    }))
})
