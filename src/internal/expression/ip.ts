/**
 * IP address parsing and CIDR matching with the semantics of Rust's `IpAddr::from_str` and Stalwart's
 * `IpAddrOrMask` (`crates/registry/src/types/ipmask.rs`).
 */
import { isIPv4, isIPv6 } from "node:net"

export interface Ip {
  readonly family: 4 | 6
  readonly bytes: ReadonlyArray<number>
}

const v4Bytes = (text: string): Array<number> => text.split(".").map(Number)

const v6Bytes = (text: string): Array<number> => {
  // An embedded IPv4 tail (`::ffff:192.0.2.1`) is two ordinary groups written differently.
  const lastColon = text.lastIndexOf(":")
  const tail = text.slice(lastColon + 1)
  if (tail.includes(".")) {
    const [a, b, c, d] = v4Bytes(tail)
    text = text.slice(0, lastColon + 1) + ((a! << 8) | b!).toString(16) + ":" + ((c! << 8) | d!).toString(16)
  }
  const groups = (part: string) => (part === "" ? [] : part.split(":").map((g) => parseInt(g, 16)))
  const gap = text.indexOf("::")
  const left = groups(gap < 0 ? text : text.slice(0, gap))
  const right = gap < 0 ? [] : groups(text.slice(gap + 2))
  const zeros = Array<number>(8 - left.length - right.length).fill(0)
  return [...left, ...zeros, ...right].flatMap((g) => [g >> 8, g & 0xff])
}

/** Rust's `IpAddr::from_str`: no surrounding spaces, no zone index, no leading zeros in IPv4 octets. */
export const parseIp = (text: string): Ip | undefined => {
  if (isIPv4(text)) return { family: 4, bytes: v4Bytes(text) }
  if (isIPv6(text) && !text.includes("%")) return { family: 6, bytes: v6Bytes(text) }
  return undefined
}

const V4_MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]

const startsWith = (bytes: ReadonlyArray<number>, prefix: ReadonlyArray<number>) =>
  prefix.every((b, i) => bytes[i] === b)

/** `::ffff:a.b.c.d` only (Rust's `to_ipv4_mapped`). */
const toIpv4Mapped = (ip: Ip): ReadonlyArray<number> | undefined =>
  startsWith(ip.bytes, V4_MAPPED_PREFIX) ? ip.bytes.slice(12) : undefined

/** Mapped or compatible `::a.b.c.d` (Rust's `to_ipv4`). */
const toIpv4 = (ip: Ip): ReadonlyArray<number> | undefined =>
  toIpv4Mapped(ip) ?? (startsWith(ip.bytes, Array<number>(12).fill(0)) ? ip.bytes.slice(12) : undefined)

const toIpv6Mapped = (ip: Ip): ReadonlyArray<number> => [...V4_MAPPED_PREFIX, ...ip.bytes]

const samePrefix = (a: ReadonlyArray<number>, b: ReadonlyArray<number>, bits: number): boolean => {
  for (let i = 0; i < a.length && bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff
    if ((a[i]! & mask) !== (b[i]! & mask)) return false
  }
  return true
}

/**
 * `ip` inside `cidr` (`192.0.2.0/24`, `2001:db8::/32`, or a single address). Stalwart only accepts prefixes of at
 * least 8 bits; anything it cannot parse matches nothing.
 */
export const inCidr = (ipText: string, cidr: string): boolean => {
  const ip = parseIp(ipText)
  if (ip === undefined) return false
  const slash = cidr.lastIndexOf("/")
  const network = parseIp((slash < 0 ? cidr : cidr.slice(0, slash)).trim())
  if (network === undefined) return false
  const maxBits = network.family === 4 ? 32 : 128
  let bits = maxBits
  if (slash >= 0) {
    const prefix = cidr.slice(slash + 1).trim()
    if (!/^\+?\d+$/.test(prefix)) return false
    bits = Number(prefix)
    if (bits < 8 || bits > maxBits) return false
  }
  const exact = bits === maxBits
  if (network.family === 4) {
    const remote = ip.family === 4 ? ip.bytes : exact ? toIpv4Mapped(ip) : toIpv4(ip)
    return remote !== undefined && samePrefix(remote, network.bytes, bits)
  }
  const remote = ip.family === 6 ? ip.bytes : toIpv6Mapped(ip)
  return samePrefix(remote, network.bytes, bits)
}
