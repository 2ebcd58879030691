/**
 * The function library: Stalwart's synchronous functions (`crates/common/src/expr/functions/{array,email,misc}.rs`
 * plus `text.ts`) and `key_get` / `key_exists` over the `[lookup.<store>]` tables of the configuration file.
 * `matches` is not here: its first argument is compiled at load time, so the compiler handles it.
 */
import { inCidr, parseIp } from "./ip.js"
import { TEXT_FUNCTIONS } from "./text.js"
import {
  bool,
  compare,
  equals,
  intoArray,
  isArray,
  isEmptyValue,
  normalize,
  toBool,
  toInteger,
  toStr,
  type Value
} from "./value.js"

export type Lookup = { readonly [store: string]: { readonly [key: string]: Value } }

export interface FunctionDef {
  readonly arity: number
  readonly call: (args: ReadonlyArray<Value>, lookup: Lookup) => Value
}

const hasOwn = (o: object, key: string): boolean => Object.prototype.hasOwnProperty.call(o, key)

/** A store is a table the file defines; `constructor` or `__proto__` must not reach JavaScript's own properties. */
const store = (lookup: Lookup, name: Value): { readonly [key: string]: Value } | undefined => {
  const key = toStr(name)
  const table = hasOwn(lookup, key) ? lookup[key] : undefined
  return typeof table === "object" && table !== null ? table : undefined
}

/** Stalwart's `is_email`: a byte scanner, not an RFC 5322 parser; kept as is so the same addresses pass. */
const isEmail = (text: string): boolean => {
  let last = ""
  let inQuote = false
  let atCount = 0
  let dotCount = 0
  let localLength = 0
  let length = 0
  for (const c of Buffer.from(text, "utf8").toString("latin1")) {
    if (/[0-9a-zA-Z!#$%&'*+\-\/=?^_`{|}~]/.test(c) || c.charCodeAt(0) >= 0x7f) {
      length++
    } else if (c === "." && !inQuote) {
      if (last === "." || last === "@" || length === 0) return false
      length++
      if (atCount === 1) dotCount++
    } else if (c === "@" && !inQuote) {
      atCount++
      localLength = length
      length = 0
    } else if ((c === ">" || c === ":" || c === "," || c === " ") && inQuote) {
      length++
    } else if (c === "\"" && (!inQuote || last !== "\\")) {
      inQuote = !inQuote
    } else if (c === "\\" && inQuote && last !== "\\") {
      // an escape inside quotes
    } else if (!inQuote) {
      return false
    }
    last = c
  }
  return atCount === 1 && dotCount > 0 && localLength > 0 && length > 0
}

const emailPart = (value: Value, part: Value): Value => {
  const which = toStr(part)
  const pick = (address: string): Value => {
    const at = address.lastIndexOf("@")
    if (at < 0) return ""
    return which === "local" ? address.slice(0, at).trim() : which === "domain" ? address.slice(at + 1).trim() : ""
  }
  return isArray(value) ? value.map((item) => pick(toStr(item))) : pick(toStr(value))
}

const sort = (value: Value, ascending: boolean): Value => {
  // Rust's `Ord` for values: `partial_cmp`, with "incomparable" (NaN) as greater.
  const order = (a: Value, b: Value): number => compare(a, b) ?? 1
  return [...intoArray(value)].sort(ascending ? order : (a, b) => order(b, a))
}

const dedup = (value: Value): Value => {
  const out: Array<Value> = []
  for (const item of intoArray(value)) if (!out.some((kept) => equals(kept, item))) out.push(item)
  return out
}

const isIntersect = (a: Value, b: Value): Value => {
  if (isArray(a) && isArray(b)) return bool(a.some((x) => b.some((y) => equals(y, x))))
  if (isArray(a)) return bool(a.some((x) => equals(x, b)))
  if (isArray(b)) return bool(b.some((x) => equals(x, a)))
  return 0
}

const bitAnd = (a: Value, b: Value): Value => {
  const x = toInteger(a)
  const y = toInteger(b)
  return x === undefined || y === undefined ? 0 : Number(BigInt.asIntN(64, BigInt(x) & BigInt(y)))
}

const ipOf = (v: Value) => parseIp(toStr(v))

/** The labels of the PTR name without the `in-addr.arpa` / `ip6.arpa` suffix, as mail-auth's `to_reverse_name`. */
const reverseName = (v: Value): Value => {
  const ip = ipOf(v)
  if (ip === undefined) return ""
  if (ip.family === 4) return [...ip.bytes].reverse().join(".")
  return ip.bytes.flatMap((b) => [(b >> 4).toString(16), (b & 0xf).toString(16)]).reverse().join(".")
}

const fixed = <A extends ReadonlyArray<Value>>(arity: A["length"], f: (...args: A) => Value): FunctionDef => ({
  arity,
  call: (args) => f(...(args as unknown as A))
})

const text: Record<string, FunctionDef> = Object.fromEntries(
  Object.entries(TEXT_FUNCTIONS).map(([name, def]) => [name, { arity: def.arity, call: (args) => def.call(args) }])
)

export const FUNCTIONS: ReadonlyMap<string, FunctionDef> = new Map(Object.entries({
  ...text,
  count: fixed(1, (v: Value) => (isArray(v) ? v.length : bool(!isEmptyValue(v)))),
  sort: fixed(2, (v: Value, ascending: Value) => sort(v, toBool(ascending))),
  dedup: fixed(1, dedup),
  winnow: fixed(1, (v: Value) => (isArray(v) ? v.filter((item) => !isEmptyValue(item)) : v)),
  is_intersect: fixed(2, isIntersect),
  is_email: fixed(1, (v: Value) => bool(isEmail(toStr(v)))),
  email_part: fixed(2, emailPart),
  is_empty: fixed(1, (v: Value) => bool(isArray(v) ? v.length === 0 : v === "")),
  is_number: fixed(1, (v: Value) => bool(typeof v === "number")),
  bit_and: fixed(2, bitAnd),
  is_ip_addr: fixed(1, (v: Value) => bool(ipOf(v) !== undefined)),
  is_ipv4_addr: fixed(1, (v: Value) => bool(ipOf(v)?.family === 4)),
  is_ipv6_addr: fixed(1, (v: Value) => bool(ipOf(v)?.family === 6)),
  ip_reverse_name: fixed(1, reverseName),
  is_ip_in_cidr: fixed(2, (ip: Value, cidr: Value) => bool(inCidr(toStr(ip), toStr(cidr)))),
  // Both branches are already evaluated, as in Stalwart: `if_then` is a function, not a control structure.
  if_then: fixed(3, (condition: Value, then: Value, otherwise: Value) => (toBool(condition) ? then : otherwise)),
  // An unknown store reads as "" (Stalwart HEAD); a missing key as "".
  key_get: {
    arity: 2,
    call: (args, lookup) => {
      const table = store(lookup, args[0]!)
      const key = toStr(args[1]!)
      return table !== undefined && hasOwn(table, key) ? normalize(table[key]) : ""
    }
  },
  key_exists: {
    arity: 2,
    call: (args, lookup) => {
      const table = store(lookup, args[0]!)
      return table === undefined ? "" : bool(hasOwn(table, toStr(args[1]!)))
    }
  }
} satisfies Record<string, FunctionDef>))

/** Stalwart functions that need a server this library does not have (directory, stores, DNS, SQL, metrics). */
export const UNSUPPORTED_FUNCTIONS: ReadonlySet<string> = new Set([
  "is_local_domain",
  "is_local_address",
  "key_set",
  "counter_incr",
  "counter_get",
  "dns_query",
  "sql_query",
  "config_get",
  "system",
  "metric"
])
