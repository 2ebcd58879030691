/**
 * Text functions (`crates/common/src/expr/functions/text.rs`). Rust's string primitives differ from JavaScript's in
 * small ways that change results (what counts as whitespace, `len` in bytes, `split("")`), so those are spelled out.
 */
import { createHash } from "node:crypto"
import { bool, equals, isArray, toStr, toUsize, toInteger, type Value } from "./value.js"

/** Rust's `char::is_whitespace` (Unicode White_Space); unlike JavaScript's `\s` it has U+0085 and not U+FEFF. */
const WS = "\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
const LEADING_WS = new RegExp("^[" + WS + "]+")
const TRAILING_WS = new RegExp("[" + WS + "]+$")
const IS_WS = new RegExp("^[" + WS + "]$")

export const trimStart = (s: string): string => s.replace(LEADING_WS, "")
export const trimEnd = (s: string): string => s.replace(TRAILING_WS, "")
export const trim = (s: string): string => trimEnd(trimStart(s))

/**
 * Stalwart's `Variable::transform`: a text function applied to an array maps over its items (each read as text);
 * applied to anything else it works on the value read as text.
 */
export const transform = (v: Value, f: (s: string) => Value): Value =>
  isArray(v) ? v.map((item) => f(toStr(item))) : f(toStr(v))

const chars = (s: string): Array<string> => Array.from(s)

const ALPHABETIC = /\p{Alphabetic}/u
const UPPER = /\p{Uppercase}/u
const LOWER = /\p{Lowercase}/u

// ASCII-only case folding, as Rust's `eq_ignore_ascii_case`.
const asciiLower = (s: string): string => s.replace(/[A-Z]/g, (c) => c.toLowerCase())

/** Rust's `str::split`: an empty separator matches at every character boundary, both ends included. */
const splitAll = (s: string, separator: string): Array<string> =>
  separator === "" ? ["", ...chars(s), ""] : s.split(separator)

/** Rust's `str::rsplit`: matches are found from the right, which differs from a reversed `split` on overlaps. */
const rsplitAll = (s: string, separator: string): Array<string> => {
  if (separator === "") return splitAll(s, separator).reverse()
  const out: Array<string> = []
  let end = s.length
  for (;;) {
    const at = end - separator.length < 0 ? -1 : s.lastIndexOf(separator, end - separator.length)
    if (at < 0) break
    out.push(s.slice(at + separator.length, end))
    end = at
  }
  out.push(s.slice(0, end))
  return out
}

/** Rust's `splitn(limit, sep)` through repeated `split_once`, as Stalwart's `split_n` does. */
const splitN = (s: string, separator: string, count: number): Array<string> => {
  if (separator === "") {
    const pieces = splitAll(s, "")
    const limit = Math.min(count + 1, Number.MAX_SAFE_INTEGER)
    if (pieces.length <= limit) return pieces
    // The last piece is the rest of the text from where the (limit-1)th empty match left off.
    const head = pieces.slice(0, limit - 1)
    return [...head, s.slice(head.join("").length)]
  }
  const out: Array<string> = []
  let rest = s
  for (let i = 0; i < count; i++) {
    const at = rest.indexOf(separator)
    if (at < 0) break
    out.push(rest.slice(0, at))
    rest = rest.slice(at + separator.length)
  }
  out.push(rest)
  return out
}

/** Rust's `str::lines`: LF or CRLF endings, no final empty line. */
const lines = (s: string): Array<string> => {
  if (s === "") return []
  const parts = s.split("\n").map((line) => (line.endsWith("\r") ? line.slice(0, -1) : line))
  if (s.endsWith("\n")) parts.pop()
  return parts
}

type Fn = (args: ReadonlyArray<Value>) => Value

const unary = (f: (v: Value) => Value): Fn => (args) => f(args[0]!)
const binary = (f: (a: Value, b: Value) => Value): Fn => (args) => f(args[0]!, args[1]!)
const onText = (f: (s: string) => Value): Fn => unary((v) => transform(v, f))

export const TEXT_FUNCTIONS: Readonly<Record<string, { readonly arity: number; readonly call: Fn }>> = {
  trim: { arity: 1, call: onText(trim) },
  trim_start: { arity: 1, call: onText(trimStart) },
  trim_end: { arity: 1, call: onText(trimEnd) },
  // Bytes of UTF-8, as Rust's `str::len`; item count for an array.
  len: { arity: 1, call: unary((v) => (isArray(v) ? v.length : Buffer.byteLength(toStr(v), "utf8"))) },
  to_lowercase: { arity: 1, call: onText((s) => s.toLowerCase()) },
  to_uppercase: { arity: 1, call: onText((s) => s.toUpperCase()) },
  is_uppercase: {
    arity: 1,
    call: onText((s) => bool(chars(s).every((c) => !ALPHABETIC.test(c) || UPPER.test(c))))
  },
  is_lowercase: {
    arity: 1,
    call: onText((s) => bool(chars(s).every((c) => !ALPHABETIC.test(c) || LOWER.test(c))))
  },
  has_digits: { arity: 1, call: onText((s) => bool(/[0-9]/.test(s))) },
  count_spaces: { arity: 1, call: unary((v) => chars(toStr(v)).filter((c) => IS_WS.test(c)).length) },
  count_uppercase: {
    arity: 1,
    call: unary((v) => chars(toStr(v)).filter((c) => ALPHABETIC.test(c) && UPPER.test(c)).length)
  },
  count_lowercase: {
    arity: 1,
    call: unary((v) => chars(toStr(v)).filter((c) => ALPHABETIC.test(c) && LOWER.test(c)).length)
  },
  count_chars: { arity: 1, call: unary((v) => chars(toStr(v)).length) },
  split_words: {
    arity: 1,
    call: unary((v) =>
      toStr(v).split(new RegExp("[" + WS + "]+")).filter((w) => w !== "" && /^[\p{Alphabetic}\p{N}]+$/u.test(w))
    )
  },
  eq_ignore_case: { arity: 2, call: binary((a, b) => bool(asciiLower(toStr(a)) === asciiLower(toStr(b)))) },
  // On an array, `contains` looks for an equal item rather than a substring.
  contains: {
    arity: 2,
    call: binary((h, n) => bool(isArray(h) ? h.some((item) => equals(item, n)) : toStr(h).includes(toStr(n))))
  },
  contains_ignore_case: {
    arity: 2,
    call: binary((h, n) => {
      const needle = toStr(n)
      if (isArray(h)) return bool(h.some((item) => typeof item === "string" && asciiLower(item) === asciiLower(needle)))
      // Stalwart only folds case when the haystack is a string; a number is searched as is.
      if (typeof h !== "string") return bool(toStr(h).includes(needle))
      return bool(h.toLowerCase().includes(needle.toLowerCase()))
    })
  },
  starts_with: { arity: 2, call: binary((a, b) => bool(toStr(a).startsWith(toStr(b)))) },
  ends_with: { arity: 2, call: binary((a, b) => bool(toStr(a).endsWith(toStr(b)))) },
  lines: { arity: 1, call: unary((v) => (typeof v === "string" ? lines(v) : v)) },
  substring: {
    arity: 3,
    call: (args) => {
      const start = toUsize(args[1]!) ?? 0
      const count = toUsize(args[2]!) ?? 0
      return chars(toStr(args[0]!)).slice(start, start + count).join("")
    }
  },
  strip_prefix: {
    arity: 2,
    call: binary((v, p) => {
      const prefix = toStr(p)
      return transform(v, (s) => (s.startsWith(prefix) ? s.slice(prefix.length) : ""))
    })
  },
  strip_suffix: {
    arity: 2,
    call: binary((v, p) => {
      const suffix = toStr(p)
      return transform(v, (s) => (s.endsWith(suffix) ? s.slice(0, s.length - suffix.length) : ""))
    })
  },
  split: { arity: 2, call: binary((v, sep) => splitAll(toStr(v), toStr(sep))) },
  rsplit: { arity: 2, call: binary((v, sep) => rsplitAll(toStr(v), toStr(sep))) },
  split_once: {
    arity: 2,
    call: binary((v, sep) => {
      const s = toStr(v)
      const separator = toStr(sep)
      const at = s.indexOf(separator)
      return at < 0 ? "" : [s.slice(0, at), s.slice(at + separator.length)]
    })
  },
  rsplit_once: {
    arity: 2,
    call: binary((v, sep) => {
      const s = toStr(v)
      const separator = toStr(sep)
      const at = s.lastIndexOf(separator)
      return at < 0 ? "" : [s.slice(0, at), s.slice(at + separator.length)]
    })
  },
  split_n: {
    arity: 3,
    call: (args) => {
      // A negative count wraps to a huge usize in Stalwart, i.e. no limit.
      const n = toInteger(args[2]!) ?? 0
      return splitN(toStr(args[0]!), toStr(args[1]!), n < 0 ? Number.MAX_SAFE_INTEGER : n)
    }
  },
  hash: {
    arity: 2,
    call: binary((v, algorithm) => {
      const name = toStr(algorithm)
      return name === "md5" || name === "sha1" || name === "sha256" || name === "sha512"
        ? createHash(name).update(toStr(v), "utf8").digest("hex")
        : ""
    })
  }
}
