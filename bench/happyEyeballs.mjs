// The Happy Eyeballs figure, in its own process: time to delivery when the first candidate (IPv6 ::1) never
// answers, for several attempt delays, against sequential clients that wait out a connect timeout.
//   node bench/happyEyeballs.mjs '<json>'  → one JSON line. Options: dns, port (the sink's on 127.0.0.1 and the
//   black hole's on ::1: the same number), delays (ms), samples, sequentialTimeoutMs, library (bool).
// Each sample is one delivery to its own domain he<N>.bench.test (MX → AAAA ::1 + A 127.0.0.1), so no DNS cache
// shortens a later sample. The black hole is bench/blackhole.mjs, started by the caller; fill() below fills its
// accept queue and proves that a further SYN goes unanswered before anything is measured.
import dns from "node:dns"
import net from "node:net"
import { HE_PREFIX, median, recipientOf, domainOf } from "./common.mjs"
import { session } from "./rawClient.mjs"

const opts = JSON.parse(process.argv[2] ?? "{}")
setTimeout(() => {
  process.stdout.write(JSON.stringify({ error: "happy eyeballs figure exceeded 180 s" }) + "\n")
  process.exit(2)
}, 180_000).unref()

const connectOnce = (host, port, ms) =>
  new Promise((resolve) => {
    const s = net.connect({ host, port })
    const timer = setTimeout(() => {
      s.destroy()
      resolve(null)
    }, ms)
    s.on("connect", () => {
      clearTimeout(timer)
      resolve(s)
    })
    s.on("error", () => {
      clearTimeout(timer)
      resolve(null)
    })
  })

/** Connects to [::1]:port until one connect is left unanswered (≤ 8 tries); returns the held fillers. */
const fill = async (port) => {
  const held = []
  for (let i = 0; i < 8; i++) {
    const s = await connectOnce("::1", port, 500)
    if (s === null) return { held, silent: true }
    held.push(s)
  }
  return { held, silent: false }
}

let next = 0
const timeOne = async (deliver) => {
  const i = next++
  const t = performance.now()
  try {
    await deliver(i)
    return { ms: performance.now() - t, error: null }
  } catch (e) {
    return { ms: performance.now() - t, error: String(e?.message ?? e) }
  }
}

const series = async (name, deliver, extra = {}) => {
  const samples = []
  for (let k = 0; k < opts.samples; k++) samples.push(await timeOne(deliver))
  const ok = samples.filter((s) => s.error === null).map((s) => s.ms)
  return {
    name,
    ...extra,
    samples: samples.map((s) => Math.round(s.ms * 10) / 10),
    errors: samples.filter((s) => s.error !== null).map((s) => s.error),
    medianMs: ok.length ? Math.round(median(ok) * 10) / 10 : null,
    minMs: ok.length ? Math.round(Math.min(...ok) * 10) / 10 : null,
    maxMs: ok.length ? Math.round(Math.max(...ok) * 10) / 10 : null
  }
}

const resolver = new dns.promises.Resolver({ timeout: 2000, tries: 2 })
resolver.setServers([opts.dns])
const addressesOf = async (i) => {
  const mxs = await resolver.resolveMx(domainOf(i, HE_PREFIX))
  const host = mxs.sort((a, b) => a.priority - b.priority)[0].exchange
  const [v6, v4] = await Promise.all([resolver.resolve6(host).catch(() => []), resolver.resolve4(host).catch(() => [])])
  return { v6, v4 }
}

/** The sequential client: IPv6 first, each address given `sequentialTimeoutMs` to connect, as Stalwart does. */
const rawSequential = async (i) => {
  const { v6, v4 } = await addressesOf(i)
  let last = null
  for (const ip of [...v6, ...v4]) {
    const error = await new Promise((resolve) =>
      session({ connect: { host: ip, port: opts.port }, rcpt: recipientOf(i, HE_PREFIX), connectTimeoutMs: opts.sequentialTimeoutMs }, resolve)
    )
    if (error === null) return
    last = error
    if (error.code !== "CONNECT_TIMEOUT" && error.code !== "ECONNREFUSED") break
  }
  throw last ?? new Error("no address")
}

/** The raw client's control: straight to the IPv4 address, the black hole never tried. */
const rawV4Only = async (i) => {
  const { v4 } = await addressesOf(i)
  await new Promise((resolve, reject) =>
    session({ connect: { host: v4[0], port: opts.port }, rcpt: recipientOf(i, HE_PREFIX) }, (e) => (e ? reject(e) : resolve()))
  )
}

/** Node's own Happy Eyeballs (net.connect autoSelectFamily), handed the addresses in the same order. */
const nodeAutoSelect = (delay) => async (i) => {
  const { v6, v4 } = await addressesOf(i)
  const all = [...v6.map((address) => ({ address, family: 6 })), ...v4.map((address) => ({ address, family: 4 }))]
  const lookup = (_host, o, cb) => (o.all ? cb(null, all) : cb(null, all[0].address, all[0].family))
  await new Promise((resolve, reject) =>
    session(
      {
        connect: { host: "mx.bench.test", port: opts.port, lookup, autoSelectFamily: true, autoSelectFamilyAttemptTimeout: delay },
        rcpt: recipientOf(i, HE_PREFIX)
      },
      (e) => (e ? reject(e) : resolve())
    )
  )
}

const main = async () => {
  const { held, silent } = await fill(opts.port)
  if (!silent) throw new Error("the black hole answered every SYN: cannot measure")
  const results = { blackHole: { fillers: held.length, verified: true }, series: [] }
  if (opts.library) {
    const { create } = await import("./libraryClient.mjs")
    const make = (extra) => create({ dns: opts.dns, port: opts.port, prefix: HE_PREFIX, ...extra })
    const control = await make({ ipStrategy: "ipv4_only" })
    results.series.push(await series("library, IPv4 only (control: no black hole)", control.deliver, { control: true }))
    await control.close()
    for (const delay of opts.delays) {
      const c = await make({ ipStrategy: "ipv6_then_ipv4", attemptDelay: `${delay}ms`, connectTimeout: `${opts.sequentialTimeoutMs}ms` })
      results.series.push(await series(`library, connection-attempt-delay ${delay} ms`, c.deliver, { delayMs: delay }))
      await c.close()
    }
    const seq = await make({ ipStrategy: "ipv6_then_ipv4", attemptDelay: false, connectTimeout: `${opts.sequentialTimeoutMs}ms` })
    results.series.push(await series(`library, sequential (connection-attempt-delay = false, connect ${opts.sequentialTimeoutMs} ms)`, seq.deliver, { timeoutMs: opts.sequentialTimeoutMs }))
    await seq.close()
  }
  results.series.push(await series("raw client, IPv4 only (control: no black hole)", rawV4Only, { control: true }))
  for (const delay of opts.delays) {
    results.series.push(await series(`node:net autoSelectFamily, attempt timeout ${delay} ms`, nodeAutoSelect(delay), { delayMs: delay }))
  }
  results.series.push(await series(`raw client, sequential (connect timeout ${opts.sequentialTimeoutMs} ms)`, rawSequential, { timeoutMs: opts.sequentialTimeoutMs }))
  for (const s of held) s.destroy()
  process.stdout.write(JSON.stringify(results) + "\n")
  process.exit(0)
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: String(e?.stack ?? e) }) + "\n")
  process.exit(1)
})
