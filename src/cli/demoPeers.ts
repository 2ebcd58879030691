/**
 * The demo's peers, all on loopback and all inside the process: a DNS server (dns2), receiving SMTP servers
 * (smtp-server) and an IPv6 address that does not answer.
 *
 * @since 0.1.0
 */
import dns2 from "dns2"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Scope from "effect/Scope"
import * as net from "node:net"
import { Worker } from "node:worker_threads"
import { SMTPServer, type SMTPServerAddress, type SMTPServerError } from "smtp-server"

// -----------------------------------------------------------------------------
// DNS
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 */
export interface ZoneRecords {
  readonly mx?: ReadonlyArray<{ readonly exchange: string; readonly priority: number }>
  readonly a?: ReadonlyArray<string>
  readonly aaaa?: ReadonlyArray<string>
}

const { Packet } = dns2
const NXDOMAIN = 3 // RFC 1035 §4.1.1; dns2's typings lack the names

/**
 * An authoritative UDP server on 127.0.0.1 (a free port) for the given names; any other name is NXDOMAIN, a type a
 * name lacks is answered empty (NODATA).
 *
 * @since 0.1.0
 */
export const dnsServer = (
  zones: { readonly [name: string]: ZoneRecords }
): Effect.Effect<{ readonly server: string }, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        let closed = false
        const server = dns2.createServer({
          udp: true,
          handle: (request, send) => {
            const question = request.questions[0]
            if (closed || question === undefined) return
            const response = Packet.createResponseFromRequest(request)
            response.header.aa = 1
            const zone = zones[question.name.toLowerCase().replace(/\.$/, "")]
            const base = { name: question.name, class: Packet.CLASS.IN, ttl: 60 }
            // dns2 encodes plain records; its typings want class instances.
            const push = (record: object) => response.answers.push(record as unknown as dns2.Packet.Resource)
            if (zone === undefined) response.header.rcode = NXDOMAIN
            else if (question.type === Packet.TYPE.MX) {
              for (const mx of zone.mx ?? []) push({ ...base, type: Packet.TYPE.MX, ...mx })
            } else if (question.type === Packet.TYPE.A) {
              for (const address of zone.a ?? []) push({ ...base, type: Packet.TYPE.A, address })
            } else if (question.type === Packet.TYPE.AAAA) {
              for (const address of zone.aaaa ?? []) push({ ...base, type: Packet.TYPE.AAAA, address })
            }
            try {
              // dns2 crashes the process when a socket sends after it closed; never let a late send escape.
              send(response as unknown as Parameters<typeof send>[0]).catch(() => undefined)
            } catch {
              // closed between the check and the send
            }
          }
        })
        server.on("error", () => undefined)
        const addresses = await server.listen({ udp: { port: 0, address: "127.0.0.1" } } as never)
        const port = (addresses as unknown as { udp: net.AddressInfo }).udp.port
        return { server: `127.0.0.1:${port}`, close: () => ((closed = true), server.close()) }
      },
      catch: (error) => new Error(`DNS server: ${String(error)}`)
    }),
    ({ close }) => Effect.promise(() => close())
  )

// -----------------------------------------------------------------------------
// SMTP
// -----------------------------------------------------------------------------

/**
 * @since 0.1.0
 */
export interface SmtpPeerOptions {
  readonly host: string
  readonly port: number
  /** The name in the greeting. */
  readonly name: string
  /** Held back before the 220 greeting. */
  readonly greetingDelay?: Duration.DurationInput
  /** Recipients refused with 451 until `greylist` has passed since their first attempt. */
  readonly greylist?: { readonly recipients: ReadonlyArray<string>; readonly for: Duration.DurationInput }
}

/**
 * What a peer received: the transactions it accepted.
 *
 * @since 0.1.0
 */
export interface SmtpPeer {
  readonly port: number
  readonly delivered: Array<{ readonly from: string; readonly to: ReadonlyArray<string>; readonly client: string }>
}

const reply = (code: number, message: string): SMTPServerError =>
  Object.assign(new Error(message), { responseCode: code })

/**
 * An smtp-server on `host:port` (port 0: a free one) for the life of the scope. STARTTLS is off: it would need a
 * certificate for a made-up name, which is beside the point of the demo.
 *
 * @since 0.1.0
 */
export const smtpPeer = (options: SmtpPeerOptions): Effect.Effect<SmtpPeer, Error, Scope.Scope> =>
  Effect.gen(function*() {
    // Greeting delays and greylisting run on Effect's Clock, in fibers that end with the scope.
    const run = yield* FiberSet.makeRuntime<never, void, never>()
    const firstSeen = new Map<string, number>()
    const delivered: SmtpPeer["delivered"] = []
    const greylisted = new Set(options.greylist?.recipients.map((r) => r.toLowerCase()) ?? [])
    const greylistMs = Duration.toMillis(Duration.decode(options.greylist?.for ?? 0))
    const delay = options.greetingDelay === undefined ? null : Duration.decode(options.greetingDelay)

    const server = new SMTPServer({
      name: options.name,
      banner: "effect-smtp-transport demo",
      logger: false,
      disableReverseLookup: true,
      authOptional: true,
      disabledCommands: ["AUTH", "STARTTLS"],
      closeTimeout: 100,
      socketTimeout: 10_000,
      onConnect(_session, callback) {
        if (delay === null) return callback()
        run(Effect.sleep(delay).pipe(Effect.andThen(Effect.sync(() => callback()))))
      },
      onRcptTo(address: SMTPServerAddress, session, callback) {
        const rcpt = address.address.toLowerCase()
        if (!greylisted.has(rcpt)) return callback()
        const from = session.envelope.mailFrom === false ? "" : session.envelope.mailFrom.address
        const key = `${from} ${rcpt}`
        const now = Effect.runSync(Clock.currentTimeMillis)
        const first = firstSeen.get(key)
        if (first === undefined) firstSeen.set(key, now)
        if (first !== undefined && now - first >= greylistMs) return callback()
        callback(reply(451, `4.7.1 Greylisted: please try again in ${Duration.format(Duration.millis(greylistMs))}`))
      },
      onData(stream, session, callback) {
        stream.on("data", () => undefined)
        stream.on("end", () => {
          const envelope = session.envelope
          delivered.push({
            from: envelope.mailFrom === false ? "" : envelope.mailFrom.address,
            to: envelope.rcptTo.map((r) => r.address),
            client: session.remoteAddress
          })
          callback(null, "Message queued")
        })
      }
    })
    server.on("error", () => undefined)
    const port = yield* Effect.acquireRelease(
      Effect.async<number, Error>((resume) => {
        const onError = (error: Error) => resume(Effect.fail(error))
        server.server.once("error", onError)
        server.listen(options.port, options.host, () => {
          server.server.off("error", onError)
          const address = server.server.address()
          resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0))
        })
      }),
      () => Effect.async<void>((resume) => server.close(() => resume(Effect.void)))
    )
    return { port, delivered }
  })

// -----------------------------------------------------------------------------
// The address that does not answer
// -----------------------------------------------------------------------------

/**
 * How the "silent" address behaves: `silent` when SYNs to it are dropped (what a host behind a firewall that drops
 * does), `refused` / `unreachable` when that could not be arranged and the demo falls back to an address that fails
 * at once.
 *
 * @since 0.1.0
 */
export type Silence = "silent" | "refused" | "unreachable"

// A listener in a worker thread that stops its event loop right after `listen`, so nothing ever accepts: the
// kernel completes handshakes into the accept queue until it is full (backlog 1 holds two on Linux), then drops
// every further SYN. A client sees no answer at all and retransmits its SYN until its own timeout.
const workerSource = `
const { parentPort, workerData } = require("node:worker_threads")
const net = require("node:net")
const server = net.createServer()
server.once("error", (error) => parentPort.postMessage({ error: String(error.code || error.message) }))
server.listen({ host: workerData.host, port: workerData.port, backlog: 1 }, () => {
  parentPort.postMessage({ port: server.address().port })
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
})
`

const startWorker = (host: string, port: number) =>
  Effect.acquireRelease(
    Effect.async<{ readonly worker: Worker; readonly error: string | null }>((resume) => {
      const worker = new Worker(workerSource, { eval: true, workerData: { host, port } })
      worker.once("message", (message: { port?: number; error?: string }) =>
        resume(Effect.succeed({ worker, error: message.error ?? null })))
      worker.once("error", (error) => resume(Effect.succeed({ worker, error: error.message })))
    }),
    ({ worker }) => Effect.promise(() => worker.terminate())
  )

/** Connects and keeps the socket for the scope: `connected`, `failed` (refused…), or `silent` within `wait`. */
const filler = (host: string, port: number, wait: Duration.DurationInput) =>
  Effect.gen(function*() {
    const socket = yield* Effect.acquireRelease(
      Effect.sync(() => net.connect({ host, port })),
      (s) => Effect.sync(() => s.destroy())
    )
    const outcome = yield* Deferred.make<"connected" | "failed">()
    socket.once("connect", () => Deferred.unsafeDone(outcome, Effect.succeed("connected")))
    socket.on("error", () => Deferred.unsafeDone(outcome, Effect.succeed("failed")))
    return yield* Deferred.await(outcome).pipe(
      Effect.timeoutTo({ duration: wait, onTimeout: () => "silent" as const, onSuccess: (o) => o })
    )
  })

/**
 * Makes `[host]:port` not answer for the life of the scope, and says whether that worked. Fails when the port is
 * taken on `host` (another program would answer there).
 *
 * @since 0.1.0
 */
export const silentAddress = (host: string, port: number): Effect.Effect<Silence, Error, Scope.Scope> =>
  Effect.gen(function*() {
    // Its own scope, so that a failed attempt leaves nothing listening: the address then refuses at once.
    const attempt = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const outcome = yield* Effect.gen(function*() {
      const { error } = yield* startWorker(host, port)
      if (error === "EADDRINUSE") return yield* Effect.fail(new Error(`[${host}]:${port}: EADDRINUSE`))
      if (error !== null) return error === "EADDRNOTAVAIL" || error === "EAFNOSUPPORT" ? "unreachable" : "refused"
      // Fill the accept queue; the first connection that gets no answer proves the address is silent. Bounded: a
      // system that never drops (another kernel) falls back to a refused address.
      for (let i = 0; i < 8; i++) {
        const result = yield* filler(host, port, "300 millis")
        if (result === "silent") return "silent"
        if (result === "failed") break
      }
      return "refused"
    }).pipe(Scope.extend(attempt), Effect.tapError(() => Scope.close(attempt, Exit.void)))
    if (outcome !== "silent") yield* Scope.close(attempt, Exit.void)
    return outcome satisfies Silence
  })
