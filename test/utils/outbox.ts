/**
 * Runner processes of `smtp-transport outbox serve` (the built executable, dist/bin.js), for the outbox's live
 * suites: started, waited for, stopped with a signal, and always killed when the test's scope closes.
 */
import { Duration, Effect } from "effect"
import type * as Scope from "effect/Scope"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import * as net from "node:net"
import * as path from "node:path"
import { runMain } from "./cli.js"

/** The cluster suites' PostgreSQL (`.ci/run` starts it): trust auth, database `test`. */
export const pgUrl = "postgres://postgres@127.0.0.1:5432/test"

/**
 * `outbox serve` on `pgUrl` under `prefix`, at a port the system has just handed out (a fixed port in the ephemeral
 * range can be taken by any other suite's connection running beside this one), delivering to `port` on loopback.
 */
export const startPgRunner = (
  prefix: string,
  options: { readonly config: string; readonly dns: string; readonly port: number },
  extra: ReadonlyArray<string> = [],
  whileStarting?: (stderr: () => string) => Effect.Effect<void, Error>
) =>
  Effect.flatMap(freePort, (runnerPort) =>
    startRunner([
      "--db",
      pgUrl,
      "--prefix",
      prefix,
      "--runner",
      `127.0.0.1:${runnerPort}`,
      "--config",
      options.config,
      "--dns",
      options.dns,
      "--port",
      String(options.port),
      ...extra
    ], "30 seconds", whileStarting))

const bin = path.resolve(import.meta.dirname, "..", "..", "dist", "bin.js")

export interface Runner {
  readonly process: ChildProcess
  /** Standard output so far: one JSON status event a line. */
  readonly stdout: () => string
  readonly stderr: () => string
  /** Resolves with the exit code (or the signal's name) once the process has exited. */
  readonly exited: Effect.Effect<number | string>
  readonly signal: (signal: NodeJS.Signals) => Effect.Effect<void>
}

/**
 * `smtp-transport outbox serve <args>`; ready once it printed that it serves (bounded by `timeout`). `whileStarting`
 * runs once it is spawned, before the wait (with its standard error so far): what a case does to a starting runner.
 */
export const startRunner = (
  args: ReadonlyArray<string>,
  timeout: Duration.DurationInput = "20 seconds",
  whileStarting?: (stderr: () => string) => Effect.Effect<void, Error>
): Effect.Effect<Runner, Error, Scope.Scope> =>
  Effect.gen(function*() {
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(process.execPath, [bin, "outbox", "serve", ...args], { stdio: ["ignore", "pipe", "pipe"] })),
      (child) =>
        Effect.sync(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
        })
    )
    let stdout = ""
    let stderr = ""
    child.stdout!.on("data", (d) => (stdout += d.toString()))
    child.stderr!.on("data", (d) => (stderr += d.toString()))
    const exitPromise = new Promise<number | string>((resolve) =>
      child.once("exit", (code, signal) => resolve(code ?? signal ?? "?"))
    )
    const exited = Effect.promise(() => exitPromise)
    const ready = Effect.gen(function*() {
      while (!stderr.includes("outbox serving")) {
        if (child.exitCode !== null) return yield* Effect.fail(new Error(`the runner exited: ${stderr}`))
        yield* Effect.sleep("50 millis")
      }
    })
    if (whileStarting !== undefined) yield* whileStarting(() => stderr)
    yield* ready.pipe(
      Effect.timeoutFail({ duration: timeout, onTimeout: () => new Error(`the runner did not start: ${stderr}`) })
    )
    return {
      process: child,
      stdout: () => stdout,
      stderr: () => stderr,
      exited,
      signal: (signal) => Effect.sync(() => void child.kill(signal))
    }
  })

/** `smtp-transport outbox <args>` in this process: its output and status. */
export const outbox = (args: ReadonlyArray<string>) => runMain(["outbox", ...args])

interface StatusJson {
  readonly id: string
  readonly done: boolean
  readonly dsnOf: string | null
  readonly recipients: ReadonlyArray<{ readonly address: string; readonly state: string; readonly retryNum: number }>
  readonly attempts: ReadonlyArray<{ readonly domain: string; readonly startedMs: number }>
}

/** `outbox list --json` until `done(list)` holds, polled every 200 ms, at most `timeout`. */
export const waitFor = (
  db: ReadonlyArray<string>,
  done: (messages: ReadonlyArray<StatusJson>) => boolean,
  timeout: Duration.DurationInput = "30 seconds"
) =>
  Effect.gen(function*() {
    const polls = Math.ceil(Duration.toMillis(Duration.decode(timeout)) / 200)
    let last: ReadonlyArray<StatusJson> = []
    for (let i = 0; i < polls; i++) {
      // One message read while some are pending; the whole list once none is.
      const pending = yield* outbox(["list", ...db, "--json", "--pending", "--limit", "1"])
      if (pending.code === 0 && pending.stdout.trim() !== "[]") last = JSON.parse(pending.stdout) as ReadonlyArray<StatusJson>
      if (pending.code !== 0 || pending.stdout.trim() !== "[]") {
        yield* Effect.sleep("200 millis")
        continue
      }
      const run = yield* outbox(["list", ...db, "--json", "--limit", "10000"])
      if (run.code === 0) {
        last = JSON.parse(run.stdout) as ReadonlyArray<StatusJson>
        if (done(last)) return last
      }
      yield* Effect.sleep("200 millis")
    }
    return last
  })

/** A statement through `psql` on the test database (PostgreSQL at 127.0.0.1:5432, `test`, trust auth): its rows. */
export const psql = (command: string) =>
  execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-Atc", command], {
    stdio: "pipe",
    timeout: 30_000
  }).toString()

/** Its rows. */
export const psqlRows = (command: string): ReadonlyArray<string> => psql(command).split("\n").filter((l) => l !== "")

/** Drops every table whose name starts with `<prefix>_` (a test run's outbox and cluster). */
export const dropTables = (prefix: string) => {
  const tables = psql(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE '${prefix}\\_%'`)
    .split("\n").filter((t) => t !== "")
  for (const table of tables) psql(`DROP TABLE IF EXISTS "${table}" CASCADE`)
}

/** A port free on 127.0.0.1 now (listened on, then closed). */
export const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})
