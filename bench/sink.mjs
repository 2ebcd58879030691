// A minimal fast SMTP sink (node:net) in its own process: EHLO with PIPELINING, accepts every command, counts
// messages. After the QUIT reply the server closes first, so TIME_WAIT stays on the server's side, as with a real MTA.
// Replies to pipelined commands go out in one write per read.
//
// Usage: node bench/sink.mjs [--port=0] [--host=127.0.0.1] [--greeting-delay=0] [--lifetime=900]
// IPC: sends {type:"ready",port}; answers {type:"stats"} with {messages, connections, open, byRemote, cpu}.
import net from "node:net"
import { boundLifetime, parseArgs } from "./common.mjs"

const args = parseArgs(process.argv.slice(2))
const host = args.host ?? "127.0.0.1"
const greetingDelay = Number(args["greeting-delay"] ?? 0)
boundLifetime(Number(args.lifetime ?? 900) * 1000)

const GREETING = "220 sink.bench.test ESMTP bench sink\r\n"
const EHLO = "250-sink.bench.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 10485760\r\n"
const END_OF_DATA = "\r\n.\r\n"
const MAX_LINE = 4096

let messages = 0
let connections = 0
let open = 0
const byRemote = new Map() // connections per client address: shows that source-ip binding happened

const session = (socket) => {
  connections++
  open++
  const remote = socket.remoteAddress
  byRemote.set(remote, (byRemote.get(remote) ?? 0) + 1)
  socket.setNoDelay(true)
  let pending = "" // an incomplete command line carried to the next read
  let inData = false
  let tail = "" // the last bytes of DATA content, to find CRLF.CRLF across reads
  let done = false
  let timer = null
  socket.on("error", () => {})
  socket.on("close", () => {
    open--
    if (timer !== null) clearTimeout(timer)
  })
  if (greetingDelay > 0) {
    timer = setTimeout(() => {
      timer = null
      if (!socket.destroyed) socket.write(GREETING)
    }, greetingDelay)
  } else {
    socket.write(GREETING)
  }
  socket.on("data", (chunk) => {
    if (done) return
    const s = pending + chunk.toString("latin1")
    pending = ""
    let out = ""
    let pos = 0
    // every turn consumes at least one byte or breaks: bounded by s.length
    while (pos < s.length) {
      if (inData) {
        const hay = tail + s.slice(pos)
        const i = hay.indexOf(END_OF_DATA)
        if (i < 0) {
          tail = hay.slice(-4)
          pos = s.length
          break
        }
        pos += i + END_OF_DATA.length - tail.length
        inData = false
        messages++
        out += "250 2.0.0 Ok: queued\r\n"
        continue
      }
      const nl = s.indexOf("\n", pos)
      if (nl < 0) {
        pending = s.slice(pos)
        if (pending.length > MAX_LINE) socket.destroy()
        break
      }
      const verb = s.slice(pos, pos + 4).toUpperCase()
      pos = nl + 1
      switch (verb) {
        case "EHLO": out += EHLO; break
        case "HELO": out += "250 sink.bench.test\r\n"; break
        case "MAIL": out += "250 2.1.0 Ok\r\n"; break
        case "RCPT": out += "250 2.1.5 Ok\r\n"; break
        case "DATA": out += "354 End data with <CR><LF>.<CR><LF>\r\n"; inData = true; tail = "\r\n"; break
        case "RSET": case "NOOP": out += "250 2.0.0 Ok\r\n"; break
        case "QUIT":
          done = true
          socket.end(out + "221 2.0.0 Bye\r\n")
          return
        default: out += "502 5.5.2 Error: command not recognized\r\n"
      }
    }
    if (out !== "") socket.write(out)
  })
}

const server = net.createServer(session)
server.on("error", (e) => {
  console.error("sink:", e.message)
  process.exit(1)
})
server.listen({ port: Number(args.port ?? 0), host, backlog: 4096 }, () => {
  const port = server.address().port
  if (process.send) process.send({ type: "ready", port })
  else console.log(`sink listening on ${host}:${port} (greeting delay ${greetingDelay} ms)`)
})
process.on("message", (m) => {
  if (m?.type === "stats") process.send({ type: "stats", messages, connections, open, byRemote: Object.fromEntries(byRemote), cpu: process.cpuUsage() })
})
