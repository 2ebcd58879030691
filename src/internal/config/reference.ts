/**
 * The reference page of `[queue.outbound]`, rendered from the key table: what the docs say is what the loader reads.
 */
import * as Keys from "./keys.js"
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
    "Stalwart keys read past with a warning:",
    "",
    ...ignored,
    ""
  ].join("\n")
}
