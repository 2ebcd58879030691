/**
 * The message as it goes over the wire: line endings made CRLF, then (for DATA) dot-stuffed and terminated.
 *
 * Normalising before stuffing is what closes SMTP smuggling (CVE-2023-51764/51765): a body holding `\n.\r\n` or
 * `\r\n.\r` could otherwise end DATA at a receiver that accepts a bare LF or CR as a line ending, and what follows
 * would run as commands there. After normalisation every line ending is CRLF, so every line start is known and
 * every leading dot is doubled.
 */

const CR = 0x0d
const LF = 0x0a
const DOT = 0x2e

/**
 * Bare LF and bare CR become CRLF; a non-empty message that does not end with a line ending gets a CRLF, so that
 * DATA and BDAT deliver the same bytes (the DATA terminator needs one anyway).
 */
export const normalize = (message: Uint8Array): Uint8Array => {
  let extra = 0
  for (let i = 0; i < message.length; i++) {
    const b = message[i]!
    if (b === LF && (i === 0 || message[i - 1] !== CR)) extra++
    else if (b === CR && message[i + 1] !== LF) extra++
  }
  const last = message[message.length - 1]
  const needsEnd = message.length > 0 && last !== LF && last !== CR
  if (extra === 0 && !needsEnd) return message
  const out = new Uint8Array(message.length + extra + (needsEnd ? 2 : 0))
  let o = 0
  for (let i = 0; i < message.length; i++) {
    const b = message[i]!
    if (b === LF && (i === 0 || message[i - 1] !== CR)) {
      out[o++] = CR
      out[o++] = LF
    } else if (b === CR && message[i + 1] !== LF) {
      out[o++] = CR
      out[o++] = LF
    } else {
      out[o++] = b
    }
  }
  if (needsEnd) {
    out[o++] = CR
    out[o++] = LF
  }
  return out
}

/**
 * The DATA payload of a normalised message: a dot at the start of any line doubled (RFC 5321 §4.5.2), then the
 * terminating `.` line.
 */
export const stuff = (normalized: Uint8Array): Uint8Array => {
  let dots = 0
  for (let i = 0; i < normalized.length; i++) {
    if (normalized[i] === DOT && (i === 0 || normalized[i - 1] === LF)) dots++
  }
  const out = new Uint8Array(normalized.length + dots + 3)
  let o = 0
  for (let i = 0; i < normalized.length; i++) {
    const b = normalized[i]!
    if (b === DOT && (i === 0 || normalized[i - 1] === LF)) out[o++] = DOT
    out[o++] = b
  }
  out[o++] = DOT
  out[o++] = CR
  out[o++] = LF
  return out
}

/** Any byte with the high bit set: the body needs `BODY=8BITMIME` (RFC 6152). */
export const has8Bit = (message: Uint8Array): boolean => {
  for (let i = 0; i < message.length; i++) if (message[i]! >= 0x80) return true
  return false
}

/** Any non-ASCII byte in the header section (up to the first empty line): it needs SMTPUTF8 (RFC 6532). */
export const headerHas8Bit = (message: Uint8Array): boolean => {
  for (let i = 0; i < message.length; i++) {
    const b = message[i]!
    if (b >= 0x80) return true
    // an empty line ends the header section: LF LF, or CRLF CRLF
    if (b === LF && (message[i + 1] === LF || (message[i + 1] === CR && message[i + 2] === LF))) return false
    if (i === 0 && (b === LF || (b === CR && message[1] === LF))) return false
  }
  return false
}
