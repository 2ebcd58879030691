/**
 * RFC 3464 delivery status notifications: the `multipart/report; report-type=delivery-status` message the outbox
 * sends to a message's envelope sender when recipients fail (expired or refused for good) or, at the schedule's
 * `notify` points, are still being retried.
 *
 * The message has three parts (RFC 6522):
 *
 * 1. `text/plain`: a few lines for a person, one per recipient with the server's reply.
 * 2. `message/delivery-status`: `Reporting-MTA` (our EHLO name) and `Arrival-Date`, then per recipient
 *    `Final-Recipient`, `Action` (`failed` or `delayed`), `Status`, `Remote-MTA`, `Diagnostic-Code: smtp; <reply>`,
 *    `Last-Attempt-Date` and, for a delayed recipient, `Will-Retry-Until`. Where an address or a reply is not ASCII,
 *    RFC 6533's `message/global-delivery-status` with `utf-8` address types.
 * 3. `text/rfc822-headers`: the original message's header section only (RFC 3462 §2; `message/global-headers`, RFC
 *    6533, when it is not ASCII), so a report never carries the body back.
 *
 * Every line ends in CRLF and is at most 998 octets (RFC 5322 §2.1.1); long header fields are folded at spaces, and a
 * word longer than a line is cut. The `Date` comes from `Clock`, the `Message-ID` and the MIME boundary from `Random`:
 * under `TestClock` and a seeded `Random` the message is the same byte for byte.
 *
 * The notification itself is sent with the null reverse-path (RFC 5321 §4.5.5, RFC 3464 §2), so that it never causes
 * another one.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import type { Reply } from "../../SmtpReply.js"
import type { Kind } from "../../TransportError.js"

/**
 * One recipient the notification is about.
 *
 * @internal
 */
export interface Recipient {
  readonly address: string
  /** `failed`: given up (refused for good, or the schedule expired); `delayed`: still being retried. */
  readonly action: "failed" | "delayed"
  /** RFC 3463 status, `"5.1.1"`; see {@link statusOf}. */
  readonly status: string
  /** The last reply of the server about this recipient, as `Diagnostic-Code: smtp; …`. */
  readonly diagnostic?: Reply | undefined
  /** The host that gave the reply (MX or relay host name), as `Remote-MTA: dns; …`. */
  readonly remoteMta?: string | undefined
  /** Epoch milliseconds: when the recipient will be given up (a delayed recipient under a TTL). */
  readonly willRetryUntil?: number | undefined
  /** Epoch milliseconds of the last attempt. */
  readonly lastAttempt?: number | undefined
}

/**
 * @internal
 */
export interface Input {
  /** Our EHLO name: `Reporting-MTA` and the domain of the `From` and `Message-ID`. */
  readonly reportingMta: string
  /** The original envelope sender: the notification goes to it. */
  readonly sender: string
  /** Epoch milliseconds: when the message was enqueued. */
  readonly arrivalDate: number
  readonly recipients: ReadonlyArray<Recipient>
  /** The original message; only its header section is returned. */
  readonly original: Uint8Array | string
}

/**
 * A notification ready to enqueue: the null reverse-path, the original sender as the one recipient, and the message
 * (CRLF line endings, not dot-stuffed).
 *
 * @internal
 */
export interface Dsn {
  readonly sender: ""
  readonly recipients: readonly [string]
  readonly message: string
}

const CRLF = "\r\n"
/** RFC 5322 §2.1.1: 998 octets a line, 78 recommended. */
const MAX_LINE = 998
const FOLD_AT = 78

const isAscii = (text: string): boolean => /^[\x00-\x7f]*$/.test(text)

/** CR, LF and other controls out of a value that goes into one header field (an address, a host name). */
const oneLine = (text: string): string => text.replace(/[\x00-\x1f\x7f]+/g, " ").trim()

/** Octets of a string in UTF-8: what the 998 limit counts. */
const octets = (text: string): number => Buffer.byteLength(text, "utf8")

/** Cuts a word into pieces of at most `max` octets, never inside a character. */
const cut = (word: string, max: number): Array<string> => {
  const pieces: Array<string> = []
  let piece = ""
  for (const char of word) {
    if (octets(piece + char) > max) {
      pieces.push(piece)
      piece = ""
    }
    piece += char
  }
  if (piece !== "") pieces.push(piece)
  return pieces
}

/**
 * `Name: value` folded at spaces to lines of about 78 octets (RFC 5322 §2.2.3); a word longer than a line is cut so that
 * no line passes 998 octets.
 *
 * @internal
 */
export const field = (name: string, value: string): string => {
  const words = oneLine(value).split(/ +/).flatMap((w) => (octets(w) > MAX_LINE - 2 ? cut(w, MAX_LINE - 2) : [w]))
  const lines: Array<string> = []
  let line = `${name}:`
  for (const word of words) {
    if (word === "") continue
    if (octets(line) + 1 + octets(word) > FOLD_AT && line.trim() !== "" && line !== `${name}:`) {
      lines.push(line)
      line = ` ${word}`
    } else {
      line = `${line} ${word}`
    }
  }
  lines.push(line)
  return lines.join(CRLF)
}

const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
const pad = (n: number) => String(n).padStart(2, "0")

/**
 * An RFC 5322 date-time in UTC (`Fri, 04 Dec 2026 15:50:18 +0000`).
 *
 * @internal
 */
export const rfc5322Date = (millis: number): string => {
  const d = new Date(millis)
  return `${DAYS[d.getUTCDay()]}, ${pad(d.getUTCDate())} ${MONTHS[d.getUTCMonth()]} ${d.getUTCFullYear()} ` +
    `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())} +0000`
}

/**
 * The RFC 3463 status of a recipient: the reply's enhanced code when it has one; else the reply's class (`5.0.0`,
 * `4.0.0`); else one derived from the error's kind (`4.4.1` no answer from the host, `4.4.2` connection dropped or
 * timed out, `4.4.3` DNS, `4.4.5` our limiters, `4.7.5` TLS, DANE and MTA-STS, `4.3.0` route or local address, `4.5.0`
 * protocol, `4.7.0` AUTH; `5.x.x` when the error was permanent). On expiry a recipient's status is `5.4.7` (delivery
 * time expired), whatever the last error was (`Diagnostic-Code` still carries the last reply).
 *
 * @internal
 */
export const statusOf = (options: {
  readonly reply?: Reply | null | undefined
  readonly kind?: Kind | undefined
  readonly permanent: boolean
  readonly expired?: boolean | undefined
}): string => {
  if (options.expired === true) return "5.4.7"
  const reply = options.reply ?? null
  if (reply !== null && reply.enhanced !== null && /^[245]\.\d{1,3}\.\d{1,3}$/.test(reply.enhanced)) {
    return reply.enhanced
  }
  if (reply !== null && reply.code >= 400 && reply.code < 600) return reply.code >= 500 ? "5.0.0" : "4.0.0"
  const c = options.permanent ? "5" : "4"
  switch (options.kind) {
    case "refused":
    case "unreachable":
      return `${c}.4.1`
    case "timeout":
    case "reset":
      return `${c}.4.2`
    case "dns":
      // A domain that cannot receive mail (no address, null MX) is a bad destination system.
      return options.permanent ? "5.1.2" : "4.4.3"
    case "concurrency":
    case "rate":
      return `${c}.4.5`
    case "tls":
    case "dane":
    case "policy":
      return `${c}.7.5`
    case "auth":
      return `${c}.7.0`
    case "protocol":
    case "reply":
      return `${c}.5.0`
    case "route":
    case "bind":
    case "local-address":
      return `${c}.3.0`
    case "input":
      return `${c}.6.0`
    default:
      return `${c}.0.0`
  }
}

/** A reply on one line: `550 5.1.1 no such user` (the lines of a multi-line reply joined by spaces). */
const replyText = (reply: Reply): string => {
  const text = reply.lines.map((l) => l.trim()).filter((l) => l !== "").join(" ")
  const enhanced = reply.enhanced === null ? "" : ` ${reply.enhanced}`
  return oneLine(`${reply.code}${enhanced}${text === "" ? "" : ` ${text}`}`)
}

/**
 * The header section of a message: up to the first empty line (or all of it when there is none), with CRLF line
 * endings, and no line longer than 998 octets (a longer one is cut into a continuation line).
 *
 * @internal
 */
export const headerSection = (original: Uint8Array | string): string => {
  const text = typeof original === "string" ? original : new TextDecoder("utf-8", { fatal: false }).decode(original)
  const lines = text.split(/\r\n|\r|\n/)
  const end = lines.findIndex((l) => l === "")
  const header = end === -1 ? lines : lines.slice(0, end)
  return header.flatMap((line) => {
    if (octets(line) <= MAX_LINE) return [line]
    const [first, ...rest] = cut(line, MAX_LINE - 1)
    return [first!, ...rest.map((r) => ` ${r}`)]
  }).map((l) => l + CRLF).join("")
}

const hex = (words: ReadonlyArray<number>) => words.map((w) => w.toString(16).padStart(8, "0")).join("")

const randomWords = (n: number) =>
  Effect.all(Array.from({ length: n }, () => Random.nextIntBetween(0, 0x1_0000_0000)))

/** Wraps a paragraph at spaces to lines of at most 76 octets (a word longer than 998 is cut). */
const wrap = (text: string): Array<string> => {
  const folded = field("X", text).split(CRLF).map((l, i) => (i === 0 ? l.slice(3) : l.slice(1)))
  return folded
}

/**
 * The notification for `input`, or none when the original sender is the null reverse-path (a notification about a
 * notification is never sent, RFC 3464 §2, RFC 5321 §6.1) or there is no recipient to report: the caller need not
 * check either, it enqueues what it gets.
 *
 * @internal
 */
export const make = (input: Input): Effect.Effect<Option.Option<Dsn>> =>
  Effect.gen(function*() {
    const sender = oneLine(input.sender)
    if (sender === "" || input.recipients.length === 0) return Option.none()
    const now = yield* Clock.currentTimeMillis
    const reportingMta = oneLine(input.reportingMta)
    const messageId = `${hex(yield* randomWords(4))}@${reportingMta}`
    const failed = input.recipients.some((r) => r.action === "failed")
    const headers = headerSection(input.original)
    const recipients = input.recipients.map((r) => ({ ...r, address: oneLine(r.address) }))
    const global = !recipients.every((r) =>
      isAscii(r.address) && (r.diagnostic === undefined || isAscii(replyText(r.diagnostic)))
    ) || !isAscii(sender)

    const human: Array<string> = failed
      ? [
        `This is the mail system at ${reportingMta}.`,
        "",
        "Your message could not be delivered to one or more recipients. It is attached below (its header only).",
        ""
      ]
      : [
        `This is the mail system at ${reportingMta}.`,
        "",
        "Your message has not been delivered yet to one or more recipients. Delivery is still being tried; you do " +
        "not need to send it again.",
        ""
      ]
    for (const r of recipients) {
      const what = r.action === "failed" ? "failed" : "delayed"
      const until = r.willRetryUntil === undefined ? "" : `, retried until ${rfc5322Date(r.willRetryUntil)}`
      const why = r.diagnostic === undefined ? "" : `: ${r.remoteMta === undefined ? "" : `${oneLine(r.remoteMta)} said `}${replyText(r.diagnostic)}`
      human.push(...wrap(`<${r.address}>: ${what} (${r.status}${until})${why}`))
    }

    const status: Array<string> = [
      field("Reporting-MTA", `dns; ${reportingMta}`),
      field("Arrival-Date", rfc5322Date(input.arrivalDate)),
      ""
    ]
    for (const r of recipients) {
      status.push(field("Final-Recipient", `${global && !isAscii(r.address) ? "utf-8" : "rfc822"}; ${r.address}`))
      status.push(field("Action", r.action))
      status.push(field("Status", r.status))
      if (r.remoteMta !== undefined) status.push(field("Remote-MTA", `dns; ${oneLine(r.remoteMta)}`))
      if (r.diagnostic !== undefined) status.push(field("Diagnostic-Code", `smtp; ${replyText(r.diagnostic)}`))
      if (r.lastAttempt !== undefined) status.push(field("Last-Attempt-Date", rfc5322Date(r.lastAttempt)))
      if (r.action === "delayed" && r.willRetryUntil !== undefined) {
        status.push(field("Will-Retry-Until", rfc5322Date(r.willRetryUntil)))
      }
      status.push("")
    }
    const parts = [
      { type: `text/plain; charset=${isAscii(human.join("")) ? "us-ascii" : "utf-8"}`, body: human.join(CRLF) + CRLF },
      {
        type: global ? "message/global-delivery-status" : "message/delivery-status",
        body: status.join(CRLF)
      },
      { type: isAscii(headers) ? "text/rfc822-headers" : "message/global-headers", body: headers }
    ]
    // A boundary that occurs in no part (RFC 2046 §5.1.1); with 128 random bits the first one always does.
    let boundary = ""
    do {
      boundary = `=_dsn_${hex(yield* randomWords(4))}`
    } while (parts.some((p) => p.body.includes(`--${boundary}`)))

    const eightBit = !isAscii(parts.map((p) => p.body).join(""))
    const top = [
      field("From", `Mail Delivery System <MAILER-DAEMON@${reportingMta}>`),
      field("To", `<${sender}>`),
      field("Subject", failed ? "Undelivered Mail Returned to Sender" : "Delayed Mail (still being retried)"),
      field("Date", rfc5322Date(now)),
      field("Message-ID", `<${messageId}>`),
      // RFC 3834: an automatic response, which no auto-responder answers.
      field("Auto-Submitted", "auto-replied"),
      field("MIME-Version", "1.0"),
      field("Content-Type", `multipart/report; report-type=delivery-status; boundary="${boundary}"`),
      ...(eightBit ? [field("Content-Transfer-Encoding", "8bit")] : []),
      "",
      "This is a MIME-encapsulated message (RFC 3464 delivery status notification).",
      ""
    ]
    const body = parts.flatMap((p) => [
      `--${boundary}`,
      field("Content-Type", p.type),
      ...(isAscii(p.body) ? [] : [field("Content-Transfer-Encoding", "8bit")]),
      "",
      // Each part's last line keeps its CRLF: the CRLF before the next boundary is the boundary's (RFC 2046 §5.1.1).
      p.body
    ])
    const message = [...top, ...body, `--${boundary}--`, ""].join(CRLF)
    return Option.some({ sender: "" as const, recipients: [sender] as const, message })
  })
