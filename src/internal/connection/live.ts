/**
 * The live `Io`: a `node:net` socket, upgraded in place with `node:tls`.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as net from "node:net"
import * as tls from "node:tls"
import type { ConnectOptions, Io, IoEvents, StartTlsOptions, TlsInfo } from "../../Connector.js"
import { errorMessage, fromErrno, SocketError, tlsReason } from "./socketError.js"

let openSockets = 0

/**
 * Sockets created and not yet seen closed, across every instance of the live layer.
 *
 * @internal
 */
export const openConnections: Effect.Effect<number> = Effect.sync(() => openSockets)

const ignore = () => {}

class LiveIo implements Io {
  private readonly socket = new net.Socket()
  private current: net.Socket = this.socket
  private secure: tls.TLSSocket | null = null
  private closed = false
  private readonly onClosed: Array<() => void> = []

  constructor(private readonly options: ConnectOptions, private readonly events: IoEvents) {
    openSockets++
    // Counted until Node's 'close' event, the moment the descriptor is released; `socket.closed` turns true a tick
    // earlier and would let a close return before the count drops.
    this.socket.once("close", () => {
      this.closed = true
      openSockets--
      for (const f of this.onClosed.splice(0)) f()
    })
    // Errors reach the connection through the listeners below; none may go unhandled once they are detached.
    this.socket.on("error", ignore)
  }

  get localAddress(): string | null {
    return this.socket.localAddress ?? null
  }

  get readableLength(): number {
    return this.current.readableLength
  }

  private readonly onData = (chunk: Buffer) => this.events.data(chunk)
  private readonly onEnd = () => this.events.end()
  private readonly onError = (error: unknown) => this.events.end(fromErrno(error, "io"))

  private attach(s: net.Socket): void {
    s.on("data", this.onData)
    s.on("end", this.onEnd)
    s.on("error", this.onError)
    s.on("close", this.onEnd)
  }

  private detach(s: net.Socket): void {
    s.off("data", this.onData)
    s.off("end", this.onEnd)
    s.off("error", this.onError)
    s.off("close", this.onEnd)
  }

  connect(done: (error: SocketError | null) => void): void {
    const socket = this.socket
    const onError = (error: unknown) => done(fromErrno(error, "connect"))
    socket.once("error", onError)
    socket.connect(
      {
        host: this.options.ip,
        port: this.options.port,
        ...(this.options.localAddress === undefined ? {} : { localAddress: this.options.localAddress })
      },
      () => {
        socket.off("error", onError)
        socket.setNoDelay(true)
        this.attach(socket)
        done(null)
      }
    )
  }

  write(data: string | Uint8Array, flushed: (error: SocketError | null) => void): boolean {
    const current = this.current
    if (current.destroyed || !current.writable) {
      flushed(new SocketError({ kind: "reset", message: "write on a closed connection" }))
      return false
    }
    return current.write(data, (error) => flushed(error ? fromErrno(error, "io") : null))
  }

  pause(): void {
    this.current.pause()
  }

  resume(): void {
    this.current.resume()
  }

  upgrade(options: StartTlsOptions, done: (result: TlsInfo | SocketError) => void): () => void {
    const socket = this.socket
    this.detach(socket)
    const name = options.servername
    const secure = tls.connect({
      socket,
      host: name,
      // SNI carries host names only (RFC 6066 §3)
      ...(net.isIP(name) === 0 ? { servername: name } : {}),
      ...(options.ca === undefined ? {} : { ca: [...options.ca] }),
      rejectUnauthorized: options.rejectUnauthorized
    })
    this.secure = secure
    secure.on("error", ignore)
    const onSecure = () => {
      secure.off("error", onFail)
      this.current = secure
      this.attach(secure)
      const cipher = secure.getCipher() as { readonly name?: string } | undefined
      const reason = secure.authorizationError
      done({
        version: secure.getProtocol() ?? null,
        cipher: cipher?.name ?? null,
        verified: secure.authorized,
        // Node gives OpenSSL's code (or ERR_TLS_CERT_ALTNAME_INVALID) as a string, an Error in older versions.
        reason: reason === undefined || reason === null
          ? null
          : tlsReason(typeof reason === "object" && "code" in reason ? String(reason.code) : String(reason)),
        peerCertificates: options.dane === undefined ? [] : peerChain(secure),
        dane: null
      })
    }
    const onFail = (error: unknown) => {
      secure.off("secureConnect", onSecure)
      secure.destroy()
      done(new SocketError({ kind: "tls", message: `TLS handshake failed: ${errorMessage(error)}` }))
    }
    secure.once("secureConnect", onSecure)
    secure.once("error", onFail)
    return () => {
      secure.off("secureConnect", onSecure)
      secure.off("error", onFail)
      secure.destroy()
    }
  }

  destroy(released: () => void): void {
    this.secure?.destroy()
    if (this.closed) return released()
    this.onClosed.push(released)
    this.socket.destroy()
  }
}

/**
 * The chain as the handshake gave it, leaf first: Node links each certificate to its issuer, the last one to itself.
 * Only read when DANE asks for it (it costs a copy of each certificate); empty otherwise.
 */
const peerChain = (secure: tls.TLSSocket): ReadonlyArray<Uint8Array> => {
  const chain: Array<Uint8Array> = []
  let cert: tls.DetailedPeerCertificate | undefined = secure.getPeerCertificate(true)
  const seen = new Set<tls.DetailedPeerCertificate>()
  while (cert !== undefined && cert.raw !== undefined && !seen.has(cert)) {
    seen.add(cert)
    chain.push(cert.raw)
    cert = cert.issuerCertificate
  }
  return chain
}

/**
 * Opens a `node:net` socket for `options` (connected by the core); only IP addresses, never a name to resolve.
 *
 * @internal
 */
export const open = (options: ConnectOptions, events: IoEvents): Effect.Effect<Io, SocketError> =>
  net.isIP(options.ip) === 0
    ? Effect.fail(new SocketError({ kind: "unreachable", message: `not an IP address: ${options.ip}` }))
    : Effect.sync(() => new LiveIo(options, events))
