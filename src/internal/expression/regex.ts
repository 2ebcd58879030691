/**
 * `matches()` patterns are written for Rust's `regex` crate. The common ground with JavaScript's RegExp is large; the
 * two Rust spellings that configurations actually use and JavaScript lacks are translated here: named groups
 * `(?P<name>…)` and leading inline flags such as `(?i)`.
 */

const LEADING_FLAGS = /^(\^?)\(\?([imsU]+)\)/

/** Returns the compiled pattern, or the reason it is not valid. */
export const compileRegex = (pattern: string): RegExp | string => {
  let source = pattern.replace(/\(\?P</g, "(?<")
  let flags = ""
  const leading = LEADING_FLAGS.exec(source)
  if (leading !== null) {
    // Rust's `U` (swap greediness) has no JavaScript counterpart.
    if (leading[2]!.includes("U")) return "the inline flag U is not supported"
    flags = [...new Set(leading[2]!)].join("")
    source = leading[1]! + source.slice(leading[0].length)
  }
  // Rust's regex is Unicode-aware by default, so try the `u` mode first; it rejects some escapes that Rust allows
  // (such as `\-` outside a class), for which the legacy mode is the closer match.
  for (const mode of ["u", ""]) {
    try {
      return new RegExp(source, flags + mode)
    } catch (error) {
      if (mode === "") return error instanceof Error ? error.message : String(error)
    }
  }
  return "invalid regular expression"
}

/** Rust's `captures`: the first match anywhere; unmatched groups read as "". Empty when there is no match. */
export const capture = (regex: RegExp, text: string): ReadonlyArray<string> => {
  const match = regex.exec(text)
  return match === null ? [] : Array.from(match, (group) => group ?? "")
}
