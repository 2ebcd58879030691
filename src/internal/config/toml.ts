/**
 * Stalwart's TOML as Stalwart writes it, read with smol-toml. Stalwart's own reader is lenient where TOML is strict;
 * three of its habits appear in Stalwart's documentation and in the files it writes, and are normalised here without
 * moving a line (so every position stays the file's):
 *
 * - a table header repeated (the v0.13–v0.15 strategy example repeats `[queue.strategy]`): the tables merge, and a
 *   key set twice is an error;
 * - `\.` inside a basic string (the expressions example writes regexes that way): kept as the two characters;
 * - if-blocks as flat keys (`queue.outbound.next-hop.0000.if = …`, how Stalwart saves its config.toml): a table whose
 *   keys are all four-digit indexes becomes the list it stands for.
 *
 * Other quirks strict TOML refuses (a bare word as a value, a line break inside a string, another unknown escape) are
 * reported at their position with the quirk's name and its fix.
 */
import * as Either from "effect/Either"
import * as Toml from "smol-toml"
import type { RawIssue } from "./setting.js"

/** A syntax problem, positioned. @internal */
export type SyntaxIssue = RawIssue & { readonly line: number; readonly col: number }

interface Scan {
  readonly text: string
  /** Header lines (0-based) that repeat an earlier header, with the header's key. */
  readonly repeats: ReadonlyArray<{ readonly line: number; readonly header: string }>
}

/** Splits a header's key into its parts (quoted parts unquoted), or null when it is not a plain header. */
const headerKey = (line: string): string | null => {
  const match = /^\s*\[(?!\[)\s*([^\]]*?)\s*\](?!\])\s*(#.*)?$/.exec(line)
  if (match === null) return null
  return match[1]!.split(/\s*\.\s*(?=(?:[^"']|"[^"]*"|'[^']*')*$)/).map((p) => p.replace(/^["']|["']$/g, "")).join(
    "\u0000"
  )
}

/** `\.` in basic strings doubled, repeated headers found; line structure untouched. */
const scan = (text: string): Scan => {
  const lines = text.split("\n")
  const seen = new Set<string>()
  const repeats: Array<{ line: number; header: string }> = []
  let inMultiline: "\"\"\"" | "'''" | null = null
  const out = lines.map((line, index) => {
    if (inMultiline === null) {
      const header = headerKey(line)
      if (header !== null) {
        if (seen.has(header)) repeats.push({ line: index, header })
        seen.add(header)
        return line
      }
    }
    let result = ""
    let i = 0
    while (i < line.length) {
      if (inMultiline !== null) {
        const end = line.indexOf(inMultiline, i)
        const chunk = end === -1 ? line.slice(i) : line.slice(i, end + 3)
        result += inMultiline === "\"\"\"" ? chunk.replace(/\\\./g, "\\\\.") : chunk
        if (end === -1) return result
        i = end + 3
        inMultiline = null
        continue
      }
      const c = line[i]!
      if (c === "#") return result + line.slice(i)
      if (line.startsWith("\"\"\"", i) || line.startsWith("'''", i)) {
        inMultiline = line.slice(i, i + 3) as "\"\"\"" | "'''"
        result += inMultiline
        i += 3
        continue
      }
      if (c === "'") {
        const end = line.indexOf("'", i + 1)
        const stop = end === -1 ? line.length : end + 1
        result += line.slice(i, stop)
        i = stop
        continue
      }
      if (c === "\"") {
        let j = i + 1
        result += c
        while (j < line.length && line[j] !== "\"") {
          if (line[j] === "\\" && line[j + 1] === ".") {
            result += "\\\\."
            j += 2
            continue
          }
          if (line[j] === "\\") {
            result += line.slice(j, j + 2)
            j += 2
            continue
          }
          result += line[j]
          j++
        }
        if (j < line.length) result += "\""
        i = j + 1
        continue
      }
      result += c
      i++
    }
    return result
  })
  return { text: out.join("\n"), repeats }
}

/**
 * `auth.secret = …`, `secret = …`, `auth.token = …` (the keys of a relay that hold a credential), at the start of the
 * line or inside an inline table (`auth = { username = "u", secret = "…" }`), bare or quoted.
 */
const SECRET_LINE = /(?:^|[\s{,])((?:[\w-]+\.|"[^"]*"\.)*"?(?:secret|token)"?)\s*=/

/**
 * The secret or token key whose value the line at `index` may show: the key on that line, or the key of a multi-line
 * string (`"""`, `'''`) still open there, since an error inside such a string points at one of the secret's lines.
 */
const secretAt = (lines: ReadonlyArray<string>, index: number): string | null => {
  let open: { readonly key: string; readonly delimiter: string } | null = null
  for (let i = 0; i <= index; i++) {
    const text = lines[i] ?? ""
    if (open !== null) {
      if (i === index) return open.key
      if (text.includes(open.delimiter)) open = null
      continue
    }
    const secret = SECRET_LINE.exec(text)
    if (secret === null) continue
    if (i === index) return secret[1]!
    const rest = text.slice(secret.index + secret[0].length)
    const delimiter = /^\s*("""|''')/.exec(rest)?.[1]
    if (delimiter !== undefined && !rest.trimStart().slice(3).includes(delimiter)) open = { key: secret[1]!, delimiter }
  }
  return null
}

/** The quirk behind a syntax error on a line, and its fix, when it is one Stalwart accepts. */
const quirkOf = (line: string): string | null => {
  const value = /^\s*[A-Za-z0-9_."'-]+\s*=\s*(.*)$/.exec(line)
  if (value !== null) {
    const v = value[1]!.trim()
    if (/^[A-Za-z_][A-Za-z0-9_.:@/-]*$/.test(v) && !/^(true|false|inf|nan)$/.test(v)) {
      return `a bare word as a value (Stalwart reads ${JSON.stringify(v)} as a string; TOML does not): write it ` +
        `quoted, e.g. "${v}", or "'${v}'" where the key takes an expression`
    }
    const quote = v[0]
    if ((quote === "\"" || quote === "'") && !v.startsWith(quote.repeat(3))) {
      const body = v.slice(1)
      const closed = quote === "'" ? body.includes("'") : /(^|[^\\])(\\\\)*"/.test(body)
      if (!closed) {
        return "a line break inside a string (Stalwart accepts it; TOML does not): use a multi-line string " +
          "(\"\"\"…\"\"\") or keep the string on one line"
      }
    }
    const escape = /"(?:[^"\\]|\\.)*?\\([^btnfr"\\uUe])/.exec(v)
    if (escape !== null) {
      return `the escape \\${escape[1]} in a "…" string (Stalwart passes it through; TOML has no such escape): ` +
        `write \\\\${escape[1]}, or use a literal string '…' in which a backslash is itself`
    }
  }
  return null
}

/** Merges `from` into `into`; a key set in both is returned as a conflict. */
const merge = (
  into: Record<string, unknown>,
  from: Record<string, unknown>,
  path: ReadonlyArray<string>,
  conflicts: Array<ReadonlyArray<string>>
) => {
  for (const [k, v] of Object.entries(from)) {
    const existing = into[k]
    if (existing === undefined) into[k] = v
    else if (isTable(existing) && isTable(v)) merge(existing, v, [...path, k], conflicts)
    else conflicts.push([...path, k])
  }
}

const isTable = (raw: unknown): raw is Record<string, unknown> =>
  typeof raw === "object" && raw !== null && !Array.isArray(raw) && !(raw instanceof Date)

/** Flat if-blocks (`0000.if`, `0001.else`) → the if-list, everywhere in the document. */
const unflatten = (node: unknown): unknown => {
  if (Array.isArray(node)) return node.map(unflatten)
  if (!isTable(node)) return node
  const keys = Object.keys(node)
  if (keys.length > 0 && keys.every((k) => /^[0-9]{4}$/.test(k))) {
    return keys.sort().map((k) => unflatten(node[k]))
  }
  for (const k of keys) node[k] = unflatten(node[k])
  return node
}

/**
 * Parses Stalwart TOML: normalised as above, then smol-toml; or the syntax problem at its position.
 *
 * @internal
 */
export const parseToml = (text: string): Either.Either<unknown, SyntaxIssue> => {
  const scanned = scan(text)
  const lines = scanned.text.split("\n")
  // Repeated headers: each repeated section is parsed on its own (its lines blanked in the main text) and merged.
  const sections: Array<{ start: number; end: number }> = []
  for (const { line } of scanned.repeats) {
    let end = line + 1
    while (end < lines.length && headerKey(lines[end]!) === null && !/^\s*\[\[/.test(lines[end]!)) end++
    sections.push({ start: line, end })
  }
  const main = lines.map((l, i) => sections.some((s) => i >= s.start && i < s.end) ? "" : l).join("\n")
  const parsed = parseOne(main, text, 0)
  if (Either.isLeft(parsed)) return parsed
  const root = parsed.right as Record<string, unknown>
  for (const { end, start } of sections) {
    // Each repeated section alone (its errors moved to the file's lines): linear in the file's size.
    const part = parseOne(lines.slice(start, end).join("\n"), text, start)
    if (Either.isLeft(part)) return part
    const conflicts: Array<ReadonlyArray<string>> = []
    merge(root, part.right as Record<string, unknown>, [], conflicts)
    if (conflicts.length > 0) {
      const header = lines[start]!.trim()
      return Either.left({
        path: conflicts[0]!,
        problem: `the key is set twice: the table ${header} is repeated (Stalwart merges repeated tables, and so ` +
          "does this library) and both set it",
        found: `a second ${conflicts[0]!.join(".")}`,
        expected: "each key once",
        line: start + 1,
        col: 1
      })
    }
  }
  return Either.right(unflatten(root))
}

/** smol-toml on a part of the file that starts at line `offset` + 1 of `original`. */
const parseOne = (text: string, original: string, offset: number): Either.Either<unknown, SyntaxIssue> => {
  try {
    return Either.right(Toml.parse(text, { unsafeKeyBehaviour: "throw" }))
  } catch (error) {
    if (error instanceof Toml.TomlError) {
      const line = error.line + offset
      const lines = original.split(/\r?\n/)
      const lineText = lines[line - 1] ?? ""
      // A relay's secret is never quoted back, not even from a line that does not parse.
      const secret = secretAt(lines, line - 1)
      const quirk = secret === null ? quirkOf(lineText) : null
      const what = error.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "")
      return Either.left({
        path: [],
        problem: quirk === null ? `TOML syntax error: ${what}` : `TOML syntax error: ${quirk}`,
        found: secret === null
          ? `the line ${JSON.stringify(lineText.trim())}`
          : `the line of the key ${secret} (its value not shown)`,
        expected: "valid TOML",
        line,
        col: error.column
      })
    }
    throw error
  }
}
