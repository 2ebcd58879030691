import { describe, expect, it } from "@effect/vitest"
import { Cause, Duration, Effect, Either, Exit, Fiber, HashMap, Logger, LogLevel, Option, Redacted, Supervisor, TestClock } from "effect"
import * as fc from "effect/FastCheck"
import * as Connector from "../src/Connector.js"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script } from "../src/ConnectorTest.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import type { SessionPhase, Timeouts, TlsPolicy } from "../src/Settings.js"
import * as SmtpSession from "../src/SmtpSession.js"
import { recorder } from "./fixtures/tracer.js"
import type { TransportError } from "../src/TransportError.js"
import { multi } from "./utils/smtp.js"
import * as dotStuff from "./utils/dotStuff.js"

// ---------------------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------------------

const IP = "192.0.2.10"
// Distinct values, so that a phase running under another phase's timeout shows.
const T = { connect: 1_000, greeting: 2_000, ehlo: 3_000, tls: 4_000, mailFrom: 5_000, rcptTo: 6_000, data: 7_000 }
const timeouts: Timeouts<SessionPhase> = {
  connect: Duration.millis(T.connect),
  greeting: Duration.millis(T.greeting),
  ehlo: Duration.millis(T.ehlo),
  tls: Duration.millis(T.tls),
  "mail-from": Duration.millis(T.mailFrom),
  "rcpt-to": Duration.millis(T.rcptTo),
  data: Duration.millis(T.data)
}
interface Over {
  readonly ehloName?: string
  readonly starttls?: TlsPolicy
  readonly allowInvalidCerts?: boolean
  readonly ca?: ReadonlyArray<string>
  readonly required?: boolean
  readonly timeouts?: Timeouts<SessionPhase>
  readonly phaseSpans?: boolean
}
const settings = (over: Over = {}): SmtpSession.SessionSettings => ({
  ehloName: over.ehloName ?? "client.test",
  servername: "mx.test",
  tls: {
    starttls: over.starttls ?? "optional",
    allowInvalidCerts: over.allowInvalidCerts ?? false,
    ca: over.ca,
    required: over.required ?? false
  },
  timeouts: over.timeouts ?? timeouts,
  phaseSpans: over.phaseSpans ?? false
})

const ehloReply = (...caps: ReadonlyArray<string>) => Script.reply(...multi(250, ["mx.test greets client.test", ...caps]))
const GREET = Script.reply("220 mx.test ESMTP")
const EHLO = Script.expect("EHLO client.test")
const hello = (...caps: ReadonlyArray<string>) => [GREET, EHLO, ehloReply(...caps)]
const QUIT = [Script.expect("QUIT"), Script.reply("221 bye")]
const tlsUp = (...caps: ReadonlyArray<string>) => [
  Script.expect("STARTTLS"),
  Script.reply("220 2.0.0 go ahead"),
  Script.handshake,
  EHLO,
  ehloReply(...caps)
]

const peer = (script: ReadonlyArray<ConnectorTest.Step>, extra: Omit<ConnectorTest.TestPeer, "script"> = {}) =>
  Effect.provide(ConnectorTest.layer({ [IP]: { script, ...extra } }))

const records = Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)
const record = Effect.map(records, (all) => all[0]!)

const openSession = (s: SmtpSession.SessionSettings = settings()) =>
  Effect.gen(function*() {
    const connection = yield* SmtpSession.connectScoped({ ip: IP, port: 25 }, Duration.millis(T.connect))
    return yield* SmtpSession.open(connection, s)
  })

const message = new TextEncoder().encode("Subject: hi\r\n\r\nHello\r\n")
const envelope = (recipients: ReadonlyArray<string> = ["b@y.test"], over: Partial<SmtpSession.Envelope> = {}) => ({
  sender: "a@x.test",
  recipients,
  ...over
})

/** open, transaction, and QUIT when the result allows it; the connection closes with the scope. */
const deliver = (
  env: SmtpSession.Envelope = envelope(),
  body: Uint8Array = message,
  s: SmtpSession.SessionSettings = settings()
) =>
  Effect.scoped(Effect.gen(function*() {
    const session = yield* openSession(s)
    const result = yield* SmtpSession.transaction(session, env, body, s)
    if (result.canQuit) yield* SmtpSession.quit(session)
    return { session, result }
  }))

const failure = <A>(exit: Exit.Exit<A, TransportError>): TransportError =>
  Option.getOrThrow(Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none())

const summary = (e: TransportError | null) =>
  e === null ? null : { phase: e.phase, kind: e.kind, permanent: e.permanent, code: e.reply?.code ?? null }

/** Runs `effect` on virtual time: not finished at `ms - 1`, finished at `ms`. */
const finishesAt = <A, E, R>(effect: Effect.Effect<A, E, R>, ms: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    yield* TestClock.adjust(Duration.millis(ms - 1))
    expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
    yield* TestClock.adjust(Duration.millis(1))
    const exit = yield* Fiber.poll(fiber)
    expect(Option.isSome(exit)).toBe(true)
    return Option.getOrThrow(exit)
  })

/** Runs `effect` on virtual time: finished once `ms` have passed (and not before `ms - 1`, when `ms > 1`). */
const finishedBy = <A, E, R>(effect: Effect.Effect<A, E, R>, ms: number) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    if (ms > 1) {
      yield* TestClock.adjust(Duration.millis(ms - 1))
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust(Duration.millis(1))
    } else {
      yield* TestClock.adjust(Duration.millis(ms))
    }
    const exit = yield* Fiber.poll(fiber)
    expect(Option.isSome(exit)).toBe(true)
    return Option.getOrThrow(exit)
  })

const timeoutOf = (phase: string, ms: number) => ({
  phase,
  kind: "timeout",
  permanent: false,
  code: null,
  message: `${phase} timed out after ${Duration.format(Duration.millis(ms))}`
})
const asTimeout = (e: TransportError) => ({ ...summary(e), message: e.message })

// ---------------------------------------------------------------------------------------------------------------
// Timeouts, phase by phase
// ---------------------------------------------------------------------------------------------------------------

describe("timeouts", () => {
  it.effect("connect: a peer accepting just under the timeout connects", () =>
    Effect.gen(function*() {
      const exit = yield* finishedBy(Effect.scoped(SmtpSession.connectScoped({ ip: IP, port: 25 }, T.connect)), T.connect - 1)
      expect(Exit.isSuccess(exit)).toBe(true)
    }).pipe(peer([Script.stall], { delay: T.connect - 1 })))

  it.effect("connect: a stalled connect fails at exactly timeouts.connect and is released", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(Effect.scoped(SmtpSession.connectScoped({ ip: IP, port: 25 }, T.connect)), T.connect)
      expect(asTimeout(failure(exit))).toEqual(timeoutOf("connect", T.connect))
      expect((yield* record).closed).toBe(true)
    }).pipe(peer([], { connect: "stall" })))

  it.effect("greeting: just under succeeds", () =>
    Effect.gen(function*() {
      const exit = yield* finishedBy(Effect.scoped(openSession()), T.greeting - 1)
      expect(Exit.isSuccess(exit)).toBe(true)
    }).pipe(peer([Script.delay(T.greeting - 1), ...hello()])))

  it.effect("greeting: a silent server fails at exactly timeouts.greeting", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(Effect.scoped(openSession()), T.greeting)
      expect(asTimeout(failure(exit))).toEqual(timeoutOf("greeting", T.greeting))
      const r = yield* record
      expect([r.written, r.closed]).toEqual(["", true])
    }).pipe(peer([Script.stall])))

  it.effect("ehlo: just under succeeds", () =>
    Effect.gen(function*() {
      const exit = yield* finishedBy(Effect.scoped(openSession()), T.ehlo - 1)
      expect(Exit.isSuccess(exit)).toBe(true)
    }).pipe(peer([GREET, EHLO, Script.delay(T.ehlo - 1), ehloReply()])))

  it.effect("ehlo: a stall fails at exactly timeouts.ehlo", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(Effect.scoped(openSession()), T.ehlo)
      expect(asTimeout(failure(exit))).toEqual(timeoutOf("ehlo", T.ehlo))
    }).pipe(peer([GREET, EHLO, Script.stall])))

  it.effect("ehlo: the second EHLO after STARTTLS has its own timeout", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(Effect.scoped(openSession()), T.ehlo)
      expect(asTimeout(failure(exit))).toEqual(timeoutOf("ehlo", T.ehlo))
    }).pipe(peer([
      ...hello("STARTTLS"),
      Script.expect("STARTTLS"),
      Script.reply("220 go"),
      Script.handshake,
      EHLO,
      Script.stall
    ])))

  it.effect("tls: just under succeeds (command and handshake)", () =>
    Effect.gen(function*() {
      const exit = yield* finishedBy(Effect.scoped(openSession()), T.tls - 1)
      expect(Exit.map(exit, (s) => s.tls?.verified)).toEqual(Exit.succeed(true))
    }).pipe(peer([
      ...hello("STARTTLS"),
      Script.expect("STARTTLS"),
      Script.delay(T.tls - 2),
      Script.reply("220 go"),
      Script.delay(1),
      Script.handshake,
      EHLO,
      ehloReply()
    ])))

  it.effect("tls: no reply to STARTTLS fails at exactly timeouts.tls", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(Effect.scoped(openSession()), T.tls)
      expect(asTimeout(failure(exit))).toEqual(timeoutOf("tls", T.tls))
    }).pipe(peer([...hello("STARTTLS"), Script.expect("STARTTLS"), Script.stall])))

  it.effect("tls: one bound covers the command and a stalled handshake", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(Effect.scoped(openSession()), T.tls)
      expect(asTimeout(failure(exit))).toEqual(timeoutOf("tls", T.tls))
    }).pipe(peer([...hello("STARTTLS"), Script.expect("STARTTLS"), Script.delay(T.tls - 10), Script.reply("220 go"), Script.stall])))

  it.effect("mail-from: just under succeeds", () =>
    Effect.gen(function*() {
      const exit = yield* finishedBy(deliver(), T.mailFrom - 1)
      const { result } = yield* exit
      expect(Either.isRight(result.mailFrom)).toBe(true)
      expect(result.data !== null && Either.isRight(result.data)).toBe(true)
    }).pipe(peer([
      ...hello(),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.delay(T.mailFrom - 1),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.reply("250 ok"),
      Script.expect("DATA"),
      Script.reply("354 go"),
      Script.expectData,
      Script.reply("250 queued"),
      ...QUIT
    ])))

  it.effect("mail-from: a stall fails at exactly timeouts.mail-from; no QUIT, the socket is closed", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(deliver(), T.mailFrom)
      const { result } = yield* exit
      const error = Either.getLeft(result.mailFrom).pipe(Option.getOrThrow)
      expect(asTimeout(error)).toEqual(timeoutOf("mail-from", T.mailFrom))
      expect(result.recipients).toEqual([{ address: "b@y.test", accepted: false, reply: null, error }])
      expect([result.data, result.phase, result.canQuit]).toEqual([null, "mail-from", false])
      const r = yield* record
      expect(r.written.endsWith("MAIL FROM:<a@x.test>\r\n")).toBe(true)
      expect(r.closed).toBe(true)
    }).pipe(peer([...hello(), Script.expect("MAIL FROM:<a@x.test>"), Script.stall])))

  it.effect("rcpt-to: just under succeeds, and each RCPT has its own timeout", () =>
    Effect.gen(function*() {
      // first reply at rcptTo - 1, second stalls: it fails rcptTo later, not at 2 × rcptTo from MAIL
      const exit = yield* finishesAt(deliver(envelope(["b@y.test", "c@y.test"])), 2 * T.rcptTo - 1)
      const { result } = yield* exit
      expect(result.recipients[0]).toMatchObject({ address: "b@y.test", accepted: true, error: null })
      expect(result.recipients[0]!.reply?.code).toBe(250)
      expect(asTimeout(result.recipients[1]!.error!)).toEqual(timeoutOf("rcpt-to", T.rcptTo))
      expect([result.data, result.phase, result.canQuit]).toEqual([null, "rcpt-to", false])
    }).pipe(peer([
      ...hello(),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.delay(T.rcptTo - 1),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<c@y.test>"),
      Script.stall
    ])))

  it.effect("rcpt-to: a stall fails at exactly timeouts.rcpt-to; later recipients get the same error", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(deliver(envelope(["b@y.test", "c@y.test"])), T.rcptTo)
      const { result } = yield* exit
      const error = result.recipients[0]!.error!
      expect(asTimeout(error)).toEqual(timeoutOf("rcpt-to", T.rcptTo))
      expect(result.recipients[1]).toEqual({ address: "c@y.test", accepted: false, reply: null, error })
      expect((yield* record).written).not.toContain("c@y.test")
    }).pipe(peer([...hello(), Script.expect("MAIL FROM:<a@x.test>"), Script.reply("250 ok"), Script.stall])))

  it.effect("data: 354, body and final reply in one bound; just under succeeds", () =>
    Effect.gen(function*() {
      const exit = yield* finishedBy(deliver(), T.data - 1)
      const { result } = yield* exit
      expect(result.data).toEqual(Either.right({ code: 250, enhanced: "2.0.0", lines: ["queued"] }))
    }).pipe(peer([
      ...hello(),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.reply("250 ok"),
      Script.expect("DATA"),
      Script.delay(T.data - 10),
      Script.reply("354 go"),
      Script.expectData,
      Script.delay(9),
      Script.reply("250 2.0.0 queued"),
      ...QUIT
    ])))

  it.effect("data: a final reply that never comes fails at exactly timeouts.data from DATA", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(deliver(), T.data)
      const { result } = yield* exit
      const error = Option.getOrThrow(Either.getLeft(result.data!))
      expect(asTimeout(error)).toEqual(timeoutOf("data", T.data))
      expect([result.phase, result.canQuit]).toEqual(["data", false])
      expect(result.recipients[0]!.accepted).toBe(true)
    }).pipe(peer([
      ...hello(),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.reply("250 ok"),
      Script.expect("DATA"),
      Script.delay(T.data - 10),
      Script.reply("354 go"),
      Script.expectData,
      Script.stall
    ])))

  it.effect("data: no 354 fails at exactly timeouts.data", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(deliver(), T.data)
      const { result } = yield* exit
      expect(asTimeout(Option.getOrThrow(Either.getLeft(result.data!)))).toEqual(timeoutOf("data", T.data))
    }).pipe(peer([
      ...hello(),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.reply("250 ok"),
      Script.expect("DATA"),
      Script.stall
    ])))

  it.effect("a timeout given by an expression (shorter when retry_num > 0) is honoured", () =>
    Effect.gen(function*() {
      const config = Either.getOrThrow(OutboundConfig.parse(`
[queue.outbound.timeouts]
greeting = [ { if = "retry_num > 0", then = "2s" }, { else = "10s" } ]
`))
      for (const [retryNum, ms] of [[1, 2_000], [0, 10_000]] as const) {
        const greeting = config.timeouts.greeting.evaluate({ retry_num: retryNum }).value
        const exit = yield* finishesAt(Effect.scoped(openSession(settings({ timeouts: { ...timeouts, greeting } }))), ms)
        expect(asTimeout(failure(exit))).toEqual(timeoutOf("greeting", ms))
      }
    }).pipe(Effect.provide(ConnectorTest.layer({ [IP]: [{ script: [Script.stall] }, { script: [Script.stall] }] }))))

  it.effect("a later phase with a shorter timeout than the one before is cut at its own deadline", () =>
    Effect.gen(function*() {
      // greeting allows 10 min and is answered at 1 s; EHLO allows 2 s and stalls: the failure is at 3 s, not
      // when the greeting's deadline would have been.
      const short = settings({ timeouts: { ...timeouts, greeting: Duration.minutes(10), ehlo: Duration.seconds(2) } })
      const exit = yield* finishesAt(Effect.scoped(openSession(short)), 3_000)
      expect(asTimeout(failure(exit))).toEqual(timeoutOf("ehlo", 2_000))
    }).pipe(peer([Script.delay("1 second"), GREET, EHLO, Script.stall])))

  it.effect("each RCPT gets its own deadline, shorter or longer than MAIL's", () =>
    Effect.gen(function*() {
      const mixed = settings({ timeouts: { ...timeouts, "mail-from": Duration.seconds(30), "rcpt-to": Duration.seconds(1) } })
      const run = Effect.scoped(Effect.flatMap(openSession(mixed), (s) =>
        SmtpSession.transaction(s, envelope(["a@y.test", "b@y.test"]), message, mixed)))
      // MAIL answered at 20 s (under its 30 s), the first RCPT at 0.5 s, the second stalls: done at 21.5 s
      const result = yield* finishesAt(run, 21_500)
      expect(Exit.isSuccess(result)).toBe(true)
      const t = Exit.isSuccess(result) ? result.value : null
      expect(t!.recipients.map((r) => [r.accepted, r.error?.kind ?? null, r.error?.phase ?? null])).toEqual([
        [true, null, null],
        [false, "timeout", "rcpt-to"]
      ])
    }).pipe(peer([
      ...hello(),
      Script.expect(/^MAIL FROM:/),
      Script.delay("20 seconds"),
      Script.reply("250 ok"),
      Script.expect(/^RCPT TO:<a@y.test>/),
      Script.delay("500 millis"),
      Script.reply("250 ok"),
      Script.expect(/^RCPT TO:<b@y.test>/),
      Script.stall
    ])))

  it.effect("quit: capped at 2 s, and its failures are ignored", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(
        Effect.scoped(Effect.flatMap(openSession(), (s) => SmtpSession.quit(s))),
        Duration.toMillis(SmtpSession.QUIT_TIMEOUT)
      )
      expect(exit).toEqual(Exit.void)
      const reset = yield* Effect.exit(Effect.scoped(Effect.flatMap(openSession(), (s) => SmtpSession.quit(s))))
      expect(reset).toEqual(Exit.void)
      const [stalled, wasReset] = yield* records
      expect(stalled!.written.endsWith("QUIT\r\n")).toBe(true)
      expect(wasReset!.written.endsWith("QUIT\r\n")).toBe(true)
    }).pipe(Effect.provide(ConnectorTest.layer({
      [IP]: [
        { script: [...hello(), Script.expect("QUIT"), Script.stall] },
        { script: [...hello(), Script.expect("QUIT"), Script.reset] }
      ]
    }))))

  it.effect("quit: after the 221, waits for the server to close first, at most QUIT_CLOSE_WAIT", () =>
    Effect.gen(function*() {
      const quitAfterOpen = Effect.scoped(Effect.flatMap(openSession(), (s) => SmtpSession.quit(s)))
      // closes 50 ms after its 221: QUIT returns with the close
      expect(yield* finishesAt(quitAfterOpen, 50)).toEqual(Exit.void)
      // never closes: QUIT gives up waiting after QUIT_CLOSE_WAIT, and succeeds all the same
      expect(yield* finishesAt(quitAfterOpen, Duration.toMillis(SmtpSession.QUIT_CLOSE_WAIT))).toEqual(Exit.void)
      // answers something else than 221: nothing to wait for
      expect(yield* finishedBy(quitAfterOpen, 0)).toEqual(Exit.void)
    }).pipe(Effect.provide(ConnectorTest.layer({
      [IP]: [
        { script: [...hello(), Script.expect("QUIT"), Script.reply("221 bye"), Script.delay("50 millis"), Script.close] },
        { script: [...hello(), Script.expect("QUIT"), Script.reply("221 bye"), Script.stall] },
        { script: [...hello(), Script.expect("QUIT"), Script.reply("500 what"), Script.stall] }
      ]
    }))))
})

// ---------------------------------------------------------------------------------------------------------------
// Connect
// ---------------------------------------------------------------------------------------------------------------

describe("connect", () => {
  it.effect("maps each connect failure to its kind, all temporary", () =>
    Effect.gen(function*() {
      const kinds = []
      for (const ip of ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"]) {
        const error = yield* Effect.flip(
          Effect.scoped(SmtpSession.connectScoped({ ip, port: 25, localAddress: "198.51.100.1" }, T.connect))
        )
        kinds.push([error.phase, error.kind, error.permanent])
      }
      expect(kinds).toEqual([
        ["connect", "refused", false],
        ["connect", "unreachable", false],
        ["connect", "bind", false],
        ["connect", "reset", false],
        ["connect", "unreachable", false]
      ])
      const all = yield* records
      expect(all.map((r) => [r.outcome, r.localAddress, r.closed])).toEqual([
        ["refuse", "198.51.100.1", true],
        ["unreachable", "198.51.100.1", true],
        ["bind", "198.51.100.1", true],
        ["reset", "198.51.100.1", true],
        ["unreachable", "198.51.100.1", true]
      ])
    }).pipe(Effect.provide(ConnectorTest.layer({
      "192.0.2.1": { connect: "refuse" },
      "192.0.2.2": { connect: "unreachable" },
      "192.0.2.3": { connect: "bind" },
      "192.0.2.4": { connect: "reset" }
    }))))

  // A connect interrupted while the scripted peer's `open` is still setting up (after its record exists, before it
  // returns the pipe) dropped that pipe: nothing destroyed it and its record stayed open for ever. Yielding every
  // `ops` operations and interrupting after 0..6 yields lands the interruption on each of the connect's steps (with
  // `ops` below 10, Effect 3.22 itself livelocks interrupting a fiber, even `Effect.never`).
  it.effect("a connect interrupted at any step leaves every scripted connection closed", () =>
    Effect.gen(function*() {
      const connector = yield* Connector.Connector
      const test = yield* ConnectorTest.ConnectorTest
      const peers = ["accept", "refuse", "stall"] as const
      let seen = 0
      for (let ops = 10; ops <= 32; ops++) {
        for (let k = 0; k <= 6; k++) {
          for (const [i] of peers.entries()) {
            const fiber = yield* Effect.fork(
              connector.connect({ ip: `192.0.2.${i + 1}`, port: 25, deadline: Infinity }).pipe(
                Effect.flatMap((connection) => connection.close),
                Effect.withMaxOpsBeforeYield(ops)
              )
            )
            for (let y = 0; y < k; y++) yield* Effect.yieldNow()
            yield* Fiber.interrupt(fiber)
          }
          const all = yield* test.connections
          expect(all.filter((r) => !r.closed).map((r) => [ops, k, r.ip, r.outcome])).toEqual([])
          seen = all.length
        }
      }
      // most connects got as far as their record (the sweep covers the steps after it exists)
      expect(seen).toBeGreaterThan(100)
    }).pipe(Effect.provide(ConnectorTest.layer({
      "192.0.2.1": Array.from({ length: 400 }, () => ({ delay: "100 millis", script: [Script.reply("220 mx")] })),
      "192.0.2.2": Array.from({ length: 400 }, () => ({ delay: "100 millis", connect: "refuse" as const })),
      "192.0.2.3": Array.from({ length: 400 }, () => ({ connect: "stall" as const }))
    }))))
})

// ---------------------------------------------------------------------------------------------------------------
// Replies at every phase
// ---------------------------------------------------------------------------------------------------------------

describe("replies classified", () => {
  const openWith = (script: ReadonlyArray<ConnectorTest.Step>, s = settings()) =>
    Effect.flip(Effect.scoped(openSession(s))).pipe(Effect.map(summary), peer(script))

  it.effect("greeting 421 is temporary, 554 permanent, anything but 220 an error", () =>
    Effect.gen(function*() {
      expect(yield* openWith([Script.reply("421 4.3.2 busy")])).toEqual({
        phase: "greeting",
        kind: "reply",
        permanent: false,
        code: 421
      })
      expect(yield* openWith([Script.reply("554 5.7.1 go away")])).toEqual({
        phase: "greeting",
        kind: "reply",
        permanent: true,
        code: 554
      })
      expect(yield* openWith([Script.reply("250 what")])).toEqual({
        phase: "greeting",
        kind: "reply",
        permanent: false,
        code: 250
      })
      expect(yield* openWith([Script.raw("garbage\r\n")])).toEqual({
        phase: "greeting",
        kind: "protocol",
        permanent: false,
        code: null
      })
      expect(yield* openWith([Script.close])).toEqual({
        phase: "greeting",
        kind: "reset",
        permanent: false,
        code: null
      })
    }))

  it.effect("EHLO 421 is temporary, 554 permanent, and neither falls back to HELO", () =>
    Effect.gen(function*() {
      expect(yield* openWith([GREET, EHLO, Script.reply("421 4.3.2 busy")])).toEqual({
        phase: "ehlo",
        kind: "reply",
        permanent: false,
        code: 421
      })
      const error = yield* Effect.flip(Effect.scoped(openSession())).pipe(
        Effect.zip(record),
        peer([GREET, EHLO, Script.reply("554 5.7.1 no")])
      )
      expect(summary(error[0])).toEqual({ phase: "ehlo", kind: "reply", permanent: true, code: 554 })
      expect(error[1].written).toBe("EHLO client.test\r\n")
      expect(SmtpSession.canQuitAfter(error[0])).toBe(true)
    }))

  it.effect("STARTTLS refusal under require: temporary whatever its digit (a downgrade defers, never bounces)", () =>
    Effect.gen(function*() {
      const require = settings({ starttls: "require" })
      expect(yield* openWith([...hello("STARTTLS"), Script.expect("STARTTLS"), Script.reply("454 4.7.0 later")], require))
        .toEqual({ phase: "tls", kind: "reply", permanent: false, code: 454 })
      expect(yield* openWith([...hello("STARTTLS"), Script.expect("STARTTLS"), Script.reply("554 5.7.0 no")], require))
        .toEqual({ phase: "tls", kind: "reply", permanent: false, code: 554 })
    }))

  const transact = (script: ReadonlyArray<ConnectorTest.Step>, env = envelope()) =>
    Effect.map(deliver(env), ({ result }) => result).pipe(peer(script))
  const through = (...steps: ReadonlyArray<ConnectorTest.Step>) => [...hello(), ...steps]

  it.effect("MAIL 451 temporary, 550 permanent: every recipient gets it, nothing more is sent, QUIT follows", () =>
    Effect.gen(function*() {
      for (const [code, permanent] of [[451, false], [550, true]] as const) {
        const result = yield* transact(
          through(Script.expect("MAIL FROM:<a@x.test>"), Script.reply(`${code} no`), ...QUIT),
          envelope(["b@y.test", "c@y.test"])
        )
        const error = Option.getOrThrow(Either.getLeft(result.mailFrom))
        expect(summary(error)).toEqual({ phase: "mail-from", kind: "reply", permanent, code })
        expect(result.recipients.map((r) => [r.accepted, r.reply, r.error])).toEqual([
          [false, null, error],
          [false, null, error]
        ])
        expect([result.data, result.phase, result.canQuit]).toEqual([null, "mail-from", true])
      }
    }))

  it.effect("RCPT 450 temporary, 550 permanent, per recipient; no recipient accepted means no DATA", () =>
    Effect.gen(function*() {
      const result = yield* transact(
        through(
          Script.expect("MAIL FROM:<a@x.test>"),
          Script.reply("250 ok"),
          Script.expect("RCPT TO:<b@y.test>"),
          Script.reply("450 4.2.1 mailbox busy"),
          Script.expect("RCPT TO:<c@y.test>"),
          Script.reply("550 5.1.1 no such user"),
          ...QUIT
        ),
        envelope(["b@y.test", "c@y.test"])
      )
      expect(result.recipients.map((r) => [r.address, r.accepted, r.reply?.enhanced, summary(r.error)])).toEqual([
        ["b@y.test", false, "4.2.1", { phase: "rcpt-to", kind: "reply", permanent: false, code: 450 }],
        ["c@y.test", false, "5.1.1", { phase: "rcpt-to", kind: "reply", permanent: true, code: 550 }]
      ])
      expect([result.data, result.phase, result.canQuit]).toEqual([null, "rcpt-to", true])
    }))

  it.effect("DATA refused (451/554) and the final reply (452/554) by digit", () =>
    Effect.gen(function*() {
      const accepted = [
        Script.expect("MAIL FROM:<a@x.test>"),
        Script.reply("250 ok"),
        Script.expect("RCPT TO:<b@y.test>"),
        Script.reply("250 ok"),
        Script.expect("DATA")
      ]
      const cases = [
        [[Script.reply("451 4.3.0 later"), ...QUIT], 451, false],
        [[Script.reply("554 5.5.1 no"), ...QUIT], 554, true],
        [[Script.reply("354 go"), Script.expectData, Script.reply("452 4.3.1 full"), ...QUIT], 452, false],
        [[Script.reply("354 go"), Script.expectData, Script.reply("554 5.6.0 spam"), ...QUIT], 554, true]
      ] as const
      for (const [steps, code, permanent] of cases) {
        const result = yield* transact(through(...accepted, ...steps))
        expect(summary(Option.getOrThrow(Either.getLeft(result.data!)))).toEqual({
          phase: "data",
          kind: "reply",
          permanent,
          code
        })
        expect([result.phase, result.canQuit]).toEqual(["data", true])
      }
    }))

  it.effect("a reset during RCPT: answered recipients keep their reply, the rest get the reset; no QUIT", () =>
    Effect.gen(function*() {
      const { result } = yield* deliver(envelope(["b@y.test", "c@y.test", "d@y.test"]))
      expect(result.recipients.map((x) => [x.address, x.accepted, summary(x.error)])).toEqual([
        ["b@y.test", true, null],
        ["c@y.test", false, { phase: "rcpt-to", kind: "reset", permanent: false, code: null }],
        ["d@y.test", false, { phase: "rcpt-to", kind: "reset", permanent: false, code: null }]
      ])
      expect([result.data, result.phase, result.canQuit]).toEqual([null, "rcpt-to", false])
      const r = yield* record
      expect(r.written).not.toContain("QUIT")
      expect(r.closed).toBe(true)
    }).pipe(peer(through(
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<c@y.test>"),
      Script.reset
    ))))

  it.effect("a reset after the body: the data result is the reset, no QUIT", () =>
    Effect.gen(function*() {
      const { result } = yield* deliver()
      expect(summary(Option.getOrThrow(Either.getLeft(result.data!)))).toEqual({
        phase: "data",
        kind: "reset",
        permanent: false,
        code: null
      })
      expect([result.recipients[0]!.accepted, result.canQuit]).toEqual([true, false])
      expect((yield* record).written).not.toContain("QUIT")
    }).pipe(peer(through(
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.reply("250 ok"),
      Script.expect("DATA"),
      Script.reply("354 go"),
      Script.expectData,
      Script.reset
    ))))
})

// ---------------------------------------------------------------------------------------------------------------
// EHLO / HELO
// ---------------------------------------------------------------------------------------------------------------

describe("EHLO and HELO", () => {
  it.effect("parses the capabilities", () =>
    Effect.gen(function*() {
      const session = yield* Effect.scoped(openSession(settings({ starttls: "disable" })))
      expect(session.capabilities).toEqual({
        size: 35882577,
        eightBitMime: true,
        smtpUtf8: true,
        pipelining: true,
        startTls: true,
        dsn: true,
        chunking: true,
        requireTls: true,
        enhancedStatusCodes: true,
        auth: ["LOGIN", "PLAIN"],
        keywords: [
          "SIZE 35882577",
          "8BITMIME",
          "STARTTLS",
          "ENHANCEDSTATUSCODES",
          "pipelining",
          "CHUNKING",
          "SMTPUTF8",
          "DSN",
          "REQUIRETLS",
          "AUTH LOGIN PLAIN"
        ]
      })
      expect([session.helo, session.tls !== null, session.ehloName, session.greeting.code]).toEqual([
        false,
        false,
        "client.test",
        220
      ])
    }).pipe(peer(hello(
      "SIZE 35882577",
      "8BITMIME",
      "STARTTLS",
      "ENHANCEDSTATUSCODES",
      "pipelining",
      "CHUNKING",
      "SMTPUTF8",
      "DSN",
      "REQUIRETLS",
      "AUTH LOGIN PLAIN"
    ))))

  it.effect("SIZE without a number is SIZE 0 (no declared limit)", () =>
    Effect.gen(function*() {
      const session = yield* Effect.scoped(openSession())
      expect(session.capabilities.size).toBe(0)
    }).pipe(peer(hello("SIZE"))))

  for (const code of [500, 502]) {
    it.effect(`falls back to HELO after EHLO ${code}`, () =>
      Effect.gen(function*() {
        const { result, session } = yield* deliver()
        expect([session.helo, session.ehlo.code, session.capabilities.pipelining, session.capabilities.size])
          .toEqual([true, 250, false, null])
        expect(Either.isRight(result.data!)).toBe(true)
        expect((yield* record).mismatches).toEqual([])
      }).pipe(peer([
        GREET,
        EHLO,
        Script.reply(`${code} 5.5.1 unrecognized command`),
        Script.expect("HELO client.test"),
        Script.reply("250 mx.test"),
        Script.expect("MAIL FROM:<a@x.test>"),
        Script.reply("250 ok"),
        Script.expect("RCPT TO:<b@y.test>"),
        Script.reply("250 ok"),
        Script.expect("DATA"),
        Script.reply("354 go"),
        Script.expectData,
        Script.reply("250 ok"),
        ...QUIT
      ])))
  }

  it.effect("a HELO that is refused too fails the ehlo phase by its digit", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(openSession()))
      expect(summary(error)).toEqual({ phase: "ehlo", kind: "reply", permanent: true, code: 550 })
    }).pipe(peer([GREET, EHLO, Script.reply("502 no"), Script.expect("HELO client.test"), Script.reply("550 no")])))

  it.effect("refuses an EHLO name that could inject a command, before sending anything", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(openSession(settings({ ehloName: "a\r\nRSET" }))))
      expect(summary(error)).toEqual({ phase: "ehlo", kind: "policy", permanent: true, code: null })
      expect((yield* record).written).toBe("")
    }).pipe(peer(hello())))
})

// ---------------------------------------------------------------------------------------------------------------
// STARTTLS policy
// ---------------------------------------------------------------------------------------------------------------

describe("STARTTLS", () => {
  type Offer = "offered" | "not offered" | "refused"
  const scripts: Record<Offer, ReadonlyArray<ConnectorTest.Step>> = {
    offered: [...hello("STARTTLS", "PIPELINING"), ...tlsUp("PIPELINING")],
    "not offered": hello("PIPELINING"),
    refused: [...hello("STARTTLS", "PIPELINING"), Script.expect("STARTTLS"), Script.reply("454 4.7.0 TLS not available")]
  }
  const expected: Record<
    SmtpSession.TlsPolicy,
    Record<Offer, { tls: boolean; sent: boolean } | { phase: string; kind: string; permanent: boolean }>
  > = {
    disable: {
      offered: { tls: false, sent: false },
      "not offered": { tls: false, sent: false },
      refused: { tls: false, sent: false }
    },
    optional: {
      offered: { tls: true, sent: true },
      "not offered": { tls: false, sent: false },
      refused: { tls: false, sent: true }
    },
    require: {
      offered: { tls: true, sent: true },
      // temporary, as Postfix's 4.7.4: a stripped STARTTLS delays mail, never bounces it
      "not offered": { phase: "tls", kind: "policy", permanent: false },
      refused: { phase: "tls", kind: "reply", permanent: false }
    }
  }
  for (const policy of ["disable", "optional", "require"] as const) {
    for (const offer of ["offered", "not offered", "refused"] as const) {
      it.effect(`${policy} × ${offer}`, () =>
        Effect.gen(function*() {
          const exit = yield* Effect.exit(Effect.scoped(openSession(settings({ starttls: policy }))))
          const r = yield* record
          const want = expected[policy][offer]
          if ("tls" in want) {
            const session = yield* exit
            expect({ tls: session.tls !== null, sent: r.written.includes("STARTTLS") }).toEqual(want)
            expect(session.connection.isTls).toBe(want.tls)
            // EHLO again after TLS, never after a refusal
            expect(r.commands.filter((c) => c === "EHLO client.test").length).toBe(want.tls ? 2 : 1)
            expect(session.capabilities.pipelining).toBe(true)
          } else {
            const error = failure(exit)
            expect({ phase: error.phase, kind: error.kind, permanent: error.permanent }).toEqual(want)
          }
          expect(r.mismatches).toEqual([])
        }).pipe(peer(scripts[offer])))
    }
  }

  it.effect("hands SNI, CAs and verification to the connection: verified where TLS is required, any certificate where optional", () =>
    Effect.gen(function*() {
      yield* Effect.scoped(openSession(settings({ ca: ["PEM"], starttls: "require" })))
      yield* Effect.scoped(openSession(settings({ allowInvalidCerts: true, starttls: "require" })))
      yield* Effect.scoped(openSession(settings({ starttls: "optional", required: true })))
      yield* Effect.scoped(openSession(settings({ starttls: "optional" })))
      const all = yield* records
      expect(all.map((r) => r.startTls)).toEqual([
        [{ servername: "mx.test", ca: ["PEM"], rejectUnauthorized: true }],
        [{ servername: "mx.test", ca: undefined, rejectUnauthorized: false }],
        [{ servername: "mx.test", ca: undefined, rejectUnauthorized: true }],
        [{ servername: "mx.test", ca: undefined, rejectUnauthorized: false }]
      ])
    }).pipe(Effect.provide(ConnectorTest.layer({
      [IP]: Array.from({ length: 4 }, () => ({ script: [...hello("STARTTLS"), ...tlsUp()] }))
    }))))

  it.effect("optional (RFC 7435): a certificate that does not verify is used, and the session says why", () =>
    Effect.gen(function*() {
      const session = yield* Effect.scoped(openSession(settings({ starttls: "optional" })))
      expect(session.tls).toEqual({
        version: "TLSv1.3",
        cipher: "TLS_AES_256_GCM_SHA384",
        verified: false,
        reason: "self-signed",
        peerCertificates: [],
        dane: null
      })
      expect(session.capabilities.pipelining).toBe(true)
      // the same certificate where TLS is required fails the handshake, temporarily
      const error = yield* Effect.flip(Effect.scoped(openSession(settings({ starttls: "require" }))))
      expect(summary(error)).toEqual({ phase: "tls", kind: "tls", permanent: false, code: null })
      expect(error.message).toBe("tls: TLS handshake failed: certificate not verified (self-signed)")
    }).pipe(Effect.provide(ConnectorTest.layer({
      [IP]: Array.from({ length: 2 }, () => ({
        script: [
          ...hello("STARTTLS"),
          Script.expect("STARTTLS"),
          Script.reply("220 go"),
          Script.handshakeUnverified("self-signed"),
          Script.expect("EHLO client.test"),
          Script.reply("250-mx.test", "250 PIPELINING")
        ]
      }))
    }))))

  it.effect("requireTls acts as require even when tls.starttls is disable", () =>
    Effect.gen(function*() {
      const session = yield* Effect.scoped(openSession(settings({ starttls: "disable", required: true })))
      expect(session.tls?.verified).toBe(true)
      const error = yield* Effect.flip(Effect.scoped(openSession(settings({ starttls: "optional", required: true }))))
      expect(summary(error)).toEqual({ phase: "tls", kind: "policy", permanent: false, code: null })
      const refused = yield* Effect.flip(Effect.scoped(openSession(settings({ starttls: "disable", required: true }))))
      expect(summary(refused)).toEqual({ phase: "tls", kind: "reply", permanent: false, code: 454 })
    }).pipe(Effect.provide(ConnectorTest.layer({
      [IP]: [
        { script: [...hello("STARTTLS"), ...tlsUp()] },
        { script: hello() },
        { script: scripts.refused }
      ]
    }))))

  it.effect("a failed handshake is a temporary tls error, with no plaintext retry", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(openSession()))
      expect(summary(error)).toEqual({ phase: "tls", kind: "tls", permanent: false, code: null })
      expect(SmtpSession.canQuitAfter(error)).toBe(false)
      const r = yield* record
      expect(r.written).toBe("EHLO client.test\r\nSTARTTLS\r\n")
    }).pipe(peer([...hello("STARTTLS"), Script.expect("STARTTLS"), Script.reply("220 go"), Script.handshakeFails])))

  it.effect("refuses to upgrade when the server sent bytes after its 220 (CVE-2011-0411)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(openSession()))
      expect([error.phase, error.kind, error.permanent, error.message]).toEqual([
        "tls",
        "protocol",
        false,
        "tls: the server sent 30 bytes after its reply to STARTTLS"
      ])
      const r = yield* record
      // refused before the transport: no handshake was started
      expect(r.startTls.length).toBe(0)
      expect(r.written).toBe("EHLO client.test\r\nSTARTTLS\r\n")
    }).pipe(peer([
      ...hello("STARTTLS"),
      Script.expect("STARTTLS"),
      Script.raw("220 go ahead\r\n250-injected\r\n250 PIPELINING\r\n"),
      Script.handshake
    ])))
})

// ---------------------------------------------------------------------------------------------------------------
// The transaction
// ---------------------------------------------------------------------------------------------------------------

const accept = (...rcpts: ReadonlyArray<string>) => [
  ...rcpts.flatMap((r) => [Script.expect(`RCPT TO:<${r}>`), Script.reply("250 ok")]),
  Script.expect("DATA"),
  Script.reply("354 go"),
  Script.expectData,
  Script.reply("250 queued"),
  ...QUIT
]

describe("MAIL parameters", () => {
  const mailLine = (caps: ReadonlyArray<string>, env: SmtpSession.Envelope, body: Uint8Array, rcpt = /^RCPT /) =>
    Effect.gen(function*() {
      const { result } = yield* deliver(env, body)
      const r = yield* record
      expect(r.mismatches).toEqual([])
      return { mail: r.commands.find((c) => c.startsWith("MAIL "))!, rcpt: r.commands.find((c) => rcpt.test(c)), result }
    }).pipe(peer([
      ...hello(...caps),
      Script.expect(/^MAIL /),
      Script.reply("250 ok"),
      ...env.recipients.flatMap(() => [Script.expect(/^RCPT /), Script.reply("250 ok")]),
      Script.expect("DATA"),
      Script.reply("354 go"),
      Script.expectData,
      Script.reply("250 queued"),
      ...QUIT
    ]))

  const eightBit = new TextEncoder().encode("Subject: x\r\n\r\ncafé\r\n")
  const utf8Header = new TextEncoder().encode("Subject: café\r\n\r\nx\r\n")

  it.effect("SIZE when advertised, with the normalised size", () =>
    Effect.gen(function*() {
      const body = new TextEncoder().encode("Subject: a\n\nb") // 13 bytes, 17 normalised
      expect((yield* mailLine(["SIZE 1000"], envelope(), body)).mail).toBe("MAIL FROM:<a@x.test> SIZE=17")
      expect((yield* mailLine([], envelope(), body)).mail).toBe("MAIL FROM:<a@x.test>")
    }))

  it.effect("BODY=8BITMIME for 8-bit content when advertised only", () =>
    Effect.gen(function*() {
      expect((yield* mailLine(["8BITMIME"], envelope(), eightBit)).mail).toBe("MAIL FROM:<a@x.test> BODY=8BITMIME")
      expect((yield* mailLine(["8BITMIME"], envelope(), message)).mail).toBe("MAIL FROM:<a@x.test>")
      expect((yield* mailLine([], envelope(), eightBit)).mail).toBe("MAIL FROM:<a@x.test>")
    }))

  it.effect("SMTPUTF8 when an address or a header needs it", () =>
    Effect.gen(function*() {
      expect((yield* mailLine(["SMTPUTF8", "8BITMIME"], envelope(["jösé@y.test"]), message)).mail).toBe(
        "MAIL FROM:<a@x.test> SMTPUTF8"
      )
      expect((yield* mailLine(["SMTPUTF8"], envelope(["b@y.test"], { sender: "ñ@x.test" }), message)).mail).toBe(
        "MAIL FROM:<ñ@x.test> SMTPUTF8"
      )
      expect((yield* mailLine(["SMTPUTF8", "8BITMIME"], envelope(), utf8Header)).mail).toBe(
        "MAIL FROM:<a@x.test> BODY=8BITMIME SMTPUTF8"
      )
      // 8-bit in the body only: no SMTPUTF8
      expect((yield* mailLine(["SMTPUTF8", "8BITMIME"], envelope(), eightBit)).mail).toBe(
        "MAIL FROM:<a@x.test> BODY=8BITMIME"
      )
    }))

  it.effect("DSN RET/ENVID/NOTIFY/ORCPT when advertised and asked for", () =>
    Effect.gen(function*() {
      const dsn: SmtpSession.Dsn = { ret: "HDRS", envid: "id+1 =x", notify: ["FAILURE", "SUCCESS"], orcpt: true }
      const withDsn = yield* mailLine(["DSN"], envelope(["b@y.test"], { dsn }), message)
      expect([withDsn.mail, withDsn.rcpt]).toEqual([
        "MAIL FROM:<a@x.test> RET=HDRS ENVID=id+2B1+20+3Dx",
        "RCPT TO:<b@y.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@y.test"
      ])
      const never = yield* mailLine(["DSN"], envelope(["b@y.test"], { dsn: { notify: "NEVER" } }), message)
      expect([never.mail, never.rcpt]).toEqual(["MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test> NOTIFY=NEVER"])
      const without = yield* mailLine([], envelope(["b@y.test"], { dsn }), message)
      expect([without.mail, without.rcpt]).toEqual(["MAIL FROM:<a@x.test>", "RCPT TO:<b@y.test>"])
    }))

  it.effect("the null sender", () =>
    Effect.gen(function*() {
      expect((yield* mailLine([], envelope(["b@y.test"], { sender: "" }), message)).mail).toBe("MAIL FROM:<>")
    }))

  const refusedBeforeMail = (
    caps: ReadonlyArray<string>,
    env: SmtpSession.Envelope,
    body: Uint8Array,
    why: string,
    s = settings()
  ) =>
    Effect.gen(function*() {
      const { result } = yield* deliver(env, body, s)
      const error = Option.getOrThrow(Either.getLeft(result.mailFrom))
      expect([error.phase, error.kind, error.permanent, error.message]).toEqual(["mail-from", "policy", true, why])
      expect(result.recipients.every((r) => r.error === error && !r.accepted)).toBe(true)
      expect([result.data, result.canQuit]).toEqual([null, true])
      const r = yield* record
      expect(r.commands.filter((c) => !c.startsWith("EHLO"))).toEqual(["QUIT"])
    }).pipe(peer([...hello(...caps), ...QUIT]))

  it.effect("SMTPUTF8 needed by an address and not advertised: permanent, before MAIL, naming the address", () =>
    refusedBeforeMail(
      ["8BITMIME"],
      envelope(["b@y.test", "jösé@y.test"]),
      message,
      "mail-from: jösé@y.test needs SMTPUTF8 and the server does not advertise it"
    ))

  it.effect("SMTPUTF8 needed by the sender and not advertised: the sender is named", () =>
    refusedBeforeMail(
      [],
      envelope(["b@y.test"], { sender: "ñ@x.test" }),
      message,
      "mail-from: ñ@x.test needs SMTPUTF8 and the server does not advertise it"
    ))

  it.effect("UTF-8 in a header only, SMTPUTF8 not advertised: sent as 8BITMIME where offered, as is otherwise (Postfix)", () =>
    Effect.gen(function*() {
      const with8Bit = yield* mailLine(["8BITMIME"], envelope(), utf8Header)
      expect(with8Bit.mail).toBe("MAIL FROM:<a@x.test> BODY=8BITMIME")
      expect(Either.isRight(with8Bit.result.data!)).toBe(true)
      const bare = yield* mailLine([], envelope(), utf8Header)
      expect(bare.mail).toBe("MAIL FROM:<a@x.test>")
      expect(Either.isRight(bare.result.data!)).toBe(true)
    }))

  it.effect("SIZE over the server's limit: permanent, before MAIL", () =>
    refusedBeforeMail(
      ["SIZE 10"],
      envelope(),
      message,
      `mail-from: message of ${message.length} bytes exceeds the server's SIZE 10`
    ))

  it.effect("a sender that could inject a command: permanent, nothing sent", () =>
    refusedBeforeMail([], envelope(["b@y.test"], { sender: "a@x>\r\nRSET" }), message, `mail-from: sender "a@x>\\r\\nRSET" cannot be sent`))

  it.effect("REQUIRETLS: sent over TLS when advertised; not advertised or plaintext: permanent before MAIL", () =>
    Effect.gen(function*() {
      const s = settings({ required: true })
      const env = envelope(["b@y.test"], { requireTls: true })
      const { result } = yield* deliver(env, message, s)
      expect(Either.isRight(result.data!)).toBe(true)
      const [first] = yield* records
      expect(first!.commands.find((c) => c.startsWith("MAIL"))).toBe("MAIL FROM:<a@x.test> REQUIRETLS")

      const notAdvertised = yield* deliver(env, message, s)
      expect(Option.getOrThrow(Either.getLeft(notAdvertised.result.mailFrom)).message).toBe(
        "mail-from: REQUIRETLS message and the server does not advertise REQUIRETLS"
      )
      const plaintext = yield* deliver(env, message, settings({ starttls: "disable" }))
      expect(Option.getOrThrow(Either.getLeft(plaintext.result.mailFrom)).message).toBe(
        "mail-from: REQUIRETLS message over a plaintext connection"
      )
      const all = yield* records
      expect(all.map((r) => r.commands.some((c) => c.startsWith("MAIL")))).toEqual([true, false, false])
    }).pipe(Effect.provide(ConnectorTest.layer({
      [IP]: [
        {
          script: [
            ...hello("STARTTLS"),
            ...tlsUp("REQUIRETLS"),
            Script.expect("MAIL FROM:<a@x.test> REQUIRETLS"),
            Script.reply("250 ok"),
            ...accept("b@y.test")
          ]
        },
        { script: [...hello("STARTTLS"), ...tlsUp(), ...QUIT] },
        { script: [...hello("REQUIRETLS"), ...QUIT] }
      ]
    }))))

  it.effect("a recipient that could inject a command is refused alone", () =>
    Effect.gen(function*() {
      const { result } = yield* deliver(envelope(["bad>@y.test", "b@y.test"]))
      expect(result.recipients.map((r) => [r.address, r.accepted, summary(r.error)])).toEqual([
        ["bad>@y.test", false, { phase: "rcpt-to", kind: "policy", permanent: true, code: null }],
        ["b@y.test", true, null]
      ])
      expect(Either.isRight(result.data!)).toBe(true)
      expect((yield* record).written).not.toContain("bad")
    }).pipe(peer([...hello(), Script.expect("MAIL FROM:<a@x.test>"), Script.reply("250 ok"), ...accept("b@y.test")])))
})

describe("no recipient can be sent", () => {
  it.effect("no MAIL at all; each recipient keeps its own refusal", () =>
    Effect.gen(function*() {
      const { result } = yield* deliver(envelope(["a b@y.test", ""]))
      expect(Option.getOrThrow(Either.getLeft(result.mailFrom)).message).toBe("mail-from: no recipient can be sent")
      expect(result.recipients.map((r) => [r.address, r.accepted, r.error?.message])).toEqual([
        ["a b@y.test", false, "rcpt-to: recipient \"a b@y.test\" cannot be sent"],
        ["", false, "rcpt-to: recipient \"\" cannot be sent"]
      ])
      expect([result.data, result.canQuit]).toEqual([null, true])
      expect((yield* record).commands).toEqual(["EHLO client.test", "QUIT"])
    }).pipe(peer([...hello(), ...QUIT])))
})

describe("PIPELINING", () => {
  it.effect("one write for MAIL, every RCPT and DATA; replies mapped in order", () =>
    Effect.gen(function*() {
      const { result } = yield* deliver(envelope(["b@y.test", "c@y.test", "d@y.test"]))
      expect(result.pipelined).toBe(true)
      expect(Either.map(result.mailFrom, (r) => r.code)).toEqual(Either.right(250))
      expect(result.recipients.map((r) => [r.address, r.accepted, r.reply?.code, r.reply?.lines])).toEqual([
        ["b@y.test", true, 250, ["b ok"]],
        ["c@y.test", false, 550, ["c unknown"]],
        ["d@y.test", false, 451, ["d later"]]
      ])
      expect(result.data).toEqual(Either.right({ code: 250, enhanced: "2.0.0", lines: ["queued as X"] }))
      const r = yield* record
      expect(r.writes[1]).toBe(
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nRCPT TO:<d@y.test>\r\nDATA\r\n"
      )
      expect(r.mismatches).toEqual([])
    }).pipe(peer([
      ...hello("PIPELINING"),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.expect("RCPT TO:<c@y.test>"),
      Script.expect("RCPT TO:<d@y.test>"),
      Script.expect("DATA"),
      Script.reply("250 ok", "250 b ok", "550 5.1.1 c unknown", "451 4.2.0 d later", "354 go"),
      Script.expectData,
      Script.reply("250 2.0.0 queued as X"),
      ...QUIT
    ])))

  it.effect("a rejected MAIL makes the RCPT replies moot and nothing is sent after DATA's refusal", () =>
    Effect.gen(function*() {
      const { result } = yield* deliver(envelope(["b@y.test", "c@y.test"]))
      const error = Option.getOrThrow(Either.getLeft(result.mailFrom))
      expect(summary(error)).toEqual({ phase: "mail-from", kind: "reply", permanent: true, code: 550 })
      expect(result.recipients).toEqual([
        { address: "b@y.test", accepted: false, reply: null, error },
        { address: "c@y.test", accepted: false, reply: null, error }
      ])
      expect([result.data, result.phase, result.canQuit]).toEqual([null, "data", true])
      const r = yield* record
      expect(r.writes.slice(2)).toEqual(["QUIT\r\n"])
      expect(r.mismatches).toEqual([])
    }).pipe(peer([
      ...hello("PIPELINING"),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.expect("RCPT TO:<c@y.test>"),
      Script.expect("DATA"),
      Script.reply("550 5.7.1 sender denied", "503 5.5.1 need MAIL", "503 5.5.1 need MAIL", "503 5.5.1 need RCPT"),
      ...QUIT
    ])))

  it.effect("a 354 after a rejected MAIL (or no accepted RCPT) gets an empty message: a lone dot (RFC 2920 §3.1)", () =>
    Effect.gen(function*() {
      const rejectedMail = yield* deliver(envelope(["b@y.test"]))
      expect([rejectedMail.result.data, rejectedMail.result.canQuit]).toEqual([null, true])
      const noRecipient = yield* deliver(envelope(["b@y.test"]))
      expect([noRecipient.result.data, noRecipient.result.phase, noRecipient.result.canQuit]).toEqual([
        null,
        "data",
        true
      ])
      expect(noRecipient.result.recipients[0]!.reply?.code).toBe(550)
      const all = yield* records
      for (const r of all) {
        expect(r.writes.slice(2)).toEqual([".\r\n", "QUIT\r\n"])
        expect(r.mismatches).toEqual([])
      }
    }).pipe(Effect.provide(ConnectorTest.layer({
      [IP]: [
        {
          script: [
            ...hello("PIPELINING"),
            Script.expect("MAIL FROM:<a@x.test>"),
            Script.expect("RCPT TO:<b@y.test>"),
            Script.expect("DATA"),
            Script.reply("550 no", "250 sloppy", "354 go"),
            Script.expect("."),
            Script.reply("554 no valid recipients"),
            ...QUIT
          ]
        },
        {
          script: [
            ...hello("PIPELINING"),
            Script.expect("MAIL FROM:<a@x.test>"),
            Script.expect("RCPT TO:<b@y.test>"),
            Script.expect("DATA"),
            Script.reply("250 ok", "550 no", "354 go"),
            Script.expect("."),
            Script.reply("554 no valid recipients"),
            ...QUIT
          ]
        }
      ]
    }))))

  it.effect("each pipelined reply is read under its own phase's timeout", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(deliver(envelope(["b@y.test", "c@y.test"])), T.mailFrom - 1 + T.rcptTo)
      const { result } = yield* exit
      expect(result.recipients.map((r) => [r.accepted, r.error === null ? null : asTimeout(r.error)])).toEqual([
        [true, null],
        [false, timeoutOf("rcpt-to", T.rcptTo)]
      ])
    }).pipe(peer([
      ...hello("PIPELINING"),
      Script.expect(/^MAIL/),
      Script.delay(T.mailFrom - 1),
      Script.reply("250 ok"),
      Script.reply("250 ok"),
      Script.stall
    ])))

  it.effect("CHUNKING with PIPELINING: MAIL and RCPTs pipelined, then BDAT LAST with the raw message", () =>
    Effect.gen(function*() {
      const body = new TextEncoder().encode(".leading dot\nbare LF\r\n.\r\n")
      const { result } = yield* deliver(envelope(["b@y.test"]), body)
      expect([result.pipelined, result.chunking]).toEqual([true, true])
      expect(result.data).toEqual(Either.right({ code: 250, enhanced: null, lines: ["got it"] }))
      const r = yield* record
      const normalized = ".leading dot\r\nbare LF\r\n.\r\n"
      expect(r.writes.slice(1)).toEqual([
        "MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n",
        `BDAT ${normalized.length} LAST\r\n${normalized}`,
        "QUIT\r\n"
      ])
      expect(new TextDecoder().decode(r.data[0])).toBe(normalized)
      expect(r.mismatches).toEqual([])
    }).pipe(peer([
      ...hello("PIPELINING", "CHUNKING"),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.reply("250 ok", "250 ok"),
      Script.expect("BDAT 26 LAST"),
      Script.expectBytes(26),
      Script.reply("250 got it"),
      ...QUIT
    ])))

  // A server that answers before it has the message (desynchronised, or hostile): a reply read then as the end of
  // data would report a delivery it never confirmed. The message is not sent, and the connection is not QUIT
  // (the dialogue cannot be trusted).
  // 18 bytes: "250 2.0.0 queued\r\n"
  const early = (where: string) => ({
    phase: "data",
    kind: "protocol",
    message: `data: the server sent 18 bytes after ${where}, before the message`
  })
  const asEarly = (e: TransportError | null | undefined) => e && { phase: e.phase, kind: e.kind, message: e.message }

  it.effect("bytes after the pipelined 354, in its segment: no message sent, a data protocol error", () =>
    Effect.gen(function*() {
      const { result } = yield* deliver()
      expect(asEarly(Option.getOrNull(Either.getLeft(result.data!)))).toEqual(early("its 354"))
      expect(result.canQuit).toBe(false)
      const r = yield* record
      expect([r.data, r.writes.length]).toEqual([[], 2])
    }).pipe(peer([
      ...hello("PIPELINING"),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.expect("DATA"),
      Script.reply("250 ok", "250 ok", "354 go", "250 2.0.0 queued"),
      Script.stall
    ])))

  it.effect("bytes after the 354 without PIPELINING: no message sent, a data protocol error", () =>
    Effect.gen(function*() {
      const { result } = yield* deliver()
      expect(asEarly(Option.getOrNull(Either.getLeft(result.data!)))).toEqual(early("its 354"))
      expect(result.canQuit).toBe(false)
      expect((yield* record).data).toEqual([])
    }).pipe(peer([
      ...hello(),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.reply("250 ok"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.reply("250 ok"),
      Script.expect("DATA"),
      Script.reply("354 go", "250 2.0.0 queued"),
      Script.stall
    ])))

  it.effect("CHUNKING: bytes after the last RCPT reply: no BDAT sent, a data protocol error", () =>
    Effect.gen(function*() {
      const { result } = yield* deliver()
      expect(asEarly(Option.getOrNull(Either.getLeft(result.data!)))).toEqual(early("the last RCPT reply"))
      expect(result.canQuit).toBe(false)
      const r = yield* record
      expect([r.data, r.writes.some((w) => w.startsWith("BDAT"))]).toEqual([[], false])
    }).pipe(peer([
      ...hello("PIPELINING", "CHUNKING"),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.reply("250 ok", "250 ok", "250 2.0.0 queued"),
      Script.stall
    ])))
})

// ---------------------------------------------------------------------------------------------------------------
// The message on the wire
// ---------------------------------------------------------------------------------------------------------------

const bytes = (s: string) => new TextEncoder().encode(s)
const text = (b: Uint8Array) => Buffer.from(b).toString("latin1")

describe("dot-stuffing and line endings", () => {
  it("normalises bare LF and bare CR to CRLF, and ends the message with CRLF", () => {
    expect(text(dotStuff.normalize(bytes("a\nb")))).toBe("a\r\nb\r\n")
    expect(text(dotStuff.normalize(bytes("a\rb\r\n")))).toBe("a\r\nb\r\n")
    expect(text(dotStuff.normalize(bytes("a\r\r\nb\n\n")))).toBe("a\r\n\r\nb\r\n\r\n")
    expect(text(dotStuff.normalize(bytes("\n")))).toBe("\r\n")
    expect(text(dotStuff.normalize(bytes("a\r")))).toBe("a\r\n")
    expect(text(dotStuff.normalize(bytes("")))).toBe("")
    const already = bytes("a\r\nb\r\n")
    expect(dotStuff.normalize(already)).toBe(already)
  })

  it("stuffs every leading dot, including on the first line, and terminates", () => {
    expect(text(dotStuff.toData(bytes(".\r\n")))).toBe("..\r\n.\r\n")
    expect(text(dotStuff.toData(bytes(".hidden\r\nx\r\n..two\r\n")))).toBe("..hidden\r\nx\r\n...two\r\n.\r\n")
    expect(text(dotStuff.toData(bytes("")))).toBe(".\r\n")
    expect(text(dotStuff.toData(bytes("no end")))).toBe("no end\r\n.\r\n")
  })

  it("closes the smuggling forms (CVE-2023-51764): \\n.\\r\\n, \\r\\n.\\r, \\n.\\n", () => {
    expect(text(dotStuff.toData(bytes("a\n.\r\nMAIL FROM:<x>\r\n")))).toBe("a\r\n..\r\nMAIL FROM:<x>\r\n.\r\n")
    expect(text(dotStuff.toData(bytes("a\r\n.\rRSET\r\n")))).toBe("a\r\n..\r\nRSET\r\n.\r\n")
    expect(text(dotStuff.toData(bytes("a\n.\nRSET\n")))).toBe("a\r\n..\r\nRSET\r\n.\r\n")
  })

  /** Messages made of the bytes that matter: the dot, CR, LF, and one other. */
  const dotsAndLineEnds = fc.uint8Array({ maxLength: 200 }).map((a) =>
    Uint8Array.from(a, (b) => [0x2e, 0x0d, 0x0a, 0x41][b % 4]!)
  )

  it.prop(
    "unstuff inverts stuff, and the payload has one terminator and no bare CR or LF (property)",
    [dotsAndLineEnds],
    ([message]) => {
      const normalized = dotStuff.normalize(message)
      const payload = dotStuff.stuff(normalized)
      expect(text(dotStuff.unstuff(payload))).toBe(text(normalized))
      const wire = text(payload)
      expect(wire.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/)
      // read as a receiver does, from the start of a line: the only terminator is the last line
      const lines = `\r\n${wire}`
      expect(lines.indexOf("\r\n.\r\n")).toBe(lines.length - 5)
    },
    { fastCheck: { numRuns: 500, seed: 42 } }
  )

  it("detects 8-bit content, and non-ASCII in the header section only", () => {
    expect(dotStuff.has8Bit(bytes("abc"))).toBe(false)
    expect(dotStuff.has8Bit(bytes("é"))).toBe(true)
    expect(dotStuff.headerHas8Bit(bytes("Subject: é\r\n\r\nx"))).toBe(true)
    expect(dotStuff.headerHas8Bit(bytes("Subject: e\r\n\r\né"))).toBe(false)
    expect(dotStuff.headerHas8Bit(bytes("Subject: e\n\né"))).toBe(false)
    expect(dotStuff.headerHas8Bit(bytes("\r\né"))).toBe(false)
  })

  it.effect("the DATA payload on the wire: normalised, stuffed, first line '.', smuggling sequence defused", () =>
    Effect.gen(function*() {
      const body = bytes(".\nline\n.\r\nMAIL FROM:<evil@x>\r\nbare\rcr\r\n..two")
      const { result } = yield* deliver(envelope(), body)
      expect(Either.isRight(result.data!)).toBe(true)
      const r = yield* record
      const wire = "..\r\nline\r\n..\r\nMAIL FROM:<evil@x>\r\nbare\r\ncr\r\n...two\r\n.\r\n"
      expect(text(r.data[0]!)).toBe(wire)
      expect(r.writes.slice(1, 5)).toEqual(["MAIL FROM:<a@x.test>\r\n", "RCPT TO:<b@y.test>\r\n", "DATA\r\n", wire])
      expect(text(dotStuff.unstuff(r.data[0]!))).toBe(text(dotStuff.normalize(body)))
      expect(r.mismatches).toEqual([])
    }).pipe(peer([
      ...hello(),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.reply("250 ok"),
      ...accept("b@y.test")
    ])))
})

// ---------------------------------------------------------------------------------------------------------------
// Logging
// ---------------------------------------------------------------------------------------------------------------

describe("logging", () => {
  const script = [...hello(), Script.expect("MAIL FROM:<a@x.test>"), Script.reply("250 ok"), ...accept("b@y.test")]
  /** The session's log lines, with their `smtp.remote_ip` annotation, at the given minimum level. */
  const logged = (level: LogLevel.LogLevel) =>
    Effect.gen(function*() {
      const lines: Array<{ message: unknown; remoteIp: unknown }> = []
      const capture = Logger.make(({ annotations, message }) => {
        lines.push({
          message: Array.isArray(message) ? message[0] : message,
          remoteIp: Option.getOrNull(HashMap.get(annotations, "smtp.remote_ip"))
        })
      })
      yield* deliver().pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
        Logger.withMinimumLogLevel(level)
      )
      return lines
    }).pipe(peer(script))

  it.effect("at Debug: the transcript, each line annotated with the remote address", () =>
    Effect.gen(function*() {
      const lines = yield* logged(LogLevel.Debug)
      expect(lines.map((l) => l.message)).toContain("C: EHLO client.test")
      expect(lines.map((l) => l.message)).toContain("C: MAIL FROM:<a@x.test>")
      // The connect line comes before the session opens; every line of the session itself carries the annotation.
      const session = lines.filter((l) => String(l.message).startsWith("C: "))
      expect(session.length).toBeGreaterThan(3)
      expect(session.filter((l) => l.remoteIp !== IP)).toEqual([])
    }))

  it.effect("at Debug: a QUIT that fails is logged, annotated, and ignored", () =>
    Effect.gen(function*() {
      const lines: Array<{ message: unknown; remoteIp: unknown }> = []
      const capture = Logger.make(({ annotations, message }) => {
        lines.push({
          message: Array.isArray(message) ? message[0] : message,
          remoteIp: Option.getOrNull(HashMap.get(annotations, "smtp.remote_ip"))
        })
      })
      const quitting = Effect.scoped(Effect.flatMap(openSession(), SmtpSession.quit)).pipe(
        Effect.provide(Logger.replace(Logger.defaultLogger, capture)),
        Logger.withMinimumLogLevel(LogLevel.Debug)
      )
      expect(yield* finishesAt(quitting, Duration.toMillis(SmtpSession.QUIT_TIMEOUT))).toEqual(Exit.void)
      const failed = lines.filter((l) => String(l.message).startsWith("QUIT: "))
      expect(failed).toEqual([{ message: expect.stringContaining("quit"), remoteIp: IP }])
      expect(lines.filter((l) => l.message === "C: QUIT")).toEqual([{ message: "C: QUIT", remoteIp: IP }])
    }).pipe(peer([...hello(), Script.expect("QUIT"), Script.stall])))

  it.effect("at Info (the default): nothing", () =>
    Effect.gen(function*() {
      expect(yield* logged(LogLevel.Info)).toEqual([])
    }))
})

// ---------------------------------------------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------------------------------------------

describe("spans and span events", () => {

  const attempt = (s: SmtpSession.SessionSettings) =>
    Effect.scoped(Effect.gen(function*() {
      const connection = yield* SmtpSession.connectScoped({ ip: IP, port: 25 }, s)
      const session = yield* SmtpSession.open(connection, s)
      const result = yield* SmtpSession.transaction(session, envelope(), message, s)
      if (result.canQuit) yield* SmtpSession.quit(session)
      return result
    })).pipe(SmtpSession.attemptSpan({ servername: "mx.test", ip: IP, port: 25 }))

  const script = [
    ...hello(),
    Script.expect("MAIL FROM:<a@x.test>"),
    Script.delay("5 millis"),
    Script.reply("250 ok"),
    Script.expect("RCPT TO:<b@y.test>"),
    Script.reply("250 ok"),
    Script.expect("DATA"),
    Script.reply("354 go"),
    Script.expectData,
    Script.reply("250 queued"),
    ...QUIT
  ]
  const phases = ["connect", "greeting", "ehlo", "mail-from", "rcpt-to", "data", "quit"].map((p) => `smtp.${p}`)

  it.effect("default: one span for the attempt, each phase an event on it with duration and outcome", () =>
    Effect.gen(function*() {
      const { recorded, tracer } = yield* recorder
      const fiber = yield* Effect.fork(attempt(settings()).pipe(Effect.withTracer(tracer)))
      yield* TestClock.adjust(Duration.millis(5))
      yield* Fiber.join(fiber)
      expect(recorded.spans.map((s) => s.name)).toEqual(["smtp.attempt"])
      expect(Object.fromEntries(recorded.spans[0]!.attributes)).toMatchObject({
        "server.address": "mx.test",
        "server.port": 25,
        "network.peer.address": IP,
        "network.peer.port": 25
      })
      expect(recorded.events.map((e) => [e.span.name, e.name, e.attributes["smtp.outcome"]])).toEqual(
        phases.map((p) => ["smtp.attempt", p, "ok"])
      )
      const mail = recorded.events.find((e) => e.name === "smtp.mail-from")!
      expect(mail.attributes).toMatchObject({
        "smtp.phase": "mail-from",
        "smtp.duration_ms": 5,
        "server.address": "mx.test",
        "network.peer.address": IP
      })
      expect(recorded.events.find((e) => e.name === "smtp.ehlo")!.attributes["smtp.ehlo_name"]).toBe("client.test")
    }).pipe(peer(script)))

  it.effect("phaseSpans: a span per phase as well, a leaf under the attempt's span, ended with its exit", () =>
    Effect.gen(function*() {
      const { recorded, tracer } = yield* recorder
      const fiber = yield* Effect.fork(attempt(settings({ phaseSpans: true })).pipe(Effect.withTracer(tracer)))
      yield* TestClock.adjust(Duration.millis(5))
      yield* Fiber.join(fiber)
      const [attemptSpan, ...phaseSpans] = recorded.spans
      expect(attemptSpan!.name).toBe("smtp.attempt")
      expect(phaseSpans.map((s) => s.name)).toEqual(phases)
      for (const span of phaseSpans) {
        expect(Option.getOrNull(span.parent)).toBe(attemptSpan)
        expect(span.status._tag).toBe("Ended")
      }
      expect(Object.fromEntries(phaseSpans[1]!.attributes)).toMatchObject({
        "smtp.phase": "greeting",
        "smtp.timeout_ms": T.greeting,
        "server.address": "mx.test",
        "network.peer.address": IP
      })
      // the events are still there, on the attempt's span
      expect(recorded.events.map((e) => [e.span.name, e.name])).toEqual(phases.map((p) => ["smtp.attempt", p]))
    }).pipe(peer(script)))

  it.effect("a failed phase's event carries the error's kind", () =>
    Effect.gen(function*() {
      const { recorded, tracer } = yield* recorder
      const fiber = yield* Effect.fork(Effect.exit(attempt(settings()).pipe(Effect.withTracer(tracer))))
      yield* TestClock.adjust(Duration.millis(T.greeting))
      expect(Exit.isFailure(yield* Fiber.join(fiber))).toBe(true)
      expect(recorded.events.map((e) => [e.name, e.attributes["smtp.outcome"], e.attributes["smtp.duration_ms"]]))
        .toEqual([["smtp.connect", "ok", 0], ["smtp.greeting", "timeout", T.greeting]])
    }).pipe(peer([Script.stall])))

  it.effect("QUIT's failures, ignored, are its event's outcome: a QUIT unanswered, a server that never closes after 221", () =>
    Effect.gen(function*() {
      const { recorded, tracer } = yield* recorder
      const quitting = Effect.scoped(Effect.flatMap(openSession(), SmtpSession.quit)).pipe(
        SmtpSession.attemptSpan({ servername: "mx.test", ip: IP, port: 25 }),
        Effect.withTracer(tracer)
      )
      expect(yield* finishesAt(quitting, Duration.toMillis(SmtpSession.QUIT_TIMEOUT))).toEqual(Exit.void)
      expect(yield* finishesAt(quitting, Duration.toMillis(SmtpSession.QUIT_CLOSE_WAIT))).toEqual(Exit.void)
      const quits = recorded.events.filter((e) => e.name === "smtp.quit")
      expect(quits.map((e) => [e.attributes["smtp.outcome"], e.attributes["smtp.duration_ms"]])).toEqual([
        ["timeout", Duration.toMillis(SmtpSession.QUIT_TIMEOUT)],
        ["timeout", Duration.toMillis(SmtpSession.QUIT_CLOSE_WAIT)]
      ])
    }).pipe(Effect.provide(ConnectorTest.layer({
      [IP]: [
        { script: [...hello(), Script.expect("QUIT"), Script.stall] },
        { script: [...hello(), Script.expect("QUIT"), Script.reply("221 bye"), Script.stall] }
      ]
    }))))

  it.effect("no current span: no event, nothing recorded", () =>
    Effect.gen(function*() {
      const { recorded, tracer } = yield* recorder
      yield* Effect.scoped(Effect.flatMap(openSession(), SmtpSession.quit)).pipe(Effect.withTracer(tracer))
      expect([recorded.spans, recorded.events]).toEqual([[], []])
    }).pipe(peer([...hello(), ...QUIT])))
})

// ---------------------------------------------------------------------------------------------------------------
// A connector wrapped by a third party
// ---------------------------------------------------------------------------------------------------------------

describe("a wrapped Connector", () => {
  /**
   * The connector in context wrapped by a third party's: `exchange` reported to `onExchange`, everything else
   * delegated, and only the required members (`exchangeEither`, `exchangeEitherNow`, `exchangeThenNow` absent).
   */
  const wrapping = (onExchange: (request: Connector.Exchange) => void) =>
    Effect.map(Connector.Connector, (inner): Connector.Connector.Service => ({
      connect: (options) =>
        Effect.map(inner.connect(options), (c): Connector.Connection => ({
          remoteAddress: c.remoteAddress,
          remotePort: c.remotePort,
          localAddress: c.localAddress,
          exchange: (request) => Effect.suspend(() => (onExchange(request), c.exchange(request))),
          startTls: (options, deadline) => c.startTls(options, deadline),
          awaitClose: (options) => c.awaitClose(options),
          get isTls() {
            return c.isTls
          },
          get tls() {
            return c.tls
          },
          get buffered() {
            return c.buffered
          },
          close: c.close
        }))
    }))

  it.effect("keeps the same timing: the deadlines travel in the interface", () =>
    Effect.gen(function*() {
      let exchanges = 0
      const wrapped = yield* wrapping(() => void exchanges++)
      const exit = yield* finishesAt(
        Effect.scoped(openSession()).pipe(Effect.provideService(Connector.Connector, wrapped)),
        T.greeting
      )
      expect(asTimeout(failure(exit))).toEqual(timeoutOf("greeting", T.greeting))
      expect(exchanges).toBe(1)
      expect((yield* record).closed).toBe(true)
    }).pipe(peer([Script.stall])))

  it.effect("without the optional members: a pipelined transaction goes through `exchange`, with the same result", () =>
    Effect.gen(function*() {
      const seen: Array<number> = []
      const wrapped = yield* wrapping((request) => void seen.push(request.replies))
      const { result } = yield* deliver(envelope(["b@y.test", "c@y.test"])).pipe(
        Effect.provideService(Connector.Connector, wrapped)
      )
      expect(Either.map(result.mailFrom, (r) => r.code)).toEqual(Either.right(250))
      expect(result.recipients.map((r) => [r.address, r.accepted, r.reply?.code])).toEqual([
        ["b@y.test", true, 250],
        ["c@y.test", false, 550]
      ])
      expect(result.data).toEqual(Either.right({ code: 250, enhanced: "2.0.0", lines: ["queued as X"] }))
      // greeting, EHLO, MAIL (its write carries the RCPTs and DATA), each RCPT, DATA's 354, the message, QUIT
      expect(seen).toEqual([1, 1, 1, 1, 1, 1, 1, 1])
      expect((yield* record).mismatches).toEqual([])
    }).pipe(peer([
      ...hello("PIPELINING"),
      Script.expect("MAIL FROM:<a@x.test>"),
      Script.expect("RCPT TO:<b@y.test>"),
      Script.expect("RCPT TO:<c@y.test>"),
      Script.expect("DATA"),
      Script.reply("250 ok", "250 b ok", "550 5.1.1 c unknown", "354 go"),
      Script.expectData,
      Script.reply("250 2.0.0 queued as X"),
      ...QUIT
    ])))
})

// ---------------------------------------------------------------------------------------------------------------
// The connection's timer: one fiber for a session that ends before its first wake
// ---------------------------------------------------------------------------------------------------------------

class ForkCounter extends Supervisor.AbstractSupervisor<number> {
  started = 0
  get value() {
    return Effect.sync(() => this.started)
  }
  override onStart() {
    this.started++
  }
}

/** Fibers started while `effect` runs (the scripted peer's included). */
const forks = <A extends object, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.suspend(() => {
    const counter = new ForkCounter()
    return Effect.map(Effect.supervised(effect, counter), (a) => ({ ...a, forks: counter.started }))
  })

describe("the connection's timer", () => {
  const transaction = [
    Script.expect(/^MAIL FROM:/),
    Script.reply("250 ok"),
    Script.expect(/^RCPT TO:/),
    Script.reply("250 ok"),
    Script.expect("DATA"),
    Script.reply("354 go"),
    Script.expectData,
    Script.reply("250 queued")
  ]

  it.effect("a session that ends within the timer's first wake: the transaction and QUIT fork nothing", () =>
    Effect.gen(function*() {
      // The first session starts what the TestClock forks once, when a fiber first sleeps on it.
      yield* deliver()
      const opened = yield* forks(Effect.scoped(openSession()))
      const whole = yield* forks(deliver())
      expect(whole.result.data).toEqual(Either.right(expect.objectContaining({ code: 250 })))
      expect(whole.forks).toBe(opened.forks)
    }).pipe(Effect.provide(ConnectorTest.layer({
      [IP]: [
        { script: [...hello(), ...transaction, ...QUIT] },
        { script: hello() },
        { script: [...hello(), ...transaction, ...QUIT] }
      ]
    }))))

  it.effect("after a slow session, QUIT still fails at exactly its 2 s", () =>
    Effect.gen(function*() {
      const slow = Effect.scoped(Effect.flatMap(openSession(), (s) => SmtpSession.quit(s)))
      expect(yield* finishesAt(slow, 1_000 + Duration.toMillis(SmtpSession.QUIT_TIMEOUT))).toEqual(Exit.void)
    }).pipe(peer([Script.delay("1 second"), ...hello(), Script.expect("QUIT"), Script.stall])))

  it.effect("after a slow session, the wait for the close after the 221 still ends at exactly QUIT_CLOSE_WAIT", () =>
    Effect.gen(function*() {
      const slow = Effect.scoped(Effect.flatMap(openSession(), (s) => SmtpSession.quit(s)))
      expect(yield* finishesAt(slow, 1_000 + Duration.toMillis(SmtpSession.QUIT_CLOSE_WAIT))).toEqual(Exit.void)
    }).pipe(peer([Script.delay("1 second"), ...hello(), ...QUIT, Script.stall])))
})

// ---------------------------------------------------------------------------------------------------------------
// Relays: AUTH and LMTP
// ---------------------------------------------------------------------------------------------------------------

describe("AUTH and LMTP on virtual time", () => {
  const credentials = { username: "u", secret: Redacted.make("pw"), allowPlaintext: true }
  const withAuth = (over: Partial<SmtpSession.SessionSettings> = {}): SmtpSession.SessionSettings => ({
    ...settings({ starttls: "disable" }),
    auth: credentials,
    ...over
  })

  it.effect("a server silent after AUTH: a temporary timeout of phase auth, under the EHLO timeout", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(Effect.scoped(openSession(withAuth())), T.ehlo)
      expect(Exit.isFailure(exit) ? summary(Option.getOrNull(Cause.failureOption(exit.cause))) : null).toEqual({
        phase: "auth",
        kind: "timeout",
        permanent: false,
        code: null
      })
    }).pipe(peer([...hello("AUTH PLAIN"), Script.expect(/^AUTH PLAIN /), Script.stall])))

  it.effect("no mechanism for the credentials: temporary, kind auth, nothing sent", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(openSession(withAuth())))
      expect([summary(error), error.message]).toEqual([
        { phase: "auth", kind: "auth", permanent: false, code: null },
        "auth: the server offers AUTH CRAM-MD5; needed PLAIN or LOGIN (for a password)"
      ])
    }).pipe(peer([...hello("AUTH CRAM-MD5"), ...QUIT])))

  it.effect("LOGIN: user name and password each after their 334; the mechanism recorded", () =>
    Effect.gen(function*() {
      const session = yield* Effect.scoped(openSession(withAuth()))
      expect(session.auth).toBe("LOGIN")
    }).pipe(peer([
      ...hello("AUTH LOGIN"),
      Script.expect("AUTH LOGIN"),
      Script.reply("334 VXNlcm5hbWU6"),
      Script.expect(Buffer.from("u").toString("base64")),
      Script.reply("334 UGFzc3dvcmQ6"),
      Script.expect(Buffer.from("pw").toString("base64")),
      Script.reply("235 2.7.0 ok")
    ])))

  it.effect("LMTP: LHLO, and no HELO after a refusal", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(openSession({ ...settings({ starttls: "disable" }), protocol: "lmtp" })))
      expect(summary(error)).toEqual({ phase: "ehlo", kind: "reply", permanent: true, code: 500 })
    }).pipe(peer([GREET, Script.expect("LHLO client.test"), Script.reply("500 what"), Script.expect("QUIT")])))

  it.effect("LMTP: a reply per accepted recipient; a silent server after the first keeps the first's outcome", () =>
    Effect.gen(function*() {
      const s = { ...settings({ starttls: "disable" }), protocol: "lmtp" as const }
      const exit = yield* finishesAt(
        Effect.scoped(Effect.flatMap(openSession(s), (session) =>
          SmtpSession.transaction(session, envelope(["a@y.test", "b@y.test"]), message, s))),
        T.data
      )
      const result = Exit.isSuccess(exit) ? exit.value : yield* Effect.die(exit)
      const outcome = (r: SmtpSession.RecipientOutcome) =>
        r.data === undefined ? null : Either.isRight(r.data) ? r.data.right.code : r.data.left.kind
      expect(result.recipients.map((r) => [r.address, r.accepted, outcome(r)])).toEqual([
        ["a@y.test", true, 250],
        ["b@y.test", true, "timeout"]
      ])
      expect(result.canQuit).toBe(false)
    }).pipe(peer([
      GREET,
      Script.expect("LHLO client.test"),
      ehloReply("8BITMIME"),
      Script.expect(/^MAIL FROM/),
      Script.reply("250 ok"),
      Script.expect(/^RCPT TO:<a@y.test>/),
      Script.reply("250 ok"),
      Script.expect(/^RCPT TO:<b@y.test>/),
      Script.reply("250 ok"),
      Script.expect("DATA"),
      Script.reply("354 go"),
      Script.expectData,
      Script.reply("250 2.0.0 a delivered"),
      Script.stall
    ])))
})

describe("implicit TLS on virtual time", () => {
  const implicit = (over: Over = {}): SmtpSession.SessionSettings => {
    const s = settings({ starttls: "optional", ...over })
    return { ...s, tls: { ...s.tls, implicit: true } }
  }

  it.effect("the handshake first, then the greeting and EHLO over TLS; no STARTTLS although offered", () =>
    Effect.gen(function*() {
      const session = yield* Effect.scoped(openSession(implicit()))
      expect([session.tls?.verified, session.capabilities.startTls, session.greeting.code]).toEqual([true, true, 220])
    }).pipe(peer([Script.handshake, ...hello("STARTTLS", "8BITMIME")])))

  it.effect("a certificate that does not verify fails the handshake (temporary, phase tls) unless allowInvalidCerts", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(openSession(implicit()))).pipe(
        peer([Script.handshakeUnverified("self-signed")])
      )
      expect(summary(error)).toEqual({ phase: "tls", kind: "tls", permanent: false, code: null })
      const session = yield* Effect.scoped(openSession(implicit({ allowInvalidCerts: true }))).pipe(
        peer([Script.handshakeUnverified("self-signed"), ...hello()])
      )
      expect([session.tls?.verified, session.tls?.reason]).toEqual([false, "self-signed"])
    }))

  it.effect("a server that never completes the handshake: a timeout of phase tls, at the TLS timeout", () =>
    Effect.gen(function*() {
      const exit = yield* finishesAt(Effect.scoped(openSession(implicit())), T.tls)
      expect(Exit.isFailure(exit) ? summary(Option.getOrNull(Cause.failureOption(exit.cause))) : null).toEqual({
        phase: "tls",
        kind: "timeout",
        permanent: false,
        code: null
      })
    }).pipe(peer([Script.stall])))
})
