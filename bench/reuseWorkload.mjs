// The reuse workload of the one-process harnesses (bench/reuseBudget.mjs, bench/reuseSteps.mjs), in one place:
// the bench's DNS server and sink as child processes (bounded lifetime), and per build (a directory inside this
// checkout, so that "effect" resolves) Transport.deliver on Transport.layer (the pool, the defaults reuse.messages =
// 100 and reuse.idle = 5s) to five domains r0 … r4 at c = concurrency, as the reuse figure of `npm run bench` runs it.
import { spawn } from "node:child_process"
import path from "node:path"
import { Effect, Layer, ManagedRuntime } from "effect"
import { MESSAGE, reuseRecipientOf, SENDER } from "./common.mjs"
import { configText } from "./libraryClient.mjs"

const here = path.dirname(new URL(import.meta.url).pathname)
export const domains = 5

/** Starts bench/dns.mjs and bench/sink.mjs; `stop` kills them (they also exit by themselves after `lifetime` s). */
export const startServers = async (lifetime) => {
  const children = []
  const start = (script) =>
    new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(here, script), `--lifetime=${lifetime}`], {
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      children.push(child)
      child.on("error", reject)
      child.on("message", (m) => m?.type === "ready" && resolve(m.port))
    })
  const stop = () => {
    for (const child of children) child.kill("SIGKILL")
  }
  try {
    const [dnsPort, sinkPort] = await Promise.all([start("dns.mjs"), start("sink.mjs")])
    return { dnsPort, sinkPort, stop }
  } catch (e) {
    stop()
    throw e
  }
}

/**
 * One build's runtime and `batch(from, n)`: n messages to recipients numbered from `from`, at c = concurrency.
 * `checked`: each report must say delivered (a run-loop step count leaves it out: it is not the library's).
 */
export const workload = async (dist, { dnsPort, sinkPort }, { concurrency, checked }) => {
  const load = (name) => import(path.join(dist, `${name}.js`))
  const [Transport, OutboundConfig] = await Promise.all([load("Transport"), load("OutboundConfig")])
  const runtime = ManagedRuntime.make(Layer.mergeAll(
    OutboundConfig.layerFromText(configText({ domains }), "bench.toml"),
    Transport.layer({ dns: { servers: [`127.0.0.1:${dnsPort}`] } })
  ))
  const options = { port: sinkPort, ca: undefined, domainConcurrency: 8, mtaStsPort: 443 }
  const deliver = (i) =>
    Transport.deliver({ message: MESSAGE, sender: SENDER, recipients: [reuseRecipientOf(i, domains)] })
  const one = checked
    ? (i) =>
      Effect.flatMap(deliver(i), (report) =>
        report.recipients.every((r) => r.status === "delivered")
          ? Effect.void
          : Effect.die(new Error(`not delivered: ${JSON.stringify(report.recipients)}`)))
    : deliver
  const batch = (from, n) =>
    Effect.provideService(
      Effect.forEach(Array.from({ length: n }, (_, k) => from + k), one, { concurrency, discard: true }),
      Transport.TransportOptions,
      options
    )
  return { runtime, batch }
}
