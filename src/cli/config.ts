/**
 * `smtp-transport config check|show|convert FILE`: load a Stalwart configuration of any layout and say what it holds,
 * or write it in another layout.
 *
 * @since 0.3.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as OutboundConfig from "../OutboundConfig.js"
import { layouts } from "../Settings.js"
import type { OptionSpec, Parsed } from "./args.js"
import { CliExit, ExitCode, usage } from "./exit.js"
import type { CommandHelp } from "./help.js"

/**
 * @since 0.3.0
 */
export const options: ReadonlyArray<OptionSpec> = [
  {
    name: "to",
    value: "layout",
    description: "convert: the layout to write: outbound (Stalwart v0.7–v0.12), strategies (v0.13–v0.15) or json (v0.16)."
  }
]

/**
 * @since 0.3.0
 */
export const help: CommandHelp = {
  name: "config",
  summary: "check, show or convert a Stalwart configuration file.",
  operands: "check|show|convert <file>",
  description: [
    "Reads Stalwart's outbound settings in any of its layouts: [queue.outbound] (v0.7–v0.12), [queue.strategy] with " +
    "named route, connection and TLS strategies (v0.13–v0.15), or v0.16's registry objects as JSON (a file starting " +
    "with {).",
    "check prints every error and warning, and the Stalwart settings a transport does not use. show prints the " +
    "effective settings, each with where it came from (file:line, or default). convert writes the same settings in " +
    "another layout on standard output; a setting the target cannot hold is an error that names it."
  ],
  options,
  examples: [
    ["smtp-transport config check stalwart.toml", "Load the file and list every problem."],
    ["smtp-transport config show stalwart.toml", "Every effective value and where it came from."],
    ["smtp-transport config convert --to json stalwart.toml > outbound.json", "The v0.16 objects of a v0.13 file."]
  ],
  exitStatus: [
    [0, "The file loads (and, for convert, was written in the target layout)."],
    [64, "EX_USAGE: the command line is wrong (no such subcommand, no file, no or unknown --to)."],
    [66, "EX_NOINPUT: the file cannot be read."],
    [78, "EX_CONFIG: the file does not load, or a setting has no equivalent in the target layout; every problem is printed."]
  ]
}

const SUBCOMMANDS = ["check", "show", "convert"] as const

/**
 * Runs `config` with its parsed command line.
 *
 * @since 0.3.0
 */
export const run = (parsed: Parsed): Effect.Effect<void, CliExit, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const [sub, file, ...extra] = parsed.positionals
    if (sub === undefined || !(SUBCOMMANDS as ReadonlyArray<string>).includes(sub)) {
      return yield* usage(
        `config needs a subcommand: ${SUBCOMMANDS.join(", ")}${sub === undefined ? "" : `, not ${JSON.stringify(sub)}`}`
      )
    }
    if (file === undefined) return yield* usage(`config ${sub} needs a file`)
    if (extra.length > 0) return yield* usage(`config ${sub} takes one file, not also ${JSON.stringify(extra[0])}`)
    const to = parsed.values.get("to")?.[0]
    if (sub !== "convert" && to !== undefined) return yield* usage("--to goes with config convert")
    if (sub === "convert" && (to === undefined || !(layouts as ReadonlyArray<string>).includes(to))) {
      return yield* usage(
        `config convert needs --to ${layouts.join("|")}${to === undefined ? "" : `, not ${JSON.stringify(to)}`}`
      )
    }
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(file).pipe(
      Effect.mapError((error) => new CliExit({ code: ExitCode.noInput, message: `cannot read ${file}: ${error.message}` }))
    )
    const loaded = OutboundConfig.parse(text, file)
    if (Either.isLeft(loaded)) return yield* new CliExit({ code: ExitCode.config, message: loaded.left.message })
    const config = loaded.right
    if (sub === "show") return yield* Console.log(OutboundConfig.show(config, text))
    if (sub === "convert") {
      const written = OutboundConfig.convert(config, to as OutboundConfig.Layout, text)
      if (Either.isLeft(written)) {
        return yield* new CliExit({
          code: ExitCode.config,
          message: `cannot convert to ${to}: ${written.left.message}`
        })
      }
      for (const warning of config.warnings) yield* Console.error(`smtp-transport: warning: ${warning}`)
      return yield* Console.log(written.right.trimEnd())
    }
    const lines = [`${file}: loads (layout ${config.layout})`]
    for (const warning of config.warnings) lines.push(`${file}: warning: ${warning}`)
    if (config.notUsed.length > 0) {
      lines.push(`${file}: not used by the transport: ${config.notUsed.join("; ")}`)
    }
    yield* Console.log(lines.join("\n"))
  })
