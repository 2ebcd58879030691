/**
 * The `smtp-transport` command: `send`, `batch`, `plan`, `config`, `outbox`, `demo` and `help`, the global options, and the mapping of every
 * outcome to an exit status.
 *
 * @since 0.1.0
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { createRequire } from "node:module"
import { closest, isParseError, type OptionSpec, parse, type Parsed } from "./args.js"
import { CliExit, ExitCode, usage } from "./exit.js"
import { colourFor, type CommandHelp, globalOptions, render, renderRoot } from "./help.js"
import * as Batch from "./batch.js"
import * as ConfigCommand from "./config.js"
import * as OutboxCommand from "./outbox.js"
import * as Plan from "./plan.js"
import * as Send from "./send.js"

interface PackageJson {
  readonly version: string
  readonly devDependencies?: { readonly [name: string]: string }
}

const packageJson = createRequire(import.meta.url)("../../package.json") as PackageJson

const demoPeers = ["smtp-server", "dns2"] as const

// Loaded on use: the demo's servers (smtp-server, dns2) are development dependencies, absent from an installed
// package until the user adds them.
const runDemo = Effect.tryPromise({
  try: () => import("./demo.js"),
  catch: (error) => {
    const text = String(error)
    const missing = demoPeers.filter((p) => text.includes(`'${p}'`))
    if ((error as { code?: unknown }).code !== "ERR_MODULE_NOT_FOUND" || missing.length === 0) {
      return new CliExit({ code: ExitCode.software, message: `cannot load the demo: ${text}` })
    }
    const install = demoPeers.map((p) => `${p}@${packageJson.devDependencies?.[p] ?? "latest"}`).join(" ")
    return new CliExit({
      code: ExitCode.unavailable,
      message: `the demo needs smtp-server and dns2, which an installed package lacks (${missing.join(", ")} ` +
        `cannot be loaded): npm install ${install} in the project that has effect-smtp-transport (with -g if it ` +
        "is installed globally), or npm start in a checkout"
    })
  }
}).pipe(Effect.flatMap((m) => m.run))

const demoHelp: CommandHelp = {
  name: "demo",
  summary: "deliver a sample message on loopback, inside this process.",
  operands: "",
  description: [
    "Starts a DNS server and receiving SMTP servers on 127.0.0.1-3 and ::1: an MX whose IPv6 address never " +
    "answers, a greylisting server and a slow greeter, and delivers one message to three recipients through the " +
    "real transport, printing every report. It needs no network and no root. In an installed package it needs " +
    "smtp-server and dns2, which npm start in a checkout has."
  ],
  options: [],
  examples: [["smtp-transport demo", "Run the demo (npm start in a checkout)."]],
  exitStatus: [
    [0, "The deliveries went as designed."],
    [69, "EX_UNAVAILABLE: smtp-server or dns2 is not installed; the message says what to install."],
    [70, "EX_SOFTWARE: the deliveries did not go as designed (what differed is printed), or the servers could not start."]
  ]
}

interface Command {
  readonly help: CommandHelp
  readonly run: (parsed: Parsed) => Effect.Effect<void, CliExit, FileSystem.FileSystem>
}

const commands: ReadonlyArray<Command> = [
  { help: Send.help, run: Send.run },
  { help: Batch.help, run: Batch.run },
  { help: Plan.help, run: Plan.run },
  { help: ConfigCommand.help, run: ConfigCommand.run },
  { help: OutboxCommand.help, run: OutboxCommand.run },
  {
    help: demoHelp,
    run: (parsed) =>
      parsed.positionals.length > 0
        ? Effect.fail(usage(`demo takes no arguments, not ${JSON.stringify(parsed.positionals[0])}`))
        : runDemo
  }
]

const helpCommand: CommandHelp = {
  name: "help",
  summary: "print the help of a command.",
  operands: "[<command>]",
  description: [],
  options: [],
  examples: [],
  exitStatus: []
}

const logLevels: { readonly [name: string]: LogLevel.LogLevel } = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None
}

/** The command's name and its arguments; global options before the name are read as if they came after it. */
const split = (args: ReadonlyArray<string>): { readonly before: Array<string>; readonly name: string | null; readonly rest: ReadonlyArray<string> } => {
  const before: Array<string> = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === "--log-level") {
      before.push(arg, ...args.slice(i + 1, i + 2))
      i++
    } else if (arg.startsWith("-") && arg !== "-") {
      before.push(arg)
    } else {
      return { before, name: arg, rest: args.slice(i + 1) }
    }
  }
  return { before, name: null, rest: [] }
}

const root = (flag: (name: string) => boolean, colour: boolean) =>
  Effect.gen(function*() {
    if (flag("version")) return yield* Console.log(`smtp-transport ${packageJson.version}`)
    if (flag("help")) {
      return yield* Console.log(renderRoot([...commands.map((c) => c.help), helpCommand], colour))
    }
    return yield* usage("a command is required: send, batch, plan, config, outbox or demo (see smtp-transport --help)")
  })

const program = (args: ReadonlyArray<string>, colour: boolean) =>
  Effect.gen(function*() {
    // -h is the one short option: the usual spelling of a request for help.
    const { before, name, rest } = split(args.map((a) => (a === "-h" ? "--help" : a)))
    const known = [...commands.map((c) => c.help.name), "help"]
    const command = commands.find((c) => c.help.name === name)
    if (name !== null && command === undefined && name !== "help") {
      const suggestion = closest(name, known)
      return yield* usage(
        `unknown command ${JSON.stringify(name)}` + (suggestion === null ? "" : `: did you mean ${suggestion}?`) +
          ` (commands: ${known.join(", ")}; see smtp-transport --help)`
      )
    }
    const specs: ReadonlyArray<OptionSpec> = [...(command?.help.options ?? []), ...globalOptions]
    const where = name === null ? "smtp-transport --help" : `smtp-transport ${name} --help`
    const parsed = parse([...before, ...rest], specs, where)
    if (isParseError(parsed)) return yield* usage(parsed.message)
    const levelName = parsed.values.get("log-level")?.[0]
    const level = levelName === undefined ? undefined : logLevels[levelName.toLowerCase()]
    if (levelName !== undefined && level === undefined) {
      return yield* usage(
        `--log-level must be one of ${Object.keys(logLevels).join(", ")}, not ${JSON.stringify(levelName)}`
      )
    }
    const flag = (n: string) => parsed.values.get(n)?.[0] === "true"
    if (name === null) return yield* root(flag, colour)
    if (name === "help") {
      const topic = parsed.positionals[0]
      const target = commands.find((c) => c.help.name === topic)
      if (topic !== undefined && target === undefined) {
        return yield* usage(`no help for ${JSON.stringify(topic)}: the commands are ${known.join(", ")}`)
      }
      const page = target === undefined
        ? renderRoot([...commands.map((c) => c.help), helpCommand], colour)
        : render(target.help, colour)
      return yield* Console.log(page)
    }
    if (flag("help")) return yield* Console.log(render(command!.help, colour))
    if (flag("version")) return yield* Console.log(`smtp-transport ${packageJson.version}`)
    const run = command!.run(parsed)
    return yield* level === undefined ? run : Logger.withMinimumLogLevel(run, level)
  })

/**
 * Runs the command line (`process.argv`-shaped: runtime, script, arguments…) and gives the exit status; nothing
 * fails but an interruption. Messages for the user go to stderr, each line led by `smtp-transport:`; reports and
 * help go to stdout.
 *
 * @since 0.1.0
 */
export const main = (
  argv: ReadonlyArray<string>,
  options: { readonly colour?: boolean } = {}
): Effect.Effect<number> =>
  program(argv.slice(2), options.colour ?? colourFor(process.stdout)).pipe(
    Effect.as(ExitCode.ok as number),
    Effect.catchAll((error) => {
      const say = error.message === null ? Effect.void : Console.error(`smtp-transport: ${error.message}`)
      return Effect.as(say, error.code)
    }),
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.failCause(cause)
        : Effect.as(
          Console.error(`smtp-transport: internal error\n${Cause.pretty(cause)}`),
          ExitCode.software as number
        )
    ),
    Effect.provide(NodeContext.layer)
  )
