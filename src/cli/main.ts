/**
 * The `smtp-transport` command: `send`, `plan` and `demo`, and the mapping of every outcome to an exit status.
 *
 * @since 0.1.0
 */
import * as Command from "@effect/cli/Command"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import { createRequire } from "node:module"
import { CliExit, ExitCode, usage } from "./exit.js"
import * as Plan from "./plan.js"
import * as Send from "./send.js"

const version: string = (createRequire(import.meta.url)("../../package.json") as { version: string }).version

// Loaded on use: the demo's servers (smtp-server, dns2) are no part of send or plan.
const demo = Command.make("demo", {}, () => Effect.flatMap(Effect.promise(() => import("./demo.js")), (m) => m.run))
  .pipe(
    Command.withDescription(
      "Deliver a sample message on loopback: an embedded DNS zone, a silent IPv6 address, a greylisting server and " +
        "a slow greeter."
    )
  )

const root = Command.make("smtp-transport", {}, () =>
  Effect.fail(usage("a command is required: send, plan or demo (see smtp-transport --help)"))).pipe(
    Command.withDescription("Outbound SMTP delivery from the shell, with a readable or JSON report."),
    Command.withSubcommands([Send.command, Plan.command, demo])
  )

const cli = Command.run(root, { name: "smtp-transport", version })

/**
 * Runs the command line (`process.argv`-shaped: runtime, script, arguments…) and gives the exit status; nothing
 * fails but an interruption. Messages for the user go to stderr, reports to stdout.
 *
 * @since 0.1.0
 */
export const main = (argv: ReadonlyArray<string>): Effect.Effect<number> =>
  cli(argv).pipe(
    Effect.as(ExitCode.ok as number),
    Effect.catchAll((error) => {
      if (error instanceof CliExit) {
        const say = error.message === null ? Effect.void : Console.error(`smtp-transport: ${error.message}`)
        return Effect.as(say, error.code)
      }
      // @effect/cli has already printed what was wrong with the command line.
      if (ValidationError.isValidationError(error)) return Effect.succeed(ExitCode.usage as number)
      return Effect.as(Console.error(`smtp-transport: ${String(error)}`), ExitCode.software as number)
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
