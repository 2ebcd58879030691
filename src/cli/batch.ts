/**
 * `smtp-transport batch`: deliver a stream of messages, one JSON request a line, and write one JSON line per request
 * as each completes, over shared connections and limiters.
 *
 * @since 0.3.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as fs from "node:fs"
import * as readline from "node:readline"
import type { DeliveryReport } from "../DeliveryReport.js"
import { mapUnordered } from "../internal/mapUnordered.js"
import * as Transport from "../Transport.js"
import type { OptionSpec, Parsed } from "./args.js"
import { CliExit, ExitCode } from "./exit.js"
import type { CommandHelp } from "./help.js"
import { common, environment, readCommon, value } from "./options.js"

/**
 * @since 0.3.0
 */
export const options: ReadonlyArray<OptionSpec> = [
  ...common,
  {
    name: "concurrency",
    value: "n",
    description: "How many messages are delivered at once. The default is 100."
  }
]

/**
 * @since 0.3.0
 */
export const help: CommandHelp = {
  name: "batch",
  summary: "deliver messages given as JSON Lines, one report line per request as each completes.",
  operands: "[<file>]",
  description: [
    "Reads requests from the file, or from standard input without it (or with -), one JSON object a line: " +
    "{\"id\": \"m1\", \"from\": \"a@example.org\", \"to\": [\"b@example.net\"], \"message\": \"m1.eml\"}, with " +
    "\"message\" a file path relative to the current directory, or \"data\" with the message text instead. " +
    "\"from\" defaults to --from. Writes one JSON line per input line to standard output, in completion order: " +
    "the send --json report with \"id\" and \"line\" (counted from 1), or {\"line\", \"id\", \"error\": {\"kind\": " +
    "\"input\", \"message\"}} for a line that is not a valid request; the other lines go on. Deliveries share " +
    "connections (reuse.*) and the configured outbound limiters. On a terminal, progress goes to standard error."
  ],
  options,
  examples: [
    [
      "smtp-transport batch --config outbound.toml --concurrency 50 requests.jsonl > reports.jsonl",
      "Deliver every request of requests.jsonl, 50 at a time."
    ]
  ],
  exitStatus: [
    [0, "Every recipient of every request was delivered."],
    [75, "EX_TEMPFAIL: some recipients were deferred and none failed."],
    [69, "EX_UNAVAILABLE: at least one recipient failed permanently."],
    [65, "EX_DATAERR: at least one line was not a valid request (its output line says why)."],
    [64, "EX_USAGE: the command line is wrong."],
    [66, "EX_NOINPUT: the input (or the --tls-ca file) cannot be read."],
    [78, "EX_CONFIG: the configuration file cannot be used; every problem is printed."],
    [130, "Interrupted (Ctrl-C, SIGTERM): the deliveries under way are stopped and their connections closed."]
  ]
}

/** One input line, numbered from 1. */
interface Line {
  readonly line: number
  readonly text: string
}

/** A line that is not a valid request. */
interface InputError {
  readonly line: number
  readonly id: string | undefined
  readonly message: string
}

interface Request {
  readonly line: number
  readonly id: string | undefined
  readonly from: string
  readonly to: ReadonlyArray<string>
  readonly message: { readonly path: string } | { readonly data: string }
}

const FIELDS = ["id", "from", "to", "message", "data"]

/** A line as a request, or what is wrong with it. */
const decode = (input: Line, defaultFrom: string): Either.Either<Request, InputError> => {
  const fail = (message: string, id?: string) => Either.left({ line: input.line, id, message })
  let raw: unknown
  try {
    raw = JSON.parse(input.text)
  } catch (error) {
    return fail(`not JSON: ${(error as Error).message}`)
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return fail("not a JSON object")
  const o = raw as { readonly [key: string]: unknown }
  const id = typeof o["id"] === "string" ? o["id"] : undefined
  if (o["id"] !== undefined && id === undefined) return fail("\"id\" must be a string")
  const unknown = Object.keys(o).filter((k) => !FIELDS.includes(k))
  if (unknown.length > 0) return fail(`unknown field ${JSON.stringify(unknown[0])}; the fields are ${FIELDS.join(", ")}`, id)
  const from = o["from"] ?? defaultFrom
  if (typeof from !== "string") return fail("\"from\" must be a string (\"\" for the null sender)", id)
  const to = o["to"]
  if (!Array.isArray(to) || to.length === 0 || !to.every((t) => typeof t === "string")) {
    return fail("\"to\" must be a non-empty list of addresses", id)
  }
  const path = o["message"]
  const data = o["data"]
  if ((path === undefined) === (data === undefined)) return fail("give exactly one of \"message\" (a file) and \"data\"", id)
  if (path !== undefined && (typeof path !== "string" || path === "")) return fail("\"message\" must be a file path", id)
  if (data !== undefined && typeof data !== "string") return fail("\"data\" must be the message as a string", id)
  return Either.right({
    line: input.line,
    id,
    from,
    to: to as ReadonlyArray<string>,
    message: path !== undefined ? { path: path as string } : { data: data as string }
  })
}

/** The lines of the input; a read error ends the stream with exit status 66. */
const lines = (file: Option.Option<string>): Effect.Effect<Stream.Stream<Line, CliExit>, CliExit> =>
  Effect.gen(function*() {
    const path = Option.getOrUndefined(Option.filter(file, (f) => f !== "-"))
    const cannot = (error: unknown) =>
      new CliExit({
        code: ExitCode.noInput,
        message: `cannot read ${path === undefined ? "standard input" : path}: ${(error as Error).message ?? error}`
      })
    const input: NodeJS.ReadableStream = path === undefined
      ? process.stdin
      : yield* Effect.async<fs.ReadStream, CliExit>((resume) => {
        const stream = fs.createReadStream(path)
        stream.once("open", () => resume(Effect.succeed(stream)))
        stream.once("error", (error) => resume(Effect.fail(cannot(error))))
        return Effect.sync(() => stream.destroy())
      })
    return Stream.suspend(() => {
      let n = 0
      const rl = readline.createInterface({ input, crlfDelay: Infinity })
      return Stream.fromAsyncIterable(rl, cannot).pipe(
        Stream.map((text): Line => ({ line: ++n, text })),
        Stream.ensuring(Effect.sync(() => {
          rl.close()
          if (input !== process.stdin) (input as fs.ReadStream).destroy()
        }))
      )
    })
  })

type Outcome =
  | { readonly _tag: "Report"; readonly line: number; readonly id: string | undefined; readonly report: DeliveryReport }
  | { readonly _tag: "Invalid"; readonly error: InputError }

const outputLine = (outcome: Outcome): string =>
  outcome._tag === "Report"
    ? JSON.stringify({ id: outcome.id, line: outcome.line, ...outcome.report })
    : JSON.stringify({
      line: outcome.error.line,
      ...(outcome.error.id === undefined ? {} : { id: outcome.error.id }),
      error: { kind: "input", message: outcome.error.message }
    })

interface Tally {
  done: number
  delivered: number
  deferred: number
  failed: number
  invalid: number
}

const progressText = (tally: Tally, elapsedMs: number) =>
  `${tally.done} done: ${tally.delivered} delivered, ${tally.deferred} deferred, ${tally.failed} failed` +
  (tally.invalid > 0 ? `, ${tally.invalid} invalid` : "") +
  ` (${elapsedMs > 0 ? Math.round((tally.done * 1000) / elapsedMs) : 0} messages/s)`

/**
 * Runs `batch` with its parsed command line.
 *
 * @since 0.3.0
 */
export const run = (parsed: Parsed): Effect.Effect<void, CliExit, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const opts = yield* readCommon(parsed)
    const concurrencyText = Option.getOrElse(value(parsed, "concurrency"), () => "100")
    const concurrency = /^\d{1,6}$/.test(concurrencyText) ? Number(concurrencyText) : NaN
    if (!(concurrency >= 1)) {
      return yield* new CliExit({
        code: ExitCode.usage,
        message: `--concurrency must be a whole number of 1 or more, not ${JSON.stringify(concurrencyText)}`
      })
    }
    if (parsed.positionals.length > 1) {
      return yield* new CliExit({ code: ExitCode.usage, message: "batch takes one input file at most" })
    }
    const env = yield* environment(opts)
    const input = yield* lines(Option.fromNullable(parsed.positionals[0]))
    const filesystem = yield* FileSystem.FileSystem
    const tty = process.stderr.isTTY === true
    const startMs = yield* Clock.currentTimeMillis
    const tally: Tally = { done: 0, delivered: 0, deferred: 0, failed: 0, invalid: 0 }
    let shownMs = 0

    const deliverLine = (line: Line) => {
      const decoded = decode(line, opts.from)
      if (Either.isLeft(decoded)) return Effect.succeed<Outcome>({ _tag: "Invalid", error: decoded.left })
      const request = decoded.right
      const invalid = (message: string): Outcome => ({
        _tag: "Invalid",
        error: { line: request.line, id: request.id, message }
      })
      const message = "data" in request.message
        ? Effect.succeed<Uint8Array | string>(request.message.data)
        : Effect.mapError(
          filesystem.readFile(request.message.path),
          (error) => `cannot read the message file ${(request.message as { path: string }).path}: ${error.message}`
        )
      return Effect.matchEffect(message, {
        onFailure: (text) => Effect.succeed<Outcome>(invalid(text)),
        onSuccess: (bytes) =>
          Transport.deliver({
            message: bytes,
            sender: request.from,
            recipients: request.to,
            attempt: { retryNum: opts.retryNum, lastError: opts.lastError }
          }).pipe(
            Effect.match({
              onFailure: (error) => invalid(error.message),
              onSuccess: (report): Outcome => ({ _tag: "Report", line: request.line, id: request.id, report })
            })
          )
      })
    }

    const count = (outcome: Outcome) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        tally.done++
        if (outcome._tag === "Invalid") tally.invalid++
        else {
          for (const r of outcome.report.recipients) {
            if (r.status === "delivered") tally.delivered++
            else if (r.status === "deferred") tally.deferred++
            else tally.failed++
          }
        }
        if (!tty || now - shownMs < 200) return Effect.void
        shownMs = now
        return Effect.sync(() => process.stderr.write(`\r${progressText(tally, now - startMs)}\x1b[K`))
      })

    yield* input.pipe(
      (lines) => mapUnordered(lines, deliverLine, concurrency),
      Stream.tap((outcome) => Effect.zipRight(Console.log(outputLine(outcome)), count(outcome))),
      Stream.runDrain,
      Effect.provide(env.layer),
      Effect.provideService(Transport.TransportOptions, env.options)
    )
    if (tty) {
      const now = yield* Clock.currentTimeMillis
      process.stderr.write(`\r${progressText(tally, now - startMs)}\x1b[K\n`)
    }
    const code = tally.invalid > 0
      ? ExitCode.dataErr
      : tally.failed > 0
      ? ExitCode.unavailable
      : tally.deferred > 0
      ? ExitCode.tempFail
      : ExitCode.ok
    if (code !== ExitCode.ok) return yield* new CliExit({ code, message: null })
  })
