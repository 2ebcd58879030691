import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Fiber, Metric, MetricPolling, Scope } from "effect"
import { spawn } from "node:child_process"
import * as net from "node:net"
import * as tls from "node:tls"
import * as Connector from "../src/Connector.js"
import * as SmtpReply from "../src/SmtpReply.js"
import { type Certificates, makeCertificates } from "./fixtures/certs.js"

// Real sockets on loopback only, on real time.

/** A connection owned by the scope, no connect deadline unless given. */
const connect = (options: Omit<Connector.ConnectOptions, "deadline"> & { readonly deadline?: number }) =>
  Connector.scoped({ deadline: Infinity, ...options }).pipe(Effect.provide(Connector.layer))

/** Reads `replies` replies, without a deadline. */
const read = (connection: Connector.Connection, replies = 1, write?: string | Uint8Array) =>
  Effect.map(connection.exchange({ write, replies, deadline: Infinity }), (got) => got.map(SmtpReply.format))

interface RawServer {
  readonly port: number
  /** Remote addresses of the accepted connections. */
  readonly remotes: Array<string>
}

/** A node:net server on a loopback address, with a handler per connection; closed (with its sockets) by the scope. */
const rawServer = (handler: (socket: net.Socket) => void, host = "127.0.0.1") =>
  Effect.acquireRelease(
    Effect.async<RawServer & { readonly server: net.Server; readonly sockets: Set<net.Socket> }>((resume) => {
      const remotes: Array<string> = []
      const sockets = new Set<net.Socket>()
      const server = net.createServer((socket) => {
        sockets.add(socket)
        socket.on("close", () => sockets.delete(socket))
        socket.on("error", () => {})
        remotes.push(socket.remoteAddress ?? "")
        handler(socket)
      })
      server.listen(0, host, () => resume(Effect.succeed({ port: (server.address() as net.AddressInfo).port, remotes, server, sockets })))
    }),
    ({ server, sockets }) =>
      Effect.async<void>((resume) => {
        for (const s of sockets) s.destroy()
        server.close(() => resume(Effect.void))
      })
  )

/** Lines the server received on a socket, delivered one by one to `onLine`. */
const onLines = (socket: net.Socket | tls.TLSSocket, onLine: (line: string) => void) => {
  let pending = ""
  const listener = (chunk: Buffer) => {
    pending += chunk.toString("utf8")
    for (let i = pending.indexOf("\r\n"); i >= 0; i = pending.indexOf("\r\n")) {
      const line = pending.slice(0, i)
      pending = pending.slice(i + 2)
      onLine(line)
    }
  }
  socket.on("data", listener)
  return () => socket.off("data", listener)
}

const freePort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as net.AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

const openCount = Connector.openConnections

let certs: Certificates
beforeAll(() => {
  certs = makeCertificates({ hostnames: ["mx.test", "127.0.0.1"] })
})

describe("Connector.layer (node:net / node:tls)", () => {
  it.scopedLive("reads replies on demand, keeping the bytes past the last one buffered", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((socket) => {
        socket.write("220 a\r\n250-b\r\n250 c")
        onLines(socket, (line) => {
          if (line === "X") socket.write("\r\n")
        })
      })
      const replies = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* connect({ ip: "127.0.0.1", port: server.port })
        expect(yield* openCount).toBe(1)
        expect([connection.remoteAddress, connection.remotePort, connection.localAddress, connection.isTls]).toEqual([
          "127.0.0.1",
          server.port,
          "127.0.0.1",
          false
        ])
        const first = yield* read(connection)
        // "250 c" has no line ending yet: the exchange writes X and waits until the server sends it
        yield* Effect.sleep(Duration.millis(20))
        expect(connection.buffered).toBe("250-b\r\n250 c".length)
        return [...first, ...yield* read(connection, 1, "X\r\n")]
      }))
      expect(replies).toEqual(["220 a", "250-b\n250 c"])
      expect(yield* openCount).toBe(0)
    }))

  it.scopedLive("a line over 4096 bytes is a protocol error, end of input is closed", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((socket) => {
        socket.write(`250 ${"x".repeat(4092)}\r\n`)
        socket.write(`250 ${"y".repeat(4093)}\r\n`)
      })
      const exits = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* connect({ ip: "127.0.0.1", port: server.port })
        const ok = yield* read(connection)
        const tooLong = yield* Effect.flip(read(connection))
        return [ok[0]!.length, tooLong.kind, tooLong.message]
      }))
      expect(exits).toEqual([4096, "protocol", "line longer than 4096 bytes"])

      const closing = yield* rawServer((socket) => socket.end("221 bye\r\npartial"))
      const closed = yield* Effect.scoped(Effect.gen(function*() {
        const connection = yield* connect({ ip: "127.0.0.1", port: closing.port })
        const reply = yield* read(connection)
        const error = yield* Effect.flip(read(connection))
        return [...reply, error.kind]
      }))
      expect(closed).toEqual(["221 bye", "closed"])
      expect(yield* openCount).toBe(0)
    }))

  it.scopedLive("a server that floods without a line ending fails the read after 4 KiB", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((socket) => {
        const chunk = Buffer.alloc(64 * 1024, 0x41)
        for (let i = 0; i < 64; i++) socket.write(chunk)
      })
      const error = yield* Effect.scoped(
        Effect.flatMap(connect({ ip: "127.0.0.1", port: server.port }), (c) => Effect.flip(read(c)))
      )
      expect([error.kind, error.message]).toEqual(["protocol", "line longer than 4096 bytes"])
      expect(yield* openCount).toBe(0)
    }))

  it.scopedLive("connection refused", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      const error = yield* Effect.flip(Effect.scoped(connect({ ip: "127.0.0.1", port })))
      expect(error.kind).toBe("refused")
      expect(error.message).toBe(`connect ECONNREFUSED 127.0.0.1:${port}`)
      expect(yield* openCount).toBe(0)
    }))

  it.scopedLive("binds the source address: the server sees 127.0.0.2; an address not on this host is a local-address error", () =>
    Effect.gen(function*() {
      const server = yield* rawServer(() => {})
      const local = yield* Effect.scoped(
        Effect.map(connect({ ip: "127.0.0.1", port: server.port, localAddress: "127.0.0.2" }), (c) => c.localAddress)
      )
      expect(local).toBe("127.0.0.2")
      expect(server.remotes).toEqual(["127.0.0.2"])
      // TEST-NET-1 is on no interface: bind fails locally, no packet leaves the host
      const error = yield* Effect.flip(
        Effect.scoped(connect({ ip: "127.0.0.1", port: server.port, localAddress: "192.0.2.1" }))
      )
      expect([error.kind, error.message]).toEqual(["local-address", "192.0.2.1 is not an address of this machine"])
      const family = yield* Effect.flip(
        Effect.scoped(connect({ ip: "127.0.0.1", port: server.port, localAddress: "::1" }))
      )
      expect(family.kind).toBe("bind")
      expect(yield* openCount).toBe(0)
    }))

  it.scopedLive("refuses a host name (the connector takes addresses, never resolves)", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(connect({ ip: "localhost", port: 25 })))
      expect([error.kind, error.message]).toEqual(["unreachable", "not an IP address: localhost"])
      expect(yield* openCount).toBe(0)
    }))

  describe("a connect that never completes", () => {
    // A listener with a full accept queue: the kernel drops further SYNs, so those connects hang.
    let python: ReturnType<typeof spawn> | undefined
    let port = 0
    const fill: Array<net.Socket> = []
    beforeAll(async () => {
      python = spawn("/usr/bin/python3", [
        "-c",
        "import socket,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(120)"
      ])
      port = await new Promise<number>((resolve) => python!.stdout!.once("data", (d) => resolve(Number(String(d).trim()))))
      const first = net.connect({ host: "127.0.0.1", port })
      fill.push(first)
      await new Promise<void>((resolve) => first.once("connect", () => resolve()))
    })
    afterAll(() => {
      for (const s of fill) s.destroy()
      python?.kill()
    })

    it.scopedLive("is interrupted by a timeout and its socket freed before the interruption returns", () =>
      Effect.gen(function*() {
        const connector = yield* Effect.provide(Connector.Connector, Connector.layer)
        const exit = yield* connector.connect({ ip: "127.0.0.1", port, deadline: Infinity }).pipe(
          Effect.timeout(Duration.millis(200)),
          Effect.exit
        )
        expect(Exit.isFailure(exit)).toBe(true)
        expect(yield* openCount).toBe(0)
      }))

    it.scopedLive("fails with kind timeout at its deadline, its socket freed", () =>
      Effect.gen(function*() {
        const connector = yield* Effect.provide(Connector.Connector, Connector.layer)
        const start = Date.now()
        const deadline = (yield* Clock.currentTimeMillis) + 200
        const error = yield* Effect.flip(connector.connect({ ip: "127.0.0.1", port, deadline }))
        expect([error.kind, error.message]).toEqual(["timeout", "the deadline passed"])
        expect(Date.now() - start).toBeGreaterThanOrEqual(190)
        expect(yield* openCount).toBe(0)
      }))
  })

  it.effect("interrupting a connect while a third-party transport is still opening closes what it put in the Scope", () =>
    Effect.gen(function*() {
      let released = false
      const connector = Connector.fromIo((_options, _events, scope) =>
        Effect.zipRight(
          Scope.addFinalizer(scope, Effect.sync(() => released = true)),
          Effect.never
        ))
      const fiber = yield* Effect.fork(connector.connect({ ip: "192.0.2.1", port: 25, deadline: Infinity }))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(fiber)
      expect(released).toBe(true)
    }))

  it.scopedLive("the open-connection count, as a polled gauge", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((socket) => socket.write("220 ready\r\n"))
      const connector = yield* Effect.provide(Connector.Connector, Connector.layer)
      const gauge = Connector.openConnectionsMetric
      const connection = yield* connector.connect({ ip: "127.0.0.1", port: server.port, deadline: Infinity })
      yield* MetricPolling.pollAndUpdate(gauge)
      expect((yield* Metric.value(gauge.metric)).value).toBe(1)
      yield* connection.close
      yield* MetricPolling.pollAndUpdate(gauge)
      expect((yield* Metric.value(gauge.metric)).value).toBe(0)
    }))

  it.scopedLive("a connection opened in an uninterruptible region (acquireUseRelease) still closes at once", () =>
    Effect.gen(function*() {
      const server = yield* rawServer((socket) => socket.write("220 ready\r\n"))
      const connector = yield* Effect.provide(Connector.Connector, Connector.layer)
      const far = (yield* Clock.currentTimeMillis) + 60_000
      const start = Date.now()
      const greeting = yield* Effect.acquireUseRelease(
        // The connect arms the connection's timer for a minute from now, from inside acquire's uninterruptible
        // region; close must not wait for that timer.
        connector.connect({ ip: "127.0.0.1", port: server.port, deadline: far }),
        (connection) => read(connection),
        (connection) => connection.close
      )
      expect(greeting).toEqual(["220 ready"])
      expect(Date.now() - start).toBeLessThan(2_000)
      expect(yield* openCount).toBe(0)
    }).pipe(Effect.timeout(Duration.seconds(10))))

  describe("STARTTLS", () => {
    /** A server that answers STARTTLS with `reply`, then (unless told not to) upgrades and answers PING with PONG. */
    const starttlsServer = (reply: string, upgrade = true) =>
      rawServer((socket) => {
        socket.write("220 ready\r\n")
        const off = onLines(socket, (line) => {
          if (line !== "STARTTLS") return
          off()
          socket.write(reply)
          if (!upgrade) return
          const secure = new tls.TLSSocket(socket, { isServer: true, key: certs.keyPem, cert: certs.certPem })
          secure.on("error", () => {})
          onLines(secure, (l) => {
            if (l === "PING") secure.write(`250 PONG ${secure.servername || "-"}\r\n`)
          })
        })
      })

    const upgrade = (port: number, options: Connector.StartTlsOptions) =>
      Effect.scoped(Effect.gen(function*() {
        const connection = yield* connect({ ip: "127.0.0.1", port })
        expect(yield* read(connection)).toEqual(["220 ready"])
        expect(yield* read(connection, 1, "STARTTLS\r\n")).toEqual(["220 go"])
        const info = yield* connection.startTls(options, Infinity)
        expect(connection.isTls).toBe(true)
        expect(connection.tls).toEqual(info)
        expect(info.version).toMatch(/^TLSv1\.[23]$/)
        expect(info.verified).toBe(options.rejectUnauthorized || info.reason === null)
        return (yield* read(connection, 1, "PING\r\n"))[0]
      }))

    it.scopedLive("upgrades in place, verifying the certificate against the given CA and sending SNI", () =>
      Effect.gen(function*() {
        const server = yield* starttlsServer("220 go\r\n")
        expect(yield* upgrade(server.port, { servername: "mx.test", ca: [certs.caPem], rejectUnauthorized: true }))
          .toBe("250 PONG mx.test")
        // an IP as the name: checked against the IP SAN, and no SNI (RFC 6066 §3)
        expect(yield* upgrade(server.port, { servername: "127.0.0.1", ca: [certs.caPem], rejectUnauthorized: true }))
          .toBe("250 PONG -")
        expect(yield* openCount).toBe(0)
      }))

    it.scopedLive("an untrusted CA or a wrong name fails with kind tls; allow-invalid-certs accepts it", () =>
      Effect.gen(function*() {
        const server = yield* starttlsServer("220 go\r\n")
        const untrusted = yield* Effect.flip(
          upgrade(server.port, { servername: "mx.test", ca: [certs.wrongCaPem], rejectUnauthorized: true })
        )
        expect(untrusted.kind).toBe("tls")
        expect(untrusted.message).toMatch(/^TLS handshake failed: /)
        const wrongName = yield* Effect.flip(
          upgrade(server.port, { servername: "other.test", ca: [certs.caPem], rejectUnauthorized: true })
        )
        expect(wrongName.kind).toBe("tls")
        expect(wrongName.message).toMatch(/other\.test/)
        expect(yield* upgrade(server.port, { servername: "mx.test", ca: [certs.wrongCaPem], rejectUnauthorized: false }))
          .toBe("250 PONG mx.test")
        expect(yield* openCount).toBe(0)
      }))

    it.scopedLive("refuses to upgrade when bytes follow the 220 (CVE-2011-0411)", () =>
      Effect.gen(function*() {
        const server = yield* starttlsServer("220 go\r\n250 injected\r\n", false)
        const error = yield* Effect.flip(
          upgrade(server.port, { servername: "mx.test", ca: [certs.caPem], rejectUnauthorized: true })
        )
        expect([error.kind, error.message]).toEqual([
          "protocol",
          "the server sent 14 bytes after its reply to STARTTLS"
        ])
        expect(yield* openCount).toBe(0)
      }))
  })

  it.scopedLive("a write the socket takes returns at once; one past its buffer waits for a peer that stopped reading", () =>
    Effect.gen(function*() {
      let peer: net.Socket | null = null
      const server = yield* rawServer((socket) => {
        peer = socket
        socket.pause()
      })
      const connection = yield* connect({ ip: "127.0.0.1", port: server.port })
      const write = (data: string) => connection.exchange({ write: data, replies: 0, deadline: Infinity })
      // Small: taken below the high-water mark, nothing to wait for even though the peer reads nothing.
      yield* write("NOOP\r\n")
      // 64 MiB: far past what the socket and the kernel buffer while the peer is paused.
      const big = yield* Effect.fork(write("z".repeat(64 * 1024 * 1024)))
      yield* Effect.sleep(Duration.millis(300))
      expect(big.unsafePoll()).toBeNull()
      peer!.resume()
      expect(Exit.isSuccess(yield* Effect.exit(Fiber.join(big)))).toBe(true)
    }), 20_000)
})
