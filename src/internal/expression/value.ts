/**
 * Values of the expression language and Stalwart's conversions between them (`crates/common/src/expr/variable.rs`).
 * Stalwart has distinct integer and float variants; here both are JavaScript numbers, which agrees with Stalwart for
 * every value a configuration meets (integers below 2^53).
 */

/**
 * A bare word with a fixed meaning, such as `ipv6_only` or `require`.
 *
 * @since 0.1.0
 */
export class Constant {
  constructor(readonly name: string) {}
  toString(): string {
    return this.name
  }
  toJSON(): string {
    return this.name
  }
}

/**
 * What an expression evaluates to. Booleans are the integers 1 and 0, as in Stalwart.
 *
 * @since 0.1.0
 */
export type Value = string | number | ReadonlyArray<Value> | Constant

// Stalwart's `ExpressionConstant`, in its declaration order: the order is what `<` compares between two constants.
export const CONSTANT_NAMES: ReadonlyArray<string> = [
  "relaxed",
  "strict",
  "disable",
  "optional",
  "require",
  "ipv4_only",
  "ipv6_only",
  "ipv6_then_ipv4",
  "ipv4_then_ipv6",
  "hourly",
  "daily",
  "weekly",
  "login",
  "plain",
  "xoauth2",
  "oauthbearer",
  "mixer",
  "stanag4406",
  "nsep"
]

// Spellings that Stalwart v0.12 accepted for the TLS settings; they compile to the canonical constant so a v0.12
// configuration keeps its meaning.
export const CONSTANT_ALIASES: Readonly<Record<string, string>> = {
  required: "require",
  disabled: "disable",
  none: "disable"
}

const constantIds = new Map(CONSTANT_NAMES.map((name, id) => [name, id]))

export const isArray = (v: Value): v is ReadonlyArray<Value> => Array.isArray(v)

/** Stalwart's `to_bool`: NaN is true because it is not 0. */
export const toBool = (v: Value): boolean => {
  if (typeof v === "number") return v !== 0
  if (typeof v === "string") return v.length > 0
  if (isArray(v)) return v.length > 0
  return true
}

export const bool = (b: boolean): number => (b ? 1 : 0)

/** Only the empty string is "empty" to Stalwart; 0 and constants are not. */
export const isEmptyValue = (v: Value): boolean => v === ""

/**
 * Rust's `Display` for f64 never uses an exponent and spells infinities `inf`; JavaScript's `String` does both, so
 * text built from numbers would differ without this.
 */
export const formatNumber = (n: number): string => {
  if (Number.isNaN(n)) return "NaN"
  if (n === Infinity) return "inf"
  if (n === -Infinity) return "-inf"
  if (n === 0) return "0"
  const text = String(n)
  const e = text.indexOf("e")
  if (e < 0) return text
  const negative = n < 0
  const mantissa = text.slice(negative ? 1 : 0, e)
  const exponent = Number(text.slice(e + 1))
  const dot = mantissa.indexOf(".")
  const digits = dot < 0 ? mantissa : mantissa.slice(0, dot) + mantissa.slice(dot + 1)
  const pointAt = (dot < 0 ? mantissa.length : dot) + exponent
  const body = pointAt <= 0
    ? "0." + "0".repeat(-pointAt) + digits
    : pointAt >= digits.length
    ? digits + "0".repeat(pointAt - digits.length)
    : digits.slice(0, pointAt) + "." + digits.slice(pointAt)
  return (negative ? "-" : "") + body
}

/**
 * Stalwart's `to_str`: arrays become their items joined by CRLF, nested arrays contribute nothing, and a separator
 * is only written once some text has been.
 */
export const toStr = (v: Value): string => {
  if (typeof v === "string") return v
  if (typeof v === "number") return formatNumber(v)
  if (isArray(v)) {
    let out = ""
    for (const item of v) {
      if (out.length > 0) out += "\r\n"
      if (!isArray(item)) out += toStr(item)
    }
    return out
  }
  return v.name
}

const INTEGER = /^[+-]?\d+$/
const FLOAT = /^[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)$/i
const I64_MAX = 9223372036854775807n
const I64_MIN = -9223372036854775808n

/** Rust's `str::parse::<i64>()`. */
export const parseI64 = (s: string): number | undefined => {
  if (!INTEGER.test(s)) return undefined
  const n = BigInt(s)
  return n > I64_MAX || n < I64_MIN ? undefined : Number(n)
}

/** Rust's `str::parse::<f64>()`, which also reads `inf` and `nan`. */
export const parseF64 = (s: string): number | undefined => {
  if (!FLOAT.test(s)) return undefined
  const body = s.replace(/^[+-]/, "").toLowerCase()
  const sign = s.startsWith("-") ? -1 : 1
  if (body === "inf" || body === "infinity") return sign * Infinity
  if (body === "nan") return NaN
  return Number(s)
}

/** Stalwart's `parse_number`: what arithmetic sees of a non-number. An array is 1 when empty (sic). */
export const parseNumber = (v: Value): number => {
  if (typeof v === "number") return v
  if (typeof v === "string") return v === "" ? 0 : parseI64(v) ?? parseF64(v) ?? 0
  if (isArray(v)) return v.length === 0 ? 1 : 0
  return 0
}

/** Rust's float-to-integer `as` cast, which saturates and maps NaN to 0. */
const saturate = (n: number, min: number, max: number): number =>
  Number.isNaN(n) ? 0 : Math.min(max, Math.max(min, Math.trunc(n)))

/** Stalwart's `to_integer`. */
export const toInteger = (v: Value): number | undefined => {
  if (typeof v === "number") return saturate(v, -(2 ** 63), 2 ** 63)
  if (typeof v === "string" && v !== "") return parseI64(v)
  return undefined
}

/**
 * Stalwart's `to_usize`. A negative integer wraps to a huge index (out of range), while a negative float saturates to
 * 0; integers and floats are one type here, so "integer" means integer-valued.
 */
export const toUsize = (v: Value): number | undefined => {
  if (typeof v === "number") {
    if (Number.isInteger(v)) return v < 0 ? Number.MAX_SAFE_INTEGER : v
    return saturate(v, 0, Number.MAX_SAFE_INTEGER)
  }
  if (typeof v === "string" && /^\+?\d+$/.test(v)) return Number(v)
  return undefined
}

/** Stalwart's `into_array`: a scalar is a one-item list unless it is the empty string. */
export const intoArray = (v: Value): ReadonlyArray<Value> => (isArray(v) ? v : v === "" ? [] : [v])

/** Stalwart's `PartialEq`: numbers meet strings through `parse_number`; a constant equals nothing, not even itself. */
export const equals = (a: Value, b: Value): boolean => {
  if (typeof a === "number") {
    if (typeof b === "number") return a === b
    if (typeof b === "string") return a === parseNumber(b)
    return false
  }
  if (typeof a === "string") {
    if (typeof b === "string") return a === b
    if (typeof b === "number") return parseNumber(a) === b
    return false
  }
  if (isArray(a)) {
    if (!isArray(b) || a.length !== b.length) return false
    for (let i = 0; i < a.length; i++) if (!equals(a[i]!, b[i]!)) return false
    return true
  }
  return false
}

const sign = (a: number, b: number): -1 | 0 | 1 | undefined =>
  a < b ? -1 : a > b ? 1 : a === b ? 0 : undefined

/** Rust compares `str` by UTF-8 bytes, which is code-point order; JavaScript's `<` compares UTF-16 units. */
const compareStrings = (a: string, b: string): -1 | 0 | 1 => {
  if (a === b) return 0
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i)!
    const y = b.codePointAt(i)!
    if (x !== y) return x < y ? -1 : 1
    if (x > 0xffff) i++
  }
  return a.length < b.length ? -1 : 1
}

/**
 * Stalwart's `PartialOrd`: `undefined` where Rust answers `None` (NaN), which makes every comparison false. Mixed
 * kinds follow its fixed ranking: strings and arrays above everything else, constants and numbers below.
 */
export const compare = (a: Value, b: Value): -1 | 0 | 1 | undefined => {
  if (typeof a === "number") {
    if (typeof b === "number") return sign(a, b)
    if (typeof b === "string") return sign(a, parseNumber(b))
    return -1
  }
  if (typeof a === "string") {
    if (typeof b === "string") return compareStrings(a, b)
    if (typeof b === "number") return sign(parseNumber(a), b)
    return 1
  }
  if (isArray(a)) {
    if (!isArray(b)) return 1
    const n = Math.min(a.length, b.length)
    for (let i = 0; i < n; i++) {
      const c = compare(a[i]!, b[i]!)
      if (c !== 0) return c
    }
    return sign(a.length, b.length)
  }
  if (b instanceof Constant) return sign(constantIds.get(a.name) ?? -1, constantIds.get(b.name) ?? -1)
  return -1
}

/**
 * Variables and lookup tables come from callers that TypeScript cannot police (TOML, JSON): anything that is not a
 * Value is read the way TOML would mean it, so evaluation cannot meet a type it does not handle.
 */
export const normalize = (v: unknown): Value => {
  switch (typeof v) {
    case "string":
    case "number":
      return v
    case "boolean":
      return v ? 1 : 0
    case "bigint":
      return Number(v)
    case "object":
      if (v === null) return ""
      if (v instanceof Constant) return v
      if (Array.isArray(v)) return v.every(isValue) ? v : v.map(normalize)
      if (v instanceof Date) return v.toISOString()
      return ""
    default:
      return ""
  }
}

const isValue = (v: unknown): boolean =>
  typeof v === "string" || typeof v === "number" || v instanceof Constant || (Array.isArray(v) && v.every(isValue))
