/**
 * The EHLO keywords the transport acts on, read from the EHLO reply.
 *
 * @internal
 */
import type { Capabilities } from "../../SmtpSession.js"
import type { Reply } from "../../SmtpReply.js"


/** What a server that answered HELO offers: nothing beyond RFC 5321's base. */
export const none: Capabilities = {
  size: null,
  eightBitMime: false,
  smtpUtf8: false,
  pipelining: false,
  startTls: false,
  dsn: false,
  chunking: false,
  requireTls: false,
  enhancedStatusCodes: false,
  auth: [],
  keywords: []
}

/**
 * The EHLO reply's lines after the first (RFC 5321 §4.1.1.1): `KEYWORD [params]`, keywords case-insensitive.
 * A malformed `SIZE` parameter counts as SIZE without a declared limit.
 */
export const fromEhlo = (reply: Reply): Capabilities => {
  const keywords = reply.lines.slice(1).map((line) => line.trim()).filter((line) => line.length > 0)
  const result: { -readonly [K in keyof Capabilities]: Capabilities[K] } = { ...none, keywords }
  for (const line of keywords) {
    const [keyword = "", ...params] = line.split(/\s+/)
    switch (keyword.toUpperCase()) {
      case "SIZE": {
        const limit = params[0] !== undefined && /^[0-9]{1,15}$/.test(params[0]) ? Number(params[0]) : 0
        result.size = limit
        break
      }
      case "8BITMIME":
        result.eightBitMime = true
        break
      case "SMTPUTF8":
        result.smtpUtf8 = true
        break
      case "PIPELINING":
        result.pipelining = true
        break
      case "STARTTLS":
        result.startTls = true
        break
      case "DSN":
        result.dsn = true
        break
      case "CHUNKING":
        result.chunking = true
        break
      case "REQUIRETLS":
        result.requireTls = true
        break
      case "ENHANCEDSTATUSCODES":
        result.enhancedStatusCodes = true
        break
      case "AUTH":
        // Several AUTH lines add up; mechanism names are case-insensitive (RFC 4954 §3).
        result.auth = [...result.auth, ...params.map((m) => m.toUpperCase()).filter((m) => !result.auth.includes(m))]
        break
    }
  }
  return result
}
