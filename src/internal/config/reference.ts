/**
 * The reference page of `[queue.outbound]`, rendered from the key table: what the docs say is what the loader reads.
 */
import * as Keys from "./keys.js"
import { NEXT_HOP, REMOTE_REFERENCE } from "./relays.js"
import { renderDefault } from "./setting.js"

const STAGE_TEXT = {
  domain: "domain",
  host: "host (+ `mx`)",
  connection: "connection (+ `remote_ip`, `local_ip`)"
} as const

const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\n/g, " ")

/** @internal */
export const renderReference = (): string => {
  const rows = Keys.ENTRIES.map(({ name, spec }) => {
    const fallback = spec.fallbackDoc ?? `\`${renderDefault(spec.fallback)}\``
    return `| \`${spec.path.join(".")}\` | \`${name}\` | ${STAGE_TEXT[spec.stage]} | ${cell(fallback)} | ${
      cell(spec.converter.expected)
    } | ${cell(spec.doc)} |`
  })
  rows.push(
    `| \`${NEXT_HOP.path.join(".")}\` | \`route\` | ${STAGE_TEXT.domain} | ${cell(NEXT_HOP.fallbackDoc!)} | ${
      cell(NEXT_HOP.converter.expected)
    } | ${cell(NEXT_HOP.doc)} |`
  )
  const relays = REMOTE_REFERENCE.map(([key, fallback, accepts, doc]) =>
    `| \`${key}\` | ${fallback} | ${cell(accepts)} | ${cell(doc)} |`
  )
  const ignored = Keys.UNIMPLEMENTED.map(({ path, why }) => `- \`queue.outbound.${path.join(".")}\`: ${cell(why)}`)
  return [
    "# `[queue.outbound]` reference",
    "",
    "Generated from the key table (`src/internal/config/keys.ts`). Every key takes a plain value, an expression or " +
    "an if-list; the stage says when it is evaluated and so which variables an expression may read.",
    "",
    "| key | name in code | stage | default | accepts | meaning |",
    "|---|---|---|---|---|---|",
    ...rows,
    "",
    "## `[remote.<id>]`: relay hosts",
    "",
    "Plain values (not expressions), as Stalwart v0.7–v0.12 reads them; the id is what `next-hop` names, and " +
    "`local` is built in.",
    "",
    "| key | default | accepts | meaning |",
    "|---|---|---|---|",
    ...relays,
    "",
    ...(ignored.length === 0 ? [] : ["Stalwart keys read past with a warning:", "", ...ignored, ""])
  ].join("\n")
}
