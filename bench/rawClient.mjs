// The ceiling one Node process reaches without a library: a minimal hand-written SMTP client on node:net and a
// node:dns Resolver (c-ares, callback API), pipelined (MAIL+RCPT+DATA in one write, message+QUIT in one write).
// Per delivery: MX lookup, A lookup of the best MX, a fresh connection, one transaction, QUIT; the server closes
// first and the client waits briefly (≤ 200 ms) for that close before destroying the socket, so no TIME_WAIT is left
// on the client's (possibly bound) address. `closeFirst: true` half-closes right after sending the message and QUIT
// instead, so the client closes first and keeps a TIME_WAIT per connection (the collapse demo).
import dns from "node:dns"
import net from "node:net"
import { domainOf, EHLO_NAME, MESSAGE, recipientOf, SENDER } from "./common.mjs"

const WIRE_MESSAGE = Buffer.concat([MESSAGE, Buffer.from(".\r\nQUIT\r\n", "latin1")])
const CLOSE_WAIT_MS = 200
const IDLE_TIMEOUT_MS = 30_000

/**
 * One SMTP session on a fresh connection; calls `cb(error | null)` once. `connect` is passed to net.connect as it
 * is (host, port, localAddress, or a lookup with autoSelectFamily for the Happy Eyeballs figure). A failed
 * connect within `connectTimeoutMs` fails with `error.code === "CONNECT_TIMEOUT"`.
 */
export const session = ({ connect, rcpt, closeFirst = false, connectTimeoutMs = IDLE_TIMEOUT_MS }, cb) => {
  const socket = net.connect({ ...connect, noDelay: true })
  let connected = false
  socket.once("connect", () => {
    connected = true
    socket.setTimeout(IDLE_TIMEOUT_MS)
  })
  let buf = ""
  let step = 0
  let pipelining = false
  let finished = false
  const finish = (error) => {
    if (finished) return
    finished = true
    socket.destroy()
    cb(error)
  }
  const fail = (what) => finish(new Error(what))
  socket.setTimeout(connectTimeoutMs, () => {
    if (step === 7) return finish(null) // the server did not close within CLOSE_WAIT_MS: give up waiting
    if (connected) return fail(`timeout at step ${step}`)
    finish(Object.assign(new Error(`connect timeout ${connectTimeoutMs} ms`), { code: "CONNECT_TIMEOUT" }))
  })
  socket.on("error", (e) => finish(e))
  socket.on("end", () => (step === 7 ? finish(null) : fail(`server closed at step ${step}`)))
  socket.on("close", () => (step === 7 ? finish(null) : fail(`closed at step ${step}`)))
  socket.on("data", (chunk) => {
    buf += chunk.toString("latin1")
    let nl
    // each turn removes one line from buf: bounded by its length
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      if (step === 1 && line.startsWith("PIPELINING", 4)) pipelining = true
      if (line.charCodeAt(3) === 45 /* "-" */) continue
      const code = line.slice(0, 3)
      switch (step) {
        case 0:
          if (code !== "220") return fail(`greeting ${line}`)
          socket.write(`EHLO ${EHLO_NAME}\r\n`)
          step = 1
          break
        case 1:
          if (code !== "250") return fail(`EHLO ${line}`)
          if (!pipelining) return fail("no PIPELINING")
          socket.write(`MAIL FROM:<${SENDER}>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\n`)
          step = 2
          break
        case 2:
        case 3:
          if (code !== "250") return fail(`${step === 2 ? "MAIL" : "RCPT"} ${line}`)
          step++
          break
        case 4:
          if (code !== "354") return fail(`DATA ${line}`)
          socket.write(WIRE_MESSAGE)
          // closeFirst: the client's FIN leaves before the server's, so the active close (and its 60 s TIME_WAIT)
          // is on the client's side, deterministically; the replies are still read through the half-open socket
          if (closeFirst) socket.end()
          step = 5
          break
        case 5:
          if (code !== "250") return fail(`end of data ${line}`)
          step = 6
          break
        case 6:
          step = 7 // the message is delivered whatever QUIT gets
          socket.setTimeout(CLOSE_WAIT_MS)
          break
        default:
          return fail(`unexpected ${line}`)
      }
    }
  })
}

/**
 * Round-robin over a few resolvers, each with its own UDP socket: on loopback, the answers to a burst of 1000
 * queries arrive within a millisecond and overflow one c-ares socket's receive buffer (208 KiB by default), which
 * shows up as ETIMEOUT after the retry interval. 8 sockets absorb c=1000 bursts here (measured: 0 drops, against
 * ~25 % lost with one socket). The library's live Dns layer likewise gives each query a resolver of its own.
 */
export const resolverPool = (Resolver, server, size = 8) =>
  Array.from({ length: size }, () => {
    const r = new Resolver({ timeout: 2000, tries: 2 })
    r.setServers([server])
    return r
  })

/**
 * @param {{ dns: string, port: number, sourceIps?: string[], closeFirst?: boolean, prefix?: string }} opts
 */
export const create = async (opts) => {
  const resolvers = resolverPool(dns.Resolver, opts.dns)
  let turn = 0
  const sources = opts.sourceIps ?? []
  const closeFirst = opts.closeFirst === true
  const deliverCb = (i, cb) => {
    const domain = domainOf(i, opts.prefix)
    const resolver = resolvers[turn++ % resolvers.length]
    resolver.resolveMx(domain, (e1, mxs) => {
      if (e1) return cb(e1)
      let best = mxs[0]
      for (const mx of mxs) if (mx.priority < best.priority) best = mx
      resolver.resolve4(best.exchange, (e2, ips) => {
        if (e2) return cb(e2)
        const source = sources.length === 0 ? undefined : sources[Math.floor(Math.random() * sources.length)]
        session({ connect: { host: ips[0], port: opts.port, localAddress: source }, rcpt: recipientOf(i, opts.prefix), closeFirst }, cb)
      })
    })
  }
  return {
    deliver: (i) => new Promise((resolve, reject) => deliverCb(i, (e) => (e ? reject(e) : resolve()))),
    close: async () => {}
  }
}
