/**
 * Best-effort source positions for configuration issues. smol-toml returns plain objects without positions, so this
 * scans the text for key/value lines and table headers, then walks into arrays and inline tables for if-list items.
 * It never throws; when it is unsure it answers null and the issue is reported without a position. JSON files (v0.16)
 * are located on jsonc-parser's syntax tree, which keeps offsets.
 */
import * as Jsonc from "jsonc-parser"

/** @internal */
export interface Position {
  readonly line: number
  readonly column: number
}

/** @internal */
export type Segment = string | number

interface Entry {
  readonly key: number
  /** Start of the value after `=`, or -1 for a table header. */
  readonly value: number
}

const isBare = (c: string | undefined): boolean => c !== undefined && /[A-Za-z0-9_-]/.test(c)
const isBlank = (c: string | undefined): boolean => c === " " || c === "\t"

/** Skips a string starting at `i` (on its quote); returns the index after the closing quote. */
const skipString = (text: string, i: number): number => {
  const q = text[i]!
  if (text.startsWith(q.repeat(3), i)) {
    const end = text.indexOf(q.repeat(3), i + 3)
    return end === -1 ? text.length : end + 3
  }
  let j = i + 1
  while (j < text.length && text[j] !== q && text[j] !== "\n") {
    j += q === "\"" && text[j] === "\\" ? 2 : 1
  }
  return j + 1
}

/** Parses a (dotted, possibly quoted) key at `i`. */
const parseKey = (text: string, i: number): { readonly parts: ReadonlyArray<string>; readonly end: number } | null => {
  const parts: Array<string> = []
  let j = i
  for (;;) {
    while (isBlank(text[j])) j++
    const c = text[j]
    if (c === "\"" || c === "'") {
      const end = skipString(text, j)
      const raw = text.slice(j + 1, end - 1)
      parts.push(c === "\"" ? raw.replace(/\\(.)/g, "$1") : raw)
      j = end
    } else if (isBare(c)) {
      const start = j
      while (isBare(text[j])) j++
      parts.push(text.slice(start, j))
    } else {
      return null
    }
    while (isBlank(text[j])) j++
    if (text[j] !== ".") return { parts, end: j }
    j++
  }
}

const skipSpace = (text: string, i: number): number => {
  let j = i
  for (;;) {
    while (j < text.length && /\s/.test(text[j]!)) j++
    if (text[j] !== "#") return j
    while (j < text.length && text[j] !== "\n") j++
  }
}

/** Skips one value (string, array, inline table or scalar) starting at `i`. */
const skipValue = (text: string, i: number): number => {
  const c = text[i]
  if (c === "\"" || c === "'") return skipString(text, i)
  if (c === "[" || c === "{") {
    let depth = 0
    let j = i
    while (j < text.length) {
      const d = text[j]!
      if (d === "\"" || d === "'") {
        j = skipString(text, j)
        continue
      }
      if (d === "#") {
        while (j < text.length && text[j] !== "\n") j++
        continue
      }
      if (d === "[" || d === "{") depth++
      if (d === "]" || d === "}") {
        depth--
        if (depth === 0) return j + 1
      }
      j++
    }
    return j
  }
  let j = i
  while (j < text.length && !/[,\]}\n#]/.test(text[j]!)) j++
  return j
}

const elementStart = (text: string, open: number, index: number): number | null => {
  let i = open + 1
  let count = 0
  while (i < text.length) {
    i = skipSpace(text, i)
    const c = text[i]
    if (c === undefined || c === "]") return null
    if (c === ",") {
      i++
      continue
    }
    if (count === index) return i
    count++
    i = skipValue(text, i)
  }
  return null
}

const fieldStart = (text: string, open: number, field: string): { key: number; value: number } | null => {
  let i = open + 1
  while (i < text.length) {
    i = skipSpace(text, i)
    const c = text[i]
    if (c === undefined || c === "}") return null
    if (c === ",") {
      i++
      continue
    }
    const key = parseKey(text, i)
    if (key === null || text[key.end] !== "=") return null
    const value = skipSpace(text, key.end + 1)
    if (key.parts.length === 1 && key.parts[0] === field) return { key: i, value }
    i = skipValue(text, value)
  }
  return null
}

/** @internal */
export const makeLocator = (text: string) => {
  const entries = new Map<string, Entry>()
  const position = positions(text)

  const record = (parts: ReadonlyArray<string>, entry: Entry) => {
    const id = parts.join("\u0000")
    if (!entries.has(id)) entries.set(id, entry)
  }

  let table: ReadonlyArray<string> = []
  let offset = 0
  while (offset < text.length) {
    const start = skipSpace(text, offset)
    if (start >= text.length) break
    const lineEnd = text.indexOf("\n", start)
    const next = lineEnd === -1 ? text.length : lineEnd + 1
    if (text[start] === "[") {
      const array = text[start + 1] === "["
      const key = parseKey(text, start + (array ? 2 : 1))
      if (key !== null) {
        table = key.parts
        record(table, { key: start, value: -1 })
      }
      offset = next
      continue
    }
    const key = parseKey(text, start)
    if (key !== null && text[key.end] === "=") {
      const value = skipSpace(text, key.end + 1)
      const parts = [...table, ...key.parts]
      record(parts, { key: start, value })
      // Multi-line strings and arrays may span lines that must not be read as keys.
      offset = Math.max(next, skipValue(text, value))
      continue
    }
    offset = next
  }


  /** Offset of the first character inside a single-line string value, or null if the value is not one. */
  const stringContent = (index: number): number | null => {
    const q = text[index]
    if (q !== "\"" && q !== "'") return null
    if (text.startsWith(q.repeat(3), index)) return null
    return index + 1
  }

  /**
   * The position of `path` (key segments, then if-list/array indexes and item fields). With `column`, the position
   * of that (1-based) character inside the string value there — exact when the string has no escapes before it.
   */
  const locate = (path: ReadonlyArray<Segment>, column?: number): Position | null => {
    try {
      const firstIndex = path.findIndex((s) => typeof s === "number")
      const keys = (firstIndex === -1 ? path : path.slice(0, firstIndex)) as ReadonlyArray<string>
      const rest = firstIndex === -1 ? [] : path.slice(firstIndex)
      for (let n = keys.length; n > 0; n--) {
        const entry = entries.get(keys.slice(0, n).join("\u0000"))
        if (entry === undefined) continue
        if (entry.value === -1) return position(entry.key)
        // A key written as an inline table (`source-ip = { v4 = … }`) is reached through its fields.
        const walk = [...keys.slice(n), ...rest]
        let at = entry.value
        let atKey = entry.key
        for (const segment of walk) {
          if (typeof segment === "number") {
            if (text[at] !== "[") return position(at)
            const element = elementStart(text, at, segment)
            if (element === null) return position(at)
            at = element
            atKey = element
          } else {
            if (text[at] !== "{") return position(at)
            const field = fieldStart(text, at, segment)
            if (field === null) return position(at)
            at = field.value
            atKey = field.key
          }
        }
        if (column === undefined) return position(walk.length === 0 ? atKey : at)
        const content = stringContent(at)
        return position(content === null ? at : content + column - 1)
      }
      return null
    } catch {
      return null
    }
  }

  return locate
}

/** Line and column (1-based) of an offset in `text`. */
const positions = (text: string) => {
  const lineStarts: Array<number> = [0]
  for (let i = 0; i < text.length; i++) if (text[i] === "\n") lineStarts.push(i + 1)
  return (index: number): Position => {
    let lo = 0
    let hi = lineStarts.length - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (lineStarts[mid]! <= index) lo = mid
      else hi = mid - 1
    }
    return { line: lo + 1, column: index - lineStarts[lo]! + 1 }
  }
}

/**
 * Positions in a JSON document: an object member's key, an array element, by path; a path not found gives the
 * position of its longest known prefix. jsonc-parser's tree is error-tolerant, so malformed text still gives what
 * could be read.
 *
 * @internal
 */
export const makeJsonLocator = (text: string) => {
  const root = Jsonc.parseTree(text)
  const position = positions(text)
  return (path: ReadonlyArray<Segment>): Position | null => {
    if (root === undefined) return null
    for (let n = path.length; n > 0; n--) {
      const node = Jsonc.findNodeAtLocation(root, path.slice(0, n) as Array<string | number>)
      // A member is where its key is written; an element where it starts.
      if (node !== undefined) return position(node.parent?.type === "property" ? node.parent.offset : node.offset)
    }
    return null
  }
}
