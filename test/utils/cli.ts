/**
 * The CLI in this process (`main`, what `bin.ts` runs) with its Console and its logs captured: output and exit
 * status as the executable gives them, without a process start per case. A pipe has no colour, so neither has this.
 */
import { type Console, Effect, Inspectable, Logger } from "effect"
import * as util from "node:util"
import { main } from "../../src/cli/main.js"

/**
 * What a run printed: each `log` call a line of `lines`, the whole of standard output and error as text, and each
 * log message that passed `--log-level` (which the executable's logger writes to stderr, bin.ts) as `level message`.
 */
export interface Captured {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
  readonly lines: ReadonlyArray<string>
  readonly logs: ReadonlyArray<string>
}

const text = (u: unknown) => (typeof u === "string" ? u : Inspectable.toStringUnknown(u))

/** Runs `smtp-transport <args>` in this process (`argv0` names the executable, as `process.argv[1]` would). */
export const runMain = (args: ReadonlyArray<string>, argv0 = "smtp-transport") =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    const logs: Array<string> = []
    let stdout = ""
    let stderr = ""
    const base = yield* Effect.console
    const out = (...xs: ReadonlyArray<unknown>) => {
      const line = util.format(...xs)
      lines.push(line)
      stdout += `${line}\n`
    }
    const err = (...xs: ReadonlyArray<unknown>) => (stderr += `${util.format(...xs)}\n`)
    const captured: Console.Console = {
      ...base,
      log: (...xs) => Effect.sync(() => out(...xs)),
      error: (...xs) => Effect.sync(() => err(...xs)),
      unsafe: { ...base.unsafe, log: out, error: err }
    }
    const logger = Logger.make(({ logLevel, message }) => {
      const parts = Array.isArray(message) ? message.map(text) : [text(message)]
      logs.push(`${logLevel.label.toLowerCase()} ${parts.join(" ")}`)
    })
    const code = yield* main(["node", argv0, ...args], { colour: false }).pipe(
      Effect.withConsole(captured),
      Effect.provide(Logger.replace(Logger.defaultLogger, logger))
    )
    return { code, stdout, stderr, lines, logs } satisfies Captured
  })
