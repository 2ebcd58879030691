import { Constant, type Value } from "../../Expression.js"

/** A value the way an expression would write it: strings quoted, constants bare, lists in brackets. */
export const render = (value: Value): string => {
  if (value instanceof Constant) return value.name
  if (typeof value === "string") return JSON.stringify(value)
  if (typeof value === "number") return String(value)
  return `[${value.map(render).join(", ")}]`
}

/** "the string \"a b\"", "the number 7", … — the `found` part of an issue or warning. */
export const describe = (value: Value): string => {
  if (value instanceof Constant) return `the constant ${value.name}`
  if (typeof value === "string") return value === "" ? "an empty string" : `the string ${render(value)}`
  if (typeof value === "number") return `the number ${render(value)}`
  return value.length === 0 ? "an empty list" : `the list ${render(value)}`
}

/** Describes a raw TOML value before it became an expression value. */
export const describeToml = (raw: unknown): string => {
  if (typeof raw === "string") return raw === "" ? "an empty string" : `the string ${JSON.stringify(raw)}`
  if (typeof raw === "boolean") return `the boolean ${raw}`
  if (typeof raw === "bigint") return `the integer ${raw}`
  if (typeof raw === "number") return Number.isInteger(raw) ? `the integer ${raw}` : `the float ${raw}`
  if (Array.isArray(raw)) return raw.length === 0 ? "an empty list" : `a list of ${raw.length}`
  if (raw instanceof Date) return `the date ${raw.toISOString()}`
  if (typeof raw === "object" && raw !== null) {
    const keys = Object.keys(raw)
    return keys.length === 0 ? "an empty table" : `a table with the keys ${keys.join(", ")}`
  }
  return String(raw)
}
