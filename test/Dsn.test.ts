/**
 * RFC 3464 delivery status notifications (internal/outbox/dsn.ts): the message parsed back (boundaries, parts,
 * fields), the status codes, the null sender, and as a property on random recipient sets: CRLF only, no line past 998
 * octets, one group of fields per recipient, the same bytes under the same clock and seed.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Random, TestClock } from "effect"
import * as fc from "effect/FastCheck"
import * as Dsn from "../src/internal/outbox/dsn.js"

const ORIGINAL = "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: Hello\r\n" +
  "Message-ID: <1@example.org>\r\n\r\nThe body, which never comes back.\r\n"

interface Part {
  readonly headers: ReadonlyMap<string, string>
  readonly body: string
}

/** Unfolds and splits a header section into (lower-case name → value). */
const headersOf = (text: string): Map<string, string> => {
  const map = new Map<string, string>()
  for (const line of text.replace(/\r\n[ \t]/g, " ").split("\r\n")) {
    if (line === "") continue
    const i = line.indexOf(":")
    map.set(line.slice(0, i).toLowerCase(), line.slice(i + 1).trim())
  }
  return map
}

/** The message parsed back: its headers, and each part between the boundaries. */
const parse = (message: string) => {
  const split = message.indexOf("\r\n\r\n")
  const headers = headersOf(message.slice(0, split))
  const boundary = /boundary="([^"]+)"/.exec(headers.get("content-type")!)![1]!
  const body = message.slice(split + 4)
  const close = body.indexOf(`\r\n--${boundary}--\r\n`)
  expect(close).toBeGreaterThan(0)
  const parts = body.slice(0, close).split(`\r\n--${boundary}\r\n`).slice(1).map((raw): Part => {
    const end = raw.indexOf("\r\n\r\n")
    return { headers: headersOf(raw.slice(0, end)), body: raw.slice(end + 4) }
  })
  return { headers, boundary, parts }
}

/** The groups of fields of a delivery-status body: the message's, then one per recipient. */
const groupsOf = (body: string) =>
  body.split(/\r\n\r\n/).filter((g) => g.trim() !== "").map((g) => headersOf(g))

const failedReply = { code: 550, enhanced: "5.1.1", lines: ["<bob@example.net>: no such user"] }

const input = (overrides: Partial<Dsn.Input> = {}): Dsn.Input => ({
  reportingMta: "mx.example.org",
  sender: "alice@example.org",
  arrivalDate: Date.UTC(2026, 11, 1, 8, 0, 0),
  recipients: [{
    address: "bob@example.net",
    action: "failed",
    status: "5.1.1",
    diagnostic: failedReply,
    remoteMta: "mx1.example.net",
    lastAttempt: Date.UTC(2026, 11, 1, 8, 0, 5)
  }, {
    address: "carol@example.com",
    action: "delayed",
    status: "4.4.1",
    willRetryUntil: Date.UTC(2026, 11, 6, 8, 0, 0),
    lastAttempt: Date.UTC(2026, 11, 2, 8, 0, 0)
  }],
  original: ORIGINAL,
  ...overrides
})

const run = (i: Dsn.Input, seed = 1) =>
  Effect.gen(function*() {
    yield* TestClock.setTime(Date.UTC(2026, 11, 2, 9, 30, 0))
    return yield* Dsn.make(i).pipe(Effect.withRandom(Random.make(seed)))
  })

describe("Dsn.make", () => {
  it.effect("a multipart/report to the sender, from the null sender, with the three parts of RFC 3464", () =>
    Effect.gen(function*() {
      const dsn = Option.getOrThrow(yield* run(input()))
      expect([dsn.sender, dsn.recipients]).toEqual(["", ["alice@example.org"]])
      const { headers, parts } = parse(dsn.message)
      expect(headers.get("to")).toBe("<alice@example.org>")
      expect(headers.get("from")).toBe("Mail Delivery System <MAILER-DAEMON@mx.example.org>")
      expect(headers.get("date")).toBe("Wed, 02 Dec 2026 09:30:00 +0000")
      expect(headers.get("auto-submitted")).toBe("auto-replied")
      expect(headers.get("subject")).toBe("Undelivered Mail Returned to Sender")
      expect(headers.get("message-id")).toMatch(/^<[0-9a-f]{32}@mx\.example\.org>$/)
      expect(headers.get("content-type")).toMatch(/^multipart\/report; report-type=delivery-status; boundary="/)
      expect(parts.map((p) => p.headers.get("content-type"))).toEqual([
        "text/plain; charset=us-ascii",
        "message/delivery-status",
        "text/rfc822-headers"
      ])
      expect(parts[0]!.body).toContain("<bob@example.net>: failed (5.1.1): mx1.example.net said 550 5.1.1")
      const [message, bob, carol] = groupsOf(parts[1]!.body)
      expect(Object.fromEntries(message!)).toEqual({
        "reporting-mta": "dns; mx.example.org",
        "arrival-date": "Tue, 01 Dec 2026 08:00:00 +0000"
      })
      expect(Object.fromEntries(bob!)).toEqual({
        "final-recipient": "rfc822; bob@example.net",
        action: "failed",
        status: "5.1.1",
        "remote-mta": "dns; mx1.example.net",
        "diagnostic-code": "smtp; 550 5.1.1 <bob@example.net>: no such user",
        "last-attempt-date": "Tue, 01 Dec 2026 08:00:05 +0000"
      })
      expect(Object.fromEntries(carol!)).toEqual({
        "final-recipient": "rfc822; carol@example.com",
        action: "delayed",
        status: "4.4.1",
        "last-attempt-date": "Wed, 02 Dec 2026 08:00:00 +0000",
        "will-retry-until": "Sun, 06 Dec 2026 08:00:00 +0000"
      })
      // The original's header section, never its body.
      expect(parts[2]!.body).toBe(ORIGINAL.split("\r\n\r\n")[0] + "\r\n")
      expect(dsn.message).not.toContain("never comes back")
    }))

  it.effect("only delayed recipients: a delay notice", () =>
    Effect.gen(function*() {
      const dsn = Option.getOrThrow(yield* run(input({ recipients: [input().recipients[1]!] })))
      expect(parse(dsn.message).headers.get("subject")).toBe("Delayed Mail (still being retried)")
    }))

  it.effect("none for the null sender, nor with no recipient", () =>
    Effect.gen(function*() {
      expect(yield* run(input({ sender: "" }))).toEqual(Option.none())
      expect(yield* run(input({ recipients: [] }))).toEqual(Option.none())
    }))

  it.effect("the same bytes under the same clock and seed; another seed, another boundary and Message-ID", () =>
    Effect.gen(function*() {
      const a = Option.getOrThrow(yield* run(input(), 7)).message
      const b = Option.getOrThrow(yield* run(input(), 7)).message
      const c = Option.getOrThrow(yield* run(input(), 8)).message
      expect(a).toBe(b)
      expect(c).not.toBe(a)
      expect(parse(c).boundary).not.toBe(parse(a).boundary)
    }))

  it.effect("a long multi-line reply is folded; an original as bytes with LF endings and an endless header line", () =>
    Effect.gen(function*() {
      const reply = { code: 451, enhanced: null, lines: ["try again later", "x".repeat(1500), "bye"] }
      const original = new TextEncoder().encode(`Subject: ${"y".repeat(2000)}\nX-A: b\n\nbody\n`)
      const dsn = Option.getOrThrow(
        yield* run(input({ original, recipients: [{ ...input().recipients[1]!, diagnostic: reply }] }))
      )
      for (const line of dsn.message.split("\r\n")) expect(Buffer.byteLength(line)).toBeLessThanOrEqual(998)
      expect(dsn.message.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/)
      const { parts } = parse(dsn.message)
      const carol = groupsOf(parts[1]!.body)[1]!
      expect(carol.get("diagnostic-code")!.startsWith("smtp; 451 try again later x")).toBe(true)
      expect(parts[2]!.body).toMatch(/^Subject: y+(\r\n y+)+\r\nX-A: b\r\n$/)
    }))

  it.effect("non-ASCII addresses: RFC 6533's global types", () =>
    Effect.gen(function*() {
      const dsn = Option.getOrThrow(
        yield* run(input({
          recipients: [{ address: "jürgen@bücher.example", action: "failed", status: "5.1.1" }],
          original: "Subject: Grüße\r\n\r\n"
        }))
      )
      const { parts } = parse(dsn.message)
      expect(parts.map((p) => p.headers.get("content-type"))).toEqual([
        "text/plain; charset=utf-8",
        "message/global-delivery-status",
        "message/global-headers"
      ])
      expect(groupsOf(parts[1]!.body)[1]!.get("final-recipient")).toBe("utf-8; jürgen@bücher.example")
    }))

  const recipient = fc.record({
    address: fc.tuple(fc.stringMatching(/^[a-z0-9.+-]{1,40}$/), fc.domain()).map(([l, d]) => `${l}@${d}`),
    action: fc.constantFrom("failed" as const, "delayed" as const),
    status: fc.constantFrom("5.1.1", "4.4.1", "5.4.7", "4.7.5"),
    diagnostic: fc.option(
      fc.record({
        code: fc.constantFrom(421, 450, 451, 550, 554),
        enhanced: fc.option(fc.constantFrom("4.2.0", "5.7.1"), { nil: null }),
        lines: fc.array(fc.string({ maxLength: 300 }).map((s) => s.replace(/[\r\n]/g, " ")), { minLength: 1, maxLength: 4 })
      }),
      { nil: undefined }
    ),
    remoteMta: fc.option(fc.domain(), { nil: undefined }),
    willRetryUntil: fc.option(fc.integer({ min: 0, max: 4_000_000_000_000 }), { nil: undefined }),
    lastAttempt: fc.option(fc.integer({ min: 0, max: 4_000_000_000_000 }), { nil: undefined })
  })

  it.effect.prop(
    "random recipient sets: CRLF lines of at most 998 octets, three parts, one group per recipient",
    { recipients: fc.array(recipient, { minLength: 1, maxLength: 12 }), seed: fc.integer() },
    ({ recipients, seed }) =>
      Effect.gen(function*() {
        const dsn = Option.getOrThrow(yield* run(input({ recipients }), seed))
        for (const line of dsn.message.split("\r\n")) expect(Buffer.byteLength(line)).toBeLessThanOrEqual(998)
        expect(dsn.message.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/)
        const { parts } = parse(dsn.message)
        expect(parts).toHaveLength(3)
        const groups = groupsOf(parts[1]!.body)
        expect(groups).toHaveLength(recipients.length + 1)
        groups.slice(1).forEach((g, i) => {
          expect(g.get("final-recipient")).toBe(`rfc822; ${recipients[i]!.address}`)
          expect(g.get("action")).toBe(recipients[i]!.action)
          expect(g.get("status")).toBe(recipients[i]!.status)
        })
      }),
    { fastCheck: { numRuns: 50 } }
  )
})

describe("Dsn.statusOf", () => {
  it("the reply's enhanced code, else its class, else the error's kind; 5.4.7 on expiry", () => {
    expect(Dsn.statusOf({ reply: failedReply, permanent: true })).toBe("5.1.1")
    expect(Dsn.statusOf({ reply: { code: 452, enhanced: null, lines: [] }, permanent: false })).toBe("4.0.0")
    expect(Dsn.statusOf({ reply: { code: 554, enhanced: null, lines: [] }, permanent: true })).toBe("5.0.0")
    expect(Dsn.statusOf({ kind: "unreachable", permanent: false })).toBe("4.4.1")
    expect(Dsn.statusOf({ kind: "timeout", permanent: false })).toBe("4.4.2")
    expect(Dsn.statusOf({ kind: "tls", permanent: false })).toBe("4.7.5")
    expect(Dsn.statusOf({ kind: "dane", permanent: true })).toBe("5.7.5")
    expect(Dsn.statusOf({ kind: "dns", permanent: true })).toBe("5.1.2")
    expect(Dsn.statusOf({ kind: "timeout", permanent: false, expired: true })).toBe("5.4.7")
  })
})
