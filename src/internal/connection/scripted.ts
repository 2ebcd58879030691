/**
 * The scripted `Io` behind `ConnectorTest`: each peer is a script run in a fiber of the connection's Scope, on
 * Effect's Clock. Everything above the `Io` (framing, limits, deadlines) is the live connector's code.
 *
 * @internal
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { ConnectOptions, Io, IoEvents, StartTlsOptions, TlsInfo } from "../../Connector.js"
import type { Step, TestConnectionRecord, TestPeer } from "../../ConnectorTest.js"
import { LineBuffer } from "../lineBuffer.js"
import { notLocal, SocketError } from "./socketError.js"

/** @internal */
export type MutableRecord = {
  -readonly [K in keyof TestConnectionRecord]: TestConnectionRecord[K] extends ReadonlyArray<infer A> ? Array<A>
    : TestConnectionRecord[K]
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const SCRIPTED_TLS: TlsInfo = {
  version: "TLSv1.3",
  cipher: "TLS_AES_256_GCM_SHA384",
  verified: true,
  reason: null,
  // a script has no certificate to present: DANE never verifies against a scripted peer
  peerCertificates: [],
  dane: null
}

/** The peer's side of a handshake: it completes, fails, or completes with a certificate that does not verify. */
type TlsAnswer = { readonly ok: boolean; readonly unverified?: string | undefined }

/** A certificate that does not verify fails the handshake when the client rejects unauthorized ones, as Node does. */
const handshakeResult = (tls: TlsAnswer, options: StartTlsOptions | null): TlsInfo | SocketError => {
  if (!tls.ok) return new SocketError({ kind: "tls", message: "TLS handshake failed: scripted failure" })
  if (tls.unverified === undefined) return SCRIPTED_TLS
  if (options === null || options.rejectUnauthorized) {
    return new SocketError({ kind: "tls", message: `TLS handshake failed: certificate not verified (${tls.unverified})` })
  }
  return { ...SCRIPTED_TLS, verified: false, reason: tls.unverified }
}

const resetByPeer = () => new SocketError({ kind: "reset", message: "connection reset by the peer" })

class ScriptedIo implements Io {
  /** What the client wrote, as the peer reads it: no line limit, the bodies are the client's to bound. */
  readonly toPeer = new LineBuffer<SocketError>(Number.MAX_SAFE_INTEGER, () => resetByPeer())
  // Streaming, so that a character split across two writes decodes as one; appending keeps a long-lived connection
  // (reuse) linear: decoding everything written on every write made it quadratic.
  private readonly writtenDecoder = new TextDecoder()
  private broken = false
  private connected: SocketError | null | undefined = undefined
  private onConnected: ((error: SocketError | null) => void) | null = null
  readonly tlsRequest: Deferred.Deferred<void>
  private onTls: ((tls: TlsAnswer) => void) | null = null
  private tlsAnswer: TlsAnswer | null = null
  private tlsOptions: StartTlsOptions | null = null

  constructor(readonly record: MutableRecord, readonly events: IoEvents, tlsRequest: Deferred.Deferred<void>) {
    this.tlsRequest = tlsRequest
  }

  get localAddress(): string | null {
    return this.record.localAddress
  }

  readonly readableLength = 0

  /** The peer's answer to the connect. */
  settle(error: SocketError | null): void {
    if (this.connected !== undefined) return
    this.connected = error
    this.onConnected?.(error)
  }

  connect(done: (error: SocketError | null) => void): void {
    if (this.connected !== undefined) return done(this.connected)
    this.onConnected = done
  }

  write(data: string | Uint8Array, flushed: (error: SocketError | null) => void): boolean {
    if (this.broken) {
      flushed(resetByPeer())
      return false
    }
    const bytes = typeof data === "string" ? encoder.encode(data) : data
    this.record.written += this.writtenDecoder.decode(bytes, { stream: true })
    this.record.writes.push(decoder.decode(bytes))
    this.toPeer.push(bytes)
    flushed(null)
    return true
  }

  pause(): void {}
  resume(): void {}

  upgrade(options: StartTlsOptions, done: (result: TlsInfo | SocketError) => void): () => void {
    this.record.startTls.push(options)
    const answer = (tls: TlsAnswer) => done(handshakeResult(tls, options))
    if (this.tlsAnswer !== null) {
      answer(this.tlsAnswer)
      return () => {}
    }
    this.onTls = answer
    this.tlsOptions = options
    Deferred.unsafeDone(this.tlsRequest, Effect.void)
    return () => {
      this.onTls = null
    }
  }

  /** Whether the handshake succeeds for the options the client asked with. */
  answerTls(tls: TlsAnswer): boolean {
    this.tlsAnswer = tls
    const ok = !(handshakeResult(tls, this.tlsOptions) instanceof SocketError)
    this.onTls?.(tls)
    return ok
  }

  reset(message: string): void {
    this.broken = true
    this.events.reset(new SocketError({ kind: "reset", message }))
  }

  destroy(released: () => void): void {
    this.broken = true
    this.record.closed = true
    released()
  }
}

const script = (io: ScriptedIo, steps: ReadonlyArray<Step>): Effect.Effect<void> => {
  const { record } = io
  const readPeerLine = io.toPeer.await((b) => b.takeLine())
  const mismatch = (message: string) =>
    Effect.sync(() => {
      record.mismatches.push(message)
      io.reset(`scripted peer: ${message}`)
    })
  return Effect.gen(function*() {
    for (const step of steps) {
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
        case "ExpectBytes":
          record.data.push(yield* io.toPeer.await((b) => b.takeBytes(step.count)))
          break
        case "Send":
          io.events.data(step.data)
          break
        case "Delay":
          yield* Effect.sleep(step.duration)
          break
        case "Stall":
          return yield* Effect.never
        case "Close":
          io.events.end()
          return
        case "Reset":
          io.reset("connection reset by the peer")
          return
        case "Handshake":
          yield* Deferred.await(io.tlsRequest)
          if (!io.answerTls(step)) {
            io.reset("TLS handshake failed")
            return
          }
          break
      }
    }
    io.events.end()
  }).pipe(
    // The client closed or reset: the script just stops.
    Effect.catchAll(() => Effect.void)
  )
}

/**
 * The `Io` of one scripted connection: the connect's outcome comes after the peer's delay, from a fiber in the
 * connection's Scope that then runs the script.
 *
 * @internal
 */
export const open = (
  options: ConnectOptions,
  events: IoEvents,
  scope: Scope.Scope,
  peer: TestPeer,
  record: MutableRecord
): Effect.Effect<Io> =>
  Effect.flatMap(Deferred.make<void>(), (tlsRequest) => {
    const io = new ScriptedIo(record, events, tlsRequest)
    const outcome = peer.connect ?? "accept"
    // Settles the connect; the script to run after it, if any.
    const answer = (): Effect.Effect<void> | null => {
      switch (outcome) {
        case "accept":
          io.settle(null)
          return script(io, peer.script ?? [])
        case "stall":
          return null
        case "refuse":
          io.settle(new SocketError({ kind: "refused", message: `connect ECONNREFUSED ${options.ip}` }))
          return null
        case "unreachable":
          io.settle(new SocketError({ kind: "unreachable", message: `connect EHOSTUNREACH ${options.ip}` }))
          return null
        case "bind":
          io.settle(new SocketError({ kind: "bind", message: `bind EADDRNOTAVAIL ${options.localAddress ?? "0.0.0.0"}` }))
          return null
        case "local-address":
          io.settle(new SocketError({ kind: "local-address", message: notLocal(options.localAddress ?? "0.0.0.0") }))
          return null
        case "reset":
          io.settle(new SocketError({ kind: "reset", message: `connect ECONNRESET ${options.ip}` }))
          return null
      }
    }
    if (peer.delay === undefined) {
      const rest = answer()
      return rest === null ? Effect.succeed(io) : Effect.as(Effect.forkIn(rest, scope), io)
    }
    const run = Effect.zipRight(Effect.sleep(peer.delay), Effect.suspend(() => answer() ?? Effect.void))
    return Effect.as(Effect.forkIn(run, scope), io)
  })
