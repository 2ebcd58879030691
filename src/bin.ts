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
import * as HashMap from "effect/HashMap"
import * as Inspectable from "effect/Inspectable"
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

const text = (u: unknown) => (typeof u === "string" ? u : Inspectable.toStringUnknown(u))

// Logs (`--log-level debug` shows the SMTP dialogue) go to stderr, so that `--json` output stays clean; one plain
// line each, led by the program's name like every other message: `smtp-transport: 12:00:00.123 debug C: EHLO …`.
const logger = Logger.make(({ annotations, date, logLevel, message }) => {
  const parts = Array.isArray(message) ? message.map(text) : [text(message)]
  const notes = HashMap.reduce(annotations, "", (acc, value, key) => `${acc} ${key}=${text(value)}`)
  const head = `smtp-transport: ${date.toISOString().slice(11, 23)} ${logLevel.label.toLowerCase()}`
  // A multi-line message (a server's EHLO reply) keeps the head on every line, so that each line says whose it is.
  const lines = `${parts.join(" ")}${notes}`.split(/\r?\n/)
  globalThis.console.error(lines.map((line) => `${head} ${line}`).join("\n"))
})

main(process.argv).pipe(
  Effect.provide(Logger.replace(Logger.defaultLogger, logger)),
  NodeRuntime.runMain({ disablePrettyLogger: true, teardown })
)
