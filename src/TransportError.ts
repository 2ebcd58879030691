/**
 * The one error family of the transport. Every failure a delivery can meet is a value of this type, carried in the
 * report; nothing downstream has to parse a message string to know what happened.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import type * as Settings from "./Settings.js"
import type { Reply } from "./SmtpReply.js"

/**
 * Where in a delivery the error happened (the settings vocabulary's `Phase`).
 *
 * @since 0.1.0
 * @category models
 */
export type Phase = Settings.Phase

/**
 * Every kind of error.
 *
 * @since 0.2.0
 * @category constants
 */
export const kinds = [
  "timeout",
  "refused",
  "unreachable",
  "reset",
  "reply",
  "tls",
  "protocol",
  "policy",
  "dns",
  "bind",
  "local-address",
  "dane",
  "auth",
  "concurrency",
  "rate",
  "route",
  "input"
] as const

/**
 * What went wrong, independent of the phase.
 *
 * @since 0.1.0
 * @category models
 */
export type Kind = typeof kinds[number]

/**
 * @since 0.1.0
 * @category models
 */
export class TransportError extends Data.TaggedError("TransportError")<{
  readonly phase: Phase
  readonly kind: Kind
  /** A permanent error (5xx, policy) fails the recipient; a temporary one defers it. */
  readonly permanent: boolean
  readonly message: string
  /** The server's reply, when the error is one (`kind: "reply"`), or the reply that accompanied it. */
  readonly reply: Reply | null
}> {}

/**
 * A phase ran past its configured time.
 *
 * @since 0.1.0
 * @category constructors
 */
export const timeout = (phase: Phase, duration: Duration.DurationInput): TransportError =>
  new TransportError({
    phase,
    kind: "timeout",
    permanent: false,
    message: `${phase} timed out after ${Duration.format(Duration.decode(duration))}`,
    reply: null
  })

/**
 * An unwanted reply: permanent when the server said 5xx, temporary otherwise (4xx, or a code that makes no sense
 * at that point of the dialogue, which RFC 5321 §4.2.1 gives no permanent meaning).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromReply = (phase: Phase, reply: Reply): TransportError =>
  new TransportError({
    phase,
    kind: "reply",
    permanent: reply.code >= 500 && reply.code < 600,
    message: `${phase}: ${reply.code}${reply.enhanced === null ? "" : ` ${reply.enhanced}`} ${reply.lines.join(" ")}`
      .trimEnd(),
    reply
  })

/**
 * Shorthand for the errors that carry no reply.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  phase: Phase,
  kind: Kind,
  message: string,
  permanent = false
): TransportError => new TransportError({ phase, kind, permanent, message, reply: null })
