/**
 * The result of one delivery, as plain data: what happened to each recipient, every connection attempt made, the
 * plan that was followed, and the warnings met on the way. It serialises to JSON as it is (`JSON.stringify`).
 *
 * Each model is a `Schema` and its type: `Schema.decodeUnknown(DeliveryReport)` checks a report read back from JSON,
 * and the report's JSON Schema (`docs/reference/report.schema.json`) is generated from these definitions.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"
import { ipStrategies, layouts, phases, relayProtocols, sessionPhases, type SessionPhase, tlsPolicies } from "./Settings.js"
import { kinds } from "./TransportError.js"

const nullable = <S extends Schema.Schema.Any>(schema: S) => Schema.NullOr(schema)
const strings = Schema.Array(Schema.String)

/**
 * @since 0.1.0
 * @category models
 */
export const RecipientStatus = Schema.Literal("delivered", "deferred", "failed")

/**
 * @since 0.1.0
 * @category models
 */
export type RecipientStatus = typeof RecipientStatus.Type

/**
 * A server reply as it appears in the report; `text` is the reply's lines joined with a newline.
 *
 * @since 0.1.0
 * @category models
 */
export const ReportReply = Schema.Struct({
  code: Schema.Number,
  enhanced: nullable(Schema.String),
  text: Schema.String
}).annotations({ identifier: "ReportReply" })

/**
 * @since 0.1.0
 * @category models
 */
export interface ReportReply extends Schema.Schema.Type<typeof ReportReply> {}

/**
 * A `TransportError` as data.
 *
 * @since 0.1.0
 * @category models
 */
export const ReportError = Schema.Struct({
  phase: Schema.Literal(...phases),
  kind: Schema.Literal(...kinds),
  message: Schema.String,
  permanent: Schema.Boolean,
  code: nullable(Schema.Number),
  enhanced: nullable(Schema.String)
}).annotations({ identifier: "ReportError" })

/**
 * @since 0.1.0
 * @category models
 */
export interface ReportError extends Schema.Schema.Type<typeof ReportError> {}

/**
 * One recipient's outcome. `host` is the MX host whose answer decided the status, whenever a host answered (also
 * when it failed at greeting, EHLO or TLS); `null` when no host was reached.
 *
 * @since 0.1.0
 * @category models
 */
export const RecipientResult = Schema.Struct({
  address: Schema.String,
  status: RecipientStatus,
  host: nullable(Schema.String),
  reply: nullable(ReportReply),
  error: nullable(ReportError)
}).annotations({ identifier: "RecipientResult" })

/**
 * @since 0.1.0
 * @category models
 */
export interface RecipientResult extends Schema.Schema.Type<typeof RecipientResult> {}

/**
 * DANE on an attempt's TLS session (`null` when `tls.dane = disable`): `verified` — the certificate matched
 * `record` (`3 1 1 …`, as a zone file writes it); `failed` — it matched none (`reason` says why; the attempt's error
 * is of kind `dane`); `none` — the host has no TLSA records (an authenticated denial); `insecure` — a lookup on the
 * way was not DNSSEC-validated, so DANE does not apply and the other TLS policies did. `tls.verified` stays the
 * PKIX verdict: a DANE-EE host's certificate need not chain to any CA.
 *
 * @since 0.2.0
 * @category models
 */
export const AttemptDane = Schema.Struct({
  status: Schema.Literal("verified", "insecure", "none", "failed"),
  record: nullable(Schema.String),
  reason: nullable(Schema.String)
}).annotations({ identifier: "AttemptDane" })

/**
 * @since 0.2.0
 * @category models
 */
export interface AttemptDane extends Schema.Schema.Type<typeof AttemptDane> {}

/**
 * The TLS session of an attempt. Under opportunistic TLS (`tls.starttls = optional`, nothing requiring
 * authenticated TLS) a certificate that does not verify does not stop the delivery: `verified` is `false` and
 * `reason` says why: `self-signed`, `name-mismatch`, `expired`, `untrusted-root`, or OpenSSL's code otherwise.
 * `version` is `TLSv1.3`, …
 *
 * @since 0.2.0
 * @category models
 */
export const AttemptTls = Schema.Struct({
  version: nullable(Schema.String),
  cipher: nullable(Schema.String),
  verified: Schema.Boolean,
  reason: nullable(Schema.String),
  dane: nullable(AttemptDane)
}).annotations({ identifier: "AttemptTls" })

/**
 * @since 0.2.0
 * @category models
 */
export interface AttemptTls extends Schema.Schema.Type<typeof AttemptTls> {}

/**
 * One connection attempt: a race loser is `cancelled`, a connection that carried a transaction to its end is
 * `completed` whatever the server answered inside it; a connection refused before MAIL (a greeting, EHLO or TLS
 * failure, or a transaction refused before it was sent) is `failed` at the phase that stopped it.
 *
 * A TLS handshake that fails outright under opportunistic TLS is an attempt of its own (`phase: "tls"`, `failed`),
 * followed at once by the plaintext attempt to the same address that delivers instead (`tls: null`). `tls` is
 * `null` for a plaintext connection; `startMs` counts from the start of the delivery (Effect's Clock); `phase` is
 * the last phase reached.
 *
 * `connection` names the connection the attempt used (`null` when none was established), so attempts that shared a
 * session carry the same id; `reused` is `true` when the attempt took an idle connection from the pool instead of
 * connecting (its `startMs` is when it took it). A completed transaction's attempt ends at phase `quit` whether its
 * connection was closed then or given to the pool, which sends the QUIT later.
 *
 * @since 0.1.0
 * @category models
 */
export const AttemptRecord = Schema.Struct({
  domain: Schema.String,
  host: Schema.String,
  ip: Schema.String,
  source: nullable(Schema.String),
  ehlo: nullable(Schema.String),
  tls: nullable(AttemptTls),
  startMs: Schema.Number,
  durationMs: Schema.Number,
  phase: Schema.Literal(...phases),
  outcome: Schema.Literal("completed", "failed", "cancelled"),
  error: nullable(ReportError),
  connection: nullable(Schema.String),
  reused: Schema.Boolean
}).annotations({ identifier: "AttemptRecord" })

/**
 * @since 0.1.0
 * @category models
 */
export interface AttemptRecord extends Schema.Schema.Type<typeof AttemptRecord> {}

/**
 * A host's DANE decision (RFC 7672 §2.2): `usable` — secure usable TLSA records, STARTTLS mandatory and the
 * certificate matched against them; `unusable` — a secure RRset with no usable record, STARTTLS mandatory without
 * authentication; `none` — no TLSA records; `insecure` — the MX, address or TLSA lookup was not DNSSEC-validated
 * (no DANE, the other policies apply); `failed` — a lookup failed or was bogus (the host is deferred). `name` is the
 * TLSA owner name, `secure` whether its answer validated, `records` the records as a zone file writes them.
 *
 * @since 0.2.0
 * @category models
 */
export const DanePlan = Schema.Struct({
  status: Schema.Literal("usable", "unusable", "none", "insecure", "failed"),
  name: Schema.String,
  secure: Schema.Boolean,
  records: strings,
  reason: Schema.String
}).annotations({ identifier: "DanePlan" })

/**
 * @since 0.2.0
 * @category models
 */
export interface DanePlan extends Schema.Schema.Type<typeof DanePlan> {}

const hostPlanFields = {
  host: Schema.String,
  preference: Schema.Number,
  implicit: Schema.Boolean,
  strategy: nullable(Schema.Literal(...ipStrategies)),
  /** Addresses kept, in the order they are tried. */
  addresses: strings,
  /** Addresses dropped by `limits.multihomed`. */
  truncated: strings,
  sourceIps: Schema.Struct({ v4: strings, v6: strings }),
  /** The connection and TLS strategies the configuration's selectors chose for this host; `null` when not evaluated. */
  strategies: nullable(Schema.Struct({ connection: Schema.String, tls: Schema.String })),
  /** Whether the host is listed in the domain's MTA-STS policy; `null` when no policy applies. */
  mtaSts: nullable(Schema.Literal("match", "mismatch")),
  /** The host's TLSA lookup and the DANE decision; `null` when `tls.dane = disable` or the host was not resolved. */
  dane: nullable(DanePlan),
  error: nullable(ReportError)
}

/**
 * What resolution decided for one MX host: its addresses in the order they are tried, the ones `limits.multihomed`
 * dropped, the source lists, whether an MTA-STS policy lists it.
 *
 * @since 0.1.0
 * @category models
 */
export const HostPlan = Schema.Struct(hostPlanFields).annotations({ identifier: "HostPlan" })

/**
 * @since 0.1.0
 * @category models
 */
export interface HostPlan extends Schema.Schema.Type<typeof HostPlan> {}

/**
 * The MTA-STS lookup of a domain (RFC 8461) and where the policy came from.
 *
 * @since 0.1.0
 * @category models
 */
export const MtaStsPlan = Schema.Struct({
  status: Schema.Literal("disabled", "none", "invalid", "failed", "found"),
  source: nullable(Schema.Literal("cache", "fetched", "stale-cache")),
  id: nullable(Schema.String),
  policy: nullable(Schema.Struct({
    mode: Schema.Literal("enforce", "testing", "none"),
    mx: strings,
    maxAge: Schema.Number
  })),
  error: nullable(ReportError)
}).annotations({ identifier: "MtaStsPlan" })

/**
 * @since 0.1.0
 * @category models
 */
export interface MtaStsPlan extends Schema.Schema.Type<typeof MtaStsPlan> {}

/**
 * The route a domain's mail took: `mx` (its MX hosts), `relay` (one configured host: its address, port, protocol,
 * TLS mode and whether AUTH is used, never the credentials) or `local` (handed to the `LocalDelivery` service).
 * `name` is the route's name in the configuration.
 *
 * @since 0.3.0
 * @category models
 */
export const RoutePlan = Schema.Union(
  Schema.Struct({ type: Schema.Literal("mx"), name: Schema.String }),
  Schema.Struct({
    type: Schema.Literal("relay"),
    name: Schema.String,
    address: Schema.String,
    port: Schema.Number,
    protocol: Schema.Literal(...relayProtocols),
    /** `implicit`: TLS from the first byte; `starttls`: as `tls.starttls` says. */
    tls: Schema.Literal("implicit", "starttls"),
    allowInvalidCerts: Schema.Boolean,
    auth: Schema.Boolean
  }),
  Schema.Struct({ type: Schema.Literal("local"), name: Schema.String })
).annotations({ identifier: "RoutePlan" })

/**
 * @since 0.3.0
 * @category models
 */
export type RoutePlan = typeof RoutePlan.Type

const domainPlanFields = {
  domain: Schema.String,
  recipients: strings,
  /** `null` when the route could not be decided (`error` says why). */
  route: nullable(RoutePlan),
  /** The MX records in preference order. */
  mx: Schema.Array(Schema.Struct({ exchange: Schema.String, priority: Schema.Number })),
  /** Hosts in the order they are tried, after the shuffle and `limits.mx`; only the hosts reached are resolved. */
  hosts: Schema.Array(HostPlan),
  /** Hosts cut by `limits.mx`. */
  dropped: strings,
  limits: Schema.Struct({ mx: Schema.Number, multihomed: Schema.Number }),
  /**
   * The route and TLS strategy the configuration's selectors chose for the domain (TLS: with `mx` still empty), and
   * the delivery schedule an outbox would keep its undelivered recipients on (the first recipient's).
   */
  strategies: Schema.Struct({ route: Schema.String, tls: Schema.String, schedule: Schema.String }),
  /** `null` when `tls.mta-sts = disable` or the domain is an address literal. */
  mtaSts: nullable(MtaStsPlan),
  error: nullable(ReportError)
}

/**
 * One recipient domain's plan: its route, its MX records (or the relay as its one host), the hosts kept and
 * dropped, its limits and MTA-STS policy.
 *
 * @since 0.1.0
 * @category models
 */
export const DomainPlan = Schema.Struct(domainPlanFields).annotations({ identifier: "DomainPlan" })

/**
 * @since 0.1.0
 * @category models
 */
export interface DomainPlan extends Schema.Schema.Type<typeof DomainPlan> {}

/**
 * What `Transport.deliver` returns.
 *
 * @since 0.1.0
 * @category models
 */
export const DeliveryReport = Schema.Struct({
  recipients: Schema.Array(RecipientResult),
  attempts: Schema.Array(AttemptRecord),
  /** `layout`: which of Stalwart's configuration layouts the settings were read from. */
  plan: Schema.Struct({ layout: Schema.Literal(...layouts), domains: Schema.Array(DomainPlan) }),
  warnings: strings
}).annotations({ identifier: "DeliveryReport" })

/**
 * @since 0.1.0
 * @category models
 */
export interface DeliveryReport extends Schema.Schema.Type<typeof DeliveryReport> {}

type CamelCase<S extends string> = S extends `${infer A}-${infer B}` ? `${A}${Capitalize<CamelCase<B>>}` : S

const camelCase = (phase: string): string => phase.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

/**
 * A connection's timeouts in milliseconds, one field per session phase in camelCase (`timeouts["mail-from"]` is
 * `mailFrom`): `connect`, `greeting`, `tls`, `ehlo`, `mailFrom`, `rcptTo`, `data`.
 *
 * @since 0.2.0
 * @category models
 */
export const ExplainedTimeouts = Schema.Struct(
  Object.fromEntries(sessionPhases.map((phase) => [camelCase(phase), Schema.Number])) as {
    readonly [P in SessionPhase as CamelCase<P>]: typeof Schema.Number
  }
).annotations({ identifier: "ExplainedTimeouts" })

/**
 * @since 0.2.0
 * @category models
 */
export type ExplainedTimeouts = typeof ExplainedTimeouts.Type

/**
 * An outbound limiter a delivery would count against, as {@link ExplainReport} shows it: its id, the stage it is
 * checked at, the values of its key variables (its count is shared by every delivery with the same values), and
 * its limits. Connection-stage limiters are shown for the host's first address with no source bound, as the
 * connection settings are.
 *
 * @since 0.3.0
 * @category models
 */
export const ExplainedLimiter = Schema.Struct({
  id: Schema.String,
  stage: Schema.Literal("message", "domain", "host", "connection"),
  key: Schema.Record({ key: Schema.String, value: Schema.String }),
  concurrency: nullable(Schema.Number),
  rate: nullable(Schema.Struct({ count: Schema.Number, periodMs: Schema.Number }))
}).annotations({ identifier: "ExplainedLimiter" })

/**
 * @since 0.3.0
 * @category models
 */
export interface ExplainedLimiter extends Schema.Schema.Type<typeof ExplainedLimiter> {}

/**
 * A host as {@link ExplainReport} shows it: its plan, and every setting evaluated for it. `settings` is `null` for
 * a host an enforced MTA-STS policy excludes; `requireTls` says TLS is required whatever `starttls` says
 * (REQUIRETLS, an enforced MTA-STS policy, or the host's DANE TLSA records); `dane` is `tls.dane`; `connectionAttemptDelayMs` is `null` for strictly one address at a
 * time.
 *
 * @since 0.1.0
 * @category models
 */
export const ExplainedHost = Schema.Struct({
  ...hostPlanFields,
  settings: nullable(Schema.Struct({
    ehlo: Schema.String,
    starttls: Schema.Literal(...tlsPolicies),
    dane: Schema.Literal(...tlsPolicies),
    allowInvalidCerts: Schema.Boolean,
    requireTls: Schema.Boolean,
    connectionAttemptDelayMs: nullable(Schema.Number),
    timeouts: ExplainedTimeouts
  })),
  /** The host- and connection-stage limiters that apply to it. */
  limiters: Schema.Array(ExplainedLimiter)
}).annotations({ identifier: "ExplainedHost" })

/**
 * @since 0.1.0
 * @category models
 */
export interface ExplainedHost extends Schema.Schema.Type<typeof ExplainedHost> {}

/**
 * One domain as {@link ExplainReport} shows it.
 *
 * @since 0.1.0
 * @category models
 */
export const ExplainedDomain = Schema.Struct({
  ...domainPlanFields,
  hosts: Schema.Array(ExplainedHost),
  mtaStsTimeoutMs: Schema.Number,
  /** The domain-stage limiters that apply (held for the whole domain delivery), and how long one may be waited on. */
  limiters: Schema.Array(ExplainedLimiter),
  limiterWaitMs: Schema.Number,
  warnings: strings
}).annotations({ identifier: "ExplainedDomain" })

/**
 * @since 0.1.0
 * @category models
 */
export interface ExplainedDomain extends Schema.Schema.Type<typeof ExplainedDomain> {}

/**
 * What a delivery would do, as `Transport.explain` and `smtp-transport plan` tell it; nothing is sent.
 *
 * @since 0.1.0
 * @category models
 */
export const ExplainReport = Schema.Struct({
  /** Which of Stalwart's configuration layouts the settings were read from. */
  layout: Schema.Literal(...layouts),
  /**
   * The message-stage limiters (keyed on `sender`, `sender_domain`, or nothing) the message counts against once,
   * whatever its domains; their wait is bounded by the shortest `limiterWaitMs` of its domains.
   */
  limiters: Schema.Array(ExplainedLimiter),
  domains: Schema.Array(ExplainedDomain),
  warnings: strings
}).annotations({ identifier: "ExplainReport" })

/**
 * @since 0.1.0
 * @category models
 */
export interface ExplainReport extends Schema.Schema.Type<typeof ExplainReport> {}
