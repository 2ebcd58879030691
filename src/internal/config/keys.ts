/**
 * The `[queue.outbound]` keys this library implements: where each lives, when it is evaluated, what it converts to,
 * and the default it falls back to.
 */
import { Duration, Option } from "effect"
import type { IpStrategy, Stage, TlsPolicy } from "../../OutboundConfig.js"
import * as Convert from "./convert.js"

/** What a key holds; decides how native TOML values and duration-looking strings are read. @internal */
export type Kind = "hostname" | "strategy" | "ipv4" | "ipv6" | "count" | "duration" | "delay" | "tls" | "bool"

/** @internal */
export interface KeySpec<A> {
  /** Below `queue.outbound`. */
  readonly path: ReadonlyArray<string>
  readonly stage: Stage
  readonly kind: Kind
  readonly converter: Convert.Converter<A>
  readonly fallback: A
}

const spec = <A>(
  path: ReadonlyArray<string>,
  stage: Stage,
  kind: Kind,
  converter: Convert.Converter<A>,
  fallback: A
): KeySpec<A> => ({ path, stage, kind, converter, fallback })

const timeout = (name: string, stage: Stage, minutes: number) =>
  spec(["timeouts", name], stage, "duration", Convert.duration, Duration.minutes(minutes))

/** The hostname's default depends on the file (`[lookup.default] hostname`) and the machine; see OutboundConfig. */
export const hostname = (fallback: string): KeySpec<string> =>
  spec(["hostname"], "connection", "hostname", Convert.hostname, fallback)

/** @internal */
export const KEYS = {
  ipStrategy: spec<IpStrategy>(["ip-strategy"], "host", "strategy", Convert.ipStrategy, "ipv4_then_ipv6"),
  sourceIpV4: spec<ReadonlyArray<string>>(["source-ip", "v4"], "host", "ipv4", Convert.ipv4List, []),
  sourceIpV6: spec<ReadonlyArray<string>>(["source-ip", "v6"], "host", "ipv6", Convert.ipv6List, []),
  limitsMx: spec(["limits", "mx"], "domain", "count", Convert.positiveInteger, 5),
  limitsMultihomed: spec(["limits", "multihomed"], "domain", "count", Convert.positiveInteger, 2),
  timeoutConnect: timeout("connect", "connection", 5),
  timeoutGreeting: timeout("greeting", "connection", 5),
  timeoutTls: timeout("tls", "connection", 3),
  timeoutEhlo: timeout("ehlo", "connection", 5),
  timeoutMailFrom: timeout("mail-from", "connection", 5),
  timeoutRcptTo: timeout("rcpt-to", "connection", 5),
  timeoutData: timeout("data", "connection", 10),
  timeoutMtaSts: timeout("mta-sts", "domain", 10),
  tlsStarttls: spec<TlsPolicy>(["tls", "starttls"], "host", "tls", Convert.tlsPolicy, "optional"),
  tlsMtaSts: spec<TlsPolicy>(["tls", "mta-sts"], "domain", "tls", Convert.tlsPolicy, "optional"),
  tlsAllowInvalidCerts: spec(["tls", "allow-invalid-certs"], "host", "bool", Convert.boolean, false),
  connectionAttemptDelay: spec<Option.Option<Duration.Duration>>(
    ["connection-attempt-delay"],
    "host",
    "delay",
    Convert.attemptDelay,
    Option.some(Duration.millis(250))
  )
} as const

/** Stalwart `queue.outbound` keys this library reads past with a warning instead of an error. @internal */
export const UNIMPLEMENTED: ReadonlyArray<{ readonly path: ReadonlyArray<string>; readonly why: string }> = [
  { path: ["next-hop"], why: "relay routing (next-hop, remote hosts) is not implemented: delivery always goes by MX" },
  { path: ["tls", "dane"], why: "DANE is not implemented: TLSA records are not consulted" }
]

/** Sub-keys per table below `queue.outbound` ("" is the section itself), for unknown-key messages. @internal */
export const TABLES: { readonly [table: string]: ReadonlyArray<string> } = {
  "": ["hostname", "ip-strategy", "source-ip", "limits", "timeouts", "tls", "connection-attempt-delay", "next-hop"],
  "source-ip": ["v4", "v6"],
  limits: ["mx", "multihomed"],
  timeouts: ["connect", "greeting", "tls", "ehlo", "mail-from", "rcpt-to", "data", "mta-sts"],
  tls: ["starttls", "mta-sts", "allow-invalid-certs", "dane"]
}

const DOMAIN_VARIABLES = [
  "sender",
  "sender_domain",
  "rcpt",
  "rcpt_domain",
  "recipients",
  "priority",
  "retry_num",
  "last_error",
  "last_status",
  "expires_in",
  "queue_name"
] as const

/** The delivery variables known when a key of that stage is evaluated. @internal */
export const STAGE_VARIABLES: { readonly [S in Stage]: ReadonlyArray<string> } = {
  domain: DOMAIN_VARIABLES,
  host: [...DOMAIN_VARIABLES, "mx"],
  connection: [...DOMAIN_VARIABLES, "mx", "remote_ip", "local_ip"]
}

/** How a stage reads in a sentence. @internal */
export const STAGE_WORDS: { readonly [S in Stage]: string } = {
  domain: "once per destination domain",
  host: "once per MX host",
  connection: "once per connection"
}
