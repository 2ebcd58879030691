#!/usr/bin/env node
// The fan-out benchmark: the library's Transport.deliver measured side by side with a raw node:net client,
// nodemailer without a pool and Postfix's smtp-source, in the same run, as ratios.
//
//   npm run bench                       full run (≥ 5 interleaved repetitions, ~10 minutes, 20 at most)
//   node bench/fanout.mjs --quick       a short run (2 repetitions, small counts, short figures)
//
// Flags: --quick  --reps=N  --levels=1,10,100,1000  --impls=raw,nodemailer,smtp-source,library
//        --no-reuse  --no-he  --no-source  --no-profile  --profile (also in --quick)  --collapse-demo  --no-pin
//        --budget=SECONDS (hard stop of the whole bench; default 1200, quick 300)
//        --source-limit=SECONDS (time cap of each source-address run; default 300, quick 60)
//        --out=NAME (results as bench/results/NAME.json and NAME.md; default latest)
//
// Processes: the DNS server (bench/dns.mjs) and the sinks (bench/sink.mjs) run pinned to core 0, every client in
// its own process pinned to core 1 (taskset, when present), so CPU time and peak RSS are per client. Everything is
// on loopback. Results: bench/results/latest.json and latest.md (or --out's name; and profile.md when profiled).
import { spawn, spawnSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { median, parseArgs, SENDER } from "./common.mjs"
import { summarise, toMarkdown } from "./profileSummary.mjs"

const here = path.dirname(fileURLToPath(import.meta.url))
const root = path.resolve(here, "..")
const resultsDir = path.join(here, "results")
const args = parseArgs(process.argv.slice(2))
// A partial run (one figure, one client) writes under its own name rather than over the full run's results.
const outName = args.out ?? "latest"
const quick = args.quick === "true"
const flagOff = (name) => args[`no-${name}`] === "true"
const list = (s, d) => (s === undefined ? d : s.split(",").map((x) => x.trim()).filter(Boolean))

const startedAt = Date.now()
const budgetMs = Number(args.budget ?? (quick ? 300 : 1200)) * 1000
const hardDeadline = startedAt + budgetMs
const overBudget = () => Date.now() > hardDeadline

// ---------------------------------------------------------------------------------------------------------------
// The plan
// ---------------------------------------------------------------------------------------------------------------

const LEVELS = quick
  ? [
    { concurrency: 1, count: 100, greetingDelayMs: 0 },
    { concurrency: 10, count: 300, greetingDelayMs: 0 },
    { concurrency: 100, count: 1000, greetingDelayMs: 0 },
    { concurrency: 1000, count: 1000, greetingDelayMs: 100 }
  ]
  : [
    { concurrency: 1, count: 500, greetingDelayMs: 0 },
    { concurrency: 10, count: 2000, greetingDelayMs: 0 },
    { concurrency: 100, count: 5000, greetingDelayMs: 0 },
    { concurrency: 1000, count: 5000, greetingDelayMs: 100 }
  ]
const levelFilter = list(args.levels, null)
const plan = {
  mode: quick ? "quick" : "full",
  reps: Number(args.reps ?? (quick ? 2 : 5)),
  levels: LEVELS.filter((l) => levelFilter === null || levelFilter.includes(String(l.concurrency))),
  runTimeLimitMs: quick ? 20_000 : 30_000,
  he: {
    delays: quick ? [100, 250] : [50, 100, 250, 500],
    samples: quick ? 2 : 5,
    sequentialTimeoutMs: 2000
  },
  source: {
    count: quick ? 10_000 : 60_000,
    window: quick ? 2_500 : 5_000,
    concurrency: 100,
    sourceIps: ["127.0.0.5", "127.0.0.6"],
    warmup: quick ? 200 : 500,
    timeLimitMs: args["source-limit"] !== undefined ? Number(args["source-limit"]) * 1000 : quick ? 60_000 : 300_000
  },
  profile: { concurrency: 100, count: quick ? 2000 : 5000 },
  // The reuse figure: many messages to a few domains on the one sink (issue 16).
  reuse: {
    count: quick ? 5_000 : 20_000,
    domains: 5,
    concurrency: 50,
    // Steady state, as a long-running server is: the library's CPU a message falls for its first ~8,000 messages
    // (its code reaches V8's optimised tiers later than the raw client's, which settles within 2,000); with a
    // warm-up of 500, the first half of the measured batch was still warming up.
    warmup: quick ? 2_000 : 8_000,
    reps: Number(args.reps ?? (quick ? 2 : 3)),
    impls: ["library", "raw-reuse", "nodemailer-pool", "session-floor", "library-stream"]
  }
}
const warmupFor = (count) => Math.min(500, Math.max(20, Math.floor(count / 5)))

// ---------------------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------------------

const cpus = os.availableParallelism?.() ?? os.cpus().length
const canPin = !flagOff("pin") && cpus >= 2 && spawnSync("taskset", ["-c", "1", "true"]).status === 0
const SERVER_CORE = "0"
const CLIENT_CORE = "1"
const pinned = (core, cmd, argv) => (canPin ? ["taskset", ["-c", core, cmd, ...argv]] : [cmd, argv])

const children = new Set()
const track = (child) => {
  children.add(child)
  child.on("exit", () => children.delete(child))
  return child
}
const cleanup = () => {
  for (const c of children) c.kill("SIGKILL")
}
process.on("exit", cleanup)
process.on("SIGINT", () => {
  cleanup()
  process.exit(130)
})

const log = (...m) => console.error(`[${((Date.now() - startedAt) / 1000).toFixed(0).padStart(4)}s]`, ...m)

/** A server process with an IPC channel: resolves once it reports its port. */
const startServer = (script, argv, core = SERVER_CORE) =>
  new Promise((resolve, reject) => {
    const [cmd, a] = pinned(core, process.execPath, [path.join(here, script), ...argv])
    const child = track(spawn(cmd, a, { stdio: ["ignore", "inherit", "inherit", "ipc"] }))
    const timer = setTimeout(() => reject(new Error(`${script} did not start`)), 10_000)
    child.on("error", reject)
    child.once("exit", (code) => reject(new Error(`${script} exited with ${code}`)))
    child.on("message", (m) => {
      if (m?.type === "ready") {
        clearTimeout(timer)
        const waiters = []
        child.on("message", (s) => s?.type === "stats" && waiters.shift()?.(s))
        resolve({
          child,
          port: m.port,
          stats: () =>
            new Promise((res) => {
              const t = setTimeout(() => res(null), 5000)
              waiters.push((s) => {
                clearTimeout(t)
                res(s)
              })
              child.send({ type: "stats" })
            })
        })
      } else if (m?.type === "error") reject(new Error(`${script}: ${m.message}`))
    })
  })

/** Runs a command to its end (killed after `limitMs`); resolves with its stdout, stderr, exit code and wall time. */
const run = (cmd, argv, { limitMs, env } = {}) =>
  new Promise((resolve) => {
    const t0 = performance.now()
    const child = track(spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"], env: env ?? process.env }))
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (d) => (stdout += d))
    child.stderr.on("data", (d) => (stderr.length < 100_000 ? (stderr += d) : null))
    const timer = setTimeout(() => child.kill("SIGKILL"), limitMs ?? 60_000)
    child.on("close", (code, signal) => {
      clearTimeout(timer)
      resolve({ stdout, stderr, code, signal, wallMs: performance.now() - t0 })
    })
    child.on("error", (e) => {
      clearTimeout(timer)
      resolve({ stdout, stderr: String(e), code: -1, signal: null, wallMs: performance.now() - t0 })
    })
  })

const lastJsonLine = (text) => {
  const lines = text.trim().split("\n")
  for (let i = lines.length - 1; i >= 0; i--) {
    try {
      return JSON.parse(lines[i])
    } catch { /* not the result line */ }
  }
  return null
}

let dnsServer
const sinks = new Map() // greeting delay → server
const sinkFor = (delay) => sinks.get(delay)
const sinkStats = async (delay) => {
  const [s, d] = await Promise.all([sinkFor(delay).stats(), dnsServer.stats()])
  return { messages: s?.messages ?? NaN, serverCpuUs: cpuOf(s) + cpuOf(d), byRemote: s?.byRemote ?? {} }
}
const cpuOf = (s) => (s?.cpu ? s.cpu.user + s.cpu.system : NaN)

/** One Node client run (bench/client.mjs) in its own pinned process, checked against the sink's count. */
const runNodeClient = async (impl, options, { delay = 0, nodeFlags = [] } = {}) => {
  const before = await sinkStats(delay)
  const full = { impl, dns: `127.0.0.1:${dnsServer.port}`, port: sinkFor(delay).port, timeLimitMs: plan.runTimeLimitMs, ...options }
  const [cmd, a] = pinned(CLIENT_CORE, process.execPath, [...nodeFlags, path.join(here, "client.mjs"), JSON.stringify(full)])
  const r = await run(cmd, a, { limitMs: full.timeLimitMs + 45_000 })
  const after = await sinkStats(delay)
  const result = lastJsonLine(r.stdout) ?? { impl, error: `no result (exit ${r.code ?? r.signal}): ${r.stderr.slice(-500)}` }
  const sinkMessages = after.messages - before.messages
  result.sinkMessages = sinkMessages
  // connections the sink saw per client address during the run
  result.sinkSources = Object.fromEntries(
    Object.entries(after.byRemote).map(([ip, n]) => [ip, n - (before.byRemote[ip] ?? 0)]).filter(([, n]) => n > 0)
  )
  if (!result.error) {
    result.serverUsPerDelivery = sinkMessages > 0 ? (after.serverCpuUs - before.serverCpuUs) / sinkMessages : null
    const expected = result.ok + (result.warmup - result.warmFailed)
    if (sinkMessages !== expected) result.countMismatch = `sink counted ${sinkMessages}, client reported ${expected}`
  }
  return result
}

const postfix = {
  dir: path.join(here, ".postfix"),
  get bin() { return path.join(this.dir, "root/usr/sbin/smtp-source") }
}
const timeBin = fs.existsSync("/usr/bin/time") ? "/usr/bin/time" : null

/** Postfix's smtp-source: no DNS (it connects to the address given), one connection per message (no -d). */
const runSmtpSource = async ({ concurrency, count }, delay) => {
  const before = await sinkStats(delay)
  const argv = [
    "-s", String(concurrency), "-m", String(count), "-l", "2048",
    "-f", SENDER, "-t", "rcpt@d0.bench.test", "-M", "client.bench.test",
    `127.0.0.1:${sinkFor(delay).port}`
  ]
  const env = { ...process.env, MAIL_CONFIG: path.join(postfix.dir, "etc"), LD_LIBRARY_PATH: path.join(postfix.dir, "root/usr/lib/postfix") }
  const inner = timeBin ? [timeBin, ["-f", "BENCHTIME %e %U %S %M", postfix.bin, ...argv]] : [postfix.bin, argv]
  const [cmd, a] = pinned(CLIENT_CORE, inner[0], inner[1])
  const r = await run(cmd, a, { limitMs: plan.runTimeLimitMs + 45_000, env })
  const after = await sinkStats(delay)
  const ok = after.messages - before.messages
  const m = /BENCHTIME (\S+) (\S+) (\S+) (\d+)/.exec(r.stderr)
  // /usr/bin/time prints 10 ms ticks: below 50 ms the figure would be mostly rounding, so it is left out
  const cpuSeconds = m ? Number(m[2]) + Number(m[3]) : null
  const cpuUs = cpuSeconds !== null && cpuSeconds >= 0.05 ? cpuSeconds * 1e6 : null
  const result = {
    impl: "smtp-source",
    concurrency,
    count,
    completed: count,
    ok,
    failed: count - ok,
    warmup: 0,
    wallMs: r.wallMs,
    rate: (ok / r.wallMs) * 1000,
    cpuUsPerDelivery: cpuUs !== null && ok > 0 ? cpuUs / ok : null,
    p50Ms: null,
    p99Ms: null,
    maxRssKb: m ? Number(m[4]) : null,
    serverUsPerDelivery: ok > 0 ? (after.serverCpuUs - before.serverCpuUs) / ok : null,
    sinkMessages: ok
  }
  if (r.code !== 0) result.error = `exit ${r.code ?? r.signal}: ${r.stderr.replace(/BENCHTIME.*/, "").trim().slice(-300)}`
  return result
}

const runImpl = (impl, level) =>
  impl === "smtp-source"
    ? runSmtpSource(level, level.greetingDelayMs)
    : runNodeClient(impl, { concurrency: level.concurrency, count: level.count, warmup: warmupFor(level.count) }, { delay: level.greetingDelayMs })

// ---------------------------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------------------------

const finite = (xs) => xs.filter((x) => typeof x === "number" && Number.isFinite(x))
const agg = (xs) => {
  const v = finite(xs)
  return v.length === 0 ? null : { median: median(v), min: Math.min(...v), max: Math.max(...v), n: v.length }
}
const good = (r) => r && !r.error && r.ok > 0

const summariseLevel = (level, runsByImpl, impls) => {
  const summary = {}
  for (const impl of impls) {
    const runs = runsByImpl[impl] ?? []
    const ok = runs.filter(good)
    summary[impl] = {
      runs: runs.length,
      failedRuns: runs.length - ok.length,
      rate: agg(ok.map((r) => r.rate)),
      cpuUsPerDelivery: agg(ok.map((r) => r.cpuUsPerDelivery)),
      p50Ms: agg(ok.map((r) => r.p50Ms)),
      p99Ms: agg(ok.map((r) => r.p99Ms)),
      maxRssKb: agg(ok.map((r) => r.maxRssKb)),
      serverUsPerDelivery: agg(ok.map((r) => r.serverUsPerDelivery)),
      deliveryFailures: runs.reduce((n, r) => n + (r?.failed ?? 0), 0),
      truncatedRuns: runs.filter((r) => r?.truncated).length,
      errors: runs.flatMap((r) => (r?.error ? [r.error.slice(0, 300)] : Object.keys(r?.errors ?? {}))).slice(0, 5)
    }
  }
  // Ratios per repetition: runs of one repetition ran back to back, so they share the machine's state.
  const ratios = {}
  const pairs = []
  if (impls.includes("library")) for (const b of impls) if (b !== "library") pairs.push(["library", b])
  // The other clients against the raw client of the figure (one connection per message, or the reuse client).
  const raw = ["raw", "raw-reuse"].find((r) => impls.includes(r))
  for (const b of impls) if (b !== raw && b !== "library" && raw !== undefined) pairs.push([b, raw])
  for (const [a, b] of pairs) {
    const values = []
    const rss = []
    for (const ra of runsByImpl[a] ?? []) {
      const rb = (runsByImpl[b] ?? []).find((x) => x.rep === ra.rep)
      if (good(ra) && good(rb)) {
        values.push(ra.rate / rb.rate)
        if (ra.maxRssKb && rb.maxRssKb) rss.push(ra.maxRssKb / rb.maxRssKb)
      }
    }
    ratios[`${a}/${b}`] = { rate: agg(values), rateValues: values, rss: agg(rss) }
  }
  return { summary, ratios }
}

// ---------------------------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------------------------

const results = {
  date: new Date(startedAt).toISOString(),
  machine: {
    nproc: cpus,
    cpu: os.cpus()[0]?.model ?? "unknown",
    node: process.version,
    os: `${os.type()} ${os.release()}`,
    loadAverageAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    pinning: canPin ? `taskset: DNS server and sinks on core ${SERVER_CORE}, clients on core ${CLIENT_CORE}` : "none"
  },
  plan,
  impls: [],
  skipped: {},
  notes: [],
  fanout: [],
  reuse: null,
  happyEyeballs: null,
  sourceAddresses: null,
  profile: null,
  partial: false
}

const distDir = process.env.BENCH_DIST ? path.resolve(process.env.BENCH_DIST) : path.join(root, "dist")
const libraryAvailable = () =>
  ["Transport", "Dns", "Connector", "OutboundConfig"].every((m) => fs.existsSync(path.join(distDir, `${m}.js`)))

const setupPostfix = async () => {
  const r = await run("sh", [path.join(here, "setup-postfix.sh")], { limitMs: 180_000 })
  if (r.stdout.trim()) log(r.stdout.trim())
  if (r.stderr.trim()) log(r.stderr.trim())
  return fs.existsSync(postfix.bin) && /ok /.test(r.stdout)
}

/** One tiny run per client before the measurements: a client that cannot deliver at all is left out, with why. */
const smoke = async (impl) => {
  const level = { concurrency: 1, count: 5, greetingDelayMs: 0 }
  const r = impl === "smtp-source" ? await runSmtpSource(level, 0) : await runNodeClient(impl, { concurrency: 1, count: 5, warmup: 0 })
  if (!good(r) || r.failed > 0) return r.error ?? JSON.stringify(r.errors)
  if (r.warnings?.length) results.notes.push(`${impl}: config warnings: ${r.warnings.join("; ")}`)
  return null
}

const fanout = async (impls) => {
  const runs = plan.levels.map(() => Object.fromEntries(impls.map((i) => [i, []])))
  for (let rep = 0; rep < plan.reps; rep++) {
    for (const [li, level] of plan.levels.entries()) {
      // interleaved: every repetition runs every client once, the order rotating between repetitions
      const order = impls.map((_, k) => impls[(k + rep) % impls.length])
      for (const impl of order) {
        if (overBudget()) {
          results.partial = true
          return runs
        }
        const r = await runImpl(impl, level)
        r.rep = rep
        runs[li][impl].push(r)
        const fmt = (x, d = 0) => (typeof x === "number" ? x.toFixed(d) : "–")
        log(
          `rep ${rep + 1}/${plan.reps} c=${level.concurrency} ${impl.padEnd(11)} ` +
            (r.error
              ? `ERROR ${r.error.slice(0, 200)}`
              : `${fmt(r.rate)}/s ok ${r.ok}/${r.count} cpu ${fmt(r.cpuUsPerDelivery)} µs/d p50 ${fmt(r.p50Ms, 1)} ms ` +
                `p99 ${fmt(r.p99Ms, 1)} ms rss ${fmt(r.maxRssKb / 1024, 0)} MB srv ${fmt(r.serverUsPerDelivery)} µs/d` +
                (r.countMismatch ? ` MISMATCH ${r.countMismatch}` : "") +
                (r.truncated ? ` TRUNCATED ${r.truncated}` : "") +
                (r.failed ? ` errors ${JSON.stringify(r.errors ?? {})}` : ""))
        )
      }
    }
  }
  return runs
}

/** The reuse figure: the library (Transport.layer's pool) against a raw client at 100 messages per connection and
 * nodemailer's pool, interleaved repetitions, ratios per repetition. */
const reuse = async (withLibrary) => {
  // session-floor and library-stream run dist/ too: they go with the library
  const impls = plan.reuse.impls.filter((i) => !["library", "session-floor", "library-stream"].includes(i) || withLibrary)
  const level = { concurrency: plan.reuse.concurrency, count: plan.reuse.count, greetingDelayMs: 0 }
  const runs = Object.fromEntries(impls.map((i) => [i, []]))
  for (let rep = 0; rep < plan.reuse.reps; rep++) {
    for (const impl of impls.map((_, k) => impls[(k + rep) % impls.length])) {
      if (overBudget()) {
        results.partial = true
        break
      }
      const r = await runNodeClient(impl, {
        concurrency: plan.reuse.concurrency,
        count: plan.reuse.count,
        warmup: plan.reuse.warmup,
        domains: plan.reuse.domains
      })
      r.rep = rep
      runs[impl].push(r)
      const fmt = (x, d = 0) => (typeof x === "number" ? x.toFixed(d) : "–")
      log(`reuse rep ${rep + 1}/${plan.reuse.reps} ${impl.padEnd(15)} ` + (r.error
        ? `ERROR ${r.error.slice(0, 200)}`
        : `${fmt(r.rate)}/s ok ${r.ok}/${r.count} cpu ${fmt(r.cpuUsPerDelivery)} µs/d p50 ${fmt(r.p50Ms, 1)} ms ` +
          `rss ${fmt(r.maxRssKb / 1024, 0)} MB srv ${fmt(r.serverUsPerDelivery)} µs/d` +
          (r.countMismatch ? ` MISMATCH ${r.countMismatch}` : "") + (r.failed ? ` errors ${JSON.stringify(r.errors ?? {})}` : "")))
    }
  }
  return { ...plan.reuse, impls, ...summariseLevel(level, runs, impls), runs }
}

const happyEyeballs = async (withLibrary) => {
  const sink = sinkFor(0)
  let hole
  try {
    hole = await startServer("blackhole.mjs", ["--host=::1", `--port=${sink.port}`, "--lifetime=240"])
  } catch (e) {
    return { error: `could not listen on [::1]:${sink.port}: ${e.message}` }
  }
  const options = { dns: `127.0.0.1:${dnsServer.port}`, port: sink.port, ...plan.he, library: withLibrary }
  const [cmd, a] = pinned(CLIENT_CORE, process.execPath, [path.join(here, "happyEyeballs.mjs"), JSON.stringify(options)])
  const r = await run(cmd, a, { limitMs: 200_000 })
  hole.child.kill("SIGKILL")
  return lastJsonLine(r.stdout) ?? { error: `no result (exit ${r.code ?? r.signal}): ${r.stderr.slice(-500)}` }
}

/** TIME_WAIT sockets per local IPv4 address, from /proc/net/tcp (Linux only). */
const timeWaitBySource = (ips) => {
  try {
    const counts = Object.fromEntries(ips.map((ip) => [ip, 0]))
    const hex = new Map(ips.map((ip) => [ip.split(".").map((o) => Number(o).toString(16).padStart(2, "0").toUpperCase()).reverse().join(""), ip]))
    const text = fs.readFileSync("/proc/net/tcp", "latin1")
    for (const line of text.split("\n")) {
      const f = line.trim().split(/\s+/)
      if (f[3] !== "06") continue
      const ip = hex.get(f[1]?.split(":")[0])
      if (ip) counts[ip]++
    }
    return counts
  } catch {
    return null
  }
}

const sourceAddresses = async (impls) => {
  const out = { ...plan.source, clients: [] }
  const variants = impls.map((impl) => ({ impl, label: impl, options: {} }))
  if (args["collapse-demo"] === "true") {
    variants.push({ impl: "raw", label: "raw, closes first (TIME_WAIT demo)", options: { closeFirst: true } })
  }
  for (const v of variants) {
    if (overBudget()) {
      results.partial = true
      break
    }
    const r = await runNodeClient(v.impl, {
      concurrency: plan.source.concurrency,
      count: plan.source.count,
      warmup: plan.source.warmup,
      window: plan.source.window,
      sourceIps: plan.source.sourceIps,
      timeLimitMs: plan.source.timeLimitMs,
      ...v.options
    })
    r.label = v.label
    r.timeWait = timeWaitBySource(plan.source.sourceIps)
    r.boundShare = plan.source.sourceIps.reduce((n, ip) => n + (r.sinkSources?.[ip] ?? 0), 0) /
      Math.max(1, Object.values(r.sinkSources ?? {}).reduce((a, b) => a + b, 0))
    const w = finite(r.windows ?? [])
    r.flatness = w.length > 1 ? { firstWindow: w[0], lastWindow: w.at(-1), min: Math.min(...w), max: Math.max(...w), lastOverFirst: w.at(-1) / w[0], minOverMedian: Math.min(...w) / median(w) } : null
    out.clients.push(r)
    log(`source addresses ${v.label}: ${r.error ?? `${r.ok}/${r.count} ok, windows ${JSON.stringify(r.windows)} /s, sink saw ${JSON.stringify(r.sinkSources)}, TIME_WAIT ${JSON.stringify(r.timeWait)}`}`)
  }
  return out
}

const profile = async (impls) => {
  const out = { files: [], summaries: {} }
  fs.mkdirSync(resultsDir, { recursive: true })
  const md = ["# CPU profiles at c=100", "", `Generated ${new Date().toISOString()} by \`npm run bench\` (bench/profileSummary.mjs).`,
    `Each client delivered ${plan.profile.count} messages at concurrency ${plan.profile.concurrency} under \`node --cpu-prof\`; the tables cover the measured batch only (the samples between its start and end).`, ""]
  for (const impl of impls.filter((i) => i === "library" || i === "raw")) {
    if (overBudget()) break
    const name = `${impl}-c${plan.profile.concurrency}.cpuprofile`
    const file = path.join(resultsDir, name)
    fs.rmSync(file, { force: true })
    const r = await runNodeClient(impl, { concurrency: plan.profile.concurrency, count: plan.profile.count, warmup: warmupFor(plan.profile.count) }, {
      nodeFlags: ["--cpu-prof", `--cpu-prof-dir=${resultsDir}`, `--cpu-prof-name=${name}`]
    })
    if (!fs.existsSync(file)) {
      out.summaries[impl] = { error: r.error ?? "no profile written" }
      continue
    }
    const s = summarise(JSON.parse(fs.readFileSync(file, "utf8")), 25, r.measuredWindowUs ?? null)
    out.files.push(path.relative(root, file))
    out.summaries[impl] = { rate: r.rate, cpuUsPerDelivery: r.cpuUsPerDelivery, categories: s.categories, topFunctions: s.functions.slice(0, 10) }
    md.push(`Under the profiler: ${r.rate?.toFixed(0)} deliveries/s, ${r.cpuUsPerDelivery?.toFixed(0)} µs CPU per delivery.`, "", toMarkdown(name, s))
  }
  fs.writeFileSync(path.join(resultsDir, "profile.md"), md.join("\n"))
  return out
}

// ---------------------------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------------------------

const n0 = (x) => (x === null || x === undefined ? "–" : Math.round(x).toLocaleString("en-US"))
const n1 = (x) => (x === null || x === undefined ? "–" : x.toFixed(1))
const n2 = (x) => (x === null || x === undefined ? "–" : x.toFixed(2))
const range = (a, f = n0) => (a === null ? "–" : `${f(a.median)} (${f(a.min)}–${f(a.max)})`)
const mb = (kb) => (kb === null || kb === undefined ? "–" : (kb / 1024).toFixed(0))

const goals = () => {
  const rows = []
  const find = (c) => results.fanout.find((l) => l.concurrency === c)
  for (const c of [100, 1000]) {
    const l = find(c)
    if (!l) continue
    const check = (key, target, label, what = "rate") => {
      const r = l.ratios[key]?.[what]
      if (r === undefined) return
      rows.push({ concurrency: c, goal: label, target, median: r?.median ?? null, min: r?.min ?? null, met: r ? (what === "rss" ? r.median <= target : r.median >= target) : null })
    }
    // Issue 13's goals; the per-delivery CPU goal (≤ 0.7 ms) is in the client table and in bench/budget.mjs.
    check("library/raw", 0.4, "≥ 0.4× the raw client")
    check("library/nodemailer", 1.2, "≥ 1.2× nodemailer (no pool)")
    if (c === 1000) check("library/raw", 2, "peak RSS ≤ 2× the raw client's", "rss")
  }
  const r = results.reuse
  if (r) {
    // Issue 16's goals: at least half the raw reuse client's rate, and ahead of nodemailer's pool.
    for (const [key, target, goal] of [["library/raw-reuse", 0.5, "reuse: ≥ 0.5× the raw client at 100 messages/connection"], ["library/nodemailer-pool", 1, "reuse: ahead of nodemailer's pool"]]) {
      const v = r.ratios[key]?.rate
      if (v === undefined) continue
      rows.push({ concurrency: r.concurrency, goal, target, median: v?.median ?? null, min: v?.min ?? null, met: v ? v.median >= target : null })
    }
  }
  return rows
}

const markdown = () => {
  const m = results.machine
  const out = [
    "# Fan-out benchmark: latest results",
    "",
    `Date: ${results.date} · mode: ${results.plan.mode}${results.partial ? " (PARTIAL: budget reached)" : ""} · ` +
      `${results.plan.reps} interleaved repetitions`,
    "",
    `Machine: ${m.nproc} CPUs (\`nproc\`), ${m.cpu}, Node ${m.node}, ${m.os}; load average at start ` +
      `${m.loadAverageAtStart.join(" / ")}; pinning: ${m.pinning}.`,
    "",
    "Workload: each delivery is one 2 KiB message to its own domain: an MX lookup and an A lookup against the bench's " +
      "DNS server on loopback, then a fresh connection to the sink (a separate process), EHLO, MAIL, RCPT, DATA, QUIT; " +
      "the sink closes first. Rates are deliveries/s over the measured batch (after a warm-up); ratios are computed " +
      "per repetition (runs of one repetition are back to back) and given as median (min–max).",
    ""
  ]
  for (const l of results.fanout) {
    out.push(`## c = ${l.concurrency}${l.greetingDelayMs ? ` (sink delays its greeting ${l.greetingDelayMs} ms)` : ""}, ${l.count} deliveries per run`, "")
    out.push("| client | deliveries/s | library ÷ client | CPU µs/delivery | p50 ms | p99 ms | peak RSS MB | sink+DNS µs/delivery | failed |")
    out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (const impl of results.impls) {
      const s = l.summary[impl]
      if (!s) continue
      const ratio = impl === "library" ? "1" : range(l.ratios[`library/${impl}`]?.rate ?? null, n2)
      out.push(`| ${impl}${impl === "smtp-source" ? " ¹" : ""} | ${range(s.rate)} | ${ratio} | ${n0(s.cpuUsPerDelivery?.median)} | ` +
        `${n1(s.p50Ms?.median)} | ${n1(s.p99Ms?.median)} | ${mb(s.maxRssKb?.median)} | ${n0(s.serverUsPerDelivery?.median)} | ` +
        `${s.deliveryFailures}${s.failedRuns ? ` (${s.failedRuns} runs failed)` : ""}${s.truncatedRuns ? ` (${s.truncatedRuns} runs cut at the time limit)` : ""} |`)
    }
    const base = Object.entries(l.ratios).filter(([k]) => !k.startsWith("library/"))
    if (base.length) out.push("", "Baselines against the raw client: " + base.map(([k, v]) => `${k} ${range(v.rate, n2)}`).join(", ") + ".")
    out.push("")
  }
  if (!results.impls.includes("library")) out.push("_The library was not measured in this run (dist/Transport.js missing or its smoke run failed; see notes)._", "")
  const ru = results.reuse
  if (ru) {
    out.push(`## Connection reuse: ${ru.count.toLocaleString("en-US")} messages to ${ru.domains} domains on one sink, c = ${ru.concurrency}`, "")
    out.push("Each message goes to one of the domains (r0 … r4, each its own MX host on the sink) with a recipient of its own. " +
      "library: Transport.deliver on Transport.layer, whose pool carries up to 100 messages per connection (the defaults " +
      "reuse.messages = 100, reuse.idle = 5s), with its own DNS lookups (cached). raw-reuse: bench/rawReuseClient.mjs, a " +
      "hand-written node:net client sending 100 messages per connection, each domain resolved once. nodemailer-pool: " +
      "nodemailer with pool: true, maxMessages 100, maxConnections = c, each domain resolved once. session-floor: " +
      "bench/sessionFloorClient.mjs, the library's SmtpSession alone (connect, open, transaction, quit; sessions in a " +
      "plain list, 100 messages each, each domain resolved once): what Transport.deliver costs on top of it is the " +
      "request's check, the settings stages, the plan, the pool, the spans and the report. library-stream: the " +
      "library through Transport.deliverAll (the stream entry point, as `smtp-transport batch` runs it) over an input " +
      "of one request a chunk, in place of Effect.forEach over Transport.deliver. The warm-up goes to " +
      "the same domains, so the measured batch runs on warm connections.", "")
    out.push("| client | messages/s | library ÷ client | CPU µs/message | p50 ms | p99 ms | peak RSS MB | sink+DNS µs/message | failed |")
    out.push("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (const impl of ru.impls) {
      const s = ru.summary[impl]
      if (!s) continue
      const ratio = impl === "library" ? "1" : range(ru.ratios[`library/${impl}`]?.rate ?? null, n2)
      out.push(`| ${impl} | ${range(s.rate)} | ${ratio} | ${n0(s.cpuUsPerDelivery?.median)} | ${n1(s.p50Ms?.median)} | ` +
        `${n1(s.p99Ms?.median)} | ${mb(s.maxRssKb?.median)} | ${n0(s.serverUsPerDelivery?.median)} | ${s.deliveryFailures}` +
        `${s.failedRuns ? ` (${s.failedRuns} runs failed)` : ""} |`)
    }
    const base = Object.entries(ru.ratios).filter(([k]) => !k.startsWith("library/"))
    if (base.length) out.push("", "Against the raw reuse client: " + base.map(([k, v]) => `${k} ${range(v.rate, n2)}`).join(", ") + ".")
    out.push("")
  }
  const g = goals()
  if (g.length) {
    out.push("## Goals (issues 13 and 16)", "", "| c | goal | median | min | met (median) |", "|---:|---|---:|---:|---|")
    for (const r of g) out.push(`| ${r.concurrency} | ${r.goal} | ${n2(r.median)} | ${n2(r.min)} | ${r.met === null ? "–" : r.met ? "yes" : "**no**"} |`)
    out.push("")
  }
  const he = results.happyEyeballs
  if (he) {
    out.push("## Happy Eyeballs: time to delivery when the first candidate (IPv6 ::1) never answers", "")
    if (he.error) out.push(`Not measured: ${he.error}`, "")
    else {
      out.push(`Black hole: a listener on [::1] with a full accept queue (${he.blackHole.fillers} held connections) and a ` +
        "process that never accepts, verified before measuring: the kernel drops further SYNs, nothing answers. " +
        `${results.plan.he.samples} sequential deliveries per line, each to its own domain (MX → AAAA ::1, A 127.0.0.1).`, "")
      out.push("Over control: the median minus the median of the same client's control line (IPv4 only, the black hole never " +
        "tried), i.e. what the unanswered first candidate cost.", "")
      out.push("| client | configured delay / timeout | time to delivery ms, median (min–max) | over control ms | errors |", "|---|---:|---:|---:|---|")
      let control = null
      for (const s of he.series) {
        if (s.control) control = s.medianMs
        const knob = s.delayMs !== undefined ? `${s.delayMs} ms` : s.timeoutMs !== undefined ? `${s.timeoutMs} ms timeout` : "–"
        const over = s.control || control === null || s.medianMs === null ? "–" : n1(s.medianMs - control)
        out.push(`| ${s.name} | ${knob} | ${n1(s.medianMs)} (${n1(s.minMs)}–${n1(s.maxMs)}) | ${over} | ${s.errors.length ? s.errors.slice(0, 2).join("; ") : ""} |`)
      }
      out.push("")
    }
  }
  const sa = results.sourceAddresses
  if (sa) {
    out.push(`## Source addresses under fan-out: ${sa.count.toLocaleString("en-US")} deliveries, source-ip ${sa.sourceIps.join(" + ")}, c = ${sa.concurrency}`, "")
    out.push(`Rate per ${sa.window.toLocaleString("en-US")}-delivery window (deliveries/s, in order); TIME_WAIT sockets left on the source addresses right after the run.`, "")
    out.push("| client | delivered | windows (deliveries/s) | last ÷ first | slowest ÷ median | from the bound addresses | TIME_WAIT |", "|---|---:|---|---:|---:|---:|---|")
    for (const c of sa.clients) {
      out.push(`| ${c.label} | ${c.error ? `error: ${c.error.slice(0, 120)}` : `${n0(c.ok)}/${n0(c.count)}${c.truncated ? " (time limit)" : ""}`} | ${(c.windows ?? []).map(n0).join(", ")} | ` +
        `${n2(c.flatness?.lastOverFirst)} | ${n2(c.flatness?.minOverMedian)} | ${c.boundShare === undefined ? "–" : `${(100 * c.boundShare).toFixed(0)} %`} | ` +
        `${c.timeWait ? Object.entries(c.timeWait).map(([k, v]) => `${k}: ${v}`).join(", ") : "–"} |`)
    }
    out.push("", "\"From the bound addresses\": the share of the run's connections the sink saw coming from the source-ip addresses.")
    out.push("")
  }
  if (results.profile) {
    out.push("## Profile", "", "`--cpu-prof` at c=100: see [profile.md](profile.md) (top self-time functions). Self time by category (share of busy time):", "")
    for (const [impl, s] of Object.entries(results.profile.summaries)) {
      if (s.error) out.push(`- ${impl}: ${s.error}`)
      else out.push(`- ${impl}: ` + s.categories.filter((c) => c.pctOfBusy !== null).slice(0, 6).map((c) => `${c.name} ${c.pctOfBusy.toFixed(0)} %`).join(", "))
    }
    out.push("")
  }
  out.push("## Notes", "")
  out.push("1. smtp-source does no DNS at all (it is handed the sink's address): its figures exclude the two lookups every other client makes per delivery. It reports no per-delivery latency; its wall time is measured from its start to its exit, its CPU and peak RSS by /usr/bin/time (10 ms resolution).")
  out.push("2. nodemailer does not look up MX records: the client resolves MX and A itself (node:dns promises) and hands the address to a transport kept per address (pool: false: one connection and QUIT per message).")
  out.push("3. CPU µs/delivery is the client process's user+system time over the measured batch; peak RSS is the client process's maximum (warm-up included); sink+DNS µs/delivery is the server side's CPU per message, which shows when the server core rather than the client is the limit.")
  out.push("4. DNS: bench/dns.mjs answers with a minimal hand-written responder on node:dgram (dns2, the tests' DNS fixture, cost ~10× more server CPU per query and made the server core the limit; `--impl=dns2` still serves the same zone for a cross-check). The raw and nodemailer clients spread their queries over 8 resolvers (8 UDP sockets): on loopback the answers to a burst of 1000 queries overflow one socket's 208 KiB receive buffer. The library's Dns layer uses its own resolver pool and its default cache (every name is looked up once, so the cache never answers).")
  out.push("5. The Happy Eyeballs black hole is a real kernel behaviour, not a simulated connector: a listener on [::1] whose accept queue is full and never drained drops further SYNs (Linux: ListenOverflows), so the client sees no SYN-ACK and no RST, as with a filtered address. The firewall is not touched.")
  for (const n of results.notes) out.push(`- ${n}`)
  for (const [k, v] of Object.entries(results.skipped)) out.push(`- skipped ${k}: ${v}`)
  return out.join("\n") + "\n"
}

const write = () => {
  fs.mkdirSync(resultsDir, { recursive: true })
  fs.writeFileSync(path.join(resultsDir, `${outName}.json`), JSON.stringify(results, null, 2) + "\n")
  fs.writeFileSync(path.join(resultsDir, `${outName}.md`), markdown())
}

// ---------------------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------------------

const main = async () => {
  log(`mode ${plan.mode}, ${plan.reps} reps, levels ${plan.levels.map((l) => l.concurrency).join(",")}, budget ${budgetMs / 1000} s, pinning ${canPin ? "on" : "off"}`)
  const wanted = list(args.impls, ["raw", "nodemailer", "smtp-source", "library"])
  const lifetime = String(Math.ceil(budgetMs / 1000) + 120)
  dnsServer = await startServer("dns.mjs", [`--lifetime=${lifetime}`])
  sinks.set(0, await startServer("sink.mjs", [`--lifetime=${lifetime}`]))
  if (plan.levels.some((l) => l.greetingDelayMs === 100)) sinks.set(100, await startServer("sink.mjs", ["--greeting-delay=100", `--lifetime=${lifetime}`]))
  log(`dns 127.0.0.1:${dnsServer.port}, sink 127.0.0.1:${sinkFor(0).port}${sinks.has(100) ? `, slow sink 127.0.0.1:${sinkFor(100).port}` : ""}`)

  const impls = []
  for (const impl of wanted) {
    if (impl === "smtp-source" && !(await setupPostfix())) {
      results.skipped[impl] = "Postfix's smtp-source unavailable (bench/setup-postfix.sh could not extract it)"
      continue
    }
    if (impl === "library" && !libraryAvailable()) {
      results.skipped[impl] = "dist/Transport.js, Dns.js, Connector.js or OutboundConfig.js missing (npm run build)"
      continue
    }
    const problem = await smoke(impl)
    if (problem !== null) {
      results.skipped[impl] = `smoke run failed: ${problem}`
      continue
    }
    impls.push(impl)
  }
  results.impls = impls
  for (const [k, v] of Object.entries(results.skipped)) log(`skipping ${k}: ${v}`)

  const runs = await fanout(impls)
  results.fanout = plan.levels.map((level, li) => ({ ...level, ...summariseLevel(level, runs[li], impls), runs: runs[li] }))
  write()

  const nodeImpls = impls.filter((i) => i === "library" || i === "raw")
  if (!flagOff("reuse") && !overBudget()) {
    log(`reuse figure: ${plan.reuse.count} messages to ${plan.reuse.domains} domains per client`)
    results.reuse = await reuse(impls.includes("library"))
    write()
  }
  if (!flagOff("he") && !overBudget()) {
    log("happy eyeballs figure")
    results.happyEyeballs = await happyEyeballs(impls.includes("library"))
    write()
  }
  if (!flagOff("source") && !overBudget()) {
    log(`source addresses: ${plan.source.count} deliveries per client`)
    results.sourceAddresses = await sourceAddresses(nodeImpls)
    write()
  }
  if (!flagOff("profile") && (!quick || args.profile === "true") && !overBudget()) {
    log("profile at c=100")
    results.profile = await profile(nodeImpls)
    write()
  }
  if (overBudget()) results.partial = true
  write()
  log(`done in ${((Date.now() - startedAt) / 1000).toFixed(0)} s: ${path.relative(root, path.join(resultsDir, `${outName}.md`))}`)
  cleanup()
  process.exit(0)
}

// The whole bench stops by itself: the budget bounds the phases, this bounds everything else.
setTimeout(() => {
  console.error("bench: hard deadline passed, stopping")
  results.partial = true
  try {
    write()
  } catch { /* best effort */ }
  cleanup()
  process.exit(3)
}, budgetMs + 240_000).unref()

main().catch((e) => {
  console.error(e)
  cleanup()
  process.exit(1)
})
