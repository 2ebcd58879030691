/**
 * Precedence climbing from tokens to a syntax tree. Stalwart uses a shunting-yard to RPN, which gives the same tree
 * for every well-formed expression but accepts some malformed ones (two operands in a row, a trailing operator) and
 * evaluates them to garbage; here those are compile errors with a column.
 */
import { compileRegex } from "./regex.js"
import { FUNCTIONS, UNSUPPORTED_FUNCTIONS } from "./functions.js"
import { CompileFailure, type Token, tokenize } from "./lexer.js"
import { type BinaryOp, PRECEDENCE } from "./operators.js"
import { Constant, CONSTANT_ALIASES, CONSTANT_NAMES, parseF64, parseI64, type Value } from "./value.js"

export type Node =
  | { readonly kind: "literal"; readonly value: Value; readonly raw?: string }
  | { readonly kind: "variable"; readonly name: string }
  | { readonly kind: "capture"; readonly index: number }
  | { readonly kind: "unary"; readonly op: "!" | "-"; readonly operand: Node }
  /** One precedence level, left to right: `a - b + c` is `{ first: a, rest: [-b, +c] }`. */
  | {
    readonly kind: "chain"
    readonly first: Node
    readonly rest: ReadonlyArray<{ readonly op: BinaryOp; readonly operand: Node }>
  }
  | { readonly kind: "array"; readonly items: ReadonlyArray<Node> }
  | { readonly kind: "index"; readonly target: Node; readonly index: Node }
  | { readonly kind: "call"; readonly name: string; readonly args: ReadonlyArray<Node> }
  | { readonly kind: "matches"; readonly regex: RegExp; readonly pattern: string; readonly value: Node }

export interface Parsed {
  readonly node: Node
  readonly variables: ReadonlySet<string>
}

/**
 * @since 0.1.0
 */
export const KNOWN_VARIABLES: ReadonlySet<string> = new Set([
  "sender",
  "sender_domain",
  "rcpt",
  "rcpt_domain",
  "recipients",
  "priority",
  "retry_num",
  "last_error",
  "last_status",
  "expires_in",
  "queue_name",
  // Known to the delivery schedule only (keys.ts SCHEDULE_VARIABLES): what an outbox knows of a queued message.
  "source",
  "notify_num",
  "queue_age",
  "mx",
  "remote_ip",
  "local_ip"
])

// Stalwart variables a delivery here has no value for; named in the error so the user knows it is not a typo.
const STALWART_ONLY_VARIABLES: ReadonlySet<string> = new Set([
  "received_from_ip",
  "received_via_port",
  "size"
])

const CONSTANTS: ReadonlySet<string> = new Set(CONSTANT_NAMES)

const DURATION = /^(\d+)(ms|s|m|h|d)$/i
const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }

// Deep nesting would exhaust the stack of this recursive parser and of evaluation; no real setting comes close.
const MAX_NESTING = 128

const describe = (token: Token): string => {
  switch (token.kind) {
    case "word":
      return JSON.stringify(token.text)
    case "string":
      return "a string"
    case "op":
      return "'" + token.op + "'"
    case "end":
      return "the end of the expression"
    default:
      return "'" + token.kind + "'"
  }
}

class Parser {
  private position = 0
  private nesting = 0
  readonly variables = new Set<string>()

  constructor(private readonly tokens: ReadonlyArray<Token>) {}

  private peek(): Token {
    return this.tokens[this.position]!
  }

  private next(): Token {
    const token = this.tokens[this.position]!
    if (token.kind !== "end") this.position++
    return token
  }

  parseAll(): Node {
    const node = this.expression()
    const token = this.peek()
    if (token.kind === ")") throw new CompileFailure("unmatched ')'", token.column)
    if (token.kind !== "end") {
      throw new CompileFailure("expected an operator, found " + describe(token), token.column)
    }
    return node
  }

  private expression(): Node {
    return this.level(1)
  }

  private level(precedence: number): Node {
    if (precedence > 7) return this.unary()
    const first = this.level(precedence + 1)
    const rest: Array<{ op: BinaryOp; operand: Node }> = []
    for (;;) {
      const token = this.peek()
      if (token.kind !== "op" || token.op === "!" || PRECEDENCE[token.op] !== precedence) break
      this.next()
      rest.push({ op: token.op, operand: this.level(precedence + 1) })
    }
    return rest.length === 0 ? first : { kind: "chain", first, rest }
  }

  private unary(): Node {
    const token = this.peek()
    if (++this.nesting > MAX_NESTING) {
      throw new CompileFailure("expression nested too deeply (more than " + MAX_NESTING + " levels)", token.column)
    }
    try {
      if (token.kind === "op" && (token.op === "!" || token.op === "-")) {
        this.next()
        return { kind: "unary", op: token.op, operand: this.unary() }
      }
      return this.postfix()
    } finally {
      this.nesting--
    }
  }

  private postfix(): Node {
    let node = this.primary()
    while (this.peek().kind === "[") {
      const open = this.next()
      const index = this.expression()
      this.close("]", open)
      node = { kind: "index", target: node, index }
    }
    return node
  }

  /** Consumes the closing bracket of `open`; a missing one is reported where it was opened. */
  private close(kind: ")" | "]", open: Token): void {
    const token = this.next()
    if (token.kind === kind) return
    if (token.kind === "end") {
      throw new CompileFailure("'" + (kind === ")" ? "(" : "[") + "' is never closed", open.column)
    }
    throw new CompileFailure("expected '" + kind + "', found " + describe(token), token.column)
  }

  private primary(): Node {
    const token = this.next()
    switch (token.kind) {
      case "string":
        return { kind: "literal", value: token.value, raw: token.raw }
      case "(": {
        const node = this.expression()
        this.close(")", token)
        return node
      }
      case "[":
        return { kind: "array", items: this.list("]", token, true) }
      case "word":
        return this.word(token.text, token.column)
      default:
        throw new CompileFailure("expected a value, found " + describe(token), token.column)
    }
  }

  /** Comma-separated expressions up to `end`; arrays tolerate a trailing comma, as Stalwart does. */
  private list(end: ")" | "]", open: Token, trailingComma: boolean): Array<Node> {
    const items: Array<Node> = []
    if (this.peek().kind === end) {
      this.next()
      return items
    }
    for (;;) {
      items.push(this.expression())
      if (this.peek().kind === ",") {
        this.next()
        if (!(trailingComma && this.peek().kind === end)) continue
      }
      this.close(end, open)
      return items
    }
  }

  private word(text: string, column: number): Node {
    const numeric = /^[0-9.]+$/.test(text) && /[0-9]/.test(text)
    if (numeric) return { kind: "literal", value: number(text, column) }
    if (text === "true" || text === "false") return { kind: "literal", value: text === "true" ? 1 : 0 }
    if (text.startsWith("$")) return capture(text, column)
    if (FUNCTIONS.has(text) || text === "matches") return this.call(text, column)
    if (UNSUPPORTED_FUNCTIONS.has(text)) {
      throw new CompileFailure("function " + text + " is not supported by this library", column)
    }
    if (KNOWN_VARIABLES.has(text)) {
      this.variables.add(text)
      return { kind: "variable", name: text }
    }
    if (STALWART_ONLY_VARIABLES.has(text)) {
      throw new CompileFailure("variable " + text + " is not available in this library", column)
    }
    if (CONSTANTS.has(text)) return { kind: "literal", value: new Constant(text) }
    const alias = CONSTANT_ALIASES[text]
    if (alias !== undefined) return { kind: "literal", value: new Constant(alias) }
    const duration = DURATION.exec(text)
    if (duration !== null) return { kind: "literal", value: Number(duration[1]) * UNIT_MS[duration[2]!.toLowerCase()]! }
    if (this.peek().kind === "(") throw new CompileFailure("unknown function " + JSON.stringify(text), column)
    // Stalwart issue #425: a bare host name or strategy name is an identifier, not text.
    throw new CompileFailure(
      "unknown identifier " + JSON.stringify(text) + ": not a variable, function, constant or duration" +
        " (to use it as text, quote it: '" + text + "')",
      column
    )
  }

  private call(name: string, column: number): Node {
    const open = this.next()
    if (open.kind !== "(") {
      throw new CompileFailure("function " + name + " must be called with parentheses: " + name + "(…)", column)
    }
    const firstToken = this.peek()
    const args = this.list(")", open, false)
    const arity = name === "matches" ? 2 : FUNCTIONS.get(name)!.arity
    if (args.length !== arity) {
      throw new CompileFailure(
        "function " + name + " expects " + arity + " argument" + (arity === 1 ? "" : "s") + ", found " + args.length,
        column
      )
    }
    if (name !== "matches") return { kind: "call", name, args }
    // The pattern is compiled once, here, so it has to be known now: Stalwart requires a string literal too. It is
    // taken as written, escapes included (`'\d+'` is digits), as current Stalwart does; v0.12 dropped the backslash.
    const pattern = args[0]!
    if (pattern.kind !== "literal" || pattern.raw === undefined) {
      throw new CompileFailure("the first argument of matches must be a quoted regular expression", firstToken.column)
    }
    const regex = compileRegex(pattern.raw)
    if (typeof regex === "string") {
      const message = "invalid regular expression " + JSON.stringify(pattern.raw) + ": " + regex
      throw new CompileFailure(message, firstToken.column)
    }
    return { kind: "matches", regex, pattern: pattern.raw, value: args[1]! }
  }
}

const number = (text: string, column: number): number => {
  // Digits with a dot are a float (Rust's f64 grammar); digits alone an i64.
  const value = text.includes(".") ? parseF64(text) : parseI64(text)
  if (value === undefined) {
    throw new CompileFailure(
      (text.includes(".") ? "invalid number " : "integer out of range ") + JSON.stringify(text),
      column
    )
  }
  return value
}

const capture = (text: string, column: number): Node => {
  const digits = text.slice(1)
  if (!/^[0-9]+$/.test(digits)) {
    throw new CompileFailure(
      "unknown identifier " + JSON.stringify(text) + ": only regular expression captures ($0, $1, …) start with $",
      column
    )
  }
  return { kind: "capture", index: Number(digits) }
}

/** Throws `CompileFailure`. */
export const parse = (source: string): Parsed => {
  const parser = new Parser(tokenize(source))
  const node = parser.parseAll()
  return { node, variables: parser.variables }
}
