// The ceiling of connection reuse in one Node process without a library: a minimal node:net client that keeps
// connections open and sends up to 100 messages over each (MAIL+RCPT+DATA pipelined in one write, the message in
// another, then the next transaction), as KumoMTA's max_deliveries_per_connection or Postfix's connection cache
// would. Each domain's MX and address are resolved once (c-ares) and kept: the ceiling, not a fair DNS comparison.
// Idle connections wait in a list per address; QUIT after 100 messages or at close().
import dns from "node:dns"
import net from "node:net"
import { EHLO_NAME, MESSAGE, reuseDomainOf, reuseRecipientOf, SENDER } from "./common.mjs"
import { resolverPool } from "./rawClient.mjs"

const MESSAGES_PER_CONNECTION = 100
const WIRE_MESSAGE = Buffer.concat([MESSAGE, Buffer.from(".\r\n", "latin1")])
const TIMEOUT_MS = 30_000

/** One connection: `send(rcpt, cb)` runs one transaction; `quit()` ends it. */
const open = (ip, port, ready) => {
  const socket = net.connect({ host: ip, port, noDelay: true })
  socket.setTimeout(TIMEOUT_MS, () => fail(new Error("timeout")))
  let buf = ""
  let step = "greeting"
  let pending = null // the transaction's callback
  let broken = null
  const conn = { socket, messages: 0, alive: () => broken === null }
  const fail = (e) => {
    if (broken !== null) return
    broken = e
    socket.destroy()
    if (step === "greeting" || step === "ehlo") ready(e)
    else if (pending) {
      const cb = pending
      pending = null
      cb(e)
    }
  }
  socket.on("error", fail)
  socket.on("close", () => fail(new Error(`closed at ${step}`)))
  socket.on("data", (chunk) => {
    buf += chunk.toString("latin1")
    let nl
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      if (line.charCodeAt(3) === 45) continue
      const code = line.slice(0, 3)
      switch (step) {
        case "greeting":
          if (code !== "220") return fail(new Error(`greeting ${line}`))
          socket.write(`EHLO ${EHLO_NAME}\r\n`)
          step = "ehlo"
          break
        case "ehlo":
          if (code !== "250") return fail(new Error(`EHLO ${line}`))
          step = "idle"
          ready(null, conn)
          break
        case "mail":
        case "rcpt":
          if (code !== "250") return fail(new Error(`${step} ${line}`))
          step = step === "mail" ? "rcpt" : "data"
          break
        case "data":
          if (code !== "354") return fail(new Error(`DATA ${line}`))
          socket.write(WIRE_MESSAGE)
          step = "end"
          break
        case "end": {
          if (code !== "250") return fail(new Error(`end of data ${line}`))
          step = "idle"
          conn.messages++
          const cb = pending
          pending = null
          cb(null)
          break
        }
        case "quit":
          break
        default:
          return fail(new Error(`unexpected ${line}`))
      }
    }
  })
  conn.send = (rcpt, cb) => {
    pending = cb
    step = "mail"
    socket.write(`MAIL FROM:<${SENDER}>\r\nRCPT TO:<${rcpt}>\r\nDATA\r\n`)
  }
  conn.quit = () => {
    step = "quit"
    socket.end("QUIT\r\n")
    setTimeout(() => socket.destroy(), 200).unref()
  }
  return conn
}

/** @param {{ dns: string, port: number, domains: number }} opts */
export const create = async (opts) => {
  const resolvers = resolverPool(dns.promises.Resolver, opts.dns)
  let turn = 0
  const addresses = new Map() // domain → Promise<ip>
  const idle = new Map() // ip → connections
  const addressOf = (domain) => {
    let p = addresses.get(domain)
    if (p === undefined) {
      const resolver = resolvers[turn++ % resolvers.length]
      p = resolver.resolveMx(domain).then((mxs) => {
        let best = mxs[0]
        for (const mx of mxs) if (mx.priority < best.priority) best = mx
        return resolver.resolve4(best.exchange).then((ips) => ips[0])
      })
      addresses.set(domain, p)
    }
    return p
  }
  const take = (ip) =>
    new Promise((resolve, reject) => {
      const list = idle.get(ip)
      while (list?.length) {
        const c = list.pop()
        if (c.alive()) return resolve(c)
      }
      const conn = open(ip, opts.port, (e, c) => (e ? reject(e) : resolve(c)))
      void conn
    })
  const give = (ip, conn) => {
    if (!conn.alive()) return
    if (conn.messages >= MESSAGES_PER_CONNECTION) return conn.quit()
    let list = idle.get(ip)
    if (list === undefined) idle.set(ip, (list = []))
    list.push(conn)
  }
  const deliver = async (i) => {
    const ip = await addressOf(reuseDomainOf(i, opts.domains))
    const conn = await take(ip)
    await new Promise((resolve, reject) => conn.send(reuseRecipientOf(i, opts.domains), (e) => (e ? reject(e) : resolve())))
    give(ip, conn)
  }
  return {
    deliver,
    close: async () => {
      for (const list of idle.values()) for (const c of list) c.quit()
      idle.clear()
    }
  }
}
