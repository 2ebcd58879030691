/**
 * The `--help` pages: a synopsis that marks what is optional, a sentence for every option, examples and the exit
 * statuses. Headings are bold only on a terminal, and never with `NO_COLOR` set (https://no-color.org).
 *
 * @since 0.1.0
 */
import type { OptionSpec } from "./args.js"

/**
 * What the help of one command says.
 *
 * @since 0.1.0
 */
export interface CommandHelp {
  readonly name: string
  readonly summary: string
  readonly description: ReadonlyArray<string>
  readonly options: ReadonlyArray<OptionSpec>
  /** The positional arguments in the synopsis (`<recipient>...`); empty for none. */
  readonly operands: string
  readonly examples: ReadonlyArray<readonly [command: string, what: string]>
  readonly exitStatus: ReadonlyArray<readonly [code: number, when: string]>
}

/**
 * The options every command takes, anywhere on the line.
 *
 * @since 0.1.0
 */
export const globalOptions: ReadonlyArray<OptionSpec> = [
  {
    name: "log-level",
    value: "level",
    description: "Log on standard error from this level up: all, trace, debug, info, warning, error, fatal or " +
      "none. At debug, the SMTP dialogue is shown (C: and S: lines)."
  },
  { name: "help", value: null, description: "Print this help and exit (also -h)." },
  { name: "version", value: null, description: "Print the version and exit." }
]

/**
 * Whether output to this stream may be coloured.
 *
 * @since 0.1.0
 */
export const colourFor = (stream: { readonly isTTY?: boolean }, env: NodeJS.ProcessEnv = process.env): boolean =>
  stream.isTTY === true && (env["NO_COLOR"] ?? "") === ""

const width = 100

/** Words of `text` in lines of at most `width` columns, the first after `first`, the others after `rest`. */
const wrap = (text: string, first: string, rest: string): ReadonlyArray<string> => {
  const lines: Array<string> = []
  let line = first
  let empty = true
  for (const word of text.split(/\s+/).filter((w) => w !== "")) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line)
      line = rest
      empty = true
    }
    line += (empty ? "" : " ") + word
    empty = false
  }
  lines.push(line)
  return lines
}

const optionLabel = (spec: OptionSpec) => `--${spec.name}${spec.value === null ? "" : ` <${spec.value}>`}`

/**
 * The synopsis: `smtp-transport send [--config <file>] … <recipient>...`, wrapped under the command name.
 *
 * @since 0.1.0
 */
export const synopsis = (help: Pick<CommandHelp, "name" | "options" | "operands">): ReadonlyArray<string> => {
  const head = `smtp-transport ${help.name}`
  const pad = " ".repeat(head.length)
  const items = help.options.map((o) => `[${optionLabel(o)}]${o.repeated === true ? "..." : ""}`)
  if (help.operands !== "") items.push(help.operands)
  // An item is never split: wrap on the spaces between items only.
  const lines: Array<string> = []
  let line = head
  for (const item of items) {
    if (line !== pad && line.length + 1 + item.length > width - 2) {
      lines.push(line)
      line = pad
    }
    line += ` ${item}`
  }
  lines.push(line)
  return lines.map((l) => `  ${l}`)
}

const optionLines = (specs: ReadonlyArray<OptionSpec>): ReadonlyArray<string> =>
  specs.flatMap((spec) => [
    `  ${optionLabel(spec)}${spec.repeated === true ? " (repeatable)" : ""}`,
    ...wrap(spec.description, "      ", "      ")
  ])

/**
 * A command's help page.
 *
 * @since 0.1.0
 */
export const render = (help: CommandHelp, colour: boolean): string => {
  const heading = (text: string) => (colour ? `\u001b[1m${text}\u001b[0m` : text)
  const lines: Array<string> = [
    `smtp-transport ${help.name}: ${help.summary}`,
    "",
    heading("Usage"),
    ...synopsis(help)
  ]
  for (const paragraph of help.description) lines.push("", ...wrap(paragraph, "", ""))
  if (help.options.length > 0) {
    lines.push("", heading("Options (all optional)"), ...optionLines(help.options))
  }
  lines.push("", heading("Global options (anywhere on the line)"), ...optionLines(globalOptions))
  if (help.examples.length > 0) {
    lines.push("", heading("Examples"))
    for (const [command, what] of help.examples) lines.push(...wrap(what, "  # ", "  # "), `  ${command}`)
  }
  if (help.exitStatus.length > 0) {
    lines.push("", heading("Exit status"))
    for (const [code, when] of help.exitStatus) lines.push(...wrap(when, `  ${String(code).padStart(3)}  `, "       "))
  }
  return lines.join("\n")
}

/**
 * The top-level help: the commands and the global options.
 *
 * @since 0.1.0
 */
export const renderRoot = (
  commands: ReadonlyArray<Pick<CommandHelp, "name" | "summary" | "operands">>,
  colour: boolean
): string => {
  const heading = (text: string) => (colour ? `\u001b[1m${text}\u001b[0m` : text)
  const nameWidth = Math.max(...commands.map((c) => c.name.length))
  return [
    "smtp-transport: outbound SMTP delivery from the shell, with a readable or JSON report.",
    "",
    heading("Usage"),
    "  smtp-transport <command> [options] [arguments]",
    "  smtp-transport <command> --help",
    "",
    heading("Commands"),
    ...commands.flatMap((c) => wrap(c.summary, `  ${c.name.padEnd(nameWidth)}  `, " ".repeat(nameWidth + 4))),
    "",
    heading("Global options (anywhere on the line)"),
    ...optionLines(globalOptions),
    "",
    heading("Examples"),
    "  smtp-transport send --from me@example.org --message hello.eml you@example.net",
    "  smtp-transport plan --config outbound.toml you@example.net",
    "  smtp-transport demo"
  ].join("\n")
}
