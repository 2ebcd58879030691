// Summarises V8 .cpuprofile files (node --cpu-prof) into Markdown: self time by category, by source file, the top
// functions by self time, and the library's own functions by inclusive time (what their calls cost, callees
// included: where a self-time hot spot inside Effect's runtime comes from).
//   node bench/profileSummary.mjs FILE.cpuprofile [FILE2 …] [--out=bench/results/profile.md] [--top=25]
//        [--window=START_US,END_US]   only samples in that window (process.hrtime µs: the profile's own clock)
// Each sample's time is the interval to the next sample (V8's timeDeltas), so idle gaps count as "(idle)".
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
// The library's compiled files: dist/, or the build BENCH_DIST points at.
const libraryDir = path.relative(root, process.env.BENCH_DIST ? path.resolve(process.env.BENCH_DIST) : path.join(root, "dist")) + "/"

const category = (url, name) => {
  if (url === "") {
    if (name === "(idle)" || name === "(program)" || name === "(garbage collector)") return name
    return "(native/V8)"
  }
  if (url.startsWith("node:")) return "node internals"
  const rel = url.startsWith("file://") ? path.relative(root, fileURLToPath(url)) : url
  if (rel.startsWith(libraryDir)) return "library"
  if (rel.startsWith("bench/")) return "bench/ (client code, harness)"
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(rel)
  if (m) return m[1]
  return "other"
}

const shortUrl = (url) => {
  if (url.startsWith("file://")) {
    const rel = path.relative(root, fileURLToPath(url))
    return rel.startsWith(libraryDir) ? "dist/" + rel.slice(libraryDir.length) : rel.replace(/^node_modules\//, "")
  }
  return url
}

const fnKey = (f) => `${f.functionName || "(anonymous)"}\u0000${f.url}\u0000${f.lineNumber}`
const fnWhere = (f) => (f.url ? `${shortUrl(f.url)}:${f.lineNumber + 1}` : "")

export const summarise = (profile, top = 25, window = null) => {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const self = new Map()
  const inclusive = new Map() // library functions: time with them anywhere on the stack
  const { samples, timeDeltas } = profile
  const intervals = timeDeltas.slice(1).filter((d) => d > 0).sort((a, b) => a - b)
  const typical = intervals.length ? intervals[Math.floor(intervals.length / 2)] : 0
  let t = profile.startTime
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i]
    if (window && (t < window[0] || t > window[1])) continue
    const us = i + 1 < timeDeltas.length ? Math.max(0, timeDeltas[i + 1]) : typical
    self.set(samples[i], (self.get(samples[i]) ?? 0) + us)
    const seen = new Set()
    // bounded by the stack's depth: parent links end at the root
    for (let id = samples[i]; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id).callFrame
      if (category(f.url, f.functionName) !== "library") continue
      const key = fnKey(f)
      if (seen.has(key)) continue
      seen.add(key)
      const e = inclusive.get(key) ?? { name: f.functionName || "(anonymous)", where: fnWhere(f), us: 0 }
      e.us += us
      inclusive.set(key, e)
    }
  }
  let total = 0
  const cats = new Map()
  const files = new Map()
  const fns = new Map()
  for (const [id, us] of self) {
    const { callFrame: f } = byId.get(id)
    const cat = category(f.url, f.functionName)
    total += us
    cats.set(cat, (cats.get(cat) ?? 0) + us)
    if (f.url !== "") files.set(f.url, { cat, us: (files.get(f.url)?.us ?? 0) + us })
    const key = fnKey(f)
    const e = fns.get(key) ?? { name: f.functionName || "(anonymous)", where: fnWhere(f), cat, us: 0 }
    e.us += us
    fns.set(key, e)
  }
  const busy = Math.max(1, total - (cats.get("(idle)") ?? 0))
  return {
    window,
    totalMs: total / 1000,
    busyMs: busy / 1000,
    categories: [...cats].map(([name, us]) => ({ name, ms: us / 1000, pctOfBusy: name === "(idle)" ? null : (100 * us) / busy }))
      .sort((a, b) => b.ms - a.ms),
    files: [...files].map(([url, v]) => ({ file: shortUrl(url), cat: v.cat, ms: v.us / 1000, pctOfBusy: (100 * v.us) / busy }))
      .sort((a, b) => b.ms - a.ms).slice(0, top),
    functions: [...fns.values()].filter((f) => f.name !== "(idle)")
      .map((f) => ({ name: f.name, where: f.where, cat: f.cat, ms: f.us / 1000, pctOfBusy: (100 * f.us) / busy }))
      .sort((a, b) => b.ms - a.ms).slice(0, top),
    libraryInclusive: [...inclusive.values()]
      .map((f) => ({ name: f.name, where: f.where, ms: f.us / 1000, pctOfBusy: (100 * f.us) / busy }))
      .sort((a, b) => b.ms - a.ms).slice(0, top)
  }
}

const pct = (x) => (x === null ? "" : `${x.toFixed(1)} %`)
const ms = (x) => x.toFixed(1)

export const toMarkdown = (name, s) => {
  const scope = s.window ? "the measured batch only (warm-up and start-up excluded)" : "the whole process"
  const out = [`### ${name}`, "", `Sampled ${ms(s.totalMs)} ms over ${scope}, of which ${ms(s.busyMs)} ms busy (not idle).`, ""]
  out.push("Self time by category (share of busy time):", "", "| category | self ms | share |", "|---|---:|---:|")
  for (const c of s.categories) out.push(`| ${c.name} | ${ms(c.ms)} | ${pct(c.pctOfBusy)} |`)
  out.push("", "Top files by self time:", "", "| file | category | self ms | share |", "|---|---|---:|---:|")
  for (const f of s.files) out.push(`| \`${f.file}\` | ${f.cat} | ${ms(f.ms)} | ${pct(f.pctOfBusy)} |`)
  out.push("", "Top functions by self time:", "", "| function | where | category | self ms | share |", "|---|---|---|---:|---:|")
  for (const f of s.functions) out.push(`| \`${f.name}\` | \`${f.where}\` | ${f.cat} | ${ms(f.ms)} | ${pct(f.pctOfBusy)} |`)
  if (s.libraryInclusive.length) {
    out.push("", "Library functions by inclusive time (callees included, each counted once per stack):", "",
      "| function | where | inclusive ms | share |", "|---|---|---:|---:|")
    for (const f of s.libraryInclusive) out.push(`| \`${f.name}\` | \`${f.where}\` | ${ms(f.ms)} | ${pct(f.pctOfBusy)} |`)
  }
  return out.join("\n") + "\n"
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const files = process.argv.slice(2).filter((a) => !a.startsWith("--"))
  const flag = (k, d) => process.argv.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d
  const out = flag("out", path.join(root, "bench/results/profile.md"))
  const top = Number(flag("top", 25))
  const w = flag("window", null)
  const window = w ? w.split(",").map(Number) : null
  if (files.length === 0) {
    console.error("usage: node bench/profileSummary.mjs FILE.cpuprofile [...] [--out=…] [--top=25]")
    process.exit(1)
  }
  const parts = [`# CPU profile summary`, "", `Generated ${new Date().toISOString()} by bench/profileSummary.mjs.`, ""]
  for (const f of files) parts.push(toMarkdown(path.basename(f), summarise(JSON.parse(fs.readFileSync(f, "utf8")), top, window)))
  fs.writeFileSync(out, parts.join("\n"))
  console.log(`wrote ${out}`)
}
