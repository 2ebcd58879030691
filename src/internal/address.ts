import * as dnsName from "./dnsName.js"

/**
 * An envelope address checked for what may safely go on the wire inside `MAIL FROM:<…>` / `RCPT TO:<…>`.
 * Spaces, controls and angle brackets are refused outright: a quoted local part with a space is legal in RFC 5321
 * but is the classic vehicle for command injection, and no mailbox a transport is asked to reach needs one.
 */
export interface Address {
  readonly address: string
  readonly local: string
  /** The domain as written (lowercased), or the address literal with its brackets. */
  readonly domain: string
  /** The name to resolve (A-labels), or the IP of an address literal. */
  readonly target: string
  readonly literal: boolean
  /** An address that needs SMTPUTF8 (RFC 6531) to be sent as it is. */
  readonly utf8: boolean
}

// RFC 5321 §4.5.3.1
const MAX_LOCAL = 64
const MAX_DOMAIN = 255
const MAX_PATH = 256

// eslint-disable-next-line no-control-regex
const FORBIDDEN = /[\u0000-\u0020\u007f<>]/

/** Parses an address, or says in one sentence why it cannot be sent. */
export const parse = (address: string): Address | string => {
  if (FORBIDDEN.test(address)) {
    return "contains a space, a control character (CR, LF, NUL, …) or an angle bracket"
  }
  if (Buffer.byteLength(address) > MAX_PATH - 2) return `is longer than ${MAX_PATH - 2} octets`
  const at = address.lastIndexOf("@")
  if (at <= 0 || at === address.length - 1) return "is not of the form local@domain"
  const local = address.slice(0, at)
  const domain = address.slice(at + 1).toLowerCase()
  if (Buffer.byteLength(local) > MAX_LOCAL) return `has a local part longer than ${MAX_LOCAL} octets`
  const utf8 = !/^[\x21-\x7e]*$/.test(address)
  const literal = dnsName.addressLiteral(domain)
  if (literal === null) return "has an address literal that is not an IPv4 or IPv6 address"
  if (literal !== undefined) return { address, local, domain, target: literal, literal: true, utf8 }
  if (Buffer.byteLength(domain) > MAX_DOMAIN) return `has a domain longer than ${MAX_DOMAIN} octets`
  const ascii = dnsName.toAscii(domain)
  if (ascii === null || !dnsName.isHostname(ascii)) return "has a domain that is not a valid host name"
  return { address, local, domain, target: ascii, literal: false, utf8 }
}
