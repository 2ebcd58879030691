/**
 * The socket layer's one error type and the one errno → kind map. Nothing here knows SMTP phases: the session maps
 * a `SocketError` to its phase's `TransportError`.
 *
 * @internal
 */
import * as Data from "effect/Data"

/** @internal */
export type SocketErrorKind =
  | "refused"
  | "unreachable"
  | "reset"
  | "timeout"
  | "bind"
  | "local-address"
  | "tls"
  | "protocol"
  | "closed"

/** @internal */
export class SocketError extends Data.TaggedError("SocketError")<{
  readonly kind: SocketErrorKind
  readonly message: string
  /** Kind `timeout` because the operation's own deadline passed, not an OS timeout such as ETIMEDOUT. */
  readonly deadline?: boolean | undefined
}> {}

/** @internal */
export const notLocal = (address: string): string => `${address} is not an address of this machine`

/**
 * Why a certificate did not verify, from OpenSSL's or Node's code: one of a few words a reader knows, or the code
 * itself.
 *
 * @internal
 */
export const tlsReason = (code: string): string => {
  switch (code) {
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
      return "self-signed"
    case "ERR_TLS_CERT_ALTNAME_INVALID":
    case "HOSTNAME_MISMATCH":
      return "name-mismatch"
    case "CERT_HAS_EXPIRED":
      return "expired"
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "CERT_UNTRUSTED":
      return "untrusted-root"
    default:
      return code
  }
}

/** @internal */
export const closedByPeer = (): SocketError =>
  new SocketError({ kind: "closed", message: "connection closed by the peer" })

/** @internal */
export const lineTooLong = (limit: number): SocketError =>
  new SocketError({ kind: "protocol", message: `line longer than ${limit} bytes` })

/** What an operation fails with when its deadline passes; the session reports its phase's own timeout error. */
export const deadlinePassed = (): SocketError =>
  new SocketError({ kind: "timeout", message: "the deadline passed", deadline: true })

/** The operation's deadline passed (not an OS timeout such as ETIMEDOUT). */
export const isDeadline = (error: SocketError): boolean => error.deadline === true

/** @internal */
export const closedLocally = (): SocketError => new SocketError({ kind: "reset", message: "the connection is closed" })

const errorCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/** @internal */
export const errorMessage = (error: unknown): string => error instanceof Error ? error.message : String(error)

/**
 * Maps an OS socket error (Node's `code` / `syscall`) to its kind; `bind` comes from the failed bind syscall before
 * the connect. An unknown code is `unreachable` while connecting, `reset` once connected.
 *
 * @internal
 */
export const fromErrno = (error: unknown, during: "connect" | "io"): SocketError => {
  const code = errorCode(error)
  const syscall = typeof error === "object" && error !== null && "syscall" in error ? error.syscall : undefined
  const message = errorMessage(error)
  if (syscall === "bind") {
    // The kernel's word that the configured source is on no interface of this machine: a setting that cannot work.
    if (code === "EADDRNOTAVAIL") {
      const address = typeof error === "object" && error !== null && "address" in error ? String(error.address) : null
      return new SocketError({
        kind: "local-address",
        message: address === null ? message : notLocal(address)
      })
    }
    return new SocketError({ kind: "bind", message })
  }
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
