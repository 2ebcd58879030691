import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as Connector from "../src/Connector.js"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script } from "../src/ConnectorTest.js"
import * as SmtpReply from "../src/SmtpReply.js"

const ok = (lines: ReadonlyArray<string>) => Either.getOrThrowWith(SmtpReply.parse(lines), (e) => new Error(e))
const err = (lines: ReadonlyArray<string>) => Either.flip(SmtpReply.parse(lines)).pipe(Either.getOrThrow)

describe("SmtpReply.parse", () => {
  it("parses a single line", () => {
    expect(ok(["250 OK"])).toEqual({ code: 250, enhanced: null, lines: ["OK"] })
  })

  it("parses a code without text, and an empty text", () => {
    expect(ok(["250"])).toEqual({ code: 250, enhanced: null, lines: [""] })
    expect(ok(["250 "])).toEqual({ code: 250, enhanced: null, lines: [""] })
  })

  it("parses a multi-line reply", () => {
    expect(ok(["250-mx.example.com hello", "250-PIPELINING", "250-SIZE 1000", "250 8BITMIME"])).toEqual({
      code: 250,
      enhanced: null,
      lines: ["mx.example.com hello", "PIPELINING", "SIZE 1000", "8BITMIME"]
    })
  })

  it("takes the enhanced code and strips it from every line repeating it", () => {
    expect(ok(["550-5.1.1 The email account that you tried to reach does not exist.", "550-5.1.1 Please try", "550 5.1.1 again"]))
      .toEqual({
        code: 550,
        enhanced: "5.1.1",
        lines: ["The email account that you tried to reach does not exist.", "Please try", "again"]
      })
    expect(ok(["250 2.0.0"])).toEqual({ code: 250, enhanced: "2.0.0", lines: [""] })
    expect(ok(["451 4.7.100 greylisted"])).toEqual({ code: 451, enhanced: "4.7.100", lines: ["greylisted"] })
  })

  it("ignores an enhanced code whose class does not match the reply", () => {
    expect(ok(["250 5.1.1 odd"])).toEqual({ code: 250, enhanced: null, lines: ["5.1.1 odd"] })
    expect(ok(["354 2.0.0 go ahead"])).toEqual({ code: 354, enhanced: null, lines: ["2.0.0 go ahead"] })
    expect(ok(["220 2.0.0 ready"])).toEqual({ code: 220, enhanced: "2.0.0", lines: ["ready"] })
  })

  it("does not take a version number or a non-code for an enhanced code", () => {
    expect(ok(["250 2.0.0.1 x"])).toEqual({ code: 250, enhanced: null, lines: ["2.0.0.1 x"] })
    expect(ok(["550 5.1.1234 x"])).toEqual({ code: 550, enhanced: null, lines: ["5.1.1234 x"] })
    expect(ok(["550 5.1.1x"])).toEqual({ code: 550, enhanced: null, lines: ["5.1.1x"] })
  })

  it("rejects malformed lines", () => {
    expect(err(["25 OK"])).toBe("malformed reply line \"25 OK\"")
    expect(err(["2500 OK"])).toBe("malformed reply line \"2500 OK\"")
    expect(err(["250_OK"])).toBe("malformed reply line \"250_OK\"")
    expect(err(["abc OK"])).toBe("malformed reply line \"abc OK\"")
    expect(err(["150 OK"])).toBe("malformed reply line \"150 OK\"")
    expect(err(["260 OK"])).toBe("malformed reply line \"260 OK\"")
    expect(err([""])).toBe("malformed reply line \"\"")
  })

  it("rejects a code that changes within a reply", () => {
    expect(err(["250-a", "251 b"])).toBe("reply code changed from 250 to 251 within one reply")
  })

  it("rejects a reply without its last line, and lines after it", () => {
    expect(err(["250-a", "250-b"])).toBe("reply ends without a last line")
    expect(err(["250 a", "250 b"])).toBe("lines after the last reply line")
  })

  it("rejects a line over 4096 bytes, accepts exactly 4096", () => {
    const at = `250 ${"x".repeat(4092)}`
    expect(Buffer.byteLength(at)).toBe(4096)
    expect(ok([at]).lines[0]!.length).toBe(4092)
    expect(err([`${at}x`])).toBe("reply line longer than 4096 bytes")
    // bytes, not characters
    expect(err([`250 ${"é".repeat(2047)}`])).toBe("reply line longer than 4096 bytes")
  })

  it("rejects a reply over 64 KiB", () => {
    const line = `250-${"x".repeat(4000)}`
    // 17 × 4006 bytes (with CRLF) = 68102
    const lines = [...Array.from({ length: 17 }, () => line), "250 end"]
    expect(err(lines)).toBe("reply longer than 65536 bytes")
    // 16 × 4006 + 9 = 64105
    expect(ok(lines.slice(1)).lines.length).toBe(17)
  })

  it("rejects a reply over 512 lines", () => {
    const lines = [...Array.from({ length: 512 }, () => "250-x"), "250 y"]
    expect(err(lines)).toBe("reply longer than 512 lines")
    expect(ok(lines.slice(1)).lines.length).toBe(512)
  })

  it("classifies codes", () => {
    expect([SmtpReply.isPositive, SmtpReply.isTransient, SmtpReply.isPermanent].map((f) => f(ok(["250 a"]))))
      .toEqual([true, false, false])
    expect([SmtpReply.isPositive, SmtpReply.isTransient, SmtpReply.isPermanent].map((f) => f(ok(["451 a"]))))
      .toEqual([false, true, false])
    expect([SmtpReply.isPositive, SmtpReply.isTransient, SmtpReply.isPermanent].map((f) => f(ok(["554 a"]))))
      .toEqual([false, false, true])
  })

  it("formats a reply back to lines", () => {
    expect(SmtpReply.format(ok(["550-5.1.1 a", "550 5.1.1 b"]))).toBe("550-5.1.1 a\n550 5.1.1 b")
    expect(SmtpReply.format(ok(["250-x", "250 y"]))).toBe("250-x\n250 y")
  })
})

describe("SmtpReply.Accumulator", () => {
  it("takes lines one at a time, and starts over after each complete reply", () => {
    const accumulator = new SmtpReply.Accumulator()
    expect(accumulator.push("250-mx")).toEqual(Either.right(null))
    expect(accumulator.push("250 2.0.0 ok")).toEqual(Either.right({ code: 250, enhanced: null, lines: ["mx", "2.0.0 ok"] }))
    expect(accumulator.push("354 go")).toEqual(Either.right({ code: 354, enhanced: null, lines: ["go"] }))
    expect(accumulator.push("250-a")).toEqual(Either.right(null))
    expect(accumulator.push("251 b")).toEqual(Either.left("reply code changed from 250 to 251 within one reply"))
  })
})

describe("replies read by the connection (Connection.exchange)", () => {
  const readAll = (script: ReadonlyArray<ConnectorTest.Step>, count: number) =>
    Effect.gen(function*() {
      const connection = yield* Effect.orDie(Connector.scoped({ ip: "192.0.2.1", port: 25, deadline: Infinity }))
      return yield* connection.exchange({ replies: count, deadline: Infinity })
    }).pipe(Effect.scoped, Effect.provide(ConnectorTest.layer({ "192.0.2.1": { script } })))

  it.effect("reads multi-line replies split across segments, and keeps the rest buffered", () =>
    Effect.gen(function*() {
      const replies = yield* readAll([
        Script.raw("250-mx hello\r\n250-PIPE"),
        Script.raw("LINING\r\n250 SIZE 10\r\n451 4.3.0 la"),
        Script.raw("ter\r\n")
      ], 2)
      expect(replies).toEqual([
        { code: 250, enhanced: null, lines: ["mx hello", "PIPELINING", "SIZE 10"] },
        { code: 451, enhanced: "4.3.0", lines: ["later"] }
      ])
    }))

  it.effect("accepts a bare LF as a line ending", () =>
    Effect.gen(function*() {
      const replies = yield* readAll([Script.raw("250-a\n250 b\n")], 1)
      expect(replies).toEqual([{ code: 250, enhanced: null, lines: ["a", "b"] }])
    }))

  it.effect("fails with a protocol error on a malformed line", () =>
    Effect.gen(function*() {
      const failure = yield* Effect.flip(readAll([Script.raw("250-a\r\n251 b\r\n")], 1))
      expect([failure.kind, failure.message]).toEqual([
        "protocol",
        "reply code changed from 250 to 251 within one reply"
      ])
    }))

  it.effect("fails on a line over 4096 bytes without waiting for its end", () =>
    Effect.gen(function*() {
      // 5000 bytes and no line ending at all: the read must fail rather than wait (the peer then stalls)
      const failure = yield* Effect.flip(readAll([Script.raw(`250 ${"x".repeat(5000)}`), Script.stall], 1))
      expect([failure.kind, failure.message]).toEqual(["protocol", "line longer than 4096 bytes"])
    }))

  it.effect("fails on a reply over 64 KiB", () =>
    Effect.gen(function*() {
      const line = `250-${"x".repeat(4000)}`
      const failure = yield* Effect.flip(readAll([Script.reply(...Array.from({ length: 17 }, () => line), "250 z")], 1))
      expect([failure.kind, failure.message]).toEqual(["protocol", "reply longer than 65536 bytes"])
    }))

  it.effect("end of input is closed, a reset is reset", () =>
    Effect.gen(function*() {
      const closed = yield* Effect.flip(readAll([Script.raw("250-a\r\n"), Script.close], 1))
      expect([closed.kind, closed.message]).toEqual(["closed", "connection closed by the peer"])
      const reset = yield* Effect.flip(readAll([Script.reset], 1))
      expect([reset.kind, reset.message]).toEqual(["reset", "connection reset by the peer"])
    }))
})
