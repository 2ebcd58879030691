// The outbox's throughput beside the plain batch entry point, in the same run, against the same sink and DNS server
// (bench/sink.mjs, bench/dns.mjs, each its own process):
//
//   deliverAll      Transport.deliverAll in this process: the messages with no durability at all
//   sqlite, 1       Outbox.layerSqlite in this process (one runner, a SQLite file)
//   pg, 1 / pg, 3   `outbox serve` processes on PostgreSQL (127.0.0.1:5432, database test, a fresh table prefix,
//                   dropped after), the messages enqueued through Outbox.layerClient from this process
//
// Each outbox figure is end to end: from the first enqueue to the last message recorded done, read from SQL. The
// enqueue rate (the SQL transaction that stores a message) and the cluster's storage writes per message (rows of its
// messages and replies tables: the workflow's run, its step activities, the attempt's entity request, the replies)
// say what the durable steps cost. The workload is the reuse figure's: N messages to 5 domains, so connections are
// reused, as an outbox's deliveries to the same providers are.
//
// Usage: npm run build && node bench/outbox.mjs [--n=500] [--no-pg] [--out=outbox]
// Every loop is bounded in count and time; every child process is killed at the end.
import { spawn, execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Layer, Option, Stream, Tracer } from "effect"
import * as NodeContext from "@effect/platform-node/NodeContext"
import { boundLifetime, MESSAGE, parseArgs, reuseRecipientOf, SENDER } from "./common.mjs"
import { configText } from "./libraryClient.mjs"

const args = parseArgs(process.argv.slice(2))
const N = Number(args.n ?? 500)
const DOMAINS = 5
const withPg = args["no-pg"] === undefined
const out = args.out ?? "outbox"
boundLifetime(15 * 60 * 1000)

const dist = new URL("../dist/", import.meta.url)
const load = (name) => import(new URL(`${name}.js`, dist).href)
const [Transport, OutboundConfig, Outbox] = await Promise.all(["Transport", "OutboundConfig", "Outbox"].map(load))

const children = []
process.on("exit", () => children.forEach((c) => c.kill("SIGKILL")))

/** A bench helper process (sink, DNS) that reports {type: "ready", port} over IPC. */
const startHelper = (script, extra = []) =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [new URL(script, import.meta.url).pathname, ...extra], {
      stdio: ["ignore", "inherit", "inherit", "ipc"]
    })
    children.push(child)
    child.once("message", (m) => (m.type === "ready" ? resolve({ child, port: m.port }) : reject(new Error(String(m)))))
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)))
  })

const stats = (child) =>
  new Promise((resolve) => {
    child.once("message", resolve)
    child.send({ type: "stats" })
  })

const sink = await startHelper("./sink.mjs")
const dns = await startHelper("./dns.mjs")
const dnsServer = `127.0.0.1:${dns.port}`
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "smtp-transport-bench-outbox-"))
const configFile = path.join(tmp, "outbound.toml")
// The reuse workload's configuration (connections kept for the next message), with a short schedule.
fs.writeFileSync(configFile, configText({ domains: DOMAINS }) + `[queue.schedule]\nretry = ["1s"]\nexpire = "10m"\n`)
const configLayer = OutboundConfig.layer(configFile).pipe(Layer.provide(NodeContext.layer))
const transportOptions = (o) => ({ ...o, port: sink.port })

const messageFor = (tag, i) =>
  Buffer.concat([Buffer.from(`Message-ID: <${tag}-${i}@bench>\r\n`), MESSAGE])
const request = (tag, i) => ({ message: messageFor(tag, i), sender: SENDER, recipients: [reuseRecipientOf(i, DOMAINS)] })

const sinkCount = async () => (await stats(sink.child)).messages

const run = (effect) => Effect.runPromise(effect)

/** Transport.deliverAll, concurrency 100. */
const deliverAll = async (tag) => {
  const before = await sinkCount()
  const t0 = performance.now()
  await run(
    Stream.runDrain(Transport.deliverAll(Stream.range(0, N - 1).pipe(Stream.map((i) => ({ id: i, request: request(tag, i) }))), {
      concurrency: 100
    })).pipe(
      Effect.provide(Layer.merge(configLayer, Transport.layer({ dns: { servers: [dnsServer] } }))),
      Effect.flatMap(() => Effect.void),
      (e) => Effect.flatMap(Transport.TransportOptions, (o) => Effect.provideService(e, Transport.TransportOptions, transportOptions(o)))
    )
  )
  const ms = performance.now() - t0
  const sent = (await sinkCount()) - before
  if (sent !== N) throw new Error(`deliverAll: the sink got ${sent} of ${N}`)
  return { ms, rate: (N * 1000) / ms }
}

/** Waits (bounded) until `list` shows every message done. */
const waitDone = (outbox, n, budgetMs) =>
  Effect.gen(function* () {
    const polls = Math.ceil(budgetMs / 100)
    for (let i = 0; i < polls; i++) {
      // Every message is stored before the first poll: none pending is all done. (A poll reads one message.)
      const pending = yield* outbox.list({ limit: 1, pendingOnly: true })
      if (pending.length === 0) return true
      yield* Effect.sleep("100 millis")
    }
    return false
  })

/** Outbox on a SQLite file, in this process (traced by `tracer` when given). */
const sqlite = async (tag, tracer) => {
  const before = await sinkCount()
  const layer = Outbox.layerSqlite({ filename: path.join(tmp, `${tag}.db`) }).pipe(
    Layer.provide(Layer.merge(configLayer, Transport.layer({ dns: { servers: [dnsServer] } })))
  )
  const result = await run(
    Effect.gen(function* () {
      const outbox = yield* Outbox.Outbox
      const t0 = performance.now()
      yield* Effect.forEach(Array.from({ length: N }, (_, i) => i), (i) => outbox.enqueue(request(tag, i)), { concurrency: 16 })
      const enqueueMs = performance.now() - t0
      const done = yield* waitDone(outbox, N, 300_000)
      const ms = performance.now() - t0
      return { done, ms, enqueueMs }
    }).pipe(
      Effect.provide(layer),
      (e) => Effect.flatMap(Transport.TransportOptions, (o) => Effect.provideService(e, Transport.TransportOptions, transportOptions(o))),
      (e) => (tracer === undefined ? e : Effect.withTracer(e, tracer))
    )
  )
  const sent = (await sinkCount()) - before
  if (!result.done || sent !== N) throw new Error(`sqlite: done ${result.done}, the sink got ${sent} of ${N}`)
  return { ms: result.ms, rate: (N * 1000) / result.ms, enqueuePerMs: result.enqueueMs / N }
}

const url = "postgres://postgres@127.0.0.1:5432/test"
const psql = (command) =>
  execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-Atc", command], { timeout: 30_000 }).toString()

/** `outbox serve` runners on PostgreSQL, the messages enqueued through a client layer here. */
const pg = async (tag, runners, basePort) => {
  const prefix = `bench_${process.pid}_${tag}`
  const before = await sinkCount()
  const procs = []
  try {
    for (let r = 0; r < runners; r++) {
      const child = spawn(process.execPath, [
        new URL("../dist/bin.js", import.meta.url).pathname, "outbox", "serve", "--db", url, "--prefix", prefix,
        "--runner", `127.0.0.1:${basePort + r}`, "--config", configFile, "--dns", dnsServer, "--port", String(sink.port)
      ], { stdio: ["ignore", "ignore", "pipe"] })
      children.push(child)
      procs.push(child)
      let err = ""
      child.stderr.on("data", (d) => (err += d))
      await new Promise((resolve, reject) => {
        const t = setInterval(() => {
          if (err.includes("outbox serving")) { clearInterval(t); resolve() }
          if (child.exitCode !== null) { clearInterval(t); reject(new Error(err)) }
        }, 50)
      })
    }
    // The shards settle on the runners before the clock starts.
    await new Promise((r) => setTimeout(r, 3000))
    const layer = Outbox.layerClient({ db: url, prefix }).pipe(Layer.provide(configLayer))
    const result = await run(
      Effect.gen(function* () {
        const outbox = yield* Outbox.Outbox
        const t0 = performance.now()
        yield* Effect.forEach(Array.from({ length: N }, (_, i) => i), (i) => outbox.enqueue(request(tag, i)), { concurrency: 16 })
        const enqueueMs = performance.now() - t0
        const done = yield* waitDone(outbox, N, 300_000)
        return { done, ms: performance.now() - t0, enqueueMs }
      }).pipe(Effect.provide(layer))
    )
    const sent = (await sinkCount()) - before
    const rows = (t) => Number(psql(`SELECT count(*) FROM ${prefix}_cluster_${t}`))
    const storage = { messages: rows("messages") / N, replies: rows("replies") / N }
    if (!result.done || sent < N) throw new Error(`pg ${runners}: done ${result.done}, the sink got ${sent} of ${N}`)
    return { ms: result.ms, rate: (N * 1000) / result.ms, enqueuePerMs: result.enqueueMs / N, storage, duplicates: sent - N }
  } finally {
    for (const p of procs) p.kill("SIGTERM")
    await new Promise((r) => setTimeout(r, 1500))
    for (const p of procs) if (p.exitCode === null) p.kill("SIGKILL")
    const tables = psql(`SELECT tablename FROM pg_tables WHERE tablename LIKE '${prefix}\\_%'`).split("\n").filter(Boolean)
    for (const t of tables) psql(`DROP TABLE IF EXISTS "${t}" CASCADE`)
  }
}


/**
 * The cost of each durable step, measured: a tracer that receives the outbox's spans (outbox.enqueue.store,
 * outbox.enqueue.start — or outbox.sweep.start, a runner beginning a client's message —, outbox.step, outbox.dispatch, outbox.attempt, outbox.claim, outbox.smtp, outbox.record) and
 * @effect/sql's `sql.execute` spans, and adds up per step its calls, its time (the span's duration: a step's time
 * includes its children's) and the SQL statements run directly under it (attributed to the innermost outbox span).
 * The cluster's own storage statements are not traced (@effect/cluster disables tracing for them): on PostgreSQL the
 * rows each table gained and the index scans it had, per message, come from pg_stat_user_tables instead.
 */
const costTracer = () => {
  const stats = new Map()
  const entry = (name) => {
    let e = stats.get(name)
    if (e === undefined) stats.set(name, e = { calls: 0, ns: 0n, sql: 0, sqlNs: 0n })
    return e
  }
  let next = 0
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind) => {
      const span = {
        _tag: "Span", name, spanId: String(++next), traceId: "bench", parent, context, links: [...links], sampled: true,
        kind, status: { _tag: "Started", startTime }, attributes: new Map(),
        end(endTime, exit) {
          this.status = { _tag: "Ended", startTime, endTime, exit }
          const ns = endTime - startTime
          if (name.startsWith("outbox.")) {
            const e = entry(name)
            e.calls++
            e.ns += ns
          } else if (name === "sql.execute") {
            // The innermost outbox span above it, or none (the sweeper, and reads outside the steps).
            let p = parent
            while (Option.isSome(p) && !(p.value._tag === "Span" && p.value.name.startsWith("outbox."))) {
              p = p.value._tag === "Span" ? p.value.parent : Option.none()
            }
            const e = entry(Option.isSome(p) ? p.value.name : "(outside the steps)")
            e.sql++
            e.sqlNs += ns
          }
        },
        attribute(key, value) { this.attributes.set(key, value) },
        event() {},
        addLinks(l) { this.links.push(...l) }
      }
      return span
    },
    context: (f) => f()
  })
  return { tracer, stats }
}

/** Rows written and index scans per table of the prefix, from PostgreSQL's statistics. */
const tableStats = (prefix) => {
  psql("SELECT pg_stat_clear_snapshot()")
  const rows = psql(`SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE relname LIKE '${prefix}\\_%' ORDER BY relname`)
  return rows.split("\n").filter(Boolean).map((l) => {
    const [table, ins, upd, del, scans] = l.split("|")
    return { table: table.slice(prefix.length + 1), ins: Number(ins), upd: Number(upd), del: Number(del), scans: Number(scans) }
  })
}

const STEP_ORDER = ["outbox.enqueue", "outbox.enqueue.store", "outbox.enqueue.start", "outbox.sweep.start", "outbox.revive", "outbox.step", "outbox.dispatch",
  "outbox.attempt", "outbox.claim", "outbox.smtp", "outbox.record", "(outside the steps)"]
const costRows = (stats, n) =>
  [...stats].sort(([a], [b]) => STEP_ORDER.indexOf(a) - STEP_ORDER.indexOf(b)).map(([name, e]) => ({
    name,
    calls: e.calls / n,
    ms: Number(e.ns) / 1e6 / n,
    sql: e.sql / n,
    sqlMs: Number(e.sqlNs) / 1e6 / n
  }))

/**
 * `runners` PostgreSQL runners in this process (Outbox.layerPg, each its own pool, sharding and runner address; they
 * reach each other over loopback sockets as separate processes do), traced; the messages enqueued through a client
 * layer. For the costs only: one process's CPU runs all three.
 */
const pgTraced = async (tag, runners, basePort) => {
  const prefix = `bench_${process.pid}_${tag}`
  const { tracer, stats } = costTracer()
  try {
    const runnerLayer = (r) => Outbox.layerPg({ url, prefix, runner: { host: "127.0.0.1", port: basePort + r } }).pipe(
      Layer.provide(Layer.merge(configLayer, Transport.layer({ dns: { servers: [dnsServer] } })))
    )
    const result = await run(
      Effect.gen(function* () {
        // The first alone (it creates the tables), then the others.
        yield* Layer.build(runnerLayer(0))
        for (let r = 1; r < runners; r++) yield* Layer.build(runnerLayer(r))
        yield* Effect.sleep("3 seconds")
        const client = yield* Layer.build(Outbox.layerClient({ db: url, prefix }).pipe(Layer.provide(configLayer)))
        const outbox = client.unsafeMap.get(Outbox.Outbox.key)
        const t0 = performance.now()
        yield* Effect.forEach(Array.from({ length: N }, (_, i) => i), (i) => outbox.enqueue(request(tag, i)), { concurrency: 16 })
        const done = yield* waitDone(outbox, N, 300_000)
        return { done, ms: performance.now() - t0 }
      }).pipe(
        Effect.scoped,
        (e) => Effect.flatMap(Transport.TransportOptions, (o) => Effect.provideService(e, Transport.TransportOptions, transportOptions(o))),
        (e) => Effect.withTracer(e, tracer)
      )
    )
    if (!result.done) throw new Error(`pg traced ${runners}: not done`)
    await new Promise((r) => setTimeout(r, 1500))
    return { costs: costRows(stats, N), tables: tableStats(prefix).map((t) => ({ ...t, ins: t.ins / N, upd: t.upd / N, del: t.del / N, scans: t.scans / N })), ms: result.ms }
  } finally {
    const tables = psql(`SELECT tablename FROM pg_tables WHERE tablename LIKE '${prefix}\\_%'`).split("\n").filter(Boolean)
    for (const t of tables) psql(`DROP TABLE IF EXISTS "${t}" CASCADE`)
  }
}

const results = []
const record = (name, r) => {
  results.push({ name, ...r })
  console.log(`${name.padEnd(14)} ${r.rate.toFixed(1).padStart(8)} msg/s  ${(r.ms / 1000).toFixed(2)} s` +
    (r.enqueuePerMs === undefined ? "" : `  enqueue ${r.enqueuePerMs.toFixed(2)} ms/msg`) +
    (r.storage === undefined ? "" : `  cluster rows/msg: ${r.storage.messages.toFixed(1)} messages, ${r.storage.replies.toFixed(1)} replies`))
}

// Warm-up (JIT, DNS server, sink), unmeasured.
await deliverAll("warm")
record("deliverAll", await deliverAll("da"))
record("sqlite, 1", await sqlite("sq"))
if (withPg) {
  record("pg, 1 runner", await pg("pg1", 1, 35100))
  record("pg, 3 runners", await pg("pg3", 3, 35110))
}
record("deliverAll", await deliverAll("da2"))
const throughputLoad = os.loadavg()

// The costs, in runs of their own (the tracer's bookkeeping is not in the figures above).
const costs = []
{
  const { tracer, stats } = costTracer()
  await sqlite("sqc", tracer)
  costs.push({ name: "sqlite, 1 runner", costs: costRows(stats, N), tables: [] })
}
if (withPg) {
  costs.push({ name: "pg, 1 runner", ...(await pgTraced("pc1", 1, 35120)) })
  costs.push({ name: "pg, 3 runners (one process)", ...(await pgTraced("pc3", 3, 35130)) })
}
const f = (x, d = 2) => x.toFixed(d)

const base = results.filter((r) => r.name === "deliverAll").reduce((a, r) => a + r.rate, 0) /
  results.filter((r) => r.name === "deliverAll").length
const lines = [
  `# Outbox benchmark (${new Date().toISOString().slice(0, 10)}, N = ${N} messages to ${DOMAINS} domains, ` +
  `${os.cpus().length} cores, Node ${process.version}, load ${throughputLoad.map((l) => l.toFixed(2)).join(" ")})`,
  "",
  "| run | messages/s | × deliverAll | enqueue ms/msg | cluster rows per message (messages, replies) |",
  "|---|---|---|---|---|",
  ...results.map((r) =>
    `| ${r.name} | ${r.rate.toFixed(1)} | ${(r.rate / base).toFixed(3)} | ${r.enqueuePerMs?.toFixed(2) ?? "-"} | ` +
    `${r.storage === undefined ? "-" : `${r.storage.messages.toFixed(1)}, ${r.storage.replies.toFixed(1)}`} |`),
  "",
  `## What each durable step costs, per message (traced runs, load ${os.loadavg().map((l) => l.toFixed(2)).join(" ")})`,
  "",
  "Per message: how often the step ran, its time (a span's duration, its children's included: `outbox.attempt`",
  "contains claim, smtp and record; `outbox.dispatch` is the step's wait for the attempt's entity request and reply,",
  "the attempt included; `outbox.step` contains the dispatch), and the outbox store's SQL statements run directly",
  "in it (count, time). The cluster's own statements (workflow run, activities, entity messages, replies, clock,",
  "shard locks) are not traced by @effect/cluster; on PostgreSQL they show in the table rows below.",
  ...costs.flatMap((c) => [
    "",
    `### ${c.name}`,
    "",
    "| step | calls/msg | ms/msg | SQL statements/msg | SQL ms/msg |",
    "|---|---|---|---|---|",
    ...c.costs.map((r) => `| ${r.name} | ${f(r.calls)} | ${f(r.ms)} | ${f(r.sql)} | ${f(r.sqlMs)} |`),
    ...(c.tables.length === 0 ? [] : [
      "",
      "| table | inserts/msg | updates/msg | deletes/msg | scans/msg |",
      "|---|---|---|---|---|",
      ...c.tables.map((t) => `| ${t.table} | ${f(t.ins)} | ${f(t.upd)} | ${f(t.del)} | ${f(t.scans, 1)} |`)
    ])
  ])
]
fs.mkdirSync(new URL("./results/", import.meta.url), { recursive: true })
fs.writeFileSync(new URL(`./results/${out}.md`, import.meta.url), lines.join("\n") + "\n")
fs.writeFileSync(new URL(`./results/${out}.json`, import.meta.url), JSON.stringify({ n: N, results, costs }, null, 2) + "\n")
console.log(lines.join("\n"))
fs.rmSync(tmp, { recursive: true, force: true })
process.exit(0)
