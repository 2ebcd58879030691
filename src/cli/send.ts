/**
 * `smtp-transport send`: deliver one message and report per recipient.
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Transport from "../Transport.js"
import { CliExit, ExitCode, ofReport } from "./exit.js"
import * as Format from "./format.js"
import { checkAddresses, common, environment, invalidRequest } from "./options.js"

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
        ? Effect.zipRight(Console.error("reading the message from standard input; end it with Ctrl-D"), readStdin)
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
export const command = Command.make(
  "send",
  {
    ...common,
    message: Options.text("message").pipe(
      Options.withPseudoName("file"),
      Options.optional,
      Options.withDescription("the RFC 5322 message; - or absent: standard input")
    ),
    recipients: Args.text({ name: "recipient" }).pipe(Args.atLeast(1))
  },
  (options) =>
    Effect.gen(function*() {
      const env = yield* environment(options)
      yield* checkAddresses(options.from, options.recipients).pipe(Effect.mapError(invalidRequest))
      const message = yield* readMessage(options.message)
      const report = yield* Transport.deliver({
        message,
        sender: options.from,
        recipients: options.recipients,
        attempt: { retryNum: options.retryNum }
      }).pipe(
        Effect.mapError(invalidRequest),
        Effect.provide(env.layer),
        Effect.provideService(Transport.TransportOptions, env.options)
      )
      yield* Console.log(options.json ? JSON.stringify(report, null, 2) : Format.report(report))
      const code = ofReport(report)
      if (code !== ExitCode.ok) return yield* new CliExit({ code, message: null })
    })
).pipe(Command.withDescription("Deliver a message to its recipients' MX hosts and report what happened."))
