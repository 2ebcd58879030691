/**
 * Durations as Stalwart writes them: `<digits><unit>`, one number and one unit, nothing else.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Either from "effect/Either"

const UNITS: { readonly [unit: string]: number } = {
  "": 1,
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000
}

/**
 * What a valid duration looks like, for error messages.
 *
 * @since 0.1.0
 */
export const DURATION_SYNTAX = "a duration: digits and one unit of ms, s, m, h or d " +
  "(e.g. \"3m\", \"500ms\"; bare digits are milliseconds), greater than zero"

/**
 * Whether a string is an attempt at a duration literal rather than an expression: a run of digits, dots, signs and
 * letters starting with a digit, a sign or a dot. Such strings get the duration diagnosis (`1h30m` is "compound"),
 * which says more than the expression parser's "unknown variable".
 *
 * @since 0.1.0
 */
export const looksLikeDuration = (text: string): boolean => /^\s*[+-]?[0-9.][0-9A-Za-z.]*\s*$/.test(text)

/**
 * Parses `"3m"`, `"500ms"`, `"2D"`, `"150"` (milliseconds). Surrounding whitespace is ignored. Rejects, with the
 * reason as the error: empty text, signs, fractions, compound values such as `1h30m`, unknown units, zero and values
 * too large to count in milliseconds exactly.
 *
 * @since 0.1.0
 */
export const parseDuration = (text: string): Either.Either<Duration.Duration, string> => {
  const trimmed = text.trim()
  if (trimmed === "") {
    return Either.left("it is empty")
  }
  if (/^[+-]/.test(trimmed)) {
    return Either.left("signs are not allowed")
  }
  if (/^[0-9]*\.[0-9]*/.test(trimmed) || /^[0-9]+[.,][0-9]/.test(trimmed)) {
    return Either.left("fractions are not allowed; use a smaller unit (e.g. \"1500ms\" for 1.5s)")
  }
  const match = /^([0-9]+)([A-Za-z]*)$/.exec(trimmed)
  if (match === null) {
    if (/^[0-9]+[A-Za-z]+[0-9]/.test(trimmed)) {
      return Either.left("compound durations are not allowed; use one number and one unit (e.g. \"90m\" for 1h30m)")
    }
    if (/\s/.test(trimmed)) {
      return Either.left("spaces are not allowed between the number and the unit")
    }
    return Either.left("it is not <digits><unit>")
  }
  const [, digits, rawUnit] = match as unknown as [string, string, string]
  const unit = rawUnit.toLowerCase()
  const factor = UNITS[unit]
  if (factor === undefined) {
    return Either.left(`unknown unit "${rawUnit}"; the units are ms, s, m, h and d`)
  }
  const millis = Number(digits) * factor
  if (!Number.isSafeInteger(millis)) {
    return Either.left("it is too large")
  }
  if (millis === 0) {
    return Either.left("it must be greater than zero")
  }
  return Either.right(Duration.millis(millis))
}

/**
 * A duration as Stalwart writes one: in its largest whole unit (`90s`, `2m`, `1d`), else in milliseconds.
 *
 * @internal
 */
export const formatDuration = (d: Duration.Duration): string => {
  const ms = Duration.toMillis(d)
  for (const [unit, size] of [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1000]] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`
  }
  return `${ms}ms`
}
