import type { Node } from "../../src/internal/expression/parser.js"
import { formatNumber, type Value } from "../../src/internal/expression/value.js"

const showValue = (value: Value): string =>
  typeof value === "string"
    ? JSON.stringify(value).replace(/^"|"$/g, "'")
    : typeof value === "number"
    ? formatNumber(value)
    : Array.isArray(value)
    ? "[" + value.map(showValue).join(", ") + "]"
    : String(value)

/** The tree fully parenthesised: what a test of precedence compares. */
export const show = (node: Node): string => {
  switch (node.kind) {
    case "literal":
      return showValue(node.value)
    case "variable":
      return node.name
    case "capture":
      return "$" + node.index
    case "unary":
      return "(" + node.op + show(node.operand) + ")"
    case "chain":
      return node.rest.reduce(
        (left, { op, operand }) => "(" + left + " " + op + " " + show(operand) + ")",
        show(node.first)
      )
    case "array":
      return "[" + node.items.map(show).join(", ") + "]"
    case "index":
      return show(node.target) + "[" + show(node.index) + "]"
    case "call":
      return node.name + "(" + node.args.map(show).join(", ") + ")"
    case "matches":
      return "matches('" + node.pattern + "', " + show(node.value) + ")"
  }
}
