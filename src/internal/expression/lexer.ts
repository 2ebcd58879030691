/**
 * The tokenizer. It follows Stalwart's `Tokenizer::next` (`crates/common/src/expr/tokenizer.rs`): words are runs of
 * `A–Z a–z 0–9 _ $ .`, strings are quoted with `'` or `"`, and operators have the same aliases. Words are
 * classified (number, variable, function, …) by the parser, which knows what may follow them.
 */
import type { BinaryOp } from "./operators.js"

export type Token =
  | { readonly kind: "word"; readonly text: string; readonly column: number }
  /** `raw` is the text between the quotes as written: `matches()` takes its pattern verbatim. */
  | { readonly kind: "string"; readonly value: string; readonly raw: string; readonly column: number }
  | { readonly kind: "op"; readonly op: BinaryOp | "!"; readonly column: number }
  | { readonly kind: "(" | ")" | "[" | "]" | "," | "end"; readonly column: number }

/** Compile errors carry a 1-based column into the source. */
export class CompileFailure {
  constructor(readonly message: string, readonly column: number) {}
}

const isWordChar = (c: string): boolean => /[A-Za-z0-9_$.]/.test(c)

// Stalwart only skips space, CR and LF; a tab is accepted too because TOML multi-line strings invite it.
const isSpace = (c: string): boolean => c === " " || c === "\r" || c === "\n" || c === "\t"

const ESCAPES: Readonly<Record<string, string>> = { n: "\n", r: "\r", t: "\t" }

const readString = (source: string, start: number): { value: string; raw: string; end: number } => {
  const quote = source[start]!
  let value = ""
  let i = start + 1
  while (i < source.length) {
    const c = source[i]!
    if (c === quote) return { value, raw: source.slice(start + 1, i), end: i + 1 }
    if (c === "\\" && i + 1 < source.length) {
      // `\x` is `x` for any other character, so `\'` and `\\` work as in most languages.
      const next = source[i + 1]!
      value += ESCAPES[next] ?? next
      i += 2
    } else {
      value += c
      i++
    }
  }
  throw new CompileFailure("unterminated string: the closing " + quote + " is missing", start + 1)
}

/**
 * `=` alone is equality; `=>` and `=<` are Stalwart's spellings of `>=` and `<=`. Stalwart ≤ v0.12 swallowed the
 * character after a single `=`; current Stalwart does not, and neither does this lexer.
 */
const readOperator = (source: string, i: number): { op: BinaryOp | "!"; length: number } | undefined => {
  const c = source[i]
  const next = source[i + 1]
  switch (c) {
    case "*":
    case "/":
    case "+":
    case "-":
    case "^":
      return { op: c, length: 1 }
    case "&":
      return { op: "&&", length: next === "&" ? 2 : 1 }
    case "|":
      return { op: "||", length: next === "|" ? 2 : 1 }
    case "!":
      return next === "=" ? { op: "!=", length: 2 } : { op: "!", length: 1 }
    case "=":
      return next === "="
        ? { op: "==", length: 2 }
        : next === ">"
        ? { op: ">=", length: 2 }
        : next === "<"
        ? { op: "<=", length: 2 }
        : { op: "==", length: 1 }
    case ">":
      return next === "=" ? { op: ">=", length: 2 } : { op: ">", length: 1 }
    case "<":
      return next === "=" ? { op: "<=", length: 2 } : { op: "<", length: 1 }
    default:
      return undefined
  }
}

/** Throws `CompileFailure`; the caller turns it into a value. */
export const tokenize = (source: string): ReadonlyArray<Token> => {
  const tokens: Array<Token> = []
  let i = 0
  while (i < source.length) {
    const c = source[i]!
    const column = i + 1
    if (isSpace(c)) {
      i++
    } else if (isWordChar(c)) {
      let end = i + 1
      while (end < source.length && isWordChar(source[end]!)) end++
      tokens.push({ kind: "word", text: source.slice(i, end), column })
      i = end
    } else if (c === "'" || c === "\"") {
      const { end, raw, value } = readString(source, i)
      tokens.push({ kind: "string", value, raw, column })
      i = end
    } else if (c === "(" || c === ")" || c === "[" || c === "]" || c === ",") {
      tokens.push({ kind: c, column })
      i++
    } else {
      const op = readOperator(source, i)
      if (op === undefined) {
        // Stalwart silently ends the expression at `}`; here it is an error like any other stray character.
        const shown = JSON.stringify(String.fromCodePoint(source.codePointAt(i)!))
        throw new CompileFailure("unexpected character " + shown, column)
      }
      tokens.push({ kind: "op", op: op.op, column })
      i += op.length
    }
  }
  tokens.push({ kind: "end", column: source.length + 1 })
  return tokens
}
