/**
 * Stalwart's operators on values (`op_add`, `op_subtract`, … in `crates/common/src/expr/variable.rs`).
 */
import { bool, compare, Constant, equals, formatNumber, isArray, parseNumber, toBool, type Value } from "./value.js"

/** The operators after lexing: the aliases `=`, `=>`, `=<`, `&`, `|` are already mapped to these. */
export type BinaryOp = "*" | "/" | "+" | "-" | ">" | ">=" | "<" | "<=" | "==" | "!=" | "^" | "&&" | "||"

/** Higher binds tighter; every level is left-associative. */
export const PRECEDENCE: Readonly<Record<BinaryOp, number>> = {
  "*": 7,
  "/": 7,
  "+": 6,
  "-": 6,
  ">": 5,
  ">=": 5,
  "<": 5,
  "<=": 5,
  "==": 4,
  "!=": 4,
  "^": 3,
  "&&": 2,
  "||": 1
}

// -0 only shows up as a JavaScript artefact of integer arithmetic; Stalwart's integers have no negative zero.
const num = (n: number): number => (n === 0 ? 0 : n)

// `+` concatenates through Display, where (unlike `to_str`) a constant shows its name and an array never appears.
const display = (v: Value): string =>
  typeof v === "string" ? v : typeof v === "number" ? formatNumber(v) : v instanceof Constant ? v.name : ""

export const add = (a: Value, b: Value): Value => {
  if (typeof a === "number" && typeof b === "number") return num(a + b)
  if (isArray(a)) return isArray(b) ? [...a, ...b] : [...a, b]
  if (isArray(b)) return [a, ...b]
  if (typeof a === "string") return a === "" ? b : a + display(b)
  if (typeof b === "string") return b === "" ? a : display(a) + b
  // A constant is the identity of `+` (Stalwart's last two match arms).
  return b instanceof Constant ? a : b
}

export const subtract = (a: Value, b: Value): Value => {
  // With an array on either side, Stalwart removes the other operand from it (so `1 - [1, 2]` is `[2]`).
  if (isArray(a)) return a.filter((item) => !equals(item, b))
  if (isArray(b)) return b.filter((item) => !equals(item, a))
  return num(parseNumber(a) - parseNumber(b))
}

export const multiply = (a: Value, b: Value): Value => num(parseNumber(a) * parseNumber(b))

/** Always a float in Stalwart; dividing by zero gives 0 rather than an infinity. */
export const divide = (a: Value, b: Value): Value => {
  const d = parseNumber(b)
  return d === 0 ? 0 : num(parseNumber(a) / d)
}

export const negate = (v: Value): Value => num(-parseNumber(v))

export const not = (v: Value): Value => bool(!toBool(v))

/** Operators that always evaluate both sides; `&&` and `||` short-circuit and are handled by the compiler. */
export const strict: Readonly<Record<Exclude<BinaryOp, "&&" | "||">, (a: Value, b: Value) => Value>> = {
  "*": multiply,
  "/": divide,
  "+": add,
  "-": subtract,
  ">": (a, b) => bool(compare(a, b) === 1),
  ">=": (a, b) => {
    const c = compare(a, b)
    return bool(c === 1 || c === 0)
  },
  "<": (a, b) => bool(compare(a, b) === -1),
  "<=": (a, b) => {
    const c = compare(a, b)
    return bool(c === -1 || c === 0)
  },
  "==": (a, b) => bool(equals(a, b)),
  "!=": (a, b) => bool(!equals(a, b)),
  "^": (a, b) => bool(toBool(a) !== toBool(b))
}
