/**
 * The CLI in this process (`main`, what `bin.ts` runs) with its Console captured: output and exit status as the
 * executable gives them, without a process start per case. A pipe has no colour, so neither has this.
 */
import { type Console, Effect } from "effect"
import * as util from "node:util"
import { main } from "../../src/cli/main.js"

/** What a run printed: each `log` call a line of `lines`, and the whole of standard output and error as text. */
export interface Captured {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
  readonly lines: ReadonlyArray<string>
}

/** Runs `smtp-transport <args>` in this process (`argv0` names the executable, as `process.argv[1]` would). */
export const runMain = (args: ReadonlyArray<string>, argv0 = "smtp-transport") =>
  Effect.gen(function*() {
    const lines: Array<string> = []
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
    const code = yield* main(["node", argv0, ...args], { colour: false }).pipe(Effect.withConsole(captured))
    return { code, stdout, stderr, lines } satisfies Captured
  })
