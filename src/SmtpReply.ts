/**
 * SMTP replies (RFC 5321 §4.2) and their RFC 3463 enhanced status codes: the model, the parser and the incremental
 * accumulator the connection feeds line by line. Pure: nothing here touches a socket.
 *
 * @since 0.1.0
 */
import * as Either from "effect/Either"

/**
 * One complete reply: the three-digit code, the enhanced status code when the server gave one (`"5.1.1"`), and the
 * text of every line without the code and separator.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reply {
  readonly code: number
  readonly enhanced: string | null
  readonly lines: ReadonlyArray<string>
}

/**
 * The most a single reply may weigh, line endings included; past it the reply is a protocol error rather than
 * memory a server can make the client hold.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_REPLY_BYTES = 64 * 1024

/**
 * The most lines a single reply may have.
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_REPLY_LINES = 512

/**
 * The longest line, in bytes without CRLF, that the connection accepts from a server (RFC 5321 §4.5.3.1.5 allows
 * 512 octets; servers exceed it in practice, and 4 KiB bounds what one line can make the client buffer).
 *
 * @since 0.1.0
 * @category constants
 */
export const MAX_LINE = 4096

/**
 * One line of a reply: `250-text` (more follow) or `250 text` / `250` (the last).
 *
 * @since 0.1.0
 * @category models
 */
export interface ReplyLine {
  readonly code: number
  readonly last: boolean
  readonly text: string
}

// RFC 5321 §4.2: textstring = 1*(%d09 / %d32-126) (UTF-8 beyond, RFC 6531). A NUL, a bare CR or an escape in a
// reply would travel on into reports, logs and bounces.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/

// A UTF-16 code unit is at most 3 bytes of UTF-8: shorter strings need no byte count.
const byteLength = (line: string): number => line.length * 3 <= MAX_LINE ? -1 : Buffer.byteLength(line, "utf8")

/** Why the line is not a reply line, or `null`; `bytes` its UTF-8 length when known to matter (else -1). */
const problem = (line: string, bytes: number): string | null => {
  if (bytes > MAX_LINE) return `reply line longer than ${MAX_LINE} bytes`
  // RFC 5321 §4.2: Reply-code = %x32-35 %x30-35 %x30-39, then " " or "-" and the text, or nothing.
  const c0 = line.charCodeAt(0)
  const c1 = line.charCodeAt(1)
  const c2 = line.charCodeAt(2)
  const separator = line.length > 3 ? line.charCodeAt(3) : SPACE
  if (
    !(c0 >= 0x32 && c0 <= 0x35 && c1 >= 0x30 && c1 <= 0x35 && c2 >= 0x30 && c2 <= 0x39) ||
    (separator !== SPACE && separator !== DASH) || CONTROL.test(line)
  ) {
    return `malformed reply line ${JSON.stringify(truncate(line))}`
  }
  return null
}

/** The code of a line `problem` found nothing wrong with. */
const codeOf = (line: string): number =>
  (line.charCodeAt(0) - 0x30) * 100 + (line.charCodeAt(1) - 0x30) * 10 + (line.charCodeAt(2) - 0x30)

const textOf = (line: string): string => line.length > 4 ? line.slice(4) : ""

/** The line, or why it is not a reply line; `bytes` its UTF-8 length when known to matter (else -1). */
const parseWith = (line: string, bytes: number): ReplyLine | string =>
  problem(line, bytes) ??
    { code: codeOf(line), last: line.length <= 3 || line.charCodeAt(3) !== DASH, text: textOf(line) }

const SPACE = 0x20
const DASH = 0x2d

/**
 * Parses one line, or says why it is not a reply line.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parseLine = (line: string): Either.Either<ReplyLine, string> => {
  const parsed = parseWith(line, byteLength(line))
  return typeof parsed === "string" ? Either.left(parsed) : Either.right(parsed)
}

const truncate = (line: string) => line.length > 80 ? `${line.slice(0, 80)}…` : line

/**
 * Accumulates the lines of one reply, as they arrive; shared by {@link parse} and the connection, so both apply the
 * same limits. After a complete reply it starts over for the next one.
 *
 * @since 0.2.0
 * @category parsing
 */
export class Accumulator {
  private code: number | null = null
  private texts: Array<string> = []
  private bytes = 0

  /**
   * `Right(null)`: more lines to come; `Right(reply)`: the reply is complete; `Left`: why it is not a reply.
   *
   * @since 0.2.0
   */
  push(raw: string): Either.Either<Reply | null, string> {
    const pushed = this.add(raw)
    return typeof pushed === "string" ? Either.left(pushed) : Either.right(pushed)
  }

  /**
   * {@link push} without the `Either`, for the connection's per-line loop: `null` more lines to come, a `Reply` when
   * complete, a string why it is not a reply.
   *
   * @since 0.2.0
   */
  add(raw: string): Reply | string | null {
    const counted = byteLength(raw)
    const error = problem(raw, counted)
    if (error !== null) return error
    const code = codeOf(raw)
    const last = raw.length <= 3 || raw.charCodeAt(3) !== DASH
    // A reply of one line (most of them: every reply in a transaction): no accumulation, and no limit it can pass
    // (a line is at most MAX_LINE bytes).
    if (last && this.code === null) return single(code, raw)
    if (this.code !== null && code !== this.code) {
      return `reply code changed from ${this.code} to ${code} within one reply`
    }
    this.code = code
    this.bytes += (counted < 0 ? Buffer.byteLength(raw, "utf8") : counted) + 2
    this.texts.push(textOf(raw))
    if (this.bytes > MAX_REPLY_BYTES) return `reply longer than ${MAX_REPLY_BYTES} bytes`
    if (this.texts.length > MAX_REPLY_LINES) return `reply longer than ${MAX_REPLY_LINES} lines`
    if (!last) return null
    const reply = build(code, this.texts)
    this.code = null
    this.texts = []
    this.bytes = 0
    return reply
  }
}

const DOT = 0x2e

/** The end of 1–3 digits from `from`, or -1 when there is none. */
const digitsEnd = (text: string, from: number): number => {
  let i = from
  while (i < text.length && i - from < 3) {
    const c = text.charCodeAt(i)
    if (c < 0x30 || c > 0x39) break
    i++
  }
  return i === from ? -1 : i
}

/**
 * The length of the enhanced status code `text` starts with at `at`, 0 when there is none: RFC 3463 §2's class "."
 * subject "." detail (subject and detail 1–3 digits), then a space or the end, and it counts only on a 2xx/4xx/5xx
 * reply whose class matches the reply's first digit (RFC 2034 §4). Read by character codes: a regular expression's
 * match array and its group strings were most of a reply's allocation.
 */
const enhancedLength = (text: string, at: number, code: number): number => {
  const c = text.charCodeAt(at)
  if (c !== 0x30 + Math.floor(code / 100) || (c !== 0x32 && c !== 0x34 && c !== 0x35)) return 0
  if (text.charCodeAt(at + 1) !== DOT) return 0
  const subject = digitsEnd(text, at + 2)
  if (subject === -1 || text.charCodeAt(subject) !== DOT) return 0
  const detail = digitsEnd(text, subject + 1)
  if (detail === -1 || (detail < text.length && text.charCodeAt(detail) !== SPACE)) return 0
  return detail - at
}

/** `build` of a reply of one line, from the raw line: its text cut once. */
const single = (code: number, raw: string): Reply => {
  const n = raw.length > 4 ? enhancedLength(raw, 4, code) : 0
  if (n === 0) return { code, enhanced: null, lines: [textOf(raw)] }
  // The code is followed by the end of the line or by a space (`enhancedLength`): the text is what follows that.
  return { code, enhanced: raw.slice(4, 4 + n), lines: [raw.length > 5 + n ? raw.slice(5 + n) : ""] }
}

/**
 * The enhanced code counts only on a 2xx/4xx/5xx reply whose class matches the reply's first digit (RFC 3463 §2,
 * RFC 2034 §4). It is taken from the first line and removed from every line that repeats it.
 */
const build = (code: number, texts: Array<string>): Reply => {
  const first = texts[0] ?? ""
  const n = enhancedLength(first, 0, code)
  if (n === 0) return { code, enhanced: null, lines: texts }
  const enhanced = first.slice(0, n)
  const lines = texts.map((text) =>
    text === enhanced ? "" : text.startsWith(`${enhanced} `) ? text.slice(enhanced.length + 1) : text
  )
  return { code, enhanced, lines }
}

/**
 * Parses the lines of one complete reply, as received without their CRLF.
 *
 * @example
 * ```ts
 * import { Either } from "effect"
 * import * as SmtpReply from "effect-smtp-transport/SmtpReply"
 *
 * const reply = Either.getOrThrow(SmtpReply.parse(["550-5.1.1 No such user", "550 5.1.1 Try another address"]))
 * assert.strictEqual(reply.code, 550)
 * assert.strictEqual(reply.enhanced, "5.1.1")
 * assert.ok(SmtpReply.isPermanent(reply))
 *
 * // Every line of one reply carries the same code.
 * assert.ok(Either.isLeft(SmtpReply.parse(["250-hello", "550 no"])))
 * ```
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (lines: ReadonlyArray<string>): Either.Either<Reply, string> => {
  const accumulator = new Accumulator()
  for (let i = 0; i < lines.length; i++) {
    const result = accumulator.push(lines[i]!)
    if (Either.isLeft(result)) return Either.left(result.left)
    if (result.right !== null) {
      return i === lines.length - 1 ? Either.right(result.right) : Either.left("lines after the last reply line")
    }
  }
  return Either.left("reply ends without a last line")
}

/**
 * The reply as the server sent it, one line per line, without CRLF.
 *
 * @since 0.1.0
 * @category formatting
 */
export const format = (reply: Reply): string =>
  reply.lines.map((text, i) => {
    const separator = i === reply.lines.length - 1 ? " " : "-"
    const body = reply.enhanced === null ? text : text === "" ? reply.enhanced : `${reply.enhanced} ${text}`
    return `${reply.code}${separator}${body}`.trimEnd()
  }).join("\n")

/**
 * 2xx.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isPositive = (reply: Reply): boolean => reply.code >= 200 && reply.code < 300

/**
 * 5xx.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isPermanent = (reply: Reply): boolean => reply.code >= 500 && reply.code < 600

/**
 * 4xx.
 *
 * @since 0.1.0
 * @category predicates
 */
export const isTransient = (reply: Reply): boolean => reply.code >= 400 && reply.code < 500
