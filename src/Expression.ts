/**
 * Stalwart's expression language, in which every `[queue.outbound]` setting may be written: compiled once when the
 * configuration loads, evaluated per delivery against that delivery's variables.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"
import type { Lookup } from "./internal/expression/functions.js"
import { compileSource, type Evaluator, type State } from "./internal/expression/compile.js"
import { KNOWN_VARIABLES as KNOWN } from "./internal/expression/parser.js"
import { toBool as toBoolean } from "./internal/expression/value.js"
import type * as value from "./internal/expression/value.js"

export {
  /**
   * A bare word with a fixed meaning (`ipv6_only`, `require`, …). Stalwart v0.12's aliases `required`, `disabled`
   * and `none` compile to `require` / `disable`.
   *
   * @since 0.1.0
   * @category models
   */
  Constant
} from "./internal/expression/value.js"

/**
 * What an expression evaluates to: text, a number, a list, or a constant. Booleans are 1 and 0, as in Stalwart.
 *
 * @since 0.1.0
 * @category models
 */
export type Value = value.Value

/**
 * The values of a delivery's variables, by name. A variable missing here evaluates to "".
 *
 * @since 0.1.0
 * @category models
 */
export type Variables = { readonly [name: string]: Value }

/**
 * A compiled expression (or if-block).
 *
 * @since 0.1.0
 * @category models
 */
export interface Expression {
  readonly source: string
  /** The delivery variables it reads, so the configuration can reject those not known at a setting's stage. */
  readonly variables: ReadonlySet<string>
  /** Pure and synchronous; never throws. */
  readonly evaluate: (vars: Variables) => Value
}

/**
 * An expression that does not compile. `message` says what is wrong without the position; `column` is 1-based
 * (`source.length + 1` when the expression ends too early).
 *
 * @since 0.1.0
 * @category errors
 */
export class ExpressionError extends Data.TaggedError("ExpressionError")<{
  readonly message: string
  readonly column: number
  readonly source: string
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface CompileOptions {
  /** The `[lookup.<store>]` tables of the configuration file, read by `key_get` and `key_exists`. */
  readonly lookup?: { readonly [store: string]: { readonly [key: string]: Value } }
}

/**
 * Where a compile error of an if-block is: `branch` is the entry's index in the TOML list, so the `else` entry's
 * branch is `branches.length`.
 *
 * @since 0.1.0
 * @category errors
 */
export interface IfBlockError {
  readonly branch: number
  readonly field: "if" | "then" | "else"
  readonly error: ExpressionError
}

/**
 * The delivery variables: sender sender_domain rcpt rcpt_domain recipients priority retry_num last_error last_status
 * expires_in queue_name (per domain), mx (per MX host), remote_ip local_ip (per connection); and source notify_num
 * queue_age, which only the delivery schedule reads (`[queue.schedule]`, `[queue.strategy] schedule`).
 *
 * @since 0.1.0
 * @category constants
 */
export const KNOWN_VARIABLES: ReadonlySet<string> = KNOWN

/**
 * Stalwart's truthiness: non-zero numbers (NaN included), non-empty text and lists, and every constant.
 *
 * @since 0.1.0
 * @category conversions
 */
export const toBool: (v: Value) => boolean = toBoolean

const NO_LOOKUP: Lookup = {}

const compileOne = (
  source: string,
  options: CompileOptions | undefined
): Either.Either<{ readonly evaluate: Evaluator; readonly variables: ReadonlySet<string> }, ExpressionError> => {
  const compiled = compileSource(source, options?.lookup ?? NO_LOOKUP)
  return compiled._tag === "Right"
    ? Either.right(compiled)
    : Either.left(new ExpressionError({ message: compiled.message, column: compiled.column, source }))
}

/**
 * The safety net behind "never throws": evaluation is written not to throw, but variables come from callers that
 * TypeScript cannot check (a cyclic array, a getter that throws), and a delivery must not die of a setting.
 */
const evaluator = (evaluate: Evaluator) => (vars: Variables): Value => {
  try {
    const state: State = { vars: vars ?? {}, captures: [] }
    return evaluate(state)
  } catch {
    return ""
  }
}

/**
 * Compiles one expression.
 *
 * @example
 * ```ts
 * import { Either } from "effect"
 * import * as Expression from "effect-smtp-transport/Expression"
 *
 * const expr = Either.getOrThrow(Expression.compile("retry_num > 0 && last_error == 'tls'"))
 * assert.strictEqual(expr.evaluate({ retry_num: 1, last_error: "tls" }), 1)
 * assert.strictEqual(expr.evaluate({ retry_num: 0 }), 0) // a missing variable is ""
 * assert.deepStrictEqual([...expr.variables].sort(), ["last_error", "retry_num"])
 *
 * // An unknown name is an error at compile time, not a surprise per delivery.
 * assert.ok(Either.isLeft(Expression.compile("retry_nm > 0")))
 * ```
 *
 * @since 0.1.0
 * @category compiling
 */
export const compile = (source: string, options?: CompileOptions): Either.Either<Expression, ExpressionError> =>
  Either.map(compileOne(source, options), ({ evaluate, variables }) => ({
    source,
    variables,
    evaluate: evaluator(evaluate)
  }))

const quote = (text: string): string => JSON.stringify(text)

/**
 * Compiles an if/then/else list: the first `if` that is truthy selects its `then`, otherwise `otherwise` is used.
 * Captures of `matches()` in an `if` are visible as `$1…` in its `then`. Every error of every field is reported.
 * (The list's structure — `else` first, several `else`, `then` without `if` — is checked by the configuration.)
 *
 * @since 0.1.0
 * @category compiling
 */
export const compileIfBlock = (
  branches: ReadonlyArray<{ readonly if: string; readonly then: string }>,
  otherwise: string,
  options?: CompileOptions
): Either.Either<Expression, ReadonlyArray<IfBlockError>> => {
  const errors: Array<IfBlockError> = []
  const variables = new Set<string>()
  const attempt = (source: string, branch: number, field: IfBlockError["field"]): Evaluator => {
    const compiled = compileOne(source, options)
    if (Either.isLeft(compiled)) {
      errors.push({ branch, field, error: compiled.left })
      return () => ""
    }
    compiled.right.variables.forEach((name) => variables.add(name))
    return compiled.right.evaluate
  }
  const compiled = branches.map((branch, i) => ({
    if: attempt(branch.if, i, "if"),
    then: attempt(branch.then, i, "then")
  }))
  const fallback = attempt(otherwise, branches.length, "else")
  if (errors.length > 0) return Either.left(errors)
  const source = "[ " +
    [
      ...branches.map((branch) => "{ if = " + quote(branch.if) + ", then = " + quote(branch.then) + " }"),
      "{ else = " + quote(otherwise) + " }"
    ].join(", ") + " ]"
  // One state for the whole block: that is how captures reach the `then` (and, as in Stalwart, the `else`).
  const evaluate: Evaluator = (s) => {
    for (const branch of compiled) if (toBoolean(branch.if(s))) return branch.then(s)
    return fallback(s)
  }
  return Either.right({ source, variables, evaluate: evaluator(evaluate) })
}
