// The bench's DNS server (UDP on loopback), in its own process so its CPU is not the client's.
//   <label>.bench.test        MX 10 mx.<label>.bench.test   (any label: d0, d1, …, he3)
//   mx.<label>.bench.test     A 127.0.0.1                   (AAAA: none, except mx.he<N>.bench.test AAAA ::1)
// Other types of those names are NODATA, any other name NXDOMAIN. Names are matched by pattern, so any number of
// domains exists without a table. TTL 300, but every delivery uses its own names: nothing is answered from a cache.
//
// Two responders with the same answers:
//   --impl=fast (default)  a minimal hand-written RFC 1035 responder on node:dgram: one question, answers
//                          built by copying the question and compressing names to it. Measured on this machine, dns2
//                          cost ~230 µs of server CPU per query, twice the sink's cost per whole SMTP session, so with
//                          two queries per delivery the server core, not the client under test, set the pace.
//   --impl=dns2            the same zone on npm dns2's UDPServer (the tests' DNS fixture), to cross-check answers.
// Both raise the socket's receive buffer (4 MiB, within net.core.rmem_max): at c=1000 a burst of 1000 queries
// overflowed the 208 KiB default and c-ares saw ETIMEOUT.
//
// Usage: node bench/dns.mjs [--port=0] [--impl=fast|dns2] [--lifetime=900]
// IPC: sends {type:"ready",port}; answers {type:"stats"} with {queries, cpu}.
import dgram from "node:dgram"
import { boundLifetime, parseArgs, ZONE } from "./common.mjs"

const args = parseArgs(process.argv.slice(2))
const port = Number(args.port ?? 0)
const impl = args.impl ?? "fast"
boundLifetime(Number(args.lifetime ?? 900) * 1000)

const TYPE_A = 1
const TYPE_MX = 15
const TYPE_AAAA = 28
const TTL = 300
const suffix = "." + ZONE
let queries = 0

/** The zone: what to answer for (lower-case name, qtype). */
const lookup = (name, qtype) => {
  if (!name.endsWith(suffix)) return { rcode: 3, answer: null }
  const labels = name.slice(0, -suffix.length).split(".")
  if (labels.length === 1) return { rcode: 0, answer: qtype === TYPE_MX ? { type: TYPE_MX, exchange: `mx.${name}` } : null }
  if (labels.length === 2 && labels[0] === "mx") {
    if (qtype === TYPE_A) return { rcode: 0, answer: { type: TYPE_A, address: "127.0.0.1" } }
    if (qtype === TYPE_AAAA && labels[1].startsWith("he")) return { rcode: 0, answer: { type: TYPE_AAAA, address: "::1" } }
    return { rcode: 0, answer: null }
  }
  return { rcode: 3, answer: null }
}

const RDATA_A = Buffer.from([127, 0, 0, 1])
const RDATA_AAAA = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
// MX 10 "mx." + <the question's name>, compressed as a pointer to offset 12 (the question)
const RDATA_MX = Buffer.from([0, 10, 2, 0x6d, 0x78, 0xc0, 0x0c])

/** Parses the one question; null when the packet is not a single standard query we can answer. */
const question = (msg) => {
  if (msg.length < 17 || (msg[2] & 0x80) !== 0 || msg.readUInt16BE(4) !== 1) return null
  let pos = 12
  let name = ""
  // bounded by the packet's length: every label moves pos forward
  while (pos < msg.length) {
    const len = msg[pos]
    if (len === 0) break
    if (len > 63 || pos + 1 + len > msg.length) return null
    name += (name === "" ? "" : ".") + msg.toString("latin1", pos + 1, pos + 1 + len).toLowerCase()
    pos += 1 + len
  }
  if (pos + 5 > msg.length) return null
  return { name, qtype: msg.readUInt16BE(pos + 1), end: pos + 5 }
}

const respondFast = (msg) => {
  const q = question(msg)
  if (q === null) return null
  const { rcode, answer } = lookup(q.name, q.qtype)
  const rdata = answer === null ? null : answer.type === TYPE_A ? RDATA_A : answer.type === TYPE_AAAA ? RDATA_AAAA : RDATA_MX
  const out = Buffer.allocUnsafe(q.end + (rdata === null ? 0 : 12 + rdata.length))
  msg.copy(out, 0, 0, q.end) // id, flags (fixed below), counts (fixed below), question
  out[2] = 0x84 | (msg[2] & 0x79) // QR, AA; opcode and RD kept
  out[3] = rcode
  out.writeUInt16BE(1, 4)
  out.writeUInt16BE(rdata === null ? 0 : 1, 6)
  out.writeUInt32BE(0, 8) // no authority, no additional (an EDNS OPT in the query is simply not echoed)
  if (rdata !== null) {
    let p = q.end
    out.writeUInt16BE(0xc00c, p) // the owner name: a pointer to the question's
    out.writeUInt16BE(answer.type, p + 2)
    out.writeUInt16BE(1, p + 4)
    out.writeUInt32BE(TTL, p + 6)
    out.writeUInt16BE(rdata.length, p + 10)
    rdata.copy(out, p + 12)
  }
  return out
}

const respondDns2 = (dns2, request, send) => {
  const { Packet } = dns2
  const response = Packet.createResponseFromRequest(request)
  const [q] = request.questions
  const { rcode, answer } = lookup(q ? q.name.toLowerCase() : "", q?.type)
  response.header.rcode = rcode
  const rr = { name: q?.name, class: Packet.CLASS.IN, ttl: TTL }
  if (answer?.type === TYPE_MX) response.answers.push({ ...rr, type: Packet.TYPE.MX, priority: 10, exchange: answer.exchange })
  else if (answer) response.answers.push({ ...rr, type: answer.type, address: answer.address })
  send(response).catch(() => {})
}

const socket = impl === "dns2"
  ? await import("dns2").then(({ default: dns2 }) =>
    new dns2.UDPServer({ type: "udp4" }).on("request", (req, send) => {
      queries++
      respondDns2(dns2, req, send)
    }).on("requestError", () => {})
  )
  : dgram.createSocket({ type: "udp4" }).on("message", (msg, rinfo) => {
    queries++
    const out = respondFast(msg)
    if (out !== null) socket.send(out, rinfo.port, rinfo.address)
  })
socket.on("error", (e) => {
  console.error("dns:", e.message)
  process.exit(1)
})
socket.bind(port, "127.0.0.1", () => {
  try {
    socket.setRecvBufferSize(4 * 1024 * 1024)
    socket.setSendBufferSize(4 * 1024 * 1024)
  } catch { /* keep the defaults */ }
  if (args.verbose) console.error(`dns: receive buffer ${socket.getRecvBufferSize()} bytes`)
  const bound = socket.address().port
  if (process.send) process.send({ type: "ready", port: bound })
  else console.log(`dns (${impl}) listening on 127.0.0.1:${bound}`)
})
process.on("message", (m) => {
  if (m?.type === "stats") process.send({ type: "stats", queries, cpu: process.cpuUsage() })
})
