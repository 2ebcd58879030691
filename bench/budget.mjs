#!/usr/bin/env node
// The per-delivery budget: what one delivery costs the library, stage by stage, next to the raw node:net client in
// the same run. Run after `npm run build`:
//   node bench/budget.mjs [--reps=3] [--count=3000] [--concurrency=100] [--out=budget]
// Prints a table and writes bench/results/<out>.json and .md. Bounded: every client run has a time limit, and the
// whole run stops after --budget seconds (default 600).
//
// Per stage (see bench/budgetClient.mjs): CPU µs per delivery, bytes allocated per delivery, deliveries/s, and from a
// supervised run of its own, run-loop steps and fibers started per delivery. `deliver − dns − session` is what the
// orchestration adds (plan, settings, race, attempt records, report). Processes: DNS server and sink pinned to core 0,
// each client run to core 1 (taskset, when present). Loopback only.
import { spawn, spawnSync } from "node:child_process"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { median, parseArgs } from "./common.mjs"

const here = path.dirname(fileURLToPath(import.meta.url))
const args = parseArgs(process.argv.slice(2))
const reps = Number(args.reps ?? 3)
const count = Number(args.count ?? 3000)
const concurrency = Number(args.concurrency ?? 100)
const outName = args.out ?? "budget"
const deadline = Date.now() + Number(args.budget ?? 600) * 1000

const canPin = os.availableParallelism() >= 2 && spawnSync("taskset", ["-c", "1", "true"]).status === 0
const pinned = (core, argv) => (canPin ? ["taskset", ["-c", core, process.execPath, ...argv]] : [process.execPath, argv])
const children = new Set()
process.on("exit", () => {
  for (const c of children) c.kill("SIGKILL")
})

const startServer = (script, argv) =>
  new Promise((resolve, reject) => {
    const [cmd, a] = pinned("0", [path.join(here, script), ...argv])
    const child = spawn(cmd, a, { stdio: ["ignore", "inherit", "inherit", "ipc"] })
    children.add(child)
    const timer = setTimeout(() => reject(new Error(`${script} did not start`)), 10_000)
    child.on("message", (m) => {
      if (m?.type === "ready") {
        clearTimeout(timer)
        resolve({ child, port: m.port })
      }
    })
  })

const runClient = (options) =>
  new Promise((resolve, reject) => {
    const [cmd, a] = pinned("1", [path.join(here, "budgetClient.mjs"), JSON.stringify(options)])
    const child = spawn(cmd, a, { stdio: ["ignore", "pipe", "inherit"] })
    children.add(child)
    let out = ""
    child.stdout.on("data", (d) => (out += d))
    child.on("exit", (code) => {
      children.delete(child)
      if (code === 0) resolve(JSON.parse(out.trim().split("\n").pop()))
      else reject(new Error(`budgetClient ${JSON.stringify(options)} exited with ${code}`))
    })
  })

const dns = await startServer("dns.mjs", ["--lifetime=900"])
const sink = await startServer("sink.mjs", ["--lifetime=900"])
const base = { dns: `127.0.0.1:${dns.port}`, port: sink.port, count, concurrency, warmup: Math.min(500, count), timeLimitMs: 180_000 }

const runs = [
  { key: "raw", stage: "raw" },
  { key: "dns", stage: "dns" },
  { key: "session", stage: "session" },
  { key: "deliver", stage: "deliver" },
  { key: "deliver, phase spans", stage: "deliver", phaseSpans: true }
]
const results = new Map(runs.map((r) => [r.key, { timed: [], counted: [] }]))
for (let rep = 0; rep < reps && Date.now() < deadline; rep++) {
  for (const run of runs) {
    if (Date.now() > deadline) break
    results.get(run.key).timed.push(await runClient({ ...base, ...run }))
    if (run.stage !== "raw" && rep === 0) {
      // Counting is deterministic enough that one run of it is the figure.
      results.get(run.key).counted.push(await runClient({ ...base, ...run, count: Math.min(count, 1000), supervised: true }))
    }
    process.stderr.write(".")
  }
}
process.stderr.write("\n")

const med = (xs, f) => (xs.length === 0 ? null : median(xs.map(f)))
const rows = runs.map((run) => {
  const r = results.get(run.key)
  return {
    stage: run.key,
    cpuUs: med(r.timed, (x) => x.cpuUsPerDelivery),
    allocatedKb: med(r.timed, (x) => x.allocatedBytesPerDelivery / 1024),
    rate: med(r.timed, (x) => x.rate),
    steps: med(r.counted, (x) => x.stepsPerDelivery),
    fibers: med(r.counted, (x) => x.fibersPerDelivery)
  }
})
const byStage = Object.fromEntries(rows.map((r) => [r.stage, r]))
// Same-run ratios, repetition by repetition: the raw client's CPU per delivery over the library's, and rates.
const ratios = (key) =>
  results.get(key).timed.map((t, i) => ({
    cpu: results.get("raw").timed[i].cpuUsPerDelivery / t.cpuUsPerDelivery,
    rate: t.rate / results.get("raw").timed[i].rate
  }))
const summary = {
  date: new Date().toISOString(),
  machine: `${os.cpus().length} CPUs, ${os.cpus()[0]?.model}, Node ${process.version}`,
  pinned: canPin,
  reps,
  count,
  concurrency,
  rows,
  orchestration: byStage.deliver.cpuUs === null ? null : {
    cpuUs: byStage.deliver.cpuUs - byStage.dns.cpuUs - byStage.session.cpuUs,
    steps: byStage.deliver.steps - byStage.dns.steps - byStage.session.steps,
    fibers: byStage.deliver.fibers - byStage.dns.fibers - byStage.session.fibers
  },
  vsRaw: {
    deliver: { cpu: med(ratios("deliver"), (x) => x.cpu), rate: med(ratios("deliver"), (x) => x.rate) },
    "deliver, phase spans": {
      cpu: med(ratios("deliver, phase spans"), (x) => x.cpu),
      rate: med(ratios("deliver, phase spans"), (x) => x.rate)
    }
  }
}

const f = (x, d = 0) => (x === null ? "–" : x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }))
const md = [
  "# Per-delivery budget",
  "",
  `Date: ${summary.date} · ${summary.machine} · ${reps} repetitions of ${count} deliveries at c = ${concurrency}` +
  ` (medians) · pinned: ${canPin ? "servers core 0, clients core 1" : "no"}`,
  "",
  "| stage | CPU µs/delivery | KB allocated/delivery | deliveries/s | run-loop steps/delivery | fibers/delivery |",
  "|---|---:|---:|---:|---:|---:|",
  ...rows.map((r) => `| ${r.stage} | ${f(r.cpuUs)} | ${f(r.allocatedKb, 1)} | ${f(r.rate)} | ${f(r.steps)} | ${f(r.fibers, 1)} |`),
  ...(summary.orchestration === null ? [] : [
    `| orchestration (deliver − dns − session) | ${f(summary.orchestration.cpuUs)} | | | ${f(summary.orchestration.steps)} | ${f(summary.orchestration.fibers, 1)} |`
  ]),
  "",
  `Against the raw client in the same runs: deliver at ${f(summary.vsRaw.deliver.rate, 2)}× its rate, ` +
  `${f(summary.vsRaw.deliver.cpu, 2)}× its CPU efficiency; with a span per phase ${f(summary.vsRaw["deliver, phase spans"].rate, 2)}× ` +
  `and ${f(summary.vsRaw["deliver, phase spans"].cpu, 2)}×.`,
  ""
].join("\n")
fs.mkdirSync(path.join(here, "results"), { recursive: true })
fs.writeFileSync(path.join(here, "results", `${outName}.json`), JSON.stringify(summary, null, 2) + "\n")
fs.writeFileSync(path.join(here, "results", `${outName}.md`), md)
console.log(md)
process.exit(0)
