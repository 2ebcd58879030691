#!/usr/bin/env node
/**
 * The `smtp-transport` executable.
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import type { Teardown } from "@effect/platform/Runtime"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Logger from "effect/Logger"
import { main } from "./cli/main.js"
import { ExitCode } from "./cli/exit.js"

// The status is the program's value; an interruption (Ctrl-C, SIGTERM) is 130, anything else escaping `main` a bug.
const teardown: Teardown = (exit, onExit) =>
  onExit(
    Exit.isSuccess(exit)
      ? typeof exit.value === "number" ? exit.value : ExitCode.software
      : Cause.isInterruptedOnly(exit.cause)
      ? ExitCode.interrupted
      : ExitCode.software
  )

// Logs (`--log-level debug` shows the SMTP dialogue) go to stderr, so that `--json` output stays clean.
const logger = Logger.replace(Logger.defaultLogger, Logger.prettyLogger({ stderr: true }))

main(process.argv).pipe(Effect.provide(logger), NodeRuntime.runMain({ disablePrettyLogger: true, teardown }))
