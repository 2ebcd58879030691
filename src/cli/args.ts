/**
 * The command-line grammar of `smtp-transport`: GNU-style long options (`--name value`, `--name=value`), `--` to
 * end the options, and a usage error naming any option a command does not know, with the closest one it does. Plain
 * functions over strings: the commands turn the values into their types.
 *
 * @since 0.1.0
 */
import * as editDistance from "../internal/editDistance.js"

/**
 * An option a command accepts. `value` is the name of its value in the help (`file`), `null` for a flag.
 *
 * @since 0.1.0
 */
export interface OptionSpec {
  readonly name: string
  readonly value: string | null
  readonly description: string
  readonly repeated?: boolean
}

/**
 * The command line as the specs read it: the values of each option given (in order), and the positional arguments.
 *
 * @since 0.1.0
 */
export interface Parsed {
  readonly values: ReadonlyMap<string, ReadonlyArray<string>>
  readonly positionals: ReadonlyArray<string>
}

/**
 * A command line that does not fit the specs; `message` says why, for a usage error.
 *
 * @since 0.1.0
 */
export interface ParseError {
  readonly _tag: "ParseError"
  readonly message: string
}

const parseError = (message: string): ParseError => ({ _tag: "ParseError", message })

/**
 * Optimal string alignment distance, shared with the configuration's unknown-key hints.
 *
 * @since 0.1.0
 */
export const distance = editDistance.distance

/**
 * The known name closest to `name`: one it starts, or one a few edits away; `null` when none is close enough to be
 * a likely typo (a suggestion far off misleads more than it helps).
 *
 * @since 0.1.0
 */
export const closest = (name: string, known: ReadonlyArray<string>): string | null => {
  const lower = name.toLowerCase()
  const prefixed = known.filter((k) => lower.length >= 2 && k.startsWith(lower))
  if (prefixed.length === 1) return prefixed[0]!
  let best: string | null = null
  let bestDistance = Infinity
  for (const k of known) {
    const n = distance(lower, k)
    if (n < bestDistance) [best, bestDistance] = [k, n]
  }
  return bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : null
}

const unknown = (arg: string, specs: ReadonlyArray<OptionSpec>, help: string): ParseError => {
  const name = arg.replace(/^-+/, "").split("=")[0]!
  const suggestion = closest(name, specs.map((s) => s.name))
  return parseError(
    `unknown option ${arg.split("=")[0]}` +
      (suggestion === null ? ` (see ${help})` : `: did you mean --${suggestion}? (see ${help})`)
  )
}

/**
 * Reads `args` (the arguments after the command name) against `specs`. An argument that starts with `-` is an
 * option, never a positional, unless it is `-` itself or comes after `--`. A value is the next argument whatever it
 * looks like (`--from -x` gives `-x`), or what follows `=`. A flag takes no value (`--json=false` is allowed). An
 * option that is not `repeated` may be given once.
 *
 * @since 0.1.0
 */
export const parse = (
  args: ReadonlyArray<string>,
  specs: ReadonlyArray<OptionSpec>,
  help: string
): Parsed | ParseError => {
  const values = new Map<string, Array<string>>()
  const positionals: Array<string> = []
  const byName = new Map(specs.map((s) => [s.name, s]))
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--") {
      positionals.push(...args.slice(i + 1))
      break
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg)
      continue
    }
    if (!arg.startsWith("--")) return unknown(arg, specs, help)
    const eq = arg.indexOf("=")
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq)
    const spec = byName.get(name)
    if (spec === undefined) return unknown(arg, specs, help)
    let value: string
    if (spec.value === null) {
      const given = eq === -1 ? "true" : arg.slice(eq + 1)
      if (given !== "true" && given !== "false") {
        return parseError(`--${name} takes no value (or true or false), not ${JSON.stringify(given)}`)
      }
      value = given
    } else if (eq !== -1) {
      value = arg.slice(eq + 1)
    } else if (i + 1 < args.length) {
      value = args[++i]!
    } else {
      return parseError(`--${name} needs a value: --${name} <${spec.value}>`)
    }
    const previous = values.get(name)
    if (previous !== undefined && spec.repeated !== true) return parseError(`--${name} is given more than once`)
    values.set(name, [...(previous ?? []), value])
  }
  return { values, positionals }
}

/**
 * @since 0.1.0
 */
export const isParseError = (u: Parsed | ParseError): u is ParseError => "_tag" in u && u._tag === "ParseError"
