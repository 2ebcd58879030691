/**
 * The settings vocabulary every stage of a delivery speaks: one name per concept, from the configuration file to the
 * report. A leaf: it imports nothing of the library. The configuration loader produces these values, each stage
 * consumes the ones of its stage, and `explain` prints them.
 *
 * | concept | Stalwart keys (v0.7–v0.12) | here |
 * |---|---|---|
 * | IP strategy | `ip-strategy` | `ipStrategy` |
 * | source addresses | `source-ip.v4`, `source-ip.v6` | `sourceIp` |
 * | EHLO name | `hostname` | `ehloName` |
 * | timeouts | `timeouts.<phase>` | `timeouts[phase]` |
 * | limits | `limits.mx`, `limits.multihomed` | `limits.mx`, `limits.multihomed` |
 *
 * @since 0.2.0
 */
import type * as Duration from "effect/Duration"
import type * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"

/**
 * The IP strategies (Stalwart's names).
 *
 * @since 0.2.0
 * @category constants
 */
export const ipStrategies = ["ipv4_only", "ipv6_only", "ipv6_then_ipv4", "ipv4_then_ipv6"] as const

/**
 * Which address families to try, in which order.
 *
 * @since 0.2.0
 * @category models
 */
export type IpStrategy = typeof ipStrategies[number]

/**
 * The TLS policies.
 *
 * @since 0.2.0
 * @category constants
 */
export const tlsPolicies = ["optional", "require", "disable"] as const

/**
 * A TLS requirement (`tls.starttls`, `tls.mta-sts`, `tls.dane`): `disable` never uses it, `optional` uses it where it can,
 * `require` fails without it.
 *
 * @since 0.2.0
 * @category models
 */
export type TlsPolicy = typeof tlsPolicies[number]

/**
 * When a key is evaluated, which decides the variables it may use: `domain` knows the message and recipient
 * variables, `host` adds `mx`, `connection` adds `remote_ip` and `local_ip`.
 *
 * @since 0.2.0
 * @category models
 */
export type Stage = "domain" | "host" | "connection"

/**
 * The phases of a delivery, in pipeline order.
 *
 * @since 0.2.0
 * @category constants
 */
export const phases = [
  "dns",
  "mta-sts",
  "dane",
  "connect",
  "greeting",
  "ehlo",
  "tls",
  "auth",
  "mail-from",
  "rcpt-to",
  "data",
  "quit"
] as const

/**
 * Where in a delivery something happens: the phases of the pipeline, in order.
 *
 * @since 0.2.0
 * @category models
 */
export type Phase = typeof phases[number]

/**
 * The phases of one connection that have a configured timeout, in dialogue order.
 *
 * @since 0.2.0
 * @category constants
 */
export const sessionPhases = ["connect", "greeting", "ehlo", "tls", "mail-from", "rcpt-to", "data"] as const

/**
 * @since 0.2.0
 * @category models
 */
export type SessionPhase = typeof sessionPhases[number]

/**
 * Every phase with a configured timeout: the session's, and the MTA-STS policy fetch.
 *
 * @since 0.2.0
 * @category models
 */
export type TimedPhase = SessionPhase | "mta-sts"

/**
 * Timeouts by phase (Postfix's `xfer_timeouts[state]`): `timeouts[phase]` bounds that whole phase. `tls` covers the
 * STARTTLS command and the handshake; `rcpt-to` each RCPT on its own; `data` the DATA command, its 354, the message
 * and the end-of-data reply together (or BDAT and its reply).
 *
 * @since 0.2.0
 * @category models
 */
export type Timeouts<P extends TimedPhase = TimedPhase> = { readonly [K in P]: Duration.Duration }

/**
 * Source addresses to bind, by family; one is picked at random for each connection. Empty: the OS picks.
 *
 * @since 0.2.0
 * @category models
 */
export interface SourceIp {
  readonly v4: ReadonlyArray<string>
  readonly v6: ReadonlyArray<string>
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Limits {
  /** How many MX hosts of a domain are tried. */
  readonly mx: number
  /** How many addresses of one MX host are tried. */
  readonly multihomed: number
}

/**
 * The settings evaluated once per destination domain.
 *
 * @since 0.2.0
 * @category models
 */
export interface DomainSettings {
  /** Where the domain's mail goes: the route the route selector (`next-hop`, `[queue.strategy] route`) names. */
  readonly route: Route
  readonly limits: Limits
  readonly tls: { readonly mtaSts: TlsPolicy }
  readonly timeouts: Timeouts<"mta-sts">
  /**
   * How long a delivery waits for its turn under an outbound limiter (concurrency or rate) before its recipients are
   * deferred with the limiter's kind. This library's extension.
   */
  readonly limiterWait: Duration.Duration
}

/**
 * The settings evaluated once per MX host.
 *
 * @since 0.2.0
 * @category models
 */
export interface HostSettings {
  readonly ipStrategy: IpStrategy
  readonly sourceIp: SourceIp
  readonly tls: {
    readonly starttls: TlsPolicy
    /** `tls.dane`: DANE (RFC 7672) where secure usable TLSA records exist (`optional`), required, or never consulted. */
    readonly dane: TlsPolicy
    /** `tls.allow-invalid-certs`: accept a certificate that does not verify even where TLS is required. */
    readonly allowInvalidCerts: boolean
  }
  /** RFC 8305's connection-attempt delay; `None`: one attempt at a time. */
  readonly connectionAttemptDelay: Option.Option<Duration.Duration>
}

/**
 * The settings evaluated once per connection.
 *
 * @since 0.2.0
 * @category models
 */
export interface ConnectionSettings {
  readonly ehloName: string
  readonly timeouts: Timeouts<SessionPhase>
  readonly reuse: Reuse
}

/**
 * How long a connection is kept for further messages once its transaction is done (this library's extension: Stalwart
 * opens a connection per delivery). A connection takes at most `messages` transactions, waits at most `idle` between
 * two, and is not reused past `age` since it was opened.
 *
 * @since 0.3.0
 * @category models
 */
export interface Reuse {
  /** Transactions per connection; `1` turns reuse off. */
  readonly messages: number
  /** Idle time before QUIT. */
  readonly idle: Duration.Duration
  /** Age past which the connection is not reused. */
  readonly age: Duration.Duration
}

/**
 * Stalwart's configuration layouts: `outbound` (v0.7–v0.12, `[queue.outbound]`, every key an expression),
 * `strategies` (v0.13–v0.15, `[queue.strategy]` expressions naming `[queue.route|connection|tls.<name>]` tables) and
 * `json` (v0.16+, the registry objects `MtaOutboundStrategy`, `MtaRoute`, `MtaConnectionStrategy`, `MtaTlsStrategy`).
 *
 * @since 0.3.0
 * @category constants
 */
export const layouts = ["outbound", "strategies", "json"] as const

/**
 * @since 0.3.0
 * @category models
 */
export type Layout = typeof layouts[number]

/**
 * The protocols a relay route speaks: SMTP (RFC 5321) or LMTP (RFC 2033: LHLO, one reply per recipient after DATA).
 *
 * @since 0.3.0
 * @category constants
 */
export const relayProtocols = ["smtp", "lmtp"] as const

/**
 * @since 0.3.0
 * @category models
 */
export type RelayProtocol = typeof relayProtocols[number]

/**
 * Credentials for AUTH (RFC 4954) at a relay. The secret is redacted: it never reaches a report, a log line, a span
 * or an error message.
 *
 * @since 0.3.0
 * @category models
 */
export interface RelayAuth {
  readonly username: string
  readonly secret: Redacted.Redacted<string>
  /**
   * The secret is an OAuth 2.0 access token, sent with XOAUTH2; otherwise it is a password, sent with PLAIN (or
   * LOGIN). Absent: a password.
   */
  readonly token?: boolean | undefined
  /**
   * Send the credentials over a connection that is not encrypted, or whose certificate did not verify (this
   * library's `auth.allow-plaintext`, which Stalwart does not have). Absent: only over TLS that verified (or that
   * `tls.allow-invalid-certs` accepts).
   */
  readonly allowPlaintext?: boolean | undefined
}

/**
 * Where a domain's mail goes (Stalwart's routes): `mx` resolves the domain's MX hosts; `relay` hands every message
 * to one configured host; `local` hands the recipients to the embedder's `LocalDelivery` service.
 *
 * @since 0.3.0
 * @category models
 */
export type Route = MxRoute | RelayRoute | LocalRoute

/**
 * @since 0.3.0
 * @category models
 */
export interface MxRoute {
  readonly _tag: "mx"
  /** The route's name in the configuration (`mx` for the built-in one). */
  readonly name: string
}

/**
 * @since 0.3.0
 * @category models
 */
export interface RelayRoute {
  readonly _tag: "relay"
  readonly name: string
  /** A host name or an IP address. */
  readonly address: string
  readonly port: number
  readonly protocol: RelayProtocol
  /** TLS from the first byte (port 465) instead of STARTTLS. */
  readonly implicitTls: boolean
  readonly allowInvalidCerts: boolean
  readonly auth: Option.Option<RelayAuth>
}

/**
 * @since 0.3.0
 * @category models
 */
export interface LocalRoute {
  readonly _tag: "local"
  readonly name: string
}

/**
 * When a recipient that could not be delivered yet is retried, when its sender is told (a delay DSN), and when it is
 * given up (Stalwart's `[queue.schedule]`, `[queue.schedule.<name>]`, `MtaDeliverySchedule`).
 *
 * The wait after the attempt numbered `n` (0 for the first) is `retry[min(n, retry.length - 1)]`: the last entry repeats.
 * `notify` are the points, measured from the message's creation, at which a delay DSN goes to the sender; empty: none.
 *
 * @since 0.3.0
 * @category models
 */
export interface DeliverySchedule {
  /** `"default"` in the v0.7–v0.12 layout; the schedule's name (what `[queue.strategy] schedule` chose) in v0.13+. */
  readonly name: string
  /** At least one entry. */
  readonly retry: ReadonlyArray<Duration.Duration>
  readonly notify: ReadonlyArray<Duration.Duration>
  readonly expiry: DeliveryExpiry
}

/**
 * When a recipient is given up: `Ttl`, once `ttl` has passed since the message was created (`expire`); `Attempts`, once
 * it was tried `maxAttempts` times (`max-attempts`, v0.13+).
 *
 * @since 0.3.0
 * @category models
 */
export type DeliveryExpiry =
  | { readonly _tag: "Ttl"; readonly ttl: Duration.Duration }
  | { readonly _tag: "Attempts"; readonly maxAttempts: number }
