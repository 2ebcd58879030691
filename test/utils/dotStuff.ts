import { normalize, stuff } from "../../src/internal/session/dotStuff.js"

// The dot-stuffing module, with what only the tests need: the whole DATA payload in one call, and the receiver's side.
export * from "../../src/internal/session/dotStuff.js"

const CR = 0x0d
const LF = 0x0a
const DOT = 0x2e

/** `normalize` then `stuff`. */
export const toData = (message: Uint8Array): Uint8Array => stuff(normalize(message))

/**
 * What a receiver makes of a DATA payload (RFC 5321 §4.5.2): the terminator removed and one leading dot dropped
 * from every line. Only CRLF ends a line here, as at a strict receiver.
 */
export const unstuff = (payload: Uint8Array): Uint8Array => {
  const out: Array<number> = []
  let lineStart = true
  for (let i = 0; i < payload.length; i++) {
    const b = payload[i]!
    if (lineStart && b === DOT) {
      if (payload[i + 1] === CR && payload[i + 2] === LF) break
      lineStart = false
      continue
    }
    out.push(b)
    lineStart = b === LF && payload[i - 1] === CR
  }
  return Uint8Array.from(out)
}
