/**
 * Nothing leaks: interrupting `deliver` at any point of a delivery (DNS, connect, greeting, EHLO, the TLS handshake,
 * the middle of the body) closes every socket at once, and a burst of concurrent deliveries to misbehaving peers
 * leaves no socket, timer or handle behind. Real sockets on loopback, real time. No unhandled rejection or uncaught
 * exception in the whole file.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer } from "effect"
import * as Connector from "../src/Connector.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as Transport from "../src/Transport.js"
import { blackHole } from "./fixtures/blackHole.js"
import * as net from "node:net"
import {
  activeResources,
  grownSince,
  hostileDns,
  hostilePeer,
  type HostilePeer,
  leakedSince,
  type PeerConnection,
  poll,
  watchProcess
} from "./fixtures/hostilePeer.js"

const watch = watchProcess()
afterAll(() => {
  expect(watch.stop()).toEqual([])
})

// Long timeouts: in these cases only the interruption may end the delivery.
const CONFIG = (strategy = "ipv4_only", timeouts = "20s") => `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "${strategy}"
[queue.outbound.timeouts]
connect = "${timeouts}"
greeting = "${timeouts}"
ehlo = "${timeouts}"
tls = "${timeouts}"
mail-from = "${timeouts}"
rcpt-to = "${timeouts}"
data = "${timeouts}"
[queue.outbound.tls]
mta-sts = "disable"
allow-invalid-certs = true
`

const CRLF = "\r\n"
const request = (message = "Subject: x\r\n\r\nbody line\r\n"): Transport.DeliveryRequest => ({
  message,
  sender: "sender@origin.test",
  recipients: ["rcpt@hostile.test"]
})

interface Target {
  readonly ip: string
  readonly port: number
  readonly config?: string
  readonly dns?: Layer.Layer<Dns.Dns>
  readonly request?: Transport.DeliveryRequest
}

const delivery = (target: Target) =>
  Transport.deliver(target.request ?? request()).pipe(
    Effect.provide(Layer.mergeAll(
      Layer.orDie(OutboundConfig.layerFromText(target.config ?? CONFIG(target.ip.includes(":") ? "ipv6_only" : "ipv4_only"))),
      target.dns ?? Dns.layerTest({
        "hostile.test": { mx: [{ exchange: "mx.hostile.test", priority: 10 }] },
        "mx.hostile.test": target.ip.includes(":") ? { aaaa: [target.ip] } : { a: [target.ip] }
      }),
      Connector.layer,
      PolicyCache.layer,
      MtaSts.layerTest(() => Effect.succeed({ status: 404 }))
    )),
    Effect.provideService(Transport.TransportOptions, { port: target.port, ca: undefined, domainConcurrency: 64, mtaStsPort: 443 })
  )

/**
 * Forks the delivery, waits until `reached` (the point to interrupt at), interrupts it, and checks: the interrupt
 * returns promptly, the connector's count is 0 the moment it returns, the peer saw its sockets close, and Node has
 * no active handle more than before the delivery.
 */
const interruptAt = (target: Target, reached: Effect.Effect<void>, peer: HostilePeer | null) =>
  Effect.gen(function*() {
    const baseline = activeResources()
    const fiber = yield* Effect.fork(delivery(target))
    yield* reached
    // still running: the point was reached inside the delivery, not after it
    expect(fiber.unsafePoll()).toBe(null)
    const started = Date.now()
    yield* Fiber.interrupt(fiber)
    const took = Date.now() - started
    expect(yield* Connector.openConnections).toBe(0)
    expect(took).toBeLessThan(1_500)
    if (peer !== null) yield* peer.settled
    expect(yield* leakedSince(baseline)).toEqual([])
  })

const hello = async (c: PeerConnection, ...keywords: ReadonlyArray<string>) => {
  c.write(`220 mx.hostile.test ESMTP${CRLF}`)
  if ((await c.line()) === null) return false
  const lines = ["mx.hostile.test", ...keywords]
  c.write(lines.map((t, i) => `250${i === lines.length - 1 ? " " : "-"}${t}`).join(CRLF) + CRLF)
  return true
}

const answer = async (c: PeerConnection, reply: string) => {
  if ((await c.line()) === null) return false
  c.write(reply + CRLF)
  return true
}

describe("interrupting deliver closes everything", () => {
  it.scopedLive("while the MX query is unanswered", () =>
    Effect.gen(function*() {
      const dns = yield* hostileDns(() => null)
      yield* interruptAt(
        { ip: "127.0.0.1", port: 9, dns: Dns.layer({ servers: [dns.server], timeout: "20 seconds", cache: false }) },
        poll(() => dns.questions.length > 0, Duration.seconds(5), "no DNS question arrived"),
        null
      )
      expect(dns.questions.map((q) => q.name)).toEqual(["hostile.test"])
    }))

  it.scopedLive("during connect (a black-holed address: the SYN is never answered)", () =>
    Effect.gen(function*() {
      const hole = yield* blackHole("127.0.0.1")
      yield* interruptAt(
        { ip: "127.0.0.1", port: hole.port },
        // the socket exists and its connect is pending
        Effect.zipRight(
          poll(() => Effect.runSync(Connector.openConnections) === 1, Duration.seconds(5), "no connect started"),
          Effect.sleep(Duration.millis(100))
        ),
        null
      )
    }))

  it.scopedLive("while waiting for the greeting", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer((c) => c.emit("accepted"))
      yield* interruptAt({ ip: peer.host, port: peer.port }, peer.reached("accepted"), peer)
    }))

  it.scopedLive("while waiting for the EHLO reply (::1)", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        c.write(`220 mx.hostile.test ESMTP${CRLF}`)
        if ((await c.line()) !== null) c.emit("ehlo")
      }, { host: "::1" })
      yield* interruptAt({ ip: peer.host, port: peer.port }, peer.reached("ehlo"), peer)
    }))

  it.scopedLive("during the TLS handshake (the ClientHello never answered)", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if ((await hello(c, "STARTTLS")) && (await answer(c, "220 go ahead")) && (await c.bytes(1))) c.emit("hello")
      })
      yield* interruptAt({ ip: peer.host, port: peer.port }, peer.reached("hello"), peer)
    }))

  it.scopedLive("mid-DATA, the body stuck behind a peer that stopped reading", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if (!(await hello(c)) || !(await answer(c, "250 ok")) || !(await answer(c, "250 ok"))) return
        if (!(await answer(c, "354 go")) || !(await c.bytes(256 * 1024))) return
        c.socket.pause()
        c.emit("stuck")
        // reads again later, or it would never see the client hang up (the peer's own socket, not the client's)
        await c.sleep(300)
        c.socket.resume()
      })
      const big = `Subject: big\r\n\r\n${`${"z".repeat(1022)}\r\n`.repeat(16 * 1024)}`
      yield* interruptAt({ ip: peer.host, port: peer.port, request: request(big) }, peer.reached("stuck"), peer)
    }))
})

describe("many deliveries to misbehaving peers leave nothing behind", () => {
  it.scopedLive("64 domains at once, each peer connection misbehaving its own way", () =>
    Effect.gen(function*() {
      let n = 0
      const behaviours: ReadonlyArray<(c: PeerConnection) => Promise<void> | void> = [
        (c) => c.reset(),
        (c) => void c.socket.end("garbage\r\n"),
        async (c) => {
          c.write(`220 mx${CRLF}`)
          if ((await c.line()) !== null) c.socket.end()
        },
        async (c) => {
          c.write(`220 mx${CRLF}`)
          if ((await c.line()) !== null) c.write(`250-x${CRLF}`.repeat(1_000))
          await c.sleep(5_000)
        },
        async (c) => {
          if ((await hello(c, "PIPELINING")) && (await c.line()) !== null) {
            c.write(`250 ok${CRLF}250 ok${CRLF}354 go${CRLF}250 queued${CRLF}`)
          }
          await c.sleep(5_000)
        },
        () => {}, // silent until the greeting timeout
        async (c) => {
          if (!(await hello(c)) || !(await answer(c, "250 ok")) || !(await answer(c, "250 ok"))) return
          if ((await answer(c, "354 go")) && (await c.until(`${CRLF}.${CRLF}`))) c.reset()
        },
        async (c) => {
          if (!(await hello(c)) || !(await answer(c, "250 ok")) || !(await answer(c, "250 ok"))) return
          if (!(await answer(c, "354 go")) || !(await c.until(`${CRLF}.${CRLF}`))) return
          c.write(`250 2.0.0 queued${CRLF}`)
          await answer(c, "221 bye")
          c.socket.end()
        }
      ]
      const peer = yield* hostilePeer((c) => behaviours[n++ % behaviours.length]!(c))
      const domains = Array.from({ length: 64 }, (_, i) => `d${i}.test`)
      const zones: Dns.Zones = Object.fromEntries(domains.map((d) => [d, { a: [peer.host] }]))
      const baseline = activeResources()
      const started = Date.now()
      const report = yield* delivery({
        ip: peer.host,
        port: peer.port,
        // long enough for the honest peers on a loaded machine; only the silent one waits it out
        config: CONFIG("ipv4_only", "2s"),
        dns: Dns.layerTest(zones),
        request: { ...request(), recipients: domains.map((d) => `rcpt@${d}`) }
      })
      expect(Date.now() - started).toBeLessThan(10_000)
      expect(yield* Connector.openConnections).toBe(0)
      yield* peer.settled
      expect(yield* leakedSince(baseline)).toEqual([])
      // every eighth connection was the honest one
      const statuses = report.recipients.map((r) => r.status)
      expect(statuses.filter((s) => s === "delivered")).toHaveLength(8)
      expect(statuses.filter((s) => s === "deferred")).toHaveLength(56)
      expect(peer.connections).toHaveLength(64)
    }))
})

describe("closing order", () => {
  it.scopedLive("after its 221 the server closes first: the client waits for that close before it lets go", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if (!(await hello(c)) || !(await answer(c, "250 ok")) || !(await answer(c, "250 ok"))) return
        if (!(await answer(c, "354 go")) || !(await c.until(`${CRLF}.${CRLF}`))) return
        c.write(`250 queued${CRLF}`)
        if (!(await answer(c, "221 bye"))) return
        // A server a little slow to close: a client that closed first would have sent its FIN by now, and that
        // side keeps the TIME_WAIT (on a bound source address, a minute per connection).
        await c.sleep(50)
        c.emit(c.socket.readableEnded ? "client closed first" : "client waited")
        c.socket.end()
      })
      const report = yield* delivery({ ip: peer.host, port: peer.port })
      expect(report.recipients.map((r) => r.status)).toEqual(["delivered"])
      yield* peer.settled
      expect(peer.connections.map((c) => c.events)).toEqual([["client waited"]])
      expect(yield* Connector.openConnections).toBe(0)
    }))
})

describe("the leak checks themselves", () => {
  it.scopedLive("see a socket left open on either side, and nothing once it is closed", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(() => {})
      const baseline = activeResources()
      const socket = net.connect(peer.port, peer.host)
      yield* poll(() => peer.open() === 1 && !socket.connecting, Duration.seconds(5), "no connection")
      expect(grownSince(baseline)).toEqual([["TCPSocketWrap", 2]])
      socket.destroy()
      yield* peer.settled
      expect(yield* leakedSince(baseline)).toEqual([])
    }))
})
