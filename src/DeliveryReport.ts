/**
 * The result of one delivery, as plain data: what happened to each recipient, every connection attempt made, the
 * plan that was followed, and the warnings met on the way. It serialises to JSON as it is (`JSON.stringify`).
 *
 * @since 0.1.0
 */
import type { IpStrategy, SessionPhase, TlsPolicy } from "./Settings.js"
import type { Kind, Phase } from "./TransportError.js"

/**
 * @since 0.1.0
 * @category models
 */
export type RecipientStatus = "delivered" | "deferred" | "failed"

/**
 * A server reply as it appears in the report; `text` is the reply's lines joined with a newline.
 *
 * @since 0.1.0
 * @category models
 */
export interface ReportReply {
  readonly code: number
  readonly enhanced: string | null
  readonly text: string
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ReportError {
  readonly phase: Phase
  readonly kind: Kind
  readonly message: string
  readonly permanent: boolean
  readonly code: number | null
  readonly enhanced: string | null
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RecipientResult {
  readonly address: string
  readonly status: RecipientStatus
  /**
   * The MX host whose answer decided the status, whenever a host answered (also when it failed at greeting, EHLO or
   * TLS); `null` when no host was reached.
   */
  readonly host: string | null
  readonly reply: ReportReply | null
  readonly error: ReportError | null
}

/**
 * The TLS session of an attempt. Under opportunistic TLS (`tls.starttls = optional`, nothing requiring
 * authenticated TLS) a certificate that does not verify does not stop the delivery: `verified` is `false` and
 * `reason` says why: `self-signed`, `name-mismatch`, `expired`, `untrusted-root`, or OpenSSL's code otherwise.
 *
 * @since 0.2.0
 * @category models
 */
export interface AttemptTls {
  /** `TLSv1.3`, … */
  readonly version: string | null
  readonly cipher: string | null
  readonly verified: boolean
  readonly reason: string | null
}

/**
 * One connection attempt: a race loser is `cancelled`, a connection that carried a transaction to its end is
 * `completed` whatever the server answered inside it; a connection refused before MAIL (a greeting, EHLO or TLS
 * failure, or a transaction refused before it was sent) is `failed` at the phase that stopped it.
 *
 * A TLS handshake that fails outright under opportunistic TLS is an attempt of its own (`phase: "tls"`, `failed`),
 * followed at once by the plaintext attempt to the same address that delivers instead (`tls: null`).
 *
 * @since 0.1.0
 * @category models
 */
export interface AttemptRecord {
  readonly domain: string
  readonly host: string
  readonly ip: string
  readonly source: string | null
  readonly ehlo: string | null
  /** The TLS session; `null` for a plaintext connection. */
  readonly tls: AttemptTls | null
  /** Milliseconds since the delivery started (Effect's Clock). */
  readonly startMs: number
  readonly durationMs: number
  /** The last phase reached. */
  readonly phase: Phase
  readonly outcome: "completed" | "failed" | "cancelled"
  readonly error: ReportError | null
}

/**
 * What resolution decided for one MX host.
 *
 * @since 0.1.0
 * @category models
 */
export interface HostPlan {
  readonly host: string
  readonly preference: number
  readonly implicit: boolean
  readonly strategy: IpStrategy | null
  /** Addresses kept, in the order they are tried. */
  readonly addresses: ReadonlyArray<string>
  /** Addresses dropped by `limits.multihomed`. */
  readonly truncated: ReadonlyArray<string>
  readonly sourceIps: { readonly v4: ReadonlyArray<string>; readonly v6: ReadonlyArray<string> }
  /** Whether the host is listed in the domain's MTA-STS policy; `null` when no policy applies. */
  readonly mtaSts: "match" | "mismatch" | null
  readonly error: ReportError | null
}

/**
 * The MTA-STS lookup of a domain (RFC 8461) and where the policy came from.
 *
 * @since 0.1.0
 * @category models
 */
export interface MtaStsPlan {
  readonly status: "disabled" | "none" | "invalid" | "failed" | "found"
  readonly source: "cache" | "fetched" | "stale-cache" | null
  readonly id: string | null
  readonly policy: {
    readonly mode: "enforce" | "testing" | "none"
    readonly mx: ReadonlyArray<string>
    readonly maxAge: number
  } | null
  readonly error: ReportError | null
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DomainPlan {
  readonly domain: string
  readonly recipients: ReadonlyArray<string>
  /** The MX records in preference order. */
  readonly mx: ReadonlyArray<{ readonly exchange: string; readonly priority: number }>
  /** Hosts in the order they are tried, after the shuffle and `limits.mx`; only the hosts reached are resolved. */
  readonly hosts: ReadonlyArray<HostPlan>
  /** Hosts cut by `limits.mx`. */
  readonly dropped: ReadonlyArray<string>
  readonly limits: { readonly mx: number; readonly multihomed: number }
  /** `null` when `tls.mta-sts = disable` or the domain is an address literal. */
  readonly mtaSts: MtaStsPlan | null
  readonly error: ReportError | null
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DeliveryReport {
  readonly recipients: ReadonlyArray<RecipientResult>
  readonly attempts: ReadonlyArray<AttemptRecord>
  readonly plan: { readonly domains: ReadonlyArray<DomainPlan> }
  readonly warnings: ReadonlyArray<string>
}

/**
 * A host as {@link ExplainReport} shows it: its plan, and every setting evaluated for it. `settings` is `null` for
 * a host an enforced MTA-STS policy excludes.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExplainedHost extends HostPlan {
  readonly settings: {
    readonly ehlo: string
    readonly starttls: TlsPolicy
    readonly allowInvalidCerts: boolean
    /** TLS is required whatever `starttls` says: REQUIRETLS, or an enforced MTA-STS policy. */
    readonly requireTls: boolean
    /** `null`: strictly one address at a time. */
    readonly connectionAttemptDelayMs: number | null
    readonly timeouts: ExplainedTimeouts
  } | null
}

type CamelCase<S extends string> = S extends `${infer A}-${infer B}` ? `${A}${Capitalize<CamelCase<B>>}` : S

/**
 * A connection's timeouts in milliseconds, one field per session phase in camelCase (`timeouts["mail-from"]` is
 * `mailFrom`): `connect`, `greeting`, `tls`, `ehlo`, `mailFrom`, `rcptTo`, `data`.
 *
 * @since 0.2.0
 * @category models
 */
export type ExplainedTimeouts = { readonly [P in SessionPhase as CamelCase<P>]: number }

/**
 * @since 0.1.0
 * @category models
 */
export interface ExplainedDomain extends Omit<DomainPlan, "hosts"> {
  readonly hosts: ReadonlyArray<ExplainedHost>
  readonly mtaStsTimeoutMs: number
  readonly warnings: ReadonlyArray<string>
}

/**
 * What a delivery would do, as `Transport.explain` and `smtp-transport plan` tell it; nothing is sent.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExplainReport {
  readonly domains: ReadonlyArray<ExplainedDomain>
  readonly warnings: ReadonlyArray<string>
}
