/**
 * Property tests (`it.prop`, Effect's fast-check; `PROPERTY_RUNS` runs each, test/utils/properties.ts) for the code
 * that meets hostile bytes first: the reply parser and the line reader under it, dot-stuffing, and the checks that
 * keep CR, LF and NUL off the wire.
 *
 * The expression parser's properties (compiles, or returns an error positioned inside the source; never throws; a
 * well-formed expression always compiles and evaluates to a value) live with it in test/Expression.test.ts, with as
 * many runs.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Option } from "effect"
import * as fc from "effect/FastCheck"
import * as Connector from "../src/Connector.js"
import { MAX_LINE_BYTES } from "../src/Connector.js"
import * as address from "../src/internal/address.js"
import { hostnameProblem } from "../src/internal/config/convert.js"
import { extend } from "../src/internal/extend.js"
import { LineBuffer } from "../src/internal/lineBuffer.js"
import * as SmtpReply from "../src/SmtpReply.js"
import { watchProcess } from "./fixtures/hostilePeer.js"
import * as dotStuff from "./utils/dotStuff.js"
import { RUNS } from "./utils/properties.js"

const watch = watchProcess()
afterAll(() => {
  expect(watch.stop()).toEqual([])
})

const bytesOf = (s: string) => Buffer.byteLength(s, "utf8")
// A reply as it may be kept: no control character but HT (RFC 5321 §4.2 textstring).
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/

/** Everything a parsed reply must satisfy, whatever the input. */
const withinLimits = (reply: SmtpReply.Reply, raw: ReadonlyArray<string>) => {
  expect(reply.code).toBeGreaterThanOrEqual(200)
  expect(reply.code).toBeLessThan(560)
  expect(Math.floor(reply.code / 10) % 10).toBeLessThanOrEqual(5)
  expect(reply.lines.length).toBe(raw.length)
  expect(reply.lines.length).toBeLessThanOrEqual(SmtpReply.MAX_REPLY_LINES)
  expect(raw.reduce((n, line) => n + bytesOf(line) + 2, 0)).toBeLessThanOrEqual(SmtpReply.MAX_REPLY_BYTES)
  expect(Math.max(...raw.map(bytesOf))).toBeLessThanOrEqual(SmtpReply.MAX_LINE)
  expect(reply.lines.filter((t) => CONTROL.test(t))).toEqual([])
  if (reply.enhanced !== null) {
    expect(reply.enhanced).toMatch(/^[245]\.[0-9]{1,3}\.[0-9]{1,3}$/)
    expect(reply.enhanced[0]).toBe(String(reply.code)[0])
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------------------------

const code = fc.oneof(
  fc.constantFrom("220", "250", "354", "421", "451", "550", "554", "199", "260", "600", "2500", "25", "abc", ""),
  fc.integer({ min: 0, max: 999 }).map(String)
)
const separator = fc.constantFrom(" ", "-", "", "_", "\t", "\r", "\u0000")
const text = fc.oneof(
  fc.string(),
  fc.string({ unit: "binary" }),
  fc.string({ unit: "grapheme" }),
  fc.constantFrom("2.0.0 ok", "5.1.1 no such user", "4.7.1", "2.0.0.1 x", "5.1.1234", "ok\u0000nul", "a\rb", "é"),
  fc.integer({ min: 4_000, max: 4_200 }).map((n) => "x".repeat(n))
)
const line = fc.oneof(
  { weight: 5, arbitrary: fc.tuple(code, separator, text).map(([c, s, t]) => c + s + t) },
  { weight: 1, arbitrary: fc.string({ unit: "binary" }) }
)
/** Short replies of anything, and replies built to sit on either side of the line and byte limits. */
const reply = fc.oneof(
  { weight: 8, arbitrary: fc.array(line, { maxLength: 12 }) },
  {
    weight: 1,
    arbitrary: fc.tuple(fc.constantFrom("250", "451"), fc.integer({ min: 505, max: 520 }), text)
      .map(([c, n, last]) => [...Array.from({ length: n }, () => `${c}-x`), `${c} ${last}`])
  },
  {
    weight: 1,
    arbitrary: fc.tuple(fc.integer({ min: 12, max: 20 }), fc.integer({ min: 3_000, max: 4_092 }))
      .map(([n, len]) => [...Array.from({ length: n - 1 }, () => `250-${"y".repeat(len)}`), "250 end"])
  }
)

describe("the reply parser", () => {
  it.prop(
    "never throws, and what it accepts is within every limit",
    [reply],
    ([raw]) => {
      const parsed = SmtpReply.parse(raw)
      if (parsed._tag === "Right") withinLimits(parsed.right, raw)
      else expect(parsed.left.length).toBeGreaterThan(0)
    },
    { fastCheck: RUNS }
  )

  /**
   * A connection on the connectors' shared core over a pipe that delivers `chunks` and then ends as soon as it
   * connects: every exchange completes synchronously.
   */
  const connectionOf = (chunks: ReadonlyArray<Uint8Array>) =>
    Effect.runSync(Connector.fromIo((_, events) =>
      Effect.succeed({
        localAddress: null,
        readableLength: 0,
        connect: (done) => {
          done(null)
          for (const chunk of chunks) events.data(chunk)
          events.end()
        },
        write: (_, flushed) => {
          flushed(null)
          return true
        },
        pause: () => {},
        resume: () => {},
        upgrade: () => () => {},
        destroy: (released) => released()
      })
    ).connect({ ip: "192.0.2.1", port: 25, deadline: Infinity }))

  const wire = fc.oneof(
    reply.map((lines) => [Buffer.from(lines.map((l) => `${l}\r\n`).join(""), "utf8")]),
    fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 8 }),
    fc.integer({ min: 1, max: 3 }).map((n) => [Buffer.alloc(n * 5_000, 0x32)])
  )

  it.prop(
    "reading from the wire: a reply within the limits or a typed protocol/reset error, never a defect",
    [wire],
    ([chunks]) => {
      const connection = connectionOf(chunks)
      const exit = Effect.runSyncExit(connection.exchange({ replies: 1, deadline: Infinity }))
      if (Exit.isSuccess(exit)) {
        const [reply] = exit.value
        expect(reply!.lines.length).toBeLessThanOrEqual(SmtpReply.MAX_REPLY_LINES)
        expect(reply!.lines.reduce((n, t) => n + bytesOf(t) + 6, 0)).toBeLessThanOrEqual(SmtpReply.MAX_REPLY_BYTES)
        expect(reply!.lines.filter((t) => CONTROL.test(t))).toEqual([])
      } else {
        const failure = Cause.failureOption(exit.cause)
        expect(Option.isSome(failure)).toBe(true)
        const error = Option.getOrThrow(failure)
        expect(["protocol", "closed"]).toContain(error.kind)
        // an over-long line drops what was buffered: a flood is not held in memory
        if (error.message === `line longer than ${MAX_LINE_BYTES} bytes`) expect(connection.buffered).toBe(0)
      }
    },
    { fastCheck: RUNS }
  )

  /** Chunks of bytes with many LFs, and runs longer than a line may be. */
  const chunked = fc.array(
    fc.oneof(
      fc.uint8Array({ maxLength: 300 }).map((a) => Uint8Array.from(a, (b) => (b % 7 === 0 ? 0x0a : b))),
      fc.integer({ min: 1, max: 6_000 }).map((n) => new Uint8Array(n).fill(0x41))
    ),
    { maxLength: 10 }
  )

  it.prop(
    "the line reader never returns a line over 4096 bytes, and drops a flood, however the bytes are split",
    [chunked],
    ([chunks]) => {
      const buffer = new LineBuffer<string>(MAX_LINE_BYTES, () => "overflow")
      for (const chunk of chunks) {
        buffer.push(chunk)
        for (;;) {
          const taken = buffer.takeLine()
          if (taken._tag !== "Value") {
            if (taken._tag === "Error") expect([taken.error, buffer.size]).toEqual(["overflow", 0])
            // pending: at most one maximal line (and its CR) waits without a LF
            else expect(buffer.size).toBeLessThanOrEqual(MAX_LINE_BYTES + 1)
            break
          }
          // the limit is on the wire's bytes; decoded, an invalid byte becomes one U+FFFD, so the string holds
          // at most as many UTF-16 units as the line had bytes
          expect(taken.value.length).toBeLessThanOrEqual(MAX_LINE_BYTES)
        }
      }
    },
    { fastCheck: RUNS }
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Dot-stuffing
// ---------------------------------------------------------------------------------------------------------------

const latin1 = (b: Uint8Array) => Buffer.from(b).toString("latin1")
/** Bytes biased towards the ones that matter: CR, LF and the dot. */
const body = fc.array(
  fc.oneof({ weight: 3, arbitrary: fc.constantFrom(0x0d, 0x0a, 0x2e) }, { weight: 2, arbitrary: fc.integer({ min: 0, max: 255 }) }),
  { maxLength: 300 }
).map((a) => Uint8Array.from(a))

/** A payload as a strict receiver reads it: CRLF-delimited lines, the first line "." ending DATA. */
const receiverLines = (payload: string) => payload.split("\r\n")

describe("dot-stuffing", () => {
  it.prop(
    "the payload of any message has no bare CR or LF and exactly one end-of-data line, the last",
    [body],
    ([message]) => {
      const normalized = dotStuff.normalize(message)
      const payload = latin1(dotStuff.stuff(normalized))
      expect(payload.replace(/\r\n/g, "")).not.toMatch(/[\r\n]/)
      const lines = receiverLines(payload)
      // "…\r\n.\r\n" splits into […, ".", ""]
      expect(lines[lines.length - 1]).toBe("")
      expect(lines.indexOf(".")).toBe(lines.length - 2)
      // no early terminator anywhere, read from the start of the stream
      expect(`\r\n${payload}`.indexOf("\r\n.\r\n")).toBe(payload.length - 3)
    },
    { fastCheck: RUNS }
  )

  it.prop(
    "un-stuffing the payload gives back the CRLF-normalised message; normalising is idempotent",
    [body],
    ([message]) => {
      const normalized = dotStuff.normalize(message)
      expect(latin1(dotStuff.normalize(normalized))).toBe(latin1(normalized))
      expect(latin1(dotStuff.unstuff(dotStuff.stuff(normalized)))).toBe(latin1(normalized))
    },
    { fastCheck: RUNS }
  )

  const lineText = fc.array(
    fc.oneof({ weight: 2, arbitrary: fc.constantFrom(".", "..", "x", " ", "é") }, { weight: 1, arbitrary: fc.string() }),
    { maxLength: 6 }
  ).map((parts) => parts.join("").replace(/[\r\n]/g, ""))

  it.prop(
    "on a body already CRLF-normalised, normalise then stuff then un-stuff is the identity",
    [fc.array(lineText, { maxLength: 20 })],
    ([lines]) => {
      const text = lines.map((l) => `${l}\r\n`).join("")
      const bytes = new TextEncoder().encode(text)
      expect(dotStuff.normalize(bytes)).toBe(bytes)
      expect(Buffer.from(dotStuff.unstuff(dotStuff.toData(bytes))).toString("utf8")).toBe(text)
    },
    { fastCheck: RUNS }
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Nothing injected through an address or the EHLO name
// ---------------------------------------------------------------------------------------------------------------

const hostile = fc.array(
  fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom("a", "b", "z", "0", "-", ".", "@", "_", "+", "é", "ü") },
    { weight: 1, arbitrary: fc.constantFrom("\r", "\n", "\u0000", " ", "\t", "<", ">", "\u007f", "\r\nRSET\r\n", "[", "]", "IPv6:") },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 4 }) }
  ),
  { maxLength: 40 }
).map((parts) => parts.join(""))

const addressOrName = fc.oneof(hostile, fc.string({ unit: "binary" }))

describe("what may reach the wire", () => {
  it.prop(
    "an address the validator accepts makes exactly one command line, within RFC 5321's sizes",
    [addressOrName],
    ([raw]) => {
      const parsed = address.parse(raw)
      if (typeof parsed === "string") return
      const command = `RCPT TO:<${parsed.address}>\r\n`
      expect(command.indexOf("\r")).toBe(command.length - 2)
      expect(command.indexOf("\n")).toBe(command.length - 1)
      // eslint-disable-next-line no-control-regex
      expect(parsed.address).not.toMatch(/[\x00-\x20\x7f<>]/)
      expect(bytesOf(parsed.address)).toBeLessThanOrEqual(254)
      expect(bytesOf(parsed.local)).toBeLessThanOrEqual(64)
    },
    { fastCheck: RUNS }
  )

  it.prop(
    "an EHLO name the configuration accepts is one printable token",
    [addressOrName],
    ([name]) => {
      if (hostnameProblem(name) === null) expect(name).toMatch(/^[A-Za-z0-9.-]{1,255}$/)
    },
    { fastCheck: RUNS }
  )
})

describe("objects built on every message's path", () => {
  // Keys the stages use and keys they do not, `__proto__` included: a spread defines it as an own key, and so must
  // `extend` (Object.assign onto a fresh object sets it as an own data property too, since the source's is one).
  const key = fc.oneof(
    fc.constantFrom("rcpt", "rcpt_domain", "mx", "remote_ip", "local_ip", "settings", "tls", "dane", "__proto__", "0"),
    fc.string({ maxLength: 4 })
  )
  const record = fc.dictionary(key, fc.oneof(fc.integer(), fc.string(), fc.constant(null), fc.constant(undefined)))

  it.prop(
    "extend gives what a spread gives: the same keys in the same order, the later objects' values winning",
    [record, record, record],
    ([a, b, c]) => {
      const spread2 = { ...a, ...b }
      const spread3 = { ...a, ...b, ...c }
      expect(Reflect.ownKeys(extend(a, b))).toEqual(Reflect.ownKeys(spread2))
      expect(extend(a, b)).toStrictEqual(spread2)
      expect(Reflect.ownKeys(extend(a, b, c))).toEqual(Reflect.ownKeys(spread3))
      expect(extend(a, b, c)).toStrictEqual(spread3)
      expect(Object.getPrototypeOf(extend(a, b, c))).toBe(Object.prototype)
    },
    { fastCheck: RUNS }
  )
})
