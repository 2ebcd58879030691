/**
 * TCP connections to SMTP servers, with line reads the session pulls one at a time and an in-place STARTTLS
 * upgrade. The live layer runs on `node:net` / `node:tls`; the test layer runs scripted peers in memory, on Effect's
 * Clock.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as net from "node:net"
import * as tls from "node:tls"
import { LineBuffer } from "./internal/lineBuffer.js"
import * as phaseDeadline from "./internal/phaseDeadline.js"
import * as scopeFinalizer from "./internal/scopeFinalizer.js"
import { Waits } from "./internal/phaseDeadline.js"
import type { Phase } from "./TransportError.js"
import * as TransportError from "./TransportError.js"

/**
 * @since 0.1.0
 */
export interface ConnectOptions {
  readonly ip: string
  readonly port: number
  /** The source address to bind before connecting; the OS picks one when absent. */
  readonly localAddress?: string | undefined
}

/**
 * @since 0.1.0
 */
export interface StartTlsOptions {
  /** The SNI name and the name the certificate must carry (the MX host name). */
  readonly servername: string
  /** Trusted CA certificates (PEM) replacing Node's bundled roots; the roots when absent. */
  readonly ca?: ReadonlyArray<string> | undefined
  /** `false` accepts any certificate (`tls.allow-invalid-certs`). */
  readonly rejectUnauthorized: boolean
}

/**
 * @since 0.1.0
 */
export type SocketErrorKind = "refused" | "unreachable" | "reset" | "timeout" | "bind" | "tls" | "protocol" | "closed"

/**
 * @since 0.1.0
 */
export class SocketError extends Data.TaggedError("SocketError")<{
  readonly kind: SocketErrorKind
  readonly message: string
}> {}

/**
 * One open connection. Reads are pulled: bytes past the line returned stay buffered for the next read.
 *
 * @since 0.1.0
 */
export interface Connection {
  readonly remoteAddress: string
  readonly localAddress: string | null
  /**
   * The next line without its line ending (CRLF, or a bare LF), decoded as UTF-8. A line over
   * {@link MAX_LINE_BYTES} is a `protocol` error, and end of input is `closed`.
   */
  readonly readLine: Effect.Effect<string, SocketError>
  /**
   * Resolves once the socket has taken the data: at once below its high-water mark, after the flush (Node's write
   * callback) above it, which is the back-pressure there is. A later write error ends the input with that error.
   */
  readonly write: (data: string | Uint8Array) => Effect.Effect<void, SocketError>
  /**
   * Upgrades the connection in place. Refused with a `protocol` error when the server sent anything after its reply
   * to STARTTLS (CVE-2011-0411): those bytes would otherwise be read as if they came over TLS.
   */
  readonly startTls: (options: StartTlsOptions) => Effect.Effect<void, SocketError>
  readonly isTls: boolean
  /**
   * Bytes received and not yet read. Non-zero where the dialogue expects the server to be silent (after its 354,
   * before the message is sent) means it answered a command it has not received.
   */
  readonly buffered: number
}

/**
 * @since 0.1.0
 */
export declare namespace Connector {
  /**
   * @since 0.1.0
   */
  export interface Service {
    /** A connection that lives until the scope closes; interrupting the connect aborts it and frees the socket. */
    readonly connect: (options: ConnectOptions) => Effect.Effect<Connection, SocketError, Scope.Scope>
  }
}

/**
 * @since 0.1.0
 */
export class Connector extends Context.Tag("effect-smtp-transport/Connector")<Connector, Connector.Service>() {}

/**
 * The longest line a server may send (RFC 5321 §4.5.3.1.5 allows 512 octets; servers exceed it in practice, and
 * 4 KiB bounds what one line can make the client buffer).
 *
 * @since 0.1.0
 */
export const MAX_LINE_BYTES = 4096

const overflow = (limit: number) =>
  new SocketError({ kind: "protocol", message: `line longer than ${limit} bytes` })

const closedByPeer = () => new SocketError({ kind: "closed", message: "connection closed by the peer" })

// What a wait fails with when its phase's deadline passes; the session reports the phase's own timeout error.
const phaseExpired = () => new SocketError({ kind: "timeout", message: "the phase's deadline passed" })

/**
 * The same failure seen from a phase of the session. Every network failure is temporary.
 *
 * @since 0.1.0
 */
export const toTransportError = (error: SocketError, phase: Phase): TransportError.TransportError =>
  TransportError.make(phase, error.kind === "closed" ? "reset" : error.kind, `${phase}: ${error.message}`)

// ---------------------------------------------------------------------------------------------------------------
// Live layer
// ---------------------------------------------------------------------------------------------------------------

let openSockets = 0

/**
 * How many sockets the live layer has created and not yet seen closed, across every instance of the layer. Zero
 * once every scope that held a connection has closed: the leak check.
 *
 * @since 0.1.0
 */
export const openConnections: Effect.Effect<number> = Effect.sync(() => openSockets)

// Kept high enough that the pause never bites a well-behaved server, and bounded so that a server that floods
// cannot make the client buffer without end while nobody reads.
const HIGH_WATER_MARK = 64 * 1024

const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

const errorMessage = (error: unknown): string => error instanceof Error ? error.message : String(error)

/** Maps a Node socket error to its kind; `bind` comes from the failed bind syscall before the connect. */
const fromNodeError = (error: unknown, during: "connect" | "io"): SocketError => {
  const code = errorCode(error)
  const syscall = typeof error === "object" && error !== null && "syscall" in error ? error.syscall : undefined
  const message = errorMessage(error)
  if (syscall === "bind") return new SocketError({ kind: "bind", message })
  switch (code) {
    case "ECONNREFUSED":
      return new SocketError({ kind: "refused", message })
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "EADDRNOTAVAIL":
    case "EHOSTDOWN":
    case "ENETDOWN":
      return new SocketError({ kind: "unreachable", message })
    case "ETIMEDOUT":
      return new SocketError({ kind: "timeout", message })
    case "ECONNRESET":
    case "EPIPE":
    case "ECONNABORTED":
      return new SocketError({ kind: "reset", message })
    default:
      return new SocketError({ kind: during === "connect" ? "unreachable" : "reset", message })
  }
}

interface Sockets {
  readonly plain: net.Socket
  secure: tls.TLSSocket | null
}

const makeLiveConnection = (sockets: Sockets, options: ConnectOptions, waits: Waits<SocketError>): Connection => {
  const socket = sockets.plain
  const buffer = new LineBuffer<SocketError>(MAX_LINE_BYTES, overflow)
  let current: net.Socket = socket
  let paused = false

  const onData = (chunk: Buffer) => {
    buffer.push(chunk)
    if (buffer.size >= HIGH_WATER_MARK && !paused) {
      paused = true
      current.pause()
    }
  }
  const onEnd = () => buffer.end(closedByPeer())
  const onError = (error: unknown) => buffer.end(fromNodeError(error, "io"))
  const onClose = () => buffer.end(closedByPeer())
  const attach = (s: net.Socket) => {
    s.on("data", onData)
    s.on("end", onEnd)
    s.on("error", onError)
    s.on("close", onClose)
  }
  const detach = (s: net.Socket) => {
    s.off("data", onData)
    s.off("end", onEnd)
    s.off("error", onError)
    s.off("close", onClose)
  }
  attach(socket)

  const resume = () => {
    if (paused) {
      paused = false
      current.resume()
    }
  }

  return {
    remoteAddress: options.ip,
    localAddress: socket.localAddress ?? null,
    readLine: buffer.await((b) => b.takeLine(), resume, waits),
    write: (data) =>
      waits.wait<void, SocketError>((resumeWrite) => {
        if (current.destroyed || !current.writable) {
          resumeWrite(Effect.fail(new SocketError({ kind: "reset", message: "write on a closed connection" })))
          return
        }
        // Below the high-water mark the socket has taken the bytes: go on at once (a later write error ends the
        // line buffer, and the phase's next read fails with it). Above it, wait until they are flushed, so that a
        // peer that stops reading holds the phase, under its timeout.
        // (A resume after the first is ignored.)
        const accepted = current.write(data, (error) => {
          resumeWrite(error ? Effect.fail(fromNodeError(error, "io")) : Effect.void)
        })
        if (accepted) resumeWrite(Effect.void)
      }),
    startTls: (tlsOptions) =>
      waits.wait<void, SocketError>((resumeTls) => {
        if (current !== socket) {
          resumeTls(Effect.fail(new SocketError({ kind: "protocol", message: "TLS is already active" })))
          return
        }
        if (buffer.size > 0 || socket.readableLength > 0) {
          const error = new SocketError({
            kind: "protocol",
            message: `the server sent ${buffer.size + socket.readableLength} bytes after its reply to STARTTLS`
          })
          buffer.abort(error)
          resumeTls(Effect.fail(error))
          return
        }
        if (buffer.isEnded) {
          resumeTls(buffer.await((b) => b.takeLine()).pipe(Effect.asVoid))
          return
        }
        detach(socket)
        // The plain socket must never emit an unhandled 'error' while the TLS socket owns it. It is not paused:
        // a pause only happens with bytes buffered, refused above.
        socket.on("error", () => {})
        const name = tlsOptions.servername
        const secure = tls.connect({
          socket,
          host: name,
          // SNI carries host names only (RFC 6066 §3)
          ...(net.isIP(name) === 0 ? { servername: name } : {}),
          ...(tlsOptions.ca === undefined ? {} : { ca: [...tlsOptions.ca] }),
          rejectUnauthorized: tlsOptions.rejectUnauthorized
        })
        sockets.secure = secure
        const onSecure = () => {
          secure.off("error", onFail)
          current = secure
          attach(secure)
          resumeTls(Effect.void)
        }
        const onFail = (error: unknown) => {
          secure.off("secureConnect", onSecure)
          const failure = new SocketError({ kind: "tls", message: `TLS handshake failed: ${errorMessage(error)}` })
          buffer.abort(failure)
          secure.on("error", () => {})
          secure.destroy()
          resumeTls(Effect.fail(failure))
        }
        secure.once("secureConnect", onSecure)
        secure.once("error", onFail)
        return () => {
          secure.off("secureConnect", onSecure)
          secure.off("error", onFail)
          secure.on("error", () => {})
          buffer.abort(new SocketError({ kind: "tls", message: "TLS handshake interrupted" }))
          secure.destroy()
        }
      }),
    get isTls() {
      return current !== socket
    },
    get buffered() {
      return buffer.size + current.readableLength
    }
  }
}

const liveConnect = (options: ConnectOptions): Effect.Effect<Connection, SocketError, Scope.Scope> =>
  timedLiveConnect(options, Infinity, () => new SocketError({ kind: "timeout", message: "unreachable" }))

/** The live connect, its connect phase timed by the connection's own `Waits` (see internal/phaseDeadline). */
const timedLiveConnect = <E2>(
  options: ConnectOptions,
  millis: number,
  onTimeout: () => E2
): Effect.Effect<Connection, SocketError | E2, Scope.Scope> =>
  Effect.gen(function*() {
    if (net.isIP(options.ip) === 0) {
      return yield* new SocketError({ kind: "unreachable", message: `not an IP address: ${options.ip}` })
    }
    const socket = new net.Socket()
    const sockets: Sockets = { plain: socket, secure: null }
    // Counted until Node's 'close' event, the moment the descriptor is released; `socket.closed` turns true a tick
    // earlier and would let a scope close before the count drops.
    let closed = false
    const onClosed: Array<() => void> = []
    openSockets++
    socket.once("close", () => {
      closed = true
      openSockets--
      for (const f of onClosed) f()
    })
    // The finalizer comes first so that a connect interrupted half-way (timeout, lost race) still frees the socket,
    // and it waits for 'close' so that the socket is really gone when the scope has closed.
    const waits = new Waits(phaseExpired)
    yield* scopeFinalizer.add(() =>
      Effect.async<void>((resume) => {
        waits.close()
        sockets.secure?.destroy()
        if (closed) return resume(Effect.void)
        onClosed.push(() => resume(Effect.void))
        socket.destroy()
      })
    )
    const connecting = waits.wait<void, SocketError>((resume) => {
      const onError = (error: unknown) => resume(Effect.fail(fromNodeError(error, "connect")))
      socket.once("error", onError)
      socket.connect(
        {
          host: options.ip,
          port: options.port,
          ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress })
        },
        () => {
          socket.off("error", onError)
          resume(Effect.void)
        }
      )
      return () => {
        socket.off("error", onError)
        socket.on("error", () => {})
        socket.destroy()
      }
    })
    yield* waits.within(connecting, millis, onTimeout)
    socket.setNoDelay(true)
    // No span of its own: `SmtpSession.connect`'s `smtp.connect` span covers this with the same addresses.
    return phaseDeadline.register(makeLiveConnection(sockets, options, waits), waits)
  })

/**
 * Connections over `node:net`, upgraded with `node:tls`.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<Connector> = Layer.succeed(
  Connector,
  phaseDeadline.registerConnector(Connector.of({ connect: liveConnect }), timedLiveConnect)
)

// ---------------------------------------------------------------------------------------------------------------
// Test layer
// ---------------------------------------------------------------------------------------------------------------

/**
 * One step of a scripted peer. Steps run in order; when the script ends the peer closes the connection.
 *
 * @since 0.1.0
 */
export type Step =
  /** Wait for the client's next line (without CRLF) and check it; a mismatch is recorded and resets the connection. */
  | { readonly _tag: "Expect"; readonly match: string | RegExp }
  /** Wait for a dot-terminated DATA body and record it as sent (still dot-stuffed, terminator included). */
  | { readonly _tag: "ExpectData" }
  /** Wait for `count` raw bytes (a BDAT chunk) and record them. */
  | { readonly _tag: "ExpectBytes"; readonly count: number }
  /** Send bytes to the client. */
  | { readonly _tag: "Send"; readonly data: Uint8Array }
  /** Pause on Effect's Clock. */
  | { readonly _tag: "Delay"; readonly duration: Duration.Duration }
  /** Do nothing more, ever, and keep the connection open. */
  | { readonly _tag: "Stall" }
  /** Close the connection (the client reads end of input). */
  | { readonly _tag: "Close" }
  /** Reset the connection: reads and writes fail with `reset`. */
  | { readonly _tag: "Reset" }
  /** Answer the client's `startTls`: complete the handshake, or fail it. */
  | { readonly _tag: "Handshake"; readonly ok: boolean }

const encoder = new TextEncoder()

/**
 * Constructors for script steps.
 *
 * @since 0.1.0
 */
export const Script = {
  expect: (match: string | RegExp): Step => ({ _tag: "Expect", match }),
  expectData: { _tag: "ExpectData" } as Step,
  expectBytes: (count: number): Step => ({ _tag: "ExpectBytes", count }),
  /** Reply lines, each sent with CRLF, in one segment. */
  reply: (...lines: ReadonlyArray<string>): Step => ({
    _tag: "Send",
    data: encoder.encode(lines.map((l) => `${l}\r\n`).join(""))
  }),
  raw: (data: string | Uint8Array): Step => ({
    _tag: "Send",
    data: typeof data === "string" ? encoder.encode(data) : data
  }),
  delay: (duration: Duration.DurationInput): Step => ({ _tag: "Delay", duration: Duration.decode(duration) }),
  stall: { _tag: "Stall" } as Step,
  close: { _tag: "Close" } as Step,
  reset: { _tag: "Reset" } as Step,
  handshake: { _tag: "Handshake", ok: true } as Step,
  handshakeFails: { _tag: "Handshake", ok: false } as Step
} as const

/**
 * How a scripted peer answers the connect: `accept` runs the script; the others fail the connect with that kind,
 * except `stall`, which never answers. `delay` (Effect's Clock) comes before the outcome.
 *
 * @since 0.1.0
 */
export interface TestPeer {
  readonly connect?: "accept" | "refuse" | "unreachable" | "bind" | "reset" | "stall" | undefined
  readonly delay?: Duration.DurationInput | undefined
  readonly script?: ReadonlyArray<Step> | undefined
}

/**
 * Peers by IP address. An array gives one peer per successive connection to that address, and refuses once it
 * runs out; an address with no peer is unreachable.
 *
 * @since 0.1.0
 */
export type TestPeers = { readonly [ip: string]: TestPeer | ReadonlyArray<TestPeer> }

/**
 * What the test connector saw of one connect attempt.
 *
 * @since 0.1.0
 */
export interface TestConnectionRecord {
  readonly ip: string
  readonly port: number
  readonly localAddress: string | null
  readonly outcome: "accept" | "refuse" | "unreachable" | "bind" | "reset" | "stall"
  /** Everything the client wrote, decoded as UTF-8. */
  readonly written: string
  /** Each write of the client on its own (a pipelined group is one write). */
  readonly writes: ReadonlyArray<string>
  /** The client lines the script consumed with `Expect`, in order. */
  readonly commands: ReadonlyArray<string>
  /** Bodies consumed by `ExpectData` / `ExpectBytes`, as they came over the wire. */
  readonly data: ReadonlyArray<Uint8Array>
  /** Every `startTls` call. */
  readonly startTls: ReadonlyArray<StartTlsOptions>
  /** Script steps that did not match what the client did. */
  readonly mismatches: ReadonlyArray<string>
  /** The scope holding the connection (or the connect attempt) has closed. */
  readonly closed: boolean
}

/**
 * The test connector's log, provided by {@link layerTest} next to the `Connector`.
 *
 * @since 0.1.0
 */
export class ConnectorTest extends Context.Tag("effect-smtp-transport/ConnectorTest")<ConnectorTest, {
  readonly connections: Effect.Effect<ReadonlyArray<TestConnectionRecord>>
}>() {}

type MutableRecord = {
  -readonly [K in keyof TestConnectionRecord]: TestConnectionRecord[K] extends ReadonlyArray<infer A> ? Array<A>
    : TestConnectionRecord[K]
}

const decoder = new TextDecoder()

const testConnection = (
  record: MutableRecord,
  script: ReadonlyArray<Step>,
  scope: Scope.Scope
): Effect.Effect<Connection, never, Scope.Scope> =>
  Effect.gen(function*() {
    // What the peer sent the client, and what the client sent the peer. The peer side has no line limit: it
    // reads DATA bodies, which are the client's to bound.
    const toClient = new LineBuffer<SocketError>(MAX_LINE_BYTES, overflow)
    const toPeer = new LineBuffer<SocketError>(Number.MAX_SAFE_INTEGER, overflow)
    const written: Array<Uint8Array> = []
    let reset = false
    let tls = false
    const tlsRequest = yield* Deferred.make<void>()
    // The script's answer to startTls, waited for through `waits` like every wait of the client.
    let tlsAnswer: boolean | null = null
    let onTlsAnswer: ((ok: boolean) => void) | null = null
    const waits = new Waits(phaseExpired)
    yield* scopeFinalizer.add(() => Effect.sync(() => waits.close()))

    const mismatch = (message: string) =>
      Effect.sync(() => {
        record.mismatches.push(message)
        reset = true
        toClient.abort(new SocketError({ kind: "reset", message: `scripted peer: ${message}` }))
      })

    const readPeerLine = toPeer.await((b) => b.takeLine())
    const run = Effect.gen(function*() {
      for (const step of script) {
        switch (step._tag) {
          case "Expect": {
            const line = yield* readPeerLine
            record.commands.push(line)
            const ok = typeof step.match === "string" ? line === step.match : step.match.test(line)
            if (!ok) return yield* mismatch(`expected ${String(step.match)}, got ${JSON.stringify(line)}`)
            break
          }
          case "ExpectData": {
            const lines: Array<string> = []
            for (;;) {
              const line = yield* readPeerLine
              lines.push(line)
              if (line === ".") break
            }
            record.data.push(encoder.encode(lines.map((l) => `${l}\r\n`).join("")))
            break
          }
          case "ExpectBytes": {
            record.data.push(yield* toPeer.await((b) => b.takeBytes(step.count)))
            break
          }
          case "Send":
            toClient.push(step.data)
            break
          case "Delay":
            yield* Effect.sleep(step.duration)
            break
          case "Stall":
            return yield* Effect.never
          case "Close":
            toClient.end(closedByPeer())
            return
          case "Reset":
            reset = true
            toClient.abort(new SocketError({ kind: "reset", message: "connection reset by the peer" }))
            return
          case "Handshake": {
            yield* Deferred.await(tlsRequest)
            tlsAnswer = step.ok
            onTlsAnswer?.(step.ok)
            if (!step.ok) {
              reset = true
              return
            }
            break
          }
        }
      }
      toClient.end(closedByPeer())
    }).pipe(
      // The client closed or reset: the script just stops.
      Effect.catchAll(() => Effect.void)
    )
    yield* Effect.forkIn(run, scope)

    const connection: Connection = {
      remoteAddress: record.ip,
      localAddress: record.localAddress,
      readLine: toClient.await((b) => b.takeLine(), undefined, waits),
      write: (data) =>
        Effect.suspend(() => {
          if (reset) return Effect.fail(new SocketError({ kind: "reset", message: "connection reset by the peer" }))
          const bytes = typeof data === "string" ? encoder.encode(data) : data
          written.push(bytes)
          record.written = decoder.decode(Buffer.concat(written))
          record.writes.push(decoder.decode(bytes))
          toPeer.push(bytes)
          return Effect.void
        }),
      startTls: (options) =>
        Effect.gen(function*() {
          record.startTls.push(options)
          if (toClient.size > 0) {
            const error = new SocketError({
              kind: "protocol",
              message: `the server sent ${toClient.size} bytes after its reply to STARTTLS`
            })
            toClient.abort(error)
            return yield* error
          }
          if (tls) return yield* new SocketError({ kind: "protocol", message: "TLS is already active" })
          yield* Deferred.succeed(tlsRequest, undefined)
          const ok = yield* waits.wait<boolean, never>((resume) => {
            if (tlsAnswer !== null) return resume(Effect.succeed(tlsAnswer))
            onTlsAnswer = (answer) => resume(Effect.succeed(answer))
            return () => {
              onTlsAnswer = null
            }
          })
          if (!ok) {
            const error = new SocketError({ kind: "tls", message: "TLS handshake failed: scripted failure" })
            toClient.abort(error)
            return yield* error
          }
          tls = true
        }),
      get isTls() {
        return tls
      },
      get buffered() {
        return toClient.size
      }
    }
    return phaseDeadline.register(connection, waits)
  })

/**
 * A connector whose peers are scripts, for tests on virtual time. Provides {@link ConnectorTest} as well, to read
 * what each connection saw.
 *
 * @since 0.1.0
 */
export const layerTest = (peers: TestPeers): Layer.Layer<Connector | ConnectorTest> =>
  Layer.effectContext(Effect.gen(function*() {
    // Appended to in place: copying the log on every connect made a long-lived layer quadratic.
    const records: Array<MutableRecord> = []
    const counts = new Map<string, number>()

    const connect = (options: ConnectOptions): Effect.Effect<Connection, SocketError, Scope.Scope> =>
      Effect.gen(function*() {
        const scope = yield* Effect.scope
        const n = counts.get(options.ip) ?? 0
        counts.set(options.ip, n + 1)
        const entry = peers[options.ip]
        const peer: TestPeer | undefined = entry === undefined
          ? { connect: "unreachable" }
          : isPeerList(entry)
          ? entry[n] ?? { connect: "refuse" }
          : entry
        const outcome = peer.connect ?? "accept"
        const record: MutableRecord = {
          ip: options.ip,
          port: options.port,
          localAddress: options.localAddress ?? null,
          outcome,
          written: "",
          writes: [],
          commands: [],
          data: [],
          startTls: [],
          mismatches: [],
          closed: false
        }
        records.push(record)
        yield* scopeFinalizer.add(() => Effect.sync(() => record.closed = true))
        if (peer.delay !== undefined) yield* Effect.sleep(peer.delay)
        switch (outcome) {
          case "accept":
            return yield* testConnection(record, peer.script ?? [], scope)
          case "stall":
            return yield* Effect.never
          case "refuse":
            return yield* new SocketError({ kind: "refused", message: `connect ECONNREFUSED ${options.ip}` })
          case "unreachable":
            return yield* new SocketError({ kind: "unreachable", message: `connect EHOSTUNREACH ${options.ip}` })
          case "bind":
            return yield* new SocketError({
              kind: "bind",
              message: `bind EADDRNOTAVAIL ${options.localAddress ?? "0.0.0.0"}`
            })
          case "reset":
            return yield* new SocketError({ kind: "reset", message: `connect ECONNRESET ${options.ip}` })
        }
      })

    const snapshot = Effect.sync(() =>
      records.map((r): TestConnectionRecord => ({
        ...r,
        writes: [...r.writes],
        commands: [...r.commands],
        data: [...r.data],
        startTls: [...r.startTls],
        mismatches: [...r.mismatches]
      })))

    return Context.make(Connector, Connector.of({ connect })).pipe(
      Context.add(ConnectorTest, { connections: snapshot })
    )
  }))

const isPeerList = (entry: TestPeer | ReadonlyArray<TestPeer>): entry is ReadonlyArray<TestPeer> =>
  Array.isArray(entry)
