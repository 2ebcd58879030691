/**
 * `smtp-transport outbox`: the durable outbox from the command line. `serve` runs a runner (everything, on a SQLite
 * file; or one runner of a cluster on PostgreSQL), `enqueue` stores a message and prints its id, `status` and `list`
 * read the state. The outbox's packages are optional peers: they are loaded here, when a subcommand runs, never when
 * the CLI starts.
 *
 * @since 0.3.0
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type * as OutboxModule from "../Outbox.js"
import * as Transport from "../Transport.js"
import type { OptionSpec, Parsed } from "./args.js"
import { CliExit, ExitCode, usage } from "./exit.js"
import * as Format from "./format.js"
import type { CommandHelp } from "./help.js"
import { checkAddresses, common, environment, flag, invalidRequest, readCommon, value } from "./options.js"
import { readStdin } from "./send.js"

const subcommands = ["serve", "enqueue", "status", "list"] as const
type Subcommand = typeof subcommands[number]

const dbOption: OptionSpec = {
  name: "db",
  value: "url",
  description: "The outbox's database: file:<path> (or a path) for SQLite, which serve runs in one process, or " +
    "postgres://… for a cluster of runners on PostgreSQL. The default is file:outbox.db."
}

/** Which subcommands take an option (the global ones aside). */
const optionsOf: ReadonlyArray<readonly [OptionSpec, ReadonlyArray<Subcommand>]> = [
  [dbOption, subcommands],
  [common[0]!, ["serve", "enqueue"]], // --config
  [common[1]!, ["enqueue"]], // --from
  [{
    name: "message",
    value: "file",
    description: "enqueue: the RFC 5322 message; with - or without this option it is read from standard input."
  }, ["enqueue"]],
  [common[2]!, ["serve"]], // --dns
  [common[3]!, ["serve"]], // --port
  [common[6]!, ["serve"]], // --tls-ca
  [{
    name: "concurrency",
    value: "n",
    description: "serve: how many attempts this runner makes at once (an attempt: one message to one recipient domain). " +
      "The default is 100."
  }, ["serve"]],
  [{
    name: "runner",
    value: "host:port",
    description: "serve on PostgreSQL: the address other runners reach this one at (and it listens on). The " +
      "default is 127.0.0.1:34431; every runner on a machine needs its own port."
  }, ["serve"]],
  [{
    name: "lease",
    value: "seconds",
    description: "serve on PostgreSQL: how long this runner's shard locks and heartbeat last; it renews them every " +
      "third of it. A runner that dies stops counting, and its shards go to the others, within a lease. The default " +
      "is 6; every runner of a cluster should have the same."
  }, ["serve"]],
  [{
    name: "prefix",
    value: "name",
    description: "The tables' prefix (<prefix>_messages, <prefix>_cluster_…); the default is outbox."
  }, subcommands],
  [{ name: "limit", value: "n", description: "list: at most this many messages, newest first. The default is 100." }, [
    "list"
  ]],
  [{ name: "pending", value: null, description: "list: only messages with a recipient not final." }, ["list"]],
  [{ name: "json", value: null, description: "status, list: JSON instead of the readable form." }, ["status", "list"]]
]

/**
 * @since 0.3.0
 */
export const options: ReadonlyArray<OptionSpec> = optionsOf.map(([spec]) => spec)

/**
 * @since 0.3.0
 */
export const help: CommandHelp = {
  name: "outbox",
  summary: "a durable outbox: serve runs the retries, enqueue stores a message, status and list read.",
  operands: "serve | enqueue <recipient>... | status <id> | list",
  description: [
    "serve: a runner. On a SQLite file (--db file:outbox.db) it is the whole outbox; on PostgreSQL (--db " +
    "postgres://…) start several, each with its own --runner address: every attempt for a recipient domain runs on " +
    "the one runner that holds the domain's primary MX host, so the configured limiters hold across them. Each message is a durable " +
    "workflow, retried on the configuration's [queue.schedule] until every recipient is delivered, failed or " +
    "expired; the sender gets a DSN at each notify point and on failure. Every state change is printed on " +
    "standard output as a JSON line: on PostgreSQL every change of the cluster (each runner prints the same log), " +
    "on SQLite the process's own. SIGTERM or Ctrl-C stops it after the attempts under way; what was waiting " +
    "resumes on another runner (or at the next start).",
    "enqueue: checks the request, stores it and prints its id; a runner on the same database begins it within a " +
    "second. status: each recipient's state, reply or last error and next attempt, and every attempt. list: the " +
    "messages, newest first."
  ],
  options,
  examples: [
    ["smtp-transport outbox serve --db file:outbox.db --config outbound.toml", "Run the outbox on a SQLite file."],
    [
      "smtp-transport outbox enqueue --db file:outbox.db --from me@example.org --message hello.eml you@example.net",
      "Store a message; prints its id."
    ],
    ["smtp-transport outbox status --db file:outbox.db <id>", "What happened to it so far."],
    [
      "smtp-transport outbox serve --db postgres://127.0.0.1/mail --runner 10.0.0.2:34431 --config outbound.toml",
      "One runner of a cluster on PostgreSQL."
    ]
  ],
  exitStatus: [
    [0, "Done."],
    [64, "EX_USAGE: the command line is wrong (unknown subcommand or option, invalid address)."],
    [66, "EX_NOINPUT: the message file cannot be read, or status: no message has this id."],
    [69, "EX_UNAVAILABLE: the database cannot be used (or the outbox's packages are not installed)."],
    [78, "EX_CONFIG: the configuration file cannot be used; every problem is printed."],
    [130, "serve stopped by SIGTERM or Ctrl-C, after the attempts under way ended."]
  ]
}

const outboxPeers = ["@effect/cluster", "@effect/workflow", "@effect/sql", "@effect/sql-sqlite-node", "@effect/sql-pg"]

// Loaded on use: the outbox's packages are optional peers of the library.
const loadOutbox = Effect.tryPromise({
  try: () => import("../Outbox.js"),
  catch: (error) =>
    new CliExit({
      code: ExitCode.unavailable,
      message: `the outbox needs ${outboxPeers.join(", ")} (optional peers): ${String(error)}`
    })
})

const unavailable = (error: { readonly message: string }) =>
  new CliExit({ code: ExitCode.unavailable, message: error.message })

const positiveInt = (name: string, text: string) => {
  const n = /^\d{1,6}$/.test(text) ? Number(text) : NaN
  return n >= 1 ? Effect.succeed(n) : Effect.fail(usage(`--${name} must be a whole number of 1 or more, not ${JSON.stringify(text)}`))
}

const time = (ms: number | null) => (ms === null ? "-" : new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z"))

/** The readable status of a message. */
const readable = (status: OutboxModule.MessageStatus): string => {
  const lines = [
    `${status.id}: ${status.done ? "done" : "pending"}, from <${status.sender}>, enqueued ${time(status.createdMs)}` +
    (status.dsnOf === null ? "" : `, a DSN about ${status.dsnOf}`)
  ]
  lines.push(...Format.table(status.recipients.map((r) => {
    const detail = r.reply !== null
      ? `${r.reply.code}${r.reply.enhanced === null ? "" : ` ${r.reply.enhanced}`} ${r.reply.text.replace(/\n/g, " / ")}`
      : r.error !== null
      ? `${r.error.kind}: ${r.error.message.replace(/\n/g, " / ")}`
      : ""
    const next = r.state === "queued" || r.state === "deferred" ? `next ${time(r.nextAttemptMs)}` : ""
    return [r.address, r.state, `retry_num ${r.retryNum}`, `last_error ${r.lastError}`, next, detail]
  })))
  if (status.attempts.length > 0) {
    lines.push("attempts:")
    lines.push(...Format.table(status.attempts.map((a) => [
      time(a.startedMs),
      a.domain,
      a.recipients.map((r) => `${r.address} ${r.status}`).join(", "),
      a.attempts.map((x) => `${x.host}[${x.ip}] ${x.outcome}`).join(", ")
    ])))
  }
  return lines.join("\n")
}

const readMessage = (file: Option.Option<string>) =>
  Option.match(Option.filter(file, (f) => f !== "-"), {
    onNone: () => readStdin,
    onSome: (path) =>
      Effect.tryPromise({
        try: () => import("node:fs/promises").then((fs) => fs.readFile(path)),
        catch: (error) =>
          new CliExit({ code: ExitCode.noInput, message: `cannot read the message file ${path}: ${(error as Error).message}` })
      }).pipe(Effect.map((b) => new Uint8Array(b)))
  })

const parseRunner = (text: string) => {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(text)
  const port = m === null ? NaN : Number(m[2])
  return m !== null && port >= 1 && port <= 65_535
    ? Effect.succeed({ host: m[1]!.replace(/^\[|\]$/g, ""), port })
    : Effect.fail(usage(`--runner must be host:port, not ${JSON.stringify(text)}`))
}

/**
 * Runs `outbox` with its parsed command line.
 *
 * @since 0.3.0
 */
export const run = (parsed: Parsed): Effect.Effect<void, CliExit, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const [name, ...operands] = parsed.positionals
    const sub = subcommands.find((s) => s === name)
    if (sub === undefined) {
      return yield* usage(
        name === undefined
          ? `outbox needs a subcommand: ${subcommands.join(", ")} (see smtp-transport outbox --help)`
          : `unknown outbox subcommand ${JSON.stringify(name)}: the subcommands are ${subcommands.join(", ")}`
      )
    }
    const misplaced = optionsOf.filter(([spec, subs]) => !subs.includes(sub) && parsed.values.has(spec.name))
    if (misplaced.length > 0) {
      return yield* usage(`outbox ${sub} does not take --${misplaced[0]![0].name}`)
    }
    const db = Option.getOrElse(value(parsed, "db"), () => "file:outbox.db")
    const prefix = Option.getOrUndefined(value(parsed, "prefix"))
    if (prefix !== undefined && !/^[a-z_][a-z0-9_]{0,40}$/.test(prefix)) {
      return yield* usage(`--prefix must be lower-case letters, digits and _, not ${JSON.stringify(prefix)}`)
    }
    const Outbox = yield* loadOutbox
    const opts = yield* readCommon(parsed)

    if (sub === "status" || sub === "list") {
      if (sub === "status" && operands.length !== 1) return yield* usage("outbox status takes one message id")
      if (sub === "list" && operands.length > 0) return yield* usage("outbox list takes no operands")
      const json = flag(parsed, "json")
      const limit = yield* Option.match(value(parsed, "limit"), {
        onNone: () => Effect.succeed(100),
        onSome: (t) => positiveInt("limit", t)
      })
      const env = yield* environment({ ...opts, config: Option.none() })
      return yield* Effect.gen(function*() {
        const outbox = yield* Outbox.Outbox
        if (sub === "status") {
          const status = yield* outbox.status(operands[0]!)
          if (Option.isNone(status)) {
            return yield* new CliExit({ code: ExitCode.noInput, message: `no message ${operands[0]} in the outbox` })
          }
          return yield* Console.log(json ? JSON.stringify(status.value, null, 2) : readable(status.value))
        }
        const all = yield* outbox.list({ limit, pendingOnly: flag(parsed, "pending") })
        if (json) return yield* Console.log(JSON.stringify(all, null, 2))
        return yield* Console.log(
          all.length === 0 ? "no messages" : Format.table(all.map((m) => [
            m.id,
            m.done ? "done" : "pending",
            time(m.createdMs),
            `<${m.sender}>`,
            m.recipients.map((r) => `${r.address} ${r.state}`).join(", ")
          ]), [], "").join("\n")
        )
      }).pipe(
        Effect.provide(Outbox.layerClient({ db, prefix }).pipe(Layer.provide(env.layer))),
        Effect.catchTag("OutboxError", (e) => Effect.fail(unavailable(e)))
      )
    }

    if (sub === "enqueue") {
      if (operands.length === 0) return yield* usage("outbox enqueue needs at least one recipient")
      const env = yield* environment(opts)
      yield* checkAddresses(opts.from, operands).pipe(Effect.mapError(invalidRequest))
      const message = yield* readMessage(value(parsed, "message"))
      const id = yield* Effect.flatMap(Outbox.Outbox, (o) => o.enqueue({ message, sender: opts.from, recipients: operands }))
        .pipe(
          Effect.provide(Outbox.layerClient({ db, prefix }).pipe(Layer.provide(env.layer))),
          Effect.catchTags({
            OutboxError: (e) => Effect.fail(unavailable(e)),
            InvalidRequest: (e) => Effect.fail(invalidRequest(e))
          })
        )
      return yield* Console.log(id)
    }

    // serve
    if (operands.length > 0) return yield* usage("outbox serve takes no operands")
    const concurrency = yield* Option.match(value(parsed, "concurrency"), {
      onNone: () => Effect.succeed(100),
      onSome: (t) => positiveInt("concurrency", t)
    })
    const postgres = /^postgres(ql)?:\/\//.test(db)
    if (!postgres && parsed.values.has("runner")) return yield* usage("--runner is for a cluster on PostgreSQL")
    if (!postgres && parsed.values.has("lease")) return yield* usage("--lease is for a cluster on PostgreSQL")
    const runner = yield* parseRunner(Option.getOrElse(value(parsed, "runner"), () => "127.0.0.1:34431"))
    const lease = yield* Option.match(value(parsed, "lease"), {
      onNone: () => Effect.succeed(undefined),
      onSome: (t) => Effect.map(positiveInt("lease", t), (seconds) => `${seconds} seconds` as const)
    })
    const env = yield* environment(opts)
    const outboxLayer = postgres
      ? Outbox.layerPg({ url: db, runner, prefix, concurrency, lease })
      : Outbox.layerSqlite({ filename: db.replace(/^file:/, ""), prefix, concurrency })
    yield* Effect.gen(function*() {
      const outbox = yield* Outbox.Outbox
      yield* Console.error(
        `smtp-transport: outbox serving on ${postgres ? `PostgreSQL, runner ${runner.host}:${runner.port}` : db}`
      )
      // Runs until a signal interrupts it; the layer's scope then closes: sharding stops its entities, waiting for
      // the attempts under way.
      yield* outbox.events.pipe(Stream.runForEach((event) => Console.log(JSON.stringify(event))))
    }).pipe(
      Effect.provide(outboxLayer.pipe(Layer.provide(env.layer))),
      Effect.provideService(Transport.TransportOptions, env.options),
      Effect.catchTag("OutboxError", (e) => Effect.fail(unavailable(e)))
    )
  })
