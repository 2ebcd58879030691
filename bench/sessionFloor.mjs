// The session floor (bench/sessionFloorClient.mjs) in one process, unpinned, for quick comparisons:
//   node bench/sessionFloor.mjs [--count=20000] [--messages-per-connection=100]
// Starts the bench's DNS server and sink (bench/reuseWorkload.mjs), warms up with 5,000 messages, then prints one
// JSON line: messages/s and user and system CPU µs a message over `count` messages at c = 50. Bounded in count; the
// servers exit by themselves after 2 minutes.
import { parseArgs } from "./common.mjs"
import { domains, startServers } from "./reuseWorkload.mjs"
import { create } from "./sessionFloorClient.mjs"

const args = parseArgs(process.argv.slice(2))
const count = Number(args.count ?? 20_000)
const messagesPerConnection = Number(args["messages-per-connection"] ?? 100)

const servers = await startServers(120)
try {
  const client = await create({ dns: `127.0.0.1:${servers.dnsPort}`, port: servers.sinkPort, domains, messagesPerConnection })
  let failed = 0
  const batch = (start, n) =>
    client.runBatch({ start, count: n, concurrency: 50, deadline: Infinity, record: (_t, e) => e !== null && failed++ })
  await batch(1_000_000, 5000)
  const cpu = process.cpuUsage()
  const t0 = performance.now()
  await batch(0, count)
  const used = process.cpuUsage(cpu)
  const ms = performance.now() - t0
  await client.close()
  console.log(JSON.stringify({
    messagesPerConnection,
    failed,
    rate: Math.round((count / ms) * 1000),
    userUs: +(used.user / count).toFixed(1),
    systemUs: +(used.system / count).toFixed(1)
  }))
} finally {
  servers.stop()
}
