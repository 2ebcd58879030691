// What one connection's life costs, with no message: connect, greeting, EHLO, QUIT and the wait for the server's
// close, then `close`, through the public SmtpSession API on Connector.layer against the bench's sink.
//   node bench/connectionCycle.mjs [--count=2000] [--reps=3] [--concurrency=50] [--ops] [--raw] [--dist=DIR,DIR2,…]
// Starts the bench's sink (and its DNS server, unused; child processes that exit by themselves after 5 minutes), then
// per build (a directory inside this checkout, so that "effect" resolves; default dist/) prints one JSON line:
//   steps     run-loop steps per cycle, counted at c = 1 by an effect/Supervisor with OpSupervision (public API) in a
//             run of its own (500 cycles); deterministic up to the timer's wakes, so two builds compare without noise;
//   fibers    fibers started per cycle in that run;
//   ops       with --ops: the steps per cycle by Effect primitive;
//   cpu       CPU µs per cycle at c = concurrency (process.cpuUsage), one value per repetition;
//   kb        KB allocated per cycle at c = concurrency (V8's GC statistics), one value per repetition.
// With --raw, first the same for a hand-written node:net client (connect, EHLO, `end("QUIT")`, the close): cpu and kb.
// Every batch is bounded in count.
import net from "node:net"
import path from "node:path"
import { Duration, Effect, ManagedRuntime } from "effect"
import { EHLO_NAME, parseArgs } from "./common.mjs"
import { costPerUnit, countSteps } from "./measure.mjs"
import { startServers } from "./reuseWorkload.mjs"

const here = path.dirname(new URL(import.meta.url).pathname)
const args = parseArgs(process.argv.slice(2))
const count = Number(args.count ?? 2000)
const reps = Number(args.reps ?? 3)
const concurrency = Number(args.concurrency ?? 50)
const stepCount = 500
const dists = (args.dist ?? path.join(here, "../dist")).split(",").map((d) => path.resolve(d))

const measure = async (dist, { sinkPort }) => {
  const load = (name) => import(path.join(dist, `${name}.js`))
  const [SmtpSession, Connector, Settings] = await Promise.all([load("SmtpSession"), load("Connector"), load("Settings")])
  const timeouts = Object.fromEntries([...Settings.sessionPhases, "mta-sts"].map((p) => [p, Duration.seconds(30)]))
  const settings = {
    ehloName: EHLO_NAME,
    timeouts,
    servername: "mx",
    tls: { starttls: "disable", allowInvalidCerts: false, required: false },
    phaseSpans: false
  }
  const runtime = ManagedRuntime.make(Connector.layer)
  // A connection is always closed: `close` after QUIT, as the transport does.
  const cycle = Effect.flatMap(SmtpSession.connect({ ip: "127.0.0.1", port: sinkPort }, settings), (connection) =>
    Effect.ensuring(
      Effect.flatMap(SmtpSession.open(connection, settings), (session) => SmtpSession.quit(session)),
      connection.close
    ))
  const batch = (n, c) => Effect.forEach(Array.from({ length: n }), () => cycle, { concurrency: c, discard: true })
  await runtime.runPromise(batch(count, concurrency))
  const counter = await countSteps(runtime, batch(stepCount, 1))
  const { cpu, kb } = await costPerUnit(reps, count, () => runtime.runPromise(batch(count, concurrency)))
  await runtime.dispose()
  const per = (n) => Math.round((n / stepCount) * 10) / 10
  return {
    dist: path.relative(path.join(here, ".."), dist) || ".",
    count,
    concurrency,
    steps: per(counter.steps),
    fibers: Math.round((counter.fibers / stepCount) * 100) / 100,
    ...(args.ops === undefined ? {} : { ops: Object.fromEntries([...counter.ops].map(([k, v]) => [k, per(v)])) }),
    cpu,
    kb
  }
}

/** The raw client's cycle: what node:net alone costs for the same dialogue. */
const rawCycle = (port) =>
  new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port, noDelay: true })
    let state = 0
    let buffer = ""
    socket.on("data", (chunk) => {
      buffer += chunk.toString("latin1")
      if (state === 0 && buffer.includes("220 ")) {
        state = 1
        buffer = ""
        socket.write(`EHLO ${EHLO_NAME}\r\n`)
      } else if (state === 1 && /(^|\n)250 /.test(buffer)) {
        state = 2
        socket.end("QUIT\r\n")
      }
    })
    socket.on("close", resolve)
    socket.on("error", reject)
  })

const measureRaw = async ({ sinkPort }) => {
  const batch = async (n) => {
    let started = 0
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (started++ < n) await rawCycle(sinkPort)
    }))
  }
  await batch(count)
  const { cpu, kb } = await costPerUnit(reps, count, () => batch(count))
  return { dist: "raw", count, concurrency, cpu, kb }
}

const servers = await startServers(300)
try {
  if (args.raw !== undefined) console.log(JSON.stringify(await measureRaw(servers)))
  for (const dist of dists) console.log(JSON.stringify(await measure(dist, servers)))
} finally {
  servers.stop()
}
process.exit(0)
