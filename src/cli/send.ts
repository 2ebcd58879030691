/**
 * `smtp-transport send`: deliver one message and report per recipient.
 *
 * @since 0.1.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Transport from "../Transport.js"
import type { OptionSpec, Parsed } from "./args.js"
import { CliExit, ExitCode, ofReport } from "./exit.js"
import * as Format from "./format.js"
import type { CommandHelp } from "./help.js"
import { checkAddresses, common, environment, invalidRequest, readCommon, requireRecipients, value } from "./options.js"

/**
 * Standard input to its end. Interruption detaches, so Ctrl-C is not held up by a read.
 *
 * @since 0.1.0
 */
export const readStdin: Effect.Effect<Uint8Array, CliExit> = Effect.async((resume) => {
  const chunks: Array<Buffer> = []
  const stdin = process.stdin
  const onData = (chunk: Buffer) => chunks.push(chunk)
  const onEnd = () => {
    detach()
    resume(Effect.succeed(new Uint8Array(Buffer.concat(chunks))))
  }
  const onError = (error: Error) => {
    detach()
    resume(Effect.fail(new CliExit({ code: ExitCode.noInput, message: `cannot read the message from stdin: ${error.message}` })))
  }
  const detach = () => {
    stdin.off("data", onData).off("end", onEnd).off("error", onError)
    stdin.pause()
  }
  stdin.on("data", onData).once("end", onEnd).once("error", onError)
  return Effect.sync(detach)
})

const readMessage = (file: Option.Option<string>) =>
  Option.match(Option.filter(file, (f) => f !== "-"), {
    onNone: () =>
      process.stdin.isTTY === true
        ? Effect.zipRight(
          Console.error("smtp-transport: reading the message from standard input; end it with Ctrl-D"),
          readStdin
        )
        : readStdin,
    onSome: (path) =>
      Effect.flatMap(FileSystem.FileSystem, (fs) => fs.readFile(path)).pipe(
        Effect.mapError((error) =>
          new CliExit({ code: ExitCode.noInput, message: `cannot read the message file ${path}: ${error.message}` })
        )
      )
  })

/**
 * @since 0.1.0
 */
export const options: ReadonlyArray<OptionSpec> = [
  common[0]!,
  common[1]!,
  {
    name: "message",
    value: "file",
    description: "The RFC 5322 message. With - or without this option, it is read from standard input. Line " +
      "endings become CRLF on the wire."
  },
  ...common.slice(2),
  { name: "json", value: null, description: "Print the report as JSON on standard output instead of the summary." }
]

/**
 * @since 0.1.0
 */
export const help: CommandHelp = {
  name: "send",
  summary: "deliver a message to its recipients' MX hosts and report what happened.",
  operands: "<recipient>...",
  description: [
    "The recipients are grouped by domain, and each domain goes to its MX hosts, as the configuration says. The " +
    "addresses are checked before the message is read. The report goes to standard output; messages to standard " +
    "error. An argument that starts with - is an option: put recipients that start with - after --."
  ],
  options,
  examples: [
    [
      "smtp-transport send --from me@example.org --message hello.eml you@example.net",
      "Deliver hello.eml to you@example.net, from me@example.org, with every setting at its default."
    ],
    [
      "smtp-transport send --config outbound.toml --retry-num=1 --last-error=tls --json you@example.net < hello.eml",
      "A second attempt after a TLS failure, as a queue would make it, with the report as JSON."
    ]
  ],
  exitStatus: [
    [0, "Every recipient was delivered."],
    [75, "EX_TEMPFAIL: some recipients were deferred and none failed; try again later."],
    [69, "EX_UNAVAILABLE: at least one recipient failed permanently."],
    [64, "EX_USAGE: the command line is wrong (unknown option, bad value, invalid address, no recipient)."],
    [66, "EX_NOINPUT: the message file, standard input or the --tls-ca file cannot be read."],
    [78, "EX_CONFIG: the configuration file cannot be used; every problem is printed."],
    [70, "EX_SOFTWARE: a bug; the cause is printed."],
    [130, "Interrupted (Ctrl-C, SIGTERM)."]
  ]
}

/**
 * Runs `send` with its parsed command line.
 *
 * @since 0.1.0
 */
export const run = (parsed: Parsed): Effect.Effect<void, CliExit, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const opts = yield* readCommon(parsed)
    const recipients = parsed.positionals
    yield* requireRecipients("send", recipients)
    const env = yield* environment(opts)
    yield* checkAddresses(opts.from, recipients).pipe(Effect.mapError(invalidRequest))
    const message = yield* readMessage(value(parsed, "message"))
    const report = yield* Transport.deliver({
      message,
      sender: opts.from,
      recipients,
      attempt: { retryNum: opts.retryNum, lastError: opts.lastError }
    }).pipe(
      Effect.mapError(invalidRequest),
      Effect.provide(env.layer),
      Effect.provideService(Transport.TransportOptions, env.options)
    )
    yield* Console.log(opts.json ? JSON.stringify(report, null, 2) : Format.report(report))
    const code = ofReport(report)
    if (code !== ExitCode.ok) return yield* new CliExit({ code, message: null })
  })
