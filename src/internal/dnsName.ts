/**
 * The one module that says what a host name is and how names are spelled, for every stage: DNS keys and logs, the
 * MX plan, envelope domains, MTA-STS patterns, the EHLO name and the configuration's host-name keys.
 *
 * DNS names compare case-insensitively and a trailing dot only marks them as fully qualified (RFC 4343, RFC 1034
 * §3.1), so every key, log entry and report value uses one spelling: lowercase, no trailing dot.
 *
 * @internal
 */
import { isIP } from "node:net"
import { domainToASCII } from "node:url"

/**
 * Lowercase, trimmed, without the trailing dots.
 *
 * @internal
 */
export const normalize = (name: string): string => name.trim().toLowerCase().replace(/\.+$/, "")

/**
 * The root name, which an MX exchange uses to say "no mail here" (RFC 7505). Node renders it as "".
 *
 * @internal
 */
export const isRoot = (name: string): boolean => normalize(name) === ""

/** RFC 1035 §2.3.4, counted in characters of the A-label form. */
const MAX_HOSTNAME = 255
const MAX_LABEL = 63

/**
 * Why a string is not a host name (RFC 1123 §2.1: letters, digits and hyphens in labels of 1 to 63 characters, no
 * hyphen at either end, at most 255 characters, no trailing dot), or `null` when it is one. The sentence reads after
 * "not a valid host name because", e.g. "it contains white space".
 *
 * @internal
 */
export const hostnameProblem = (name: string): string | null => {
  if (isPlainHostname(name)) return null
  if (name === "") return "it is empty"
  // eslint-disable-next-line no-control-regex
  if (/[\r\n\u0000]/.test(name)) return "it contains CR, LF or NUL"
  if (/\s/.test(name)) return "it contains white space"
  if (name.length > MAX_HOSTNAME) return `it is longer than ${MAX_HOSTNAME} characters`
  const bad = /[^A-Za-z0-9.-]/.exec(name)
  if (bad !== null) return `it contains the character ${JSON.stringify(bad[0])}`
  for (const label of name.split(".")) {
    if (label === "") return "it has an empty label (leading, trailing or double dot)"
    if (label.length > MAX_LABEL) return `its label "${label.slice(0, 20)}…" is longer than ${MAX_LABEL} characters`
    if (label.startsWith("-") || label.endsWith("-")) return `its label "${label}" starts or ends with a hyphen`
  }
  return null
}

/**
 * The rules of `hostnameProblem` in one pass over the characters, for the common case of a good name (a delivery
 * checks its sender's and each recipient's domain): `false` sends the name to the checks that say what is wrong.
 */
const isPlainHostname = (name: string): boolean => {
  const length = name.length
  if (length === 0 || length > MAX_HOSTNAME) return false
  let labelStart = 0
  for (let i = 0; i <= length; i++) {
    const c = i === length ? 0x2e : name.charCodeAt(i)
    if (c === 0x2e) {
      const labelLength = i - labelStart
      if (labelLength === 0 || labelLength > MAX_LABEL) return false
      if (name.charCodeAt(labelStart) === 0x2d || name.charCodeAt(i - 1) === 0x2d) return false
      labelStart = i + 1
    } else if (
      !((c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d)
    ) return false
  }
  return true
}

/**
 * A host name, fully qualified (one trailing dot) or not.
 *
 * @internal
 */
export const isHostname = (name: string): boolean =>
  hostnameProblem(name.endsWith(".") ? name.slice(0, -1) : name) === null

const LDH_LOWER = /^[a-z0-9.-]+$/
const NUMBER_LABEL = /^(?:[0-9]*|0x[0-9a-f]*)$/

/** The last label (a trailing dot left out) is empty, decimal or hexadecimal: WHATWG's IPv4 number forms. */
const endsInNumber = (name: string): boolean => {
  const end = name.endsWith(".") ? name.length - 1 : name.length
  return NUMBER_LABEL.test(name.slice(name.lastIndexOf(".", end - 1) + 1, end))
}

/**
 * The A-label form of a name (IDNA, UTS #46, lowercased), `null` when it has none.
 *
 * @internal
 */
export const toAscii = (name: string): string | null => {
  // Lowercase letters, digits, hyphens and dots with no `xn--` label are their own A-label form under UTS #46 (what
  // domainToASCII would return): the common case, without the native call. Not a name whose last label is a number
  // (WHATWG's "ends in a number"): domainToASCII reads that as an IPv4 address.
  if (LDH_LOWER.test(name) && !name.includes("xn--") && !endsInNumber(name)) return name
  const ascii = domainToASCII(name)
  return ascii === "" ? null : ascii
}

/**
 * The address of an address literal (RFC 5321 §4.1.3): `[192.0.2.1]` → "192.0.2.1", `[IPv6:2001:DB8::1]` →
 * "2001:db8::1"; `null` for a bracketed text that is neither; `undefined` for a name that is no literal.
 *
 * @internal
 */
export const addressLiteral = (domain: string): string | null | undefined => {
  if (!domain.startsWith("[")) return undefined
  if (!domain.endsWith("]")) return null
  const inner = domain.slice(1, -1)
  const v6 = /^ipv6:/i.test(inner)
  const address = v6 ? inner.slice(5) : inner
  return isIP(address) === (v6 ? 6 : 4) ? address.toLowerCase() : null
}
