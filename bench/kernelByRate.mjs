// Does the kernel's share of a message depend on the client's rate? The raw reuse client (bench/rawReuseClient.mjs)
// with a busy-wait of S µs added after each of its messages, so that the same system calls are made at a lower rate:
//   node bench/kernelByRate.mjs [--spins=0,50,100,150] [--count=20000]
// One line per spin: messages/s, user and system CPU µs a message (process.cpuUsage). The busy-wait is user time;
// what moves in the system time is the kernel's cost of the same two writes and two reads a message. A slower client
// leaves the sink idle between its writes, and each write then wakes it. Bounded: `count` messages per spin after a
// warm-up of 3,000, c = 50; the servers (bench/reuseWorkload.mjs) exit by themselves after 5 minutes.
import { parseArgs } from "./common.mjs"
import { create } from "./rawReuseClient.mjs"
import { domains, startServers } from "./reuseWorkload.mjs"

const args = parseArgs(process.argv.slice(2))
const spins = (args.spins ?? "0,50,100,150").split(",").map(Number)
const count = Number(args.count ?? 20_000)
const concurrency = 50

const busy = (us) => {
  const end = performance.now() + us / 1000
  while (performance.now() < end);
}

const servers = await startServers(300)
try {
  for (const spin of spins) {
    const client = await create({ dns: `127.0.0.1:${servers.dnsPort}`, port: servers.sinkPort, domains })
    const run = (from, n) =>
      new Promise((resolve, reject) => {
        let next = 0
        let inflight = 0
        const launch = () => {
          while (inflight < concurrency && next < n) {
            const i = from + next++
            inflight++
            client.deliver(i).then(() => {
              busy(spin)
              inflight--
              launch()
            }, reject)
          }
          if (inflight === 0) resolve()
        }
        launch()
      })
    await run(1_000_000, 3000)
    const cpu = process.cpuUsage()
    const t0 = performance.now()
    await run(0, count)
    const used = process.cpuUsage(cpu)
    const ms = performance.now() - t0
    await client.close()
    console.log(JSON.stringify({
      spinUs: spin,
      rate: Math.round((count / ms) * 1000),
      userUs: +(used.user / count).toFixed(1),
      systemUs: +(used.system / count).toFixed(1)
    }))
  }
} finally {
  servers.stop()
}
