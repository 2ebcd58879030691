/**
 * One key's TOML value → a compiled, stage-checked `Setting`, or the issues that stop it. Every value becomes
 * expression source first (native integers, booleans and address arrays are written as the expression they mean),
 * so a single expression, an if-list branch and a native value go through the same compiler and converter.
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import {
  compile,
  type CompileOptions,
  compileIfBlock,
  type Expression,
  type ExpressionError,
  type Value,
  type Variables
} from "../../Expression.js"
import { DURATION_SYNTAX, looksLikeDuration, parseDuration } from "../duration.js"
import { describe, describeToml, render } from "./describe.js"
import type { Evaluated, KeySpec, Setting } from "./keys.js"
import { STAGE_VARIABLES, STAGE_WORDS } from "./keys.js"
import type { Segment } from "./locate.js"
import { ipProblem } from "./convert.js"

/** An issue before it is given a file position. @internal */
export interface RawIssue {
  readonly path: ReadonlyArray<Segment>
  readonly problem: string
  readonly found: string
  readonly expected: string
  /**
   * 1-based column inside the string value at `path`: where an expression error is, or 1 to point at the value
   * rather than at its key.
   */
  readonly column?: number
}

/** A piece of expression source and where it came from. */
interface Slot {
  readonly path: ReadonlyArray<Segment>
  readonly source: string
}

type Role = "value" | "if" | "then" | "else"

const isTable = (raw: unknown): raw is { readonly [key: string]: unknown } =>
  typeof raw === "object" && raw !== null && !Array.isArray(raw) && !(raw instanceof Date)

const quote = (s: string): string => `'${s.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`

const IF_ITEM = "{ if = \"…\", then = \"…\" } or { else = \"…\" }"

/** Renders a key's default for a warning. @internal */
export const renderDefault = (value: unknown): string => {
  if (Duration.isDuration(value)) return Duration.format(value)
  if (Option.isOption(value)) return Option.match(value, { onNone: () => "false", onSome: renderDefault })
  if (Array.isArray(value) && value.length > 0 && value.every(Duration.isDuration)) {
    return `[${value.map((d: Duration.Duration) => Duration.format(d)).join(", ")}]`
  }
  if (Array.isArray(value)) return value.length === 0 ? "[] (no source address)" : render(value as Value)
  if (typeof value === "string") return JSON.stringify(value)
  return String(value)
}

const constant = <A>(key: string, stage: Setting<A>["stage"], value: A): Setting<A> => {
  const evaluated: Evaluated<A> = { value, warning: null }
  return { key, stage, evaluate: () => evaluated }
}

/** @internal */
export interface Built<A> {
  readonly setting: Setting<A>
  readonly issues: ReadonlyArray<RawIssue>
}

/**
 * @param fallback the key's default, resolved for this file
 * @param keyPath the full path (`["queue", "outbound", "timeouts", "data"]`)
 * @param raw the TOML value, undefined when the key is absent
 */
export const build = <A>(
  spec: Pick<KeySpec<A>, "stage" | "kind" | "converter" | "variables">,
  fallbackValue: A,
  keyPath: ReadonlyArray<string>,
  raw: unknown,
  options: CompileOptions
): Built<A> => {
  const key = keyPath.join(".")
  const issues: Array<RawIssue> = []
  const fallback = constant(key, spec.stage, fallbackValue)
  if (raw === undefined) return { setting: fallback, issues }

  const { converter } = spec
  const isDurationKind = spec.kind === "duration" || spec.kind === "delay"
  const isListKind = spec.kind === "ipv4" || spec.kind === "ipv6"
  const allowed = spec.variables ?? STAGE_VARIABLES[spec.stage]
  const when = spec.variables === undefined ? STAGE_WORDS[spec.stage] : "for a recipient's schedule"

  /** A scalar (or, for address lists, a native array) in a value role → expression source, or an issue. */
  const slot = (value: unknown, path: ReadonlyArray<Segment>, role: Role): Slot | null => {
    const fail = (problem: string, expected: string = converter.expected) => {
      issues.push({ path, problem, found: describeToml(value), expected, column: 1 })
      return null
    }
    const expected = role === "if" ? "a condition (an expression string, an integer or a boolean)" : converter.expected
    if (typeof value === "string") {
      if (role !== "if" && isDurationKind && looksLikeDuration(value)) {
        return Either.match(parseDuration(value), {
          onLeft: (why) => fail(`malformed duration (${why})`),
          onRight: (d) => ({ path, source: String(Duration.toMillis(d)) })
        })
      }
      return { path, source: value }
    }
    if (typeof value === "number") {
      if (!Number.isInteger(value)) return fail("floats are not accepted", expected)
      return { path, source: String(value) }
    }
    if (typeof value === "bigint") return fail("the integer is too large", expected)
    if (typeof value === "boolean") {
      if (value && role !== "if" && spec.kind === "delay") return fail("true is not a delay")
      if (value && role !== "if" && spec.kind === "attempts") return fail("true is not a number of attempts")
      return { path, source: String(value) }
    }
    if (Array.isArray(value) && role !== "if" && spec.kind === "durations") {
      // A native list of durations: the expression list of their milliseconds.
      const items: Array<string> = []
      value.forEach((item, i) => {
        const parsed = typeof item === "string"
          ? parseDuration(item)
          : typeof item === "number" && Number.isInteger(item) && item > 0
          ? Either.right(Duration.millis(item))
          : Either.left("not a duration")
        if (Either.isLeft(parsed)) {
          issues.push({
            path: [...path, i],
            problem: `not a duration (${parsed.left})`,
            found: describeToml(item),
            expected: DURATION_SYNTAX
          })
        } else items.push(String(Duration.toMillis(parsed.right)))
      })
      return items.length === value.length ? { path, source: `[${items.join(", ")}]` } : null
    }
    if (Array.isArray(value) && role !== "if" && isListKind) {
      const family = spec.kind === "ipv4" ? 4 : 6
      let ok = true
      value.forEach((item, i) => {
        const problem = typeof item === "string" ? ipProblem(item, family) : "is not a string"
        if (problem !== null) {
          ok = false
          issues.push({
            path: [...path, i],
            problem: `invalid address: it ${problem}`,
            found: describeToml(item),
            expected: `an IPv${family} address`
          })
        }
      })
      return ok ? { path, source: `[${(value as ReadonlyArray<string>).map(quote).join(", ")}]` } : null
    }
    return fail("wrong type of value", expected)
  }

  const expressionIssue = (path: ReadonlyArray<Segment>, source: string, error: ExpressionError) => {
    issues.push({
      path,
      problem: `the expression does not parse at column ${error.column}: ${error.message}`,
      found: `the expression ${JSON.stringify(source)}`,
      expected: "a valid expression",
      column: error.column
    })
  }

  /** Compiles one slot on its own: parse errors, stage check, and a load-time check when it is a constant. */
  const check = (s: Slot, role: Role): Expression | null => {
    const compiled = compile(s.source, options)
    if (Either.isLeft(compiled)) {
      expressionIssue(s.path, s.source, compiled.left)
      return null
    }
    const expression = compiled.right
    for (const variable of expression.variables) {
      if (!allowed.includes(variable)) {
        issues.push({
          path: s.path,
          problem: `the variable ${variable} is not known when ${key} is evaluated (${when})`,
          found: `the variable ${variable}`,
          expected: `only the variables known ${when}: ${allowed.join(", ")}`
        })
      }
    }
    // `$1…` are matches() captures of the branch's `if`: a `then` using them is not a constant on its own.
    if (role !== "if" && expression.variables.size === 0 && !s.source.includes("$")) {
      const value = expression.evaluate({})
      const converted = converter.convert(value)
      if (Either.isLeft(converted)) {
        issues.push({
          path: s.path,
          problem: converted.left === "" ? "wrong value" : `wrong value (${converted.left})`,
          found: describe(value),
          expected: converter.expected,
          column: 1
        })
      }
    }
    return expression
  }

  let expression: Expression | null = null
  let label: string

  if (Array.isArray(raw) && raw.length > 0 && raw.some(isTable)) {
    label = "the if-list"
    const result = ifList(raw, keyPath, issues, slot, check)
    if (result !== null && issues.length === 0) {
      const block = compileIfBlock(
        result.branches.map((b) => ({ if: b.if.source, then: b.then.source })),
        result.otherwise.source,
        options
      )
      if (Either.isLeft(block)) {
        for (const { branch, error, field } of block.left) {
          const s = field === "else" ? result.otherwise : result.branches[branch]![field]
          expressionIssue(s.path, s.source, error)
        }
      } else {
        expression = block.right
      }
    }
  } else {
    const s = slot(raw, keyPath, "value")
    label = typeof raw === "string" ? `the expression ${JSON.stringify(raw)}` : `the value ${describeToml(raw)}`
    if (s !== null) expression = check(s, "value")
  }

  if (expression === null || issues.length > 0) return { setting: fallback, issues }

  if (expression.variables.size === 0) {
    const value = expression.evaluate({})
    const converted = converter.convert(value)
    if (Either.isLeft(converted)) {
      issues.push({
        path: keyPath,
        problem: converted.left === "" ? "wrong value" : `wrong value (${converted.left})`,
        found: describe(value),
        expected: converter.expected
      })
      return { setting: fallback, issues }
    }
    return { setting: constant(key, spec.stage, converted.right), issues }
  }

  const compiled = expression
  const defaultText = renderDefault(fallbackValue)
  const fallBack = (found: string, why: string): Evaluated<A> => ({
    value: fallbackValue,
    warning: `${key}: ${label} gave ${found}, expected ${converter.expected}${
      why === "" ? "" : ` (${why})`
    }; used the default ${defaultText} instead`
  })
  const setting: Setting<A> = {
    key,
    stage: spec.stage,
    evaluate: (vars: Variables) => {
      // Expression.evaluate never throws (a failing operation yields "", which the converter then refuses).
      const value = compiled.evaluate(vars)
      const converted = converter.convert(value)
      return Either.isRight(converted)
        ? { value: converted.right, warning: null }
        : fallBack(describe(value), converted.left)
    }
  }
  return { setting, issues }
}

interface IfList {
  readonly branches: ReadonlyArray<{ readonly if: Slot; readonly then: Slot }>
  readonly otherwise: Slot
}

/**
 * Reads `[ { if, then }, …, { else } ]` the way Stalwart's `IfBlock::try_parse` does, reporting every structural
 * error rather than the first, and checking each field it can.
 */
const ifList = (
  items: ReadonlyArray<unknown>,
  keyPath: ReadonlyArray<string>,
  issues: Array<RawIssue>,
  slot: (value: unknown, path: ReadonlyArray<Segment>, role: Role) => Slot | null,
  check: (s: Slot, role: Role) => Expression | null
): IfList | null => {
  const branches: Array<{ if: Slot; then: Slot }> = []
  let otherwise: Slot | null = null
  let elseSeen = false
  let broken = false
  const structure = (path: ReadonlyArray<Segment>, problem: string, found: string) => {
    broken = true
    issues.push({ path, problem, found, expected: IF_ITEM })
  }
  const field = (item: { readonly [key: string]: unknown }, i: number, name: Role): Slot | null => {
    const s = slot(item[name], [...keyPath, i, name], name)
    if (s === null) {
      broken = true
      return null
    }
    if (check(s, name) === null) broken = true
    return s
  }

  items.forEach((item, i) => {
    const path = [...keyPath, i]
    if (!isTable(item)) {
      structure(path, "an if-list item is not a table", describeToml(item))
      return
    }
    for (const name of Object.keys(item)) {
      if (name !== "if" && name !== "then" && name !== "else") {
        broken = true
        issues.push({
          path: [...path, name],
          problem: "unknown field in an if-list item",
          found: `the field ${JSON.stringify(name)}`,
          expected: "if and then, or else"
        })
      }
    }
    const hasIf = "if" in item
    const hasThen = "then" in item
    const hasElse = "else" in item
    if (hasElse && (hasIf || hasThen)) {
      structure(path, "an item holds either if and then, or else alone", "else together with if/then")
      return
    }
    if (hasElse) {
      if (elseSeen) {
        structure(path, "several else", "a second else")
      }
      elseSeen = true
      const s = field(item, i, "else")
      if (otherwise === null && s !== null) otherwise = s
      return
    }
    if (hasThen && !hasIf) {
      structure(path, "then without if", "then without if")
      field(item, i, "then")
      return
    }
    if (hasIf && !hasThen) {
      structure(path, "if without then", "if without then")
      field(item, i, "if")
      return
    }
    if (!hasIf) {
      if (Object.keys(item).length === 0) structure(path, "empty if-list item", "an empty table")
      return
    }
    if (elseSeen) structure(path, "else before if: the else must be the last item", "an if after the else")
    const condition = field(item, i, "if")
    const then = field(item, i, "then")
    if (condition !== null && then !== null) branches.push({ if: condition, then })
  })

  if (!elseSeen) {
    broken = true
    issues.push({
      path: keyPath,
      problem: "missing else: an if-list must end with { else = \"…\" }",
      found: `an if-list of ${items.length} item${items.length === 1 ? "" : "s"} without else`,
      expected: IF_ITEM
    })
  }
  return broken || otherwise === null ? null : { branches, otherwise }
}
