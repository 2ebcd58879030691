/**
 * Hostile peers, resolvers and callers on virtual time: the whole `Transport.deliver` pipeline over the scripted
 * `Connector.layerTest` and the in-memory `Dns.layerTest`, driven by TestClock. Every case asserts the recipient's
 * status, the error's phase, kind and permanence, and the exact virtual time the delivery took; and that the
 * connection was closed, and no recipient reported delivered without the server's word on the whole body.
 *
 * Byte-level behaviour on real sockets is in Hostile.live.test.ts; leaks and interruption in Leaks.live.test.ts.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Exit, Fiber, Layer, Option, TestClock } from "effect"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script, type Step, type TestConnectionRecord } from "../src/ConnectorTest.js"
import type { DeliveryReport, RecipientStatus } from "../src/DeliveryReport.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import type { Kind, Phase } from "../src/TransportError.js"
import * as Transport from "../src/Transport.js"
import { watchProcess } from "./fixtures/hostilePeer.js"
import { multi } from "./utils/smtp.js"

const watch = watchProcess()
afterAll(() => {
  expect(watch.stop()).toEqual([])
})

// ---------------------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------------------

// Distinct timeouts, so that a phase running under another phase's bound would show in the elapsed time.
const T = { connect: 1_000, greeting: 2_000, ehlo: 3_000, tls: 4_000, mailFrom: 5_000, rcptTo: 6_000, data: 7_000 }

const CONFIG = `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv4_only"
[queue.outbound.timeouts]
connect = "1s"
greeting = "2s"
ehlo = "3s"
tls = "4s"
mail-from = "5s"
rcpt-to = "6s"
data = "7s"
[queue.outbound.tls]
mta-sts = "disable"
`

const MX_IP = "192.0.2.1"
const ZONES: Dns.Zones = {
  "hostile.test": { mx: [{ exchange: "mx.hostile.test", priority: 10 }] },
  "mx.hostile.test": { a: [MX_IP] }
}

interface Setup {
  readonly zones?: Dns.Zones
  readonly config?: string
  /** MTA-STS policy bodies by domain (in-memory fetcher); absent: 404. */
  readonly policies?: Record<string, string>
  readonly dns?: Dns.TestOptions
  /** Replaces the in-memory policy fetcher's answers. */
  readonly fetch?: Parameters<typeof MtaSts.layerTest>[0]
}

const layers = (peers: ConnectorTest.TestPeers, setup: Setup = {}) =>
  Layer.mergeAll(
    Layer.orDie(OutboundConfig.layerFromText(setup.config ?? CONFIG)),
    Dns.layerTest(setup.zones ?? ZONES, setup.dns ?? {}),
    ConnectorTest.layer(peers),
    PolicyCache.layer,
    MtaSts.layerTest(setup.fetch ?? ((request) =>
      Effect.succeed(
        setup.policies?.[request.domain] === undefined
          ? { status: 404, body: "" }
          : { body: setup.policies[request.domain]! }
      )
    ))
  )

const one = (script: ReadonlyArray<Step>): ConnectorTest.TestPeers => ({ [MX_IP]: { script } })

const MESSAGE = "From: sender@origin.test\r\nSubject: hostile\r\n\r\nbody line\r\n"

const request = (over: Partial<Transport.DeliveryRequest> = {}): Transport.DeliveryRequest => ({
  message: MESSAGE,
  sender: "sender@origin.test",
  recipients: ["rcpt@hostile.test"],
  ...over
})

/**
 * Runs a delivery on virtual time: the clock is moved 30 minutes, far past every timeout; a delivery still running
 * then is a failure of the suite (nothing may hang), not a hang of the test.
 */
const run = (req: Transport.DeliveryRequest = request()) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Effect.timed(Transport.deliver(req)))
    yield* TestClock.adjust(Duration.minutes(30))
    const exit = yield* Fiber.poll(fiber)
    if (Option.isNone(exit)) return yield* Effect.dieMessage("deliver still running after 30 virtual minutes")
    const [elapsed, report] = yield* exit.value
    return { report, ms: Duration.toMillis(elapsed) }
  })

interface Expected {
  readonly status: RecipientStatus
  readonly phase: Phase
  readonly kind: Kind
  readonly permanent: boolean
  readonly ms: number
  readonly code?: number | null
}

/** The one recipient's result, the error's phase/kind/permanence, the reply code and the virtual time taken. */
const outcome = ({ ms, report }: { report: DeliveryReport; ms: number }): Required<Expected> => {
  const [r] = report.recipients
  return {
    status: r!.status,
    phase: r!.error?.phase ?? ("none" as Phase),
    kind: r!.error?.kind ?? ("none" as Kind),
    permanent: r!.error?.permanent ?? false,
    ms,
    code: r!.reply?.code ?? null
  }
}

const expectOutcome = (result: { report: DeliveryReport; ms: number }, expected: Expected) =>
  expect(outcome(result)).toEqual({ code: null, ...expected })

const connections = Effect.flatMap(ConnectorTest.ConnectorTest, (t) => t.connections)

/** Every connection the delivery opened is closed once `deliver` returns. */
const allClosed = Effect.map(connections, (all) => {
  expect(all.length).toBeGreaterThan(0)
  expect(all.map((c) => c.closed)).toEqual(all.map(() => true))
  return all
})

const onlyConnection = Effect.map(allClosed, (all) => {
  expect(all).toHaveLength(1)
  return all[0]!
})

const GREET = Script.reply("220 mx.hostile.test ESMTP")
const EHLO = Script.expect("EHLO client.test")
const caps = (...keywords: ReadonlyArray<string>) => Script.reply(...multi(250, ["mx.hostile.test", ...keywords]))
const OK = Script.reply("250 2.0.0 ok")
const MAIL = Script.expect(/^MAIL FROM:<sender@origin\.test>/)
const RCPT = Script.expect(/^RCPT TO:<rcpt@hostile\.test>/)
const DATA = Script.expect("DATA")
const GO = Script.reply("354 go ahead")
const QUIT = [Script.expect("QUIT"), Script.reply("221 bye")]
const hello = (...keywords: ReadonlyArray<string>) => [GREET, EHLO, caps(...keywords)]
/** Up to and including the client's DATA line (no PIPELINING). */
const toData = [...hello(), MAIL, OK, RCPT, OK, DATA]

/** The byte-by-byte trickle of `text`, `every` apart: each byte in time, the whole far too late. */
const trickle = (text: string, every: Duration.DurationInput): ReadonlyArray<Step> =>
  [...text].flatMap((ch) => [Script.raw(ch), Script.delay(every)])

const wrote = (c: TestConnectionRecord, pattern: RegExp) => pattern.test(c.written)

// ---------------------------------------------------------------------------------------------------------------
// Silence
// ---------------------------------------------------------------------------------------------------------------

describe("silence: each phase ends at exactly its own timeout, no QUIT, the socket closed", () => {
  const cases: ReadonlyArray<readonly [string, Phase, ReadonlyArray<Step>, number]> = [
    ["greeting", "greeting", [Script.stall], T.greeting],
    ["ehlo", "ehlo", [GREET, EHLO, Script.stall], T.ehlo],
    ["tls (no reply to STARTTLS)", "tls", [...hello("STARTTLS"), Script.expect("STARTTLS"), Script.stall], T.tls],
    [
      "tls (220, then a handshake that never completes)",
      "tls",
      [...hello("STARTTLS"), Script.expect("STARTTLS"), Script.reply("220 go"), Script.stall],
      T.tls
    ],
    ["mail-from", "mail-from", [...hello(), MAIL, Script.stall], T.mailFrom],
    ["rcpt-to", "rcpt-to", [...hello(), MAIL, OK, RCPT, Script.stall], T.rcptTo],
    ["data (no 354)", "data", [...toData, Script.stall], T.data],
    ["after the final dot", "data", [...toData, GO, Script.expectData, Script.stall], T.data]
  ]
  for (const [name, phase, script, ms] of cases) {
    it.effect(name, () =>
      Effect.gen(function*() {
        const result = yield* run()
        expectOutcome(result, { status: "deferred", phase, kind: "timeout", permanent: false, ms })
        expect(result.report.attempts.map((a) => [a.phase, a.outcome, a.error?.kind, a.durationMs])).toEqual([
          [phase, "failed", "timeout", ms]
        ])
        const c = yield* onlyConnection
        expect(wrote(c, /QUIT/)).toBe(false)
        // a TLS phase that timed out is never followed by plaintext
        expect(wrote(c, /MAIL FROM/)).toBe(phase !== "greeting" && phase !== "ehlo" && phase !== "tls")
      }).pipe(Effect.provide(layers(one(script)))))
  }

  it.effect("a connect that never completes: connect timeout", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "connect", kind: "timeout", permanent: false, ms: T.connect })
      yield* onlyConnection
    }).pipe(Effect.provide(layers({ [MX_IP]: { connect: "stall" } }))))
})

// ---------------------------------------------------------------------------------------------------------------
// Trickles: a phase's bound is on the whole phase, not on each read
// ---------------------------------------------------------------------------------------------------------------

describe("trickle: bytes in time do not extend a phase", () => {
  it.effect("a greeting at one byte a second ends at the greeting timeout", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "greeting", kind: "timeout", permanent: false, ms: T.greeting })
      yield* onlyConnection
    }).pipe(Effect.provide(layers(one(trickle("220 mx.hostile.test ESMTP\r\n", "1 second"))))))

  it.effect("an EHLO reply of complete lines, one a second: the ehlo timeout, not a reset per line", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "ehlo", kind: "timeout", permanent: false, ms: T.ehlo })
      yield* onlyConnection
    }).pipe(
      Effect.provide(layers(one([
        GREET,
        EHLO,
        ...Array.from({ length: 30 }, (_, i) => [Script.reply(`250-line ${i}`), Script.delay("1 second")]).flat()
      ])))
    ))

  // 20 lines a second: 60 lines before the 3 s timeout, far under the 512-line limit (every line is a TestClock step).
  it.effect("a never-ending multi-line reply at 20 lines a second: the ehlo timeout, under the line limit", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "ehlo", kind: "timeout", permanent: false, ms: T.ehlo })
    }).pipe(
      Effect.provide(layers(one([
        GREET,
        EHLO,
        ...Array.from({ length: 80 }, () => [Script.reply("250-more"), Script.delay("50 millis")]).flat()
      ])))
    ))

  it.effect("the end-of-data reply at one byte a second: the data timeout, never delivered", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "data", kind: "timeout", permanent: false, ms: T.data })
      const c = yield* onlyConnection
      expect(c.data).toHaveLength(1)
    }).pipe(Effect.provide(layers(one([...toData, GO, Script.expectData, ...trickle("250 2.0.0 queued\r\n", "1 second")])))))

  it.effect("354 and the body in time, the reply late: one bound from DATA to the reply", () =>
    Effect.gen(function*() {
      const result = yield* run()
      // 354 after 3 s, the reply 4.5 s later: each wait under 7 s, together over it.
      expectOutcome(result, { status: "deferred", phase: "data", kind: "timeout", permanent: false, ms: T.data })
    }).pipe(
      Effect.provide(layers(one([
        ...toData,
        Script.delay("3 seconds"),
        GO,
        Script.expectData,
        Script.delay("4500 millis"),
        Script.reply("250 2.0.0 queued")
      ])))
    ))
})

// ---------------------------------------------------------------------------------------------------------------
// Oversized, malformed and binary replies
// ---------------------------------------------------------------------------------------------------------------

describe("oversized, garbage and binary replies: a protocol error at once", () => {
  const MiB = 1024 * 1024
  const cases: ReadonlyArray<readonly [string, Phase, ReadonlyArray<Step>]> = [
    ["a 1 MiB greeting line", "greeting", [Script.raw(`220 ${"x".repeat(MiB)}\r\n`)]],
    ["a 1 MiB line without any line ending", "greeting", [Script.raw("x".repeat(MiB)), Script.stall]],
    ["a 1 MiB reply to MAIL FROM", "mail-from", [...hello(), MAIL, Script.raw(`250 ${"x".repeat(MiB)}\r\n`)]],
    ["a multi-line reply of 600 lines (limit 512)", "ehlo", [
      GREET,
      EHLO,
      Script.raw("250-x\r\n".repeat(600)),
      Script.stall
    ]],
    ["a multi-line reply of 80 KiB in 20 lines (limit 64 KiB)", "ehlo", [
      GREET,
      EHLO,
      Script.raw(`250-${"y".repeat(4_000)}\r\n`.repeat(20)),
      Script.stall
    ]],
    ["an HTTP server", "greeting", [Script.raw("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")]],
    ["an SSH server", "greeting", [Script.raw("SSH-2.0-OpenSSH_9.6\r\n"), Script.stall]],
    ["binary bytes and NUL", "greeting", [Script.raw(new Uint8Array([0x00, 0xff, 0xfe, 0x00, 0x1b, 0x0d, 0x0a]))]],
    ["NUL inside a greeting's text", "greeting", [Script.raw("220 mx.hostile.test\u0000ESMTP\r\n")]],
    ["a bare CR inside a reply's text", "ehlo", [GREET, EHLO, Script.raw("250 mx\rRSET\r\n")]],
    ["a reply code that changes within one reply", "ehlo", [GREET, EHLO, Script.reply("250-mx", "550 no")]],
    ["a 1xx code", "greeting", [Script.reply("199 hello")]]
  ]
  for (const [name, phase, script] of cases) {
    it.effect(name, () =>
      Effect.gen(function*() {
        const result = yield* run()
        expectOutcome(result, { status: "deferred", phase, kind: "protocol", permanent: false, ms: 0 })
        const c = yield* onlyConnection
        expect(wrote(c, /QUIT/)).toBe(false)
      }).pipe(Effect.provide(layers(one(script)))))
  }
})

// ---------------------------------------------------------------------------------------------------------------
// Resets: never delivered
// ---------------------------------------------------------------------------------------------------------------

describe("resets and closes: a temporary reset of the phase, never delivered", () => {
  const cases: ReadonlyArray<readonly [string, Phase, ReadonlyArray<Step>]> = [
    ["mid-greeting", "greeting", [Script.raw("220 mx.hos"), Script.reset]],
    ["close right after EHLO", "ehlo", [GREET, EHLO, Script.close]],
    ["mid-RCPT", "rcpt-to", [...hello(), MAIL, OK, RCPT, Script.reset]],
    ["mid-DATA, after the 354, before the body", "data", [...toData, GO, Script.reset]],
    ["after the final dot, before the reply", "data", [...toData, GO, Script.expectData, Script.reset]],
    ["close after the final dot, before the reply", "data", [...toData, GO, Script.expectData, Script.close]],
    ["close half-way through the end-of-data reply", "data", [...toData, GO, Script.expectData, Script.raw("250 2.0"), Script.close]]
  ]
  for (const [name, phase, script] of cases) {
    it.effect(name, () =>
      Effect.gen(function*() {
        const result = yield* run()
        expectOutcome(result, { status: "deferred", phase, kind: "reset", permanent: false, ms: 0 })
        const c = yield* onlyConnection
        expect(wrote(c, /QUIT/)).toBe(false)
      }).pipe(Effect.provide(layers(one(script)))))
  }
})

// ---------------------------------------------------------------------------------------------------------------
// Replies out of turn
// ---------------------------------------------------------------------------------------------------------------

describe("replies out of turn: no delivery without the server's word on the whole body", () => {
  it.effect("250 instead of 354: the body is never sent, deferred", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "data", kind: "reply", permanent: false, ms: 0, code: 250 })
      const c = yield* onlyConnection
      expect(wrote(c, /body line/)).toBe(false)
    }).pipe(Effect.provide(layers(one([...toData, Script.reply("250 2.0.0 queued"), ...QUIT])))))

  it.effect("354 and 250 in one segment, before the body was sent: protocol error, the body never sent", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "data", kind: "protocol", permanent: false, ms: 0 })
      const c = yield* onlyConnection
      expect([wrote(c, /body line/), wrote(c, /QUIT/)]).toEqual([false, false])
    }).pipe(Effect.provide(layers(one([...toData, Script.reply("354 go", "250 2.0.0 queued"), Script.expectData])))))

  it.effect("pipelining: every reply answered in advance, 250 for the body included: protocol error", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "data", kind: "protocol", permanent: false, ms: 0 })
      const c = yield* onlyConnection
      expect(c.writes[1]).toBe("MAIL FROM:<sender@origin.test>\r\nRCPT TO:<rcpt@hostile.test>\r\nDATA\r\n")
      expect(wrote(c, /body line/)).toBe(false)
    }).pipe(
      Effect.provide(layers(one([
        ...hello("PIPELINING"),
        MAIL,
        RCPT,
        DATA,
        Script.reply("250 ok", "250 ok", "354 go", "250 2.0.0 queued"),
        Script.expectData
      ])))
    ))

  it.effect("CHUNKING: a 250 for the message sent with the RCPT reply: BDAT is never sent, protocol error", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "data", kind: "protocol", permanent: false, ms: 0 })
      const c = yield* onlyConnection
      expect([wrote(c, /BDAT/), wrote(c, /body line/)]).toEqual([false, false])
    }).pipe(
      Effect.provide(layers(one([
        ...hello("CHUNKING"),
        MAIL,
        OK,
        RCPT,
        Script.reply("250 ok", "250 2.0.0 queued"),
        Script.expectBytes(1)
      ])))
    ))

  it.effect("pipelining: one extra reply shifts DATA's reply to a 250: deferred, the body never sent", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "data", kind: "reply", permanent: false, ms: 0, code: 250 })
      const c = yield* onlyConnection
      expect(wrote(c, /body line/)).toBe(false)
    }).pipe(
      Effect.provide(layers(one([
        ...hello("PIPELINING"),
        MAIL,
        RCPT,
        DATA,
        Script.reply("250 ok", "250 ok", "250 extra", "354 go"),
        ...QUIT
      ])))
    ))

  it.effect("an unsolicited reply after the greeting shifts every reply by one: deferred at DATA", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "data", kind: "reply", permanent: false, ms: 0, code: 250 })
      const c = yield* onlyConnection
      expect(wrote(c, /body line/)).toBe(false)
    }).pipe(
      Effect.provide(layers(one([
        Script.reply("220 mx.hostile.test", "250 unsolicited"),
        EHLO,
        caps(),
        MAIL,
        OK,
        RCPT,
        OK,
        DATA,
        GO,
        ...QUIT
      ])))
    ))
})

// ---------------------------------------------------------------------------------------------------------------
// STARTTLS
// ---------------------------------------------------------------------------------------------------------------

describe("STARTTLS attacks: no TLS on a tainted buffer, no plaintext after a failed upgrade", () => {
  it.effect("220 followed by plaintext bytes in the same segment: refused, nothing more is sent", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "tls", kind: "protocol", permanent: false, ms: 0 })
      const c = yield* onlyConnection
      expect(c.writes).toEqual(["EHLO client.test\r\n", "STARTTLS\r\n"])
    }).pipe(
      Effect.provide(layers(one([
        ...hello("STARTTLS"),
        Script.expect("STARTTLS"),
        Script.reply("220 go ahead", "250-mx.hostile.test", "250 AUTH PLAIN"),
        Script.handshake
      ])))
    ))

  it.effect("a failed handshake under tls.starttls = optional: plaintext on a new connection to the same address (RFC 7435)", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "delivered", phase: "none" as Phase, kind: "none" as Kind, permanent: false, ms: 0, code: 250 })
      expect(result.report.recipients[0]!.host).toBe("mx.hostile.test")
      expect(result.report.attempts.map((a) => [a.ip, a.phase, a.outcome, a.error?.kind ?? null, a.tls])).toEqual([
        [MX_IP, "tls", "failed", "tls", null],
        [MX_IP, "quit", "completed", null, null]
      ])
      const [failed, plain] = yield* allClosed
      expect(failed!.writes).toEqual(["EHLO client.test\r\n", "STARTTLS\r\n"])
      expect(wrote(plain!, /STARTTLS/)).toBe(false)
      expect(wrote(plain!, /MAIL FROM/)).toBe(true)
    }).pipe(
      Effect.provide(layers({
        [MX_IP]: [
          { script: [...hello("STARTTLS"), Script.expect("STARTTLS"), Script.reply("220 go"), Script.handshakeFails] },
          { script: [...hello("STARTTLS"), MAIL, OK, RCPT, OK, DATA, GO, Script.expectData, OK, ...QUIT] }
        ]
      }))
    ))

  it.effect("a failed handshake where TLS is required: deferred, never plaintext", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "tls", kind: "tls", permanent: false, ms: 0 })
      const c = yield* onlyConnection
      expect(c.writes).toEqual(["EHLO client.test\r\n", "STARTTLS\r\n"])
    }).pipe(
      Effect.provide(layers(
        one([...hello("STARTTLS"), Script.expect("STARTTLS"), Script.reply("220 go"), Script.handshakeFails]),
        { config: CONFIG.replace("[queue.outbound.tls]\n", "[queue.outbound.tls]\nstarttls = \"require\"\n") }
      ))
    ))
})

// ---------------------------------------------------------------------------------------------------------------
// DNS
// ---------------------------------------------------------------------------------------------------------------

describe("hostile DNS: a typed dns error, bounded work, nothing contacted", () => {
  const queries = Effect.flatMap(Dns.TestDns, (t) => t.queries)

  it.effect("an MX query never answered: Temporary at exactly the resolver's timeout", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "dns", kind: "dns", permanent: false, ms: 5_000 })
      expect(yield* connections).toEqual([])
    }).pipe(Effect.provide(layers({}, {
      zones: { "hostile.test": { mx: [{ exchange: "mx.hostile.test", priority: 10 }], delay: Duration.infinity } },
      dns: { timeout: "5 seconds" }
    }))))

  it.effect("an address query never answered: Temporary at exactly the resolver's timeout", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "dns", kind: "dns", permanent: false, ms: 5_000 })
      expect(yield* connections).toEqual([])
    }).pipe(Effect.provide(layers({}, {
      zones: { ...ZONES, "mx.hostile.test": { a: [MX_IP], delay: Duration.infinity } },
      dns: { timeout: "5 seconds" }
    }))))

  it.effect("SERVFAIL on the MX query: temporary", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "dns", kind: "dns", permanent: false, ms: 0 })
      expect(yield* connections).toEqual([])
    }).pipe(Effect.provide(layers({}, { zones: { "hostile.test": { rcode: "SERVFAIL" } } }))))

  it.effect("an MX pointing to a name with no addresses (NODATA): temporary, nothing contacted", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "dns", kind: "dns", permanent: false, ms: 0 })
      expect(yield* connections).toEqual([])
    }).pipe(Effect.provide(layers({}, { zones: { ...ZONES, "mx.hostile.test": {} } }))))

  it.effect("an MX pointing to a name that does not exist (NXDOMAIN): permanent", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "failed", phase: "dns", kind: "dns", permanent: true, ms: 0 })
      expect(yield* connections).toEqual([])
    }).pipe(Effect.provide(layers({}, { zones: { "hostile.test": ZONES["hostile.test"]! } }))))

  it.effect("500 MX records: limits.mx hosts tried, 495 dropped unresolved, one query per tried host", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "connect", kind: "unreachable", permanent: false, ms: 0 })
      const plan = result.report.plan.domains[0]!
      expect([plan.mx.length, plan.hosts.length, plan.dropped.length, plan.limits.mx]).toEqual([500, 5, 495, 5])
      const q = yield* queries
      expect(q.filter((x) => x.rrtype === "MX")).toHaveLength(1)
      expect(q.filter((x) => x.rrtype === "A")).toHaveLength(5)
      expect(q).toHaveLength(6)
      expect((yield* connections).length).toBe(5)
    }).pipe(Effect.provide(layers({}, {
      zones: {
        "hostile.test": {
          mx: Array.from({ length: 500 }, (_, i) => ({ exchange: `mx${i}.hostile.test`, priority: i % 3 }))
        },
        ...Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`mx${i}.hostile.test`, { a: [`198.51.100.${i % 250}`] }]))
      }
    }))))
})

describe("hostile MTA-STS: the lookup and the fetch bounded together by timeouts.mta-sts", () => {
  const withSts = (mode: string) =>
    CONFIG.replace("mta-sts = \"disable\"", `mta-sts = "${mode}"`).replace("data = \"7s\"", "data = \"7s\"\nmta-sts = \"8s\"")
  const session = [...toData, GO, Script.expectData, OK, ...QUIT]

  it.effect("optional: a TXT query never answered costs 8 s, then the message goes (with a warning)", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "delivered", phase: "none" as Phase, kind: "none" as Kind, permanent: false, ms: 8_000, code: 250 })
      expect(result.report.plan.domains[0]!.mtaSts).toMatchObject({ status: "failed", error: { phase: "mta-sts", kind: "timeout" } })
      expect(result.report.warnings.filter((w) => /MTA-STS/i.test(w))).toHaveLength(1)
    }).pipe(Effect.provide(layers(one(session), {
      config: withSts("optional"),
      zones: { ...ZONES, "_mta-sts.hostile.test": { txt: ["v=STSv1; id=1"], delay: Duration.infinity } }
    }))))

  it.effect("require: a policy fetch that never answers defers at 8 s, nothing contacted", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "mta-sts", kind: "timeout", permanent: false, ms: 8_000 })
      expect(yield* connections).toEqual([])
    }).pipe(Effect.provide(layers(one(session), {
      config: withSts("require"),
      zones: { ...ZONES, "_mta-sts.hostile.test": { txt: ["v=STSv1; id=1"] } },
      fetch: () => Effect.never
    }))))
})

// ---------------------------------------------------------------------------------------------------------------
// Policy: plaintext is never used when TLS is required
// ---------------------------------------------------------------------------------------------------------------

describe("policy: TLS required means no MAIL FROM in plaintext, ever", () => {
  const withTls = CONFIG.replace("[queue.outbound.tls]\n", "[queue.outbound.tls]\nstarttls = \"require\"\n")

  it.effect("tls.starttls = require and STARTTLS not offered: a temporary tls policy error (a stripped STARTTLS never bounces)", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "tls", kind: "policy", permanent: false, ms: 0 })
      expect(result.report.recipients[0]!.host).toBe("mx.hostile.test")
      const c = yield* onlyConnection
      expect(c.writes).toEqual(["EHLO client.test\r\n", "QUIT\r\n"])
    }).pipe(Effect.provide(layers(one([...hello("PIPELINING"), ...QUIT]), { config: withTls }))))

  it.effect("a message with requireTls to a server without STARTTLS: permanent, nothing sent", () =>
    Effect.gen(function*() {
      const result = yield* run(request({ requireTls: true }))
      expectOutcome(result, { status: "failed", phase: "tls", kind: "policy", permanent: true, ms: 0 })
      const c = yield* onlyConnection
      expect(c.writes).toEqual(["EHLO client.test\r\n", "QUIT\r\n"])
    }).pipe(Effect.provide(layers(one([...hello("REQUIRETLS"), ...QUIT])))))

  it.effect("a message with requireTls, TLS up but REQUIRETLS not offered: permanent, no MAIL FROM", () =>
    Effect.gen(function*() {
      const result = yield* run(request({ requireTls: true }))
      expectOutcome(result, { status: "failed", phase: "mail-from", kind: "policy", permanent: true, ms: 0 })
      const c = yield* onlyConnection
      expect(c.startTls).toHaveLength(1)
      expect(c.writes).toEqual(["EHLO client.test\r\n", "STARTTLS\r\n", "EHLO client.test\r\n", "QUIT\r\n"])
    }).pipe(
      Effect.provide(layers(one([
        ...hello("STARTTLS"),
        Script.expect("STARTTLS"),
        Script.reply("220 go"),
        Script.handshake,
        EHLO,
        caps("PIPELINING"),
        ...QUIT
      ])))
    ))

  it.effect("tls.starttls = disable does not weaken requireTls: STARTTLS anyway, and it must succeed", () =>
    Effect.gen(function*() {
      const result = yield* run(request({ requireTls: true }))
      expectOutcome(result, { status: "deferred", phase: "tls", kind: "tls", permanent: false, ms: 0 })
      const c = yield* onlyConnection
      expect(c.writes).toEqual(["EHLO client.test\r\n", "STARTTLS\r\n"])
    }).pipe(
      Effect.provide(layers(
        one([...hello("STARTTLS"), Script.expect("STARTTLS"), Script.reply("220 go"), Script.handshakeFails]),
        { config: CONFIG.replace("[queue.outbound.tls]\n", "[queue.outbound.tls]\nstarttls = \"disable\"\n") }
      ))
    ))

  const sts = {
    config: CONFIG.replace("mta-sts = \"disable\"", "mta-sts = \"optional\""),
    zones: { ...ZONES, "_mta-sts.hostile.test": { txt: ["v=STSv1; id=1"] } },
    policies: { "hostile.test": "version: STSv1\nmode: enforce\nmx: mx.hostile.test\nmax_age: 86400\n" }
  }

  it.effect("an enforce MTA-STS policy and STARTTLS not offered: temporary, no MAIL FROM", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "tls", kind: "policy", permanent: false, ms: 0 })
      expect(result.report.plan.domains[0]!.mtaSts).toMatchObject({ status: "found", policy: { mode: "enforce" } })
      const c = yield* onlyConnection
      expect(c.writes).toEqual(["EHLO client.test\r\n", "QUIT\r\n"])
    }).pipe(Effect.provide(layers(one([...hello("8BITMIME"), ...QUIT]), sts))))

  it.effect("an enforce MTA-STS policy ignores allow-invalid-certs: certificates are verified", () =>
    Effect.gen(function*() {
      const result = yield* run()
      expectOutcome(result, { status: "deferred", phase: "tls", kind: "tls", permanent: false, ms: 0 })
      const c = yield* onlyConnection
      expect(c.startTls.map((o) => [o.servername, o.rejectUnauthorized])).toEqual([["mx.hostile.test", true]])
      expect(wrote(c, /MAIL FROM/)).toBe(false)
    }).pipe(
      Effect.provide(layers(
        one([...hello("STARTTLS"), Script.expect("STARTTLS"), Script.reply("220 go"), Script.handshakeFails]),
        { ...sts, config: sts.config.replace("[queue.outbound.tls]\n", "[queue.outbound.tls]\nallow-invalid-certs = true\n") }
      ))
    ))
})

// ---------------------------------------------------------------------------------------------------------------
// Input validation
// ---------------------------------------------------------------------------------------------------------------

describe("input validation: refused before any DNS query or connection", () => {
  const CONTROL = "contains a space, a control character (CR, LF, NUL, …) or an angle bracket"
  const long = (n: number) => "a".repeat(n)
  const cases: ReadonlyArray<readonly [string, string, string]> = [
    ["CR", "evil\r@hostile.test", CONTROL],
    ["LF", "rcpt@hostile.test\nRSET", CONTROL],
    ["CRLF and a command", "rcpt@hostile.test>\r\nRCPT TO:<victim@else.test", CONTROL],
    ["NUL", "rc\u0000pt@hostile.test", CONTROL],
    ["a space", "rcpt @hostile.test", CONTROL],
    ["a tab", "rcpt\t@hostile.test", CONTROL],
    ["DEL", "rcpt\u007f@hostile.test", CONTROL],
    ["an angle bracket", "<rcpt@hostile.test>", CONTROL],
    ["a local part of 65 octets", `${long(65)}@hostile.test`, "has a local part longer than 64 octets"],
    // RFC 5321 §4.5.3.1: a domain may have 255 octets, but a path only 256 with its brackets: the path limit bites first
    ["a domain of 255 octets", `a@${[long(63), long(63), long(63), long(63)].join(".")}`, "is longer than 254 octets"],
    ["a path of 255 octets", `${long(64)}@${[long(63), long(63), long(62)].join(".")}`, "is longer than 254 octets"],
    ["a label of 64 octets", `a@${long(64)}.test`, "has a domain that is not a valid host name"],
    ["no domain", "rcpt@", "is not of the form local@domain"]
  ]

  for (const [name, address, reason] of cases) {
    it.effect(`a recipient with ${name}`, () =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(Transport.deliver(request({ recipients: ["ok@hostile.test", address] })))
        expect(exit).toEqual(Exit.fail(new Transport.InvalidRequest({
          issues: [{ field: "recipients[1]", value: address, reason }]
        })))
        expect(yield* connections).toEqual([])
        expect(yield* Effect.flatMap(Dns.TestDns, (t) => t.queries)).toEqual([])
      }).pipe(Effect.provide(layers(one(toData)))))
  }

  it.effect("a sender with CRLF, and every bad field reported at once", () =>
    Effect.gen(function*() {
      const sender = "a@origin.test>\r\nDATA"
      const error = yield* Effect.flip(Transport.deliver(request({ sender, recipients: ["x y@hostile.test"] })))
      expect(error.issues).toEqual([
        { field: "sender", value: sender, reason: CONTROL },
        { field: "recipients[0]", value: "x y@hostile.test", reason: CONTROL }
      ])
      expect(yield* connections).toEqual([])
    }).pipe(Effect.provide(layers(one(toData)))))

  it.effect("a local part of exactly 64 octets and a path of exactly 254 are sent", () =>
    Effect.gen(function*() {
      const rcpt = `${long(64)}@${[long(63), long(63), long(61)].join(".")}`
      expect(rcpt.length).toBe(254)
      const domain = rcpt.slice(65)
      const result = yield* run(request({ recipients: [rcpt] })).pipe(
        Effect.provide(layers(one([...hello(), MAIL, OK, Script.expect(`RCPT TO:<${rcpt}>`), OK, DATA, GO, Script.expectData, OK, ...QUIT]), {
          zones: { [domain]: { a: [MX_IP] } }
        }))
      )
      expectOutcome(result, { status: "delivered", phase: "none" as Phase, kind: "none" as Kind, permanent: false, ms: 0, code: 250 })
    }))
})

describe("the EHLO name: checked at load, and a bad run-time value never reaches the wire", () => {
  const issuesOf = (hostname: string) =>
    Either.match(OutboundConfig.parse(`[queue.outbound]\nhostname = ${JSON.stringify(hostname)}\n`), {
      onLeft: (e) => e.issues.map((i) => [i.path, i.message.includes("wrong value")]),
      onRight: () => []
    })

  it("a constant with CR, LF, NUL, a space or an over-long label is a ConfigError at load", () => {
    for (const bad of ["'mx.test\r\nRSET'", "'mx.test\nRSET'", "'mx\u0000.test'", "'mx test'", `'${"a".repeat(64)}.test'`]) {
      expect(issuesOf(bad)).toEqual([["queue.outbound.hostname", true]])
    }
    expect(issuesOf("'client.test'")).toEqual([])
  })

  it.effect("an expression that yields CRLF and a command at run time: the default EHLO name, and a warning", () =>
    Effect.gen(function*() {
      const result = yield* run(request({ attempt: { lastStatus: "client.test\r\nRCPT TO:<victim@else.test>" } }))
      expectOutcome(result, { status: "delivered", phase: "none" as Phase, kind: "none" as Kind, permanent: false, ms: 0, code: 250 })
      const c = yield* onlyConnection
      expect(c.writes[0]).toBe("EHLO fallback.test\r\n")
      expect(wrote(c, /victim/)).toBe(false)
      expect(result.report.warnings).toHaveLength(1)
      expect(result.report.warnings[0]).toMatch(/^queue\.outbound\.hostname: .*"fallback\.test"/)
      expect(result.report.attempts[0]!.ehlo).toBe("fallback.test")
    }).pipe(
      Effect.provide(layers(
        one([
          GREET,
          Script.expect("EHLO fallback.test"),
          caps(),
          MAIL,
          OK,
          RCPT,
          OK,
          DATA,
          GO,
          Script.expectData,
          OK,
          ...QUIT
        ]),
        { config: `${CONFIG.replace("hostname = \"'client.test'\"", "hostname = \"last_status\"")}\n[lookup.default]\nhostname = "fallback.test"\n` }
      ))
    ))
})
