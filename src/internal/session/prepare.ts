/**
 * The transaction's command lines, built before anything is sent, or the refusal of the whole transaction
 * (SMTPUTF8, REQUIRETLS, SIZE, addresses that cannot be sent).
 *
 * @internal
 */
import * as Either from "effect/Either"
import type { Phase } from "../../Settings.js"
import type { Dsn, Envelope, Session } from "../../SmtpSession.js"
import * as TransportError from "../../TransportError.js"
import * as dotStuff from "./dotStuff.js"

// Nothing in an envelope address may end or split the command line (RFC 5321 §4.1.2 has no use for them here).
const FORBIDDEN = /[\x00-\x20\x7f<>]/
const NON_ASCII = /[^\x00-\x7f]/

/** RFC 3461 §4: xtext. */
const xtext = (value: string): string => {
  let out = ""
  for (const byte of Buffer.from(value, "utf8")) {
    out += byte < 33 || byte > 126 || byte === 0x2b || byte === 0x3d
      ? `+${byte.toString(16).toUpperCase().padStart(2, "0")}`
      : String.fromCharCode(byte)
  }
  return out
}

const NOTIFY_ORDER = ["SUCCESS", "DELAY", "FAILURE"] as const

/** RFC 3461 §4.1: `NEVER`, or the others in a fixed order; `null` for no parameter. */
const notifyParam = (notify: Dsn["notify"]): string | null => {
  if (notify === undefined) return null
  if (notify === "NEVER") return "NEVER"
  const list = NOTIFY_ORDER.filter((n) => notify.includes(n))
  return list.length === 0 ? null : list.join(",")
}

export const policyError = (phase: Phase, message: string) => TransportError.make(phase, "policy", `${phase}: ${message}`, true)

export interface Prepared {
  readonly normalized: Uint8Array
  readonly mail: string
  readonly rcpts: ReadonlyArray<{ readonly index: number; readonly line: string }>
  readonly refused: ReadonlyArray<{ readonly index: number; readonly error: TransportError.TransportError }>
}

/** Builds the command lines, or refuses the whole transaction before anything is sent. */
export const prepare = (
  session: Session,
  envelope: Envelope,
  message: Uint8Array
): Either.Either<Prepared, TransportError.TransportError> => {
  const caps = session.capabilities
  if (FORBIDDEN.test(envelope.sender)) {
    return Either.left(policyError("mail-from", `sender ${JSON.stringify(envelope.sender)} cannot be sent`))
  }
  const normalized = dotStuff.normalize(message)
  // As Postfix decides: only an envelope address makes SMTPUTF8 a must; UTF-8 in the headers alone asks for it where
  // offered and goes as 8-bit data elsewhere, since refusing it would bounce mail every receiver reads.
  const utf8Address = NON_ASCII.test(envelope.sender)
    ? envelope.sender
    : envelope.recipients.find((r) => NON_ASCII.test(r))
  if (utf8Address !== undefined && !caps.smtpUtf8) {
    return Either.left(
      policyError("mail-from", `${utf8Address} needs SMTPUTF8 and the server does not advertise it`)
    )
  }
  const needsUtf8 = utf8Address !== undefined || (caps.smtpUtf8 && dotStuff.headerHas8Bit(normalized))
  if (envelope.requireTls === true) {
    if (session.tls === null) return Either.left(policyError("mail-from", "REQUIRETLS message over a plaintext connection"))
    if (!caps.requireTls) {
      return Either.left(policyError("mail-from", "REQUIRETLS message and the server does not advertise REQUIRETLS"))
    }
  }
  if (caps.size !== null && caps.size > 0 && normalized.length > caps.size) {
    return Either.left(
      policyError("mail-from", `message of ${normalized.length} bytes exceeds the server's SIZE ${caps.size}`)
    )
  }

  const dsn = caps.dsn ? envelope.dsn : undefined
  let mail = `MAIL FROM:<${envelope.sender}>`
  if (caps.size !== null) mail += ` SIZE=${normalized.length}`
  if (caps.eightBitMime && dotStuff.has8Bit(normalized)) mail += " BODY=8BITMIME"
  if (needsUtf8) mail += " SMTPUTF8"
  if (envelope.requireTls === true) mail += " REQUIRETLS"
  if (dsn?.ret !== undefined) mail += ` RET=${dsn.ret}`
  if (dsn?.envid !== undefined) mail += ` ENVID=${xtext(dsn.envid)}`

  const notify = notifyParam(dsn?.notify)

  const rcpts: Array<{ index: number; line: string }> = []
  const refused: Array<{ index: number; error: TransportError.TransportError }> = []
  envelope.recipients.forEach((address, index) => {
    if (FORBIDDEN.test(address) || address.length === 0) {
      refused.push({ index, error: policyError("rcpt-to", `recipient ${JSON.stringify(address)} cannot be sent`) })
      return
    }
    let line = `RCPT TO:<${address}>`
    if (notify !== null) line += ` NOTIFY=${notify}`
    if (dsn?.orcpt === true && !NON_ASCII.test(address)) line += ` ORCPT=rfc822;${xtext(address)}`
    rcpts.push({ index, line })
  })
  return Either.right({ normalized, mail, rcpts, refused })
}

