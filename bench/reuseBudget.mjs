// The per-message budget of the reuse workload (issue 16), in one process, for decisions between two builds:
//   node bench/reuseBudget.mjs [--count=2000] [--reps=3] [--concurrency=50] [--dist=DIR,DIR2,…]
// Starts the bench's DNS server and sink (child processes, bounded lifetime), then per build (a directory inside this
// checkout, so that "effect" resolves; default dist/): Transport.deliver on Transport.layer (the pool, the defaults
// reuse.messages = 100 and reuse.idle = 5s) to five domains r0 … r4 at c = concurrency, as the reuse figure of
// `npm run bench` runs it, after a warm-up of 1,000 messages. It prints one JSON line per build:
//   steps     run-loop steps per message: an effect/Supervisor with OpSupervision (public API) counts them, in a run
//             of its own (the counting slows the run); deterministic, so two builds compare without noise;
//   fibers    fibers started per message (forEach's workers left out);
//   cpu       CPU µs per message (process.cpuUsage), one value per repetition;
//   kb        KB allocated per message (V8's GC statistics: what each collection found in use before it ran, minus
//             what the previous one left), one value per repetition.
// The wall rate is not printed: on a shared machine it says more about the neighbours than about the build. Every
// batch is bounded in count, and the servers exit by themselves after 5 minutes.
import path from "node:path"
import { parseArgs } from "./common.mjs"
import { costPerUnit, countSteps } from "./measure.mjs"
import { startServers, workload } from "./reuseWorkload.mjs"

const here = path.dirname(new URL(import.meta.url).pathname)
const args = parseArgs(process.argv.slice(2))
const count = Number(args.count ?? 2000)
const reps = Number(args.reps ?? 3)
const concurrency = Number(args.concurrency ?? 50)
const dists = (args.dist ?? path.join(here, "../dist")).split(",").map((d) => path.resolve(d))

const measure = async (dist, servers) => {
  const { runtime, batch } = await workload(dist, servers, { concurrency, checked: true })
  await runtime.runPromise(batch(1_000_000, 1000))
  const counter = await countSteps(runtime, batch(0, count))
  const { cpu, kb } = await costPerUnit(reps, count, (rep) => runtime.runPromise(batch(2_000_000 + rep * count, count)))
  await runtime.dispose()
  return {
    dist: path.relative(path.join(here, ".."), dist) || ".",
    count,
    concurrency,
    steps: Math.round((counter.steps / count) * 10) / 10,
    fibers: Math.round((Math.max(0, counter.fibers - concurrency) / count) * 100) / 100,
    cpu,
    kb
  }
}

const servers = await startServers(300)
try {
  for (const dist of dists) console.log(JSON.stringify(await measure(dist, servers)))
} finally {
  servers.stop()
}
process.exit(0)
