/**
 * Turns a syntax tree into a tree of closures, once, at load. Evaluating a setting per delivery is then a few
 * function calls: no tokens, no tree walking by kind, no re-parsing.
 */
import { type FunctionDef, FUNCTIONS, type Lookup } from "./functions.js"
import { CompileFailure } from "./lexer.js"
import { type BinaryOp, negate, not, strict } from "./operators.js"
import { type Node, parse } from "./parser.js"
import { capture } from "./regex.js"
import { bool, isArray, normalize, toBool, toStr, toUsize, type Value } from "./value.js"

export type Variables = { readonly [name: string]: Value }

/** Per evaluation: the delivery's variables and the captures of the last `matches()`, which an if-block shares. */
export interface State {
  readonly vars: Variables
  captures: ReadonlyArray<string>
}

export type Evaluator = (state: State) => Value

type Step = (acc: Value, state: State) => Value

const hasOwn = (o: object, key: string): boolean => Object.prototype.hasOwnProperty.call(o, key)

const step = (op: BinaryOp, right: Evaluator): Step => {
  switch (op) {
    // Short-circuit quirk: when the left side decides, it is the result as is ('a' || x is 'a'); otherwise the
    // result is the right side as 0/1 (0 || 'b' is 1).
    case "&&":
      return (acc, s) => (toBool(acc) ? bool(toBool(right(s))) : acc)
    case "||":
      return (acc, s) => (toBool(acc) ? acc : bool(toBool(right(s))))
    default: {
      const apply = strict[op]
      return (acc, s) => apply(acc, right(s))
    }
  }
}

const call = (def: FunctionDef, args: ReadonlyArray<Evaluator>, lookup: Lookup): Evaluator => {
  // Arities are at most 3; unrolled so the common cases allocate only the argument array.
  switch (args.length) {
    case 1: {
      const [a] = args as [Evaluator]
      return (s) => def.call([a(s)], lookup)
    }
    case 2: {
      const [a, b] = args as [Evaluator, Evaluator]
      return (s) => def.call([a(s), b(s)], lookup)
    }
    default:
      return (s) => def.call(args.map((f) => f(s)), lookup)
  }
}

export const compileNode = (node: Node, lookup: Lookup): Evaluator => {
  switch (node.kind) {
    case "literal": {
      const value = node.value
      return () => value
    }
    case "variable": {
      const name = node.name
      // A variable the caller did not supply is "" (the config's stage checks make that not happen).
      return (s) => (hasOwn(s.vars, name) ? normalize(s.vars[name]) : "")
    }
    case "capture": {
      const index = node.index
      return (s) => s.captures[index] ?? ""
    }
    case "unary": {
      const operand = compileNode(node.operand, lookup)
      return node.op === "!" ? (s) => not(operand(s)) : (s) => negate(operand(s))
    }
    case "chain": {
      const first = compileNode(node.first, lookup)
      const steps = node.rest.map(({ op, operand }) => step(op, compileNode(operand, lookup)))
      if (steps.length === 1) {
        const only = steps[0]!
        return (s) => only(first(s), s)
      }
      return (s) => {
        let acc = first(s)
        for (const next of steps) acc = next(acc, s)
        return acc
      }
    }
    case "array": {
      const items = node.items.map((item) => compileNode(item, lookup))
      return (s) => items.map((item) => item(s))
    }
    case "index": {
      const target = compileNode(node.target, lookup)
      const index = compileNode(node.index, lookup)
      return (s) => {
        const value = target(s)
        const i = toUsize(index(s)) ?? 0
        // Out of range is "", and a non-empty scalar is its own item 0 (Stalwart's `Variable::index`).
        if (isArray(value)) return value[i] ?? ""
        return value !== "" && i === 0 ? value : ""
      }
    }
    case "call":
      return call(FUNCTIONS.get(node.name)!, node.args.map((arg) => compileNode(arg, lookup)), lookup)
    case "matches": {
      const { regex } = node
      const value = compileNode(node.value, lookup)
      return (s) => {
        s.captures = capture(regex, toStr(value(s)))
        return bool(s.captures.length > 0)
      }
    }
  }
}

export type Compiled =
  | { readonly _tag: "Right"; readonly evaluate: Evaluator; readonly variables: ReadonlySet<string> }
  | { readonly _tag: "Left"; readonly message: string; readonly column: number }

/** Never throws: a failure of the compiler itself is reported like a syntax error rather than escaping. */
export const compileSource = (source: string, lookup: Lookup): Compiled => {
  try {
    const { node, variables } = parse(source)
    return { _tag: "Right", evaluate: compileNode(node, lookup), variables }
  } catch (error) {
    if (error instanceof CompileFailure) return { _tag: "Left", message: error.message, column: error.column }
    return { _tag: "Left", message: "internal error: " + String(error), column: 1 }
  }
}

/** Evaluation as the tests exercise it: without the safety net `Expression.evaluate` adds. */
export const run = (evaluate: Evaluator, vars: Variables): Value => evaluate({ vars, captures: [] })
