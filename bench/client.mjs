// One client run in its own process, so CPU time and peak RSS are the client's alone:
//   node bench/client.mjs '<json options>'   →   one JSON line on stdout
// Options: impl ("raw" | "nodemailer" | "library"), dns ("127.0.0.1:PORT"), port, concurrency, count, warmup,
// timeLimitMs, window (completion-window size for the rate-over-time figure), and the impl's own options
// (sourceIps, closeFirst, …). A warm-up batch (its own domains) runs first and is not measured.
// Bounded: no delivery starts after timeLimitMs; if in-flight ones still hang 20 s later, the run reports what it
// measured so far (truncated: true) and exits.
import { percentile } from "./common.mjs"

const opts = JSON.parse(process.argv[2] ?? "{}")
const impls = {
  raw: "./rawClient.mjs",
  nodemailer: "./nodemailerClient.mjs",
  library: "./libraryClient.mjs",
  // Transport.deliverAll, the stream entry point, in place of Effect.forEach over Transport.deliver
  "library-stream": "./libraryClient.mjs",
  // the reuse figure (opts.domains set): many messages to a few domains
  "raw-reuse": "./rawReuseClient.mjs",
  "nodemailer-pool": "./nodemailerPoolClient.mjs",
  // the library's SMTP session alone, without Transport.deliver around it: the floor under the library's figure
  "session-floor": "./sessionFloorClient.mjs"
}
const timeLimitMs = opts.timeLimitMs ?? 120_000
const count = opts.count
const concurrency = opts.concurrency
const warmup = opts.warmup ?? 0

// The measured batch's state, module-wide so that the fail-safe can report it.
const latencies = new Float64Array(count)
const completions = new Float64Array(count)
const errors = new Map()
let completed = 0
let ok = 0
let failed = 0
let warmFailed = 0
let cpu0 = null
let hr0 = 0n
let t0 = 0
let client = null

const report = (extra = {}) => {
  const wallMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0 ?? undefined)
  const lat = latencies.subarray(0, completed)
  const window = opts.window ?? 0
  const windows = []
  for (let k = 0; window > 0 && (k + 1) * window <= completed; k++) {
    const from = k === 0 ? 0 : completions[k * window - 1]
    const to = completions[(k + 1) * window - 1]
    windows.push(Math.round((window / (to - from)) * 1000))
  }
  return {
    impl: opts.impl,
    concurrency,
    count,
    completed,
    ok,
    failed,
    warmup,
    warmFailed,
    errors: Object.fromEntries([...errors.entries()].sort((a, b) => b[1] - a[1]).slice(0, 5)),
    wallMs,
    rate: (ok / wallMs) * 1000,
    cpuUserUs: cpu.user,
    cpuSystemUs: cpu.system,
    cpuUsPerDelivery: ok > 0 ? (cpu.user + cpu.system) / ok : null,
    p50Ms: percentile(lat, 50),
    p99Ms: percentile(lat, 99),
    maxRssKb: process.resourceUsage().maxRSS,
    windows,
    // the measured batch on the clock of V8's CPU profiles (µs), so a profile can be cut to it
    measuredWindowUs: [Number(hr0 / 1000n), Number(process.hrtime.bigint() / 1000n)],
    warnings: client?.warnings ?? [],
    ...extra
  }
}

setTimeout(() => {
  const what = `deliveries still in flight ${timeLimitMs + 20_000} ms after the start`
  process.stdout.write(JSON.stringify(cpu0 === null ? { impl: opts.impl, error: what } : report({ truncated: what })) + "\n")
  process.exit(2)
}, timeLimitMs + 20_000).unref()

/** Runs `count` deliveries from index `start` at `concurrency` through a promise pool (or the impl's own batch). */
const runBatch = (c, { start, count, concurrency, deadline, record }) => {
  if (c.runBatch) return c.runBatch({ start, count, concurrency, deadline, record })
  return new Promise((resolve) => {
    let next = 0
    let inflight = 0
    const launch = () => {
      // bounded: at most `concurrency` starts per call, and `next` only grows up to `count`
      while (inflight < concurrency && next < count && performance.now() <= deadline) {
        const i = start + next++
        inflight++
        const t = performance.now()
        c.deliver(i).then(
          () => done(t, null),
          (e) => done(t, e)
        )
      }
      if (inflight === 0) resolve()
    }
    const done = (t, e) => {
      inflight--
      record(t, e)
      launch()
    }
    launch()
  })
}

const main = async () => {
  client = await (await import(impls[opts.impl])).create(opts)
  if (warmup > 0) {
    // Same client, domains far from the measured ones (d1000000000…): JIT, sockets and resolvers warm, no name reused.
    await runBatch(client, {
      start: 1_000_000_000,
      count: warmup,
      concurrency: Math.min(concurrency, warmup),
      deadline: performance.now() + Math.min(30_000, timeLimitMs),
      record: (_t, e) => { if (e) warmFailed++ }
    })
  }
  cpu0 = process.cpuUsage()
  hr0 = process.hrtime.bigint()
  t0 = performance.now()
  await runBatch(client, {
    start: 0,
    count,
    concurrency,
    deadline: t0 + timeLimitMs,
    record: (t, e) => {
      const now = performance.now()
      latencies[completed] = now - t
      completions[completed] = now - t0
      completed++
      if (e) {
        failed++
        const key = String(e?.message ?? e).slice(0, 200)
        errors.set(key, (errors.get(key) ?? 0) + 1)
      } else ok++
    }
  })
  const result = report(completed < count ? { truncated: `time limit ${timeLimitMs} ms: ${completed} of ${count} run` } : {})
  await client.close()
  process.stdout.write(JSON.stringify(result) + "\n")
  process.exit(0)
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ impl: opts.impl, error: String(e?.stack ?? e) }) + "\n")
  process.exit(1)
})
