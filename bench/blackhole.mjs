// A TCP address that never answers a SYN, on loopback, without touching the firewall: a listener with backlog 1
// whose process never accepts (its event loop is parked in Atomics.wait). Once its accept queue is full (the caller
// fills it with a connection or two, see fill() in happyEyeballs.mjs), Linux drops every further SYN
// (tcp_conn_request: "accept queue full" → drop, counted in ListenOverflows), so a connect sees what it sees
// against a black-holed address: no SYN-ACK, no RST, SYN retransmissions until its own timeout.
//
// Usage: node bench/blackhole.mjs --host=::1 --port=N [--lifetime=120]   (IPC: {type:"ready",port} then silence)
import net from "node:net"
import { parseArgs } from "./common.mjs"

const args = parseArgs(process.argv.slice(2))
const lifetimeMs = Number(args.lifetime ?? 120) * 1000
const server = net.createServer(() => {})
server.on("error", (e) => {
  if (process.send) process.send({ type: "error", message: e.message }, () => process.exit(1))
  else process.exit(1)
})
server.listen({ host: args.host ?? "::1", port: Number(args.port ?? 0), backlog: 1 }, () => {
  const port = server.address().port
  const park = () => {
    // Blocks the event loop (bounded): libuv never gets to accept(), the kernel queue stays full.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, lifetimeMs)
    process.exit(0)
  }
  if (process.send) process.send({ type: "ready", port }, park)
  else {
    console.log(`black hole on [${args.host ?? "::1"}]:${port}`)
    park()
  }
})
