/**
 * The one key table of `[queue.outbound]`: per key its place in the file, its name in the settings vocabulary
 * (`src/Settings.ts`), the stage that evaluates it, its converter, its default and one line of documentation.
 *
 * Everything else is generated from it: the `Config` type (`ConfigSettings`, by mapped types), the tables and
 * unknown-key checks of the loader (`TABLES`), the settings of each stage (`StageSettings`, checked against the
 * vocabulary below), `explain`'s output and the reference page. A new key, a ninth timeout, is one entry here.
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import type { Variables } from "../../Expression.js"
import type {
  ConnectionSettings,
  DomainSettings,
  HostSettings,
  IpStrategy,
  Layout as SettingsLayout,
  SessionPhase,
  Stage,
  TlsPolicy
} from "../../Settings.js"
import * as Convert from "./convert.js"

/**
 * A setting's value for one delivery. `warning` is set when the configured expression gave a value that could not be
 * used and the key's default was used instead; it names the key, what was found and the default.
 *
 * @internal
 */
export interface Evaluated<A> {
  readonly value: A
  readonly warning: string | null
}

/**
 * One configured key, ready to evaluate. Constant values were converted and checked at load and cost nothing to
 * evaluate; expressions are evaluated without re-parsing.
 *
 * @internal
 */
export interface Setting<A> {
  /** The full key, e.g. `queue.outbound.timeouts.data`. */
  readonly key: string
  readonly stage: Stage
  readonly evaluate: (vars: Variables) => Evaluated<A>
}

/** What a key holds; decides how native TOML values and duration-looking strings are read. @internal */
export type Kind =
  | "hostname"
  | "strategy"
  | "ipv4"
  | "ipv6"
  | "count"
  | "duration"
  | "delay"
  | "tls"
  | "bool"
  | "durations"
  | "attempts"

/** What a default may depend on besides the key: the file's `[lookup.default] hostname` and the machine. @internal */
export interface DefaultContext {
  readonly hostname: string
}

/** The three layouts of Stalwart's outbound configuration (see `Settings.layouts`). @internal */
export type Layout = SettingsLayout

/**
 * The kind of named strategy a key belongs to in the `strategies` and `json` layouts, and so which
 * `[queue.strategy]` expression chooses its value. In the `outbound` layout there is one implicit strategy of each.
 *
 * @internal
 */
export type Group = "route" | "connection" | "tls"

/** @internal */
export const GROUPS: ReadonlyArray<Group> = ["route", "connection", "tls"]

/** @internal */
export interface KeySpec<A, S extends Stage = Stage> {
  /** Below `queue.outbound`, e.g. `["timeouts", "mail-from"]`. */
  readonly path: ReadonlyArray<string>
  /** The strategy the key belongs to in the `strategies` and `json` layouts. */
  readonly group: Group
  /**
   * The key's spelling inside its named strategy: `[queue.<group>.<name>] <strategies>` (v0.13–v0.15) and the field
   * `<json>` of the group's registry object (v0.16). `sourceIp.v4` and `.v6` share one list in both.
   */
  readonly strategies: string
  readonly json: string
  /** The default in the `strategies` and `json` layouts, where Stalwart's differs from the `outbound` one. */
  readonly strategiesFallback?: A
  readonly stage: S
  readonly kind: Kind
  readonly converter: Convert.Converter<A>
  /** The default; a function when it depends on the file or the machine. */
  readonly fallback: A | ((context: DefaultContext) => A)
  /** The default in words for the reference, when it is not a plain value. */
  readonly fallbackDoc?: string
  /** One line for the reference. */
  readonly doc: string
  /** The variables an expression of the key may read, where they are not its stage's (the schedule's). */
  readonly variables?: ReadonlyArray<string>
}

/** Where a key is spelled in each layout: `[outbound path, group, strategies key, json field]`. */
type Spelling = readonly [path: string, group: Group, strategies: string, json: string]

const key = <A, S extends Stage>(
  [path, group, strategies, json]: Spelling,
  stage: S,
  kind: Kind,
  converter: Convert.Converter<A>,
  fallback: KeySpec<A>["fallback"],
  doc: string,
  fallbackDoc?: string
): KeySpec<A, S> => ({
  path: path.split("."),
  group,
  strategies,
  json,
  stage,
  kind,
  converter,
  fallback,
  doc,
  ...(fallbackDoc === undefined ? {} : { fallbackDoc })
})

const timeout = <S extends Stage>(
  phase: string,
  group: Group,
  json: string,
  stage: S,
  minutes: number,
  doc: string
) => key([`timeouts.${phase}`, group, `timeout.${phase}`, json], stage, "duration", Convert.duration, Duration.minutes(minutes), doc)

/**
 * The table, in file order (which is the order of every listing generated from it). The property is the key's name in
 * the settings vocabulary, dotted where it nests: `"timeouts.mail-from"` is `settings.timeouts["mail-from"]`.
 *
 * @internal
 */
export const KEYS = {
  ehloName: key(
    ["hostname", "connection", "ehlo-hostname", "ehloHostname"],
    "connection",
    "hostname",
    Convert.hostname,
    (context: DefaultContext) => context.hostname,
    "The EHLO name.",
    "`[server] hostname` of the same file (Stalwart v0.11.2+; `SystemSettings.defaultHostname` in JSON), else " +
      "`[lookup.default] hostname` (v0.7–v0.11.1, `[queue.outbound]` files only), else the machine's host name, " +
      "else `localhost`; per source address `[queue.source-ip.\"<ip>\"] ehlo-hostname` / `sourceIps[].ehloHostname` " +
      "come first"
  ),
  ipStrategy: key<IpStrategy, "host">(
    ["ip-strategy", "route", "ip-lookup", "ipLookupStrategy"],
    "host",
    "strategy",
    Convert.ipStrategy,
    "ipv4_then_ipv6",
    "Which address families of an MX host are tried, in which order."
  ),
  "sourceIp.v4": key<ReadonlyArray<string>, "host">(
    ["source-ip.v4", "connection", "source-ips", "sourceIps"],
    "host",
    "ipv4",
    Convert.ipv4List,
    [],
    "IPv4 source addresses to bind, one picked at random per connection; empty: the OS picks."
  ),
  "sourceIp.v6": key<ReadonlyArray<string>, "host">(
    ["source-ip.v6", "connection", "source-ips", "sourceIps"],
    "host",
    "ipv6",
    Convert.ipv6List,
    [],
    "IPv6 source addresses to bind, one picked at random per connection; empty: the OS picks."
  ),
  "limits.mx": key(
    ["limits.mx", "route", "limits.mx", "maxMxHosts"],
    "domain",
    "count",
    Convert.positiveInteger,
    5,
    "How many MX hosts of a domain are tried."
  ),
  "limits.multihomed": key(
    ["limits.multihomed", "route", "limits.multihomed", "maxMultihomed"],
    "domain",
    "count",
    Convert.positiveInteger,
    2,
    "How many addresses of one MX host are tried."
  ),
  limiterWait: key(
    ["limiter-wait", "route", "limiter-wait", "limiterWait"],
    "domain",
    "duration",
    Convert.duration,
    Duration.minutes(5),
    "How long a delivery waits for its turn under an outbound limiter before it is deferred (this library's extension)."
  ),
  "timeouts.connect": timeout("connect", "connection", "connectTimeout", "connection", 5, "Bounds the TCP connection to one address."),
  "timeouts.greeting": timeout("greeting", "connection", "greetingTimeout", "connection", 5, "Bounds the wait for the server's 220 greeting."),
  "timeouts.tls": timeout("tls", "tls", "tlsTimeout", "connection", 3, "Bounds STARTTLS and the TLS handshake together."),
  "timeouts.ehlo": timeout("ehlo", "connection", "ehloTimeout", "connection", 5, "Bounds EHLO (or HELO) and its reply."),
  "timeouts.mail-from": timeout("mail-from", "connection", "mailFromTimeout", "connection", 5, "Bounds MAIL FROM and its reply."),
  "timeouts.rcpt-to": timeout("rcpt-to", "connection", "rcptToTimeout", "connection", 5, "Bounds each RCPT TO and its reply."),
  "timeouts.data": timeout("data", "connection", "dataTimeout", "connection", 10, "Bounds DATA, its 354, the message and the final reply."),
  "timeouts.mta-sts": {
    ...timeout("mta-sts", "tls", "mtaStsTimeout", "domain", 10, "Bounds the MTA-STS policy lookup (TXT and HTTPS fetch)."),
    // Stalwart v0.13+ lowered it from 10 to 5 minutes.
    strategiesFallback: Duration.minutes(5)
  },
  "tls.starttls": key<TlsPolicy, "host">(
    ["tls.starttls", "tls", "starttls", "startTls"],
    "host",
    "tls",
    Convert.tlsPolicy,
    "optional",
    "Whether STARTTLS is used: optional (any certificate, RFC 7435), require (a verified one) or disable."
  ),
  "tls.mtaSts": key<TlsPolicy, "domain">(
    ["tls.mta-sts", "tls", "mta-sts", "mtaSts"],
    "domain",
    "tls",
    Convert.tlsPolicy,
    "optional",
    "Whether MTA-STS (RFC 8461) is consulted and enforced: optional, require or disable."
  ),
  "tls.dane": key<TlsPolicy, "host">(
    ["tls.dane", "tls", "dane", "dane"],
    "host",
    "tls",
    Convert.tlsPolicy,
    "optional",
    "Whether DANE (RFC 7672) is used: optional (where secure usable TLSA records exist), require or disable."
  ),
  "tls.allowInvalidCerts": key(
    ["tls.allow-invalid-certs", "tls", "allow-invalid-certs", "allowInvalidCerts"],
    "host",
    "bool",
    Convert.boolean,
    false,
    "Accept a certificate that does not verify where TLS is required (never under an enforced MTA-STS policy or DANE)."
  ),
  "reuse.messages": key(
    ["reuse.messages", "connection", "reuse.messages", "reuseMessages"],
    "connection",
    "count",
    Convert.positiveInteger,
    100,
    "How many messages one connection carries before QUIT; 1 turns reuse off (this library's extension)."
  ),
  "reuse.idle": key(
    ["reuse.idle", "connection", "reuse.idle", "reuseIdle"],
    "connection",
    "duration",
    Convert.duration,
    Duration.seconds(5),
    "How long a connection waits idle for the next message before QUIT (this library's extension)."
  ),
  "reuse.age": key(
    ["reuse.age", "connection", "reuse.age", "reuseAge"],
    "connection",
    "duration",
    Convert.duration,
    Duration.minutes(5),
    "How long after it was opened a connection may still take a message (this library's extension)."
  ),
  connectionAttemptDelay: key<Option.Option<Duration.Duration>, "host">(
    ["connection-attempt-delay", "connection", "connection-attempt-delay", "connectionAttemptDelay"],
    "host",
    "delay",
    Convert.attemptDelay,
    Option.some(Duration.millis(250)),
    "RFC 8305's delay between staggered connection attempts; false: one address at a time."
  )
} as const

/** @internal */
export type Table = typeof KEYS

/** @internal */
export type Name = keyof Table

/** The value type of a table entry. @internal */
export type ValueOf<N extends Name> = Table[N] extends KeySpec<infer A, any> ? A : never

type Head<K extends string> = K extends `${infer H}.${string}` ? H : K

/** `{ "a.b": X, c: Y }` → `{ a: { b: X }, c: Y }` */
type Nest<T> = {
  readonly [H in Head<keyof T & string>]: H extends keyof T ? T[H]
    : Nest<{ [K in keyof T & string as K extends `${H}.${infer R}` ? R : never]: T[K] }>
}

/**
 * The configured keys in the shape of the vocabulary: `config.timeouts["mail-from"]` is a `Setting<Duration>`.
 *
 * @internal
 */
export type ConfigSettings = Nest<{ [N in Name]: Setting<ValueOf<N>> }>

/**
 * The settings a stage evaluates, in the shape of the vocabulary.
 *
 * @internal
 */
export type StageSettings<S extends Stage> = Nest<
  { [N in Name as Table[N]["stage"] extends S ? N : never]: ValueOf<N> }
>

// The table speaks the vocabulary: every stage's keys are exactly that stage's settings in src/Settings.ts, so a key
// added here without its setting there (or the reverse) fails to compile.
type Same<X, Y> = [X] extends [Y] ? [Y] extends [X] ? true : false : false
type SameKeys<X, Y> = Same<keyof X, keyof Y>
type Check<T extends true> = T
/** @internal */
export type VocabularyCheck = [
  // `route` comes from ROUTE_KEY (relays.ts), the rest of the domain's settings from the table.
  Check<Same<StageSettings<"domain">, Omit<DomainSettings, "route">>>,
  Check<SameKeys<StageSettings<"domain">, Omit<DomainSettings, "route">>>,
  Check<SameKeys<StageSettings<"domain">["timeouts"], DomainSettings["timeouts"]>>,
  Check<SameKeys<StageSettings<"domain">["tls"], DomainSettings["tls"]>>,
  Check<Same<StageSettings<"host">, HostSettings>>,
  Check<SameKeys<StageSettings<"host">, HostSettings>>,
  Check<SameKeys<StageSettings<"host">["tls"], HostSettings["tls"]>>,
  Check<Same<StageSettings<"connection">, ConnectionSettings>>,
  Check<SameKeys<StageSettings<"connection">, ConnectionSettings>>,
  Check<Same<keyof StageSettings<"connection">["timeouts"], SessionPhase>>
]

/** One table entry with its name. @internal */
export interface Entry {
  readonly name: Name
  /** `name` split at its dots: where the setting sits in `Config` and in the stage's settings. */
  readonly at: ReadonlyArray<string>
  readonly spec: KeySpec<unknown>
}

/** @internal */
export const ENTRIES: ReadonlyArray<Entry> = (Object.keys(KEYS) as Array<Name>).map((name) => ({
  name,
  at: name.split("."),
  spec: KEYS[name] as KeySpec<unknown>
}))

/** The entries of a stage, in table order. @internal */
export const stageEntries = (stage: Stage): ReadonlyArray<Entry> => ENTRIES.filter((e) => e.spec.stage === stage)

/**
 * `next-hop`, the route: not an entry of the table since its value names a `[remote.<id>]` table of the same file
 * and an unknown name fails the delivery rather than falling back to a default (`relays.ts` reads both). It is the
 * route selector of the `outbound` layout in the model (`model.ts`).
 *
 * @internal
 */
export const ROUTE_KEY = { path: ["next-hop"], stage: "domain" } as const

/**
 * Sub-keys per table below `queue.outbound` ("" is the section itself), in table order, for the structure check and
 * unknown-key messages.
 *
 * @internal
 */
export const TABLES: { readonly [table: string]: ReadonlyArray<string> } = (() => {
  const tables: { [table: string]: Array<string> } = { "": [] }
  const add = (path: ReadonlyArray<string>) => {
    for (let depth = 0; depth < path.length; depth++) {
      const table = path.slice(0, depth).join(".")
      const names = (tables[table] ??= [])
      if (!names.includes(path[depth]!)) names.push(path[depth]!)
    }
  }
  for (const { spec } of ENTRIES) add(spec.path)
  add(ROUTE_KEY.path)
  return tables
})()

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

/**
 * The variables of the delivery schedule and its selector (`[queue.schedule]`, `[queue.strategy] schedule`):
 * Stalwart's rcpt variables, which are the domain stage's here plus what only a queue knows (`source` is `"dsn"` for a
 * delivery status notification, `notify_num` the delay notices sent, `queue_age` the seconds since the message was
 * queued).
 *
 * @internal
 */
export const SCHEDULE_VARIABLES: ReadonlyArray<string> = [...DOMAIN_VARIABLES, "source", "notify_num", "queue_age"]

/** The fields of a delivery schedule, by their names in code. @internal */
export type ScheduleName = "retry" | "notify" | "expire" | "maxAttempts"

/** @internal */
export interface ScheduleValues {
  readonly retry: ReadonlyArray<Duration.Duration>
  readonly notify: ReadonlyArray<Duration.Duration>
  readonly expire: Duration.Duration
  /** None: the schedule expires by `expire` (a TTL). */
  readonly maxAttempts: Option.Option<number>
}

/**
 * A key of a delivery schedule: its spelling in each layout, its converter and its default in each layout (a named
 * schedule's defaults differ from `[queue.schedule]`'s, and v0.16's from v0.13's).
 *
 * @internal
 */
export interface ScheduleKeySpec<A> {
  /** Below `[queue.schedule]` (v0.7–v0.12; `max-attempts` is this library's extension there). */
  readonly path: string
  /** In `[queue.schedule.<name>]` (v0.13–v0.15). */
  readonly strategies: string
  /** The field of an `MtaDeliverySchedule` (v0.16). */
  readonly json: string
  readonly stage: "domain"
  readonly variables: ReadonlyArray<string>
  readonly kind: Kind
  readonly converter: Convert.Converter<A>
  /** The default of `[queue.schedule]` (v0.7–v0.12). */
  readonly fallback: A
  /** The default in a `[queue.schedule.<name>]` table; undefined: the key is required. */
  readonly strategiesFallback: A | undefined
  /** The default in an `MtaDeliverySchedule` object. */
  readonly jsonFallback: A
  readonly doc: string
}

const minutes = (...list: ReadonlyArray<number>) => list.map((m) => Duration.minutes(m))
const RETRY = [...minutes(2, 5, 10, 15, 30), Duration.hours(1), Duration.hours(2)]

/**
 * The schedule's key table, in file order: `[queue.schedule]` (v0.7–v0.12, each an expression of the
 * {@link SCHEDULE_VARIABLES}), `[queue.schedule.<name>]` (v0.13–v0.15, plain values) and `MtaDeliverySchedule`
 * (v0.16).
 *
 * @internal
 */
export const SCHEDULE_KEYS: { readonly [N in ScheduleName]: ScheduleKeySpec<ScheduleValues[N]> } = {
  retry: {
    path: "retry",
    strategies: "retry",
    json: "retry",
    stage: "domain",
    variables: SCHEDULE_VARIABLES,
    kind: "durations",
    converter: Convert.durationList(1),
    fallback: RETRY,
    strategiesFallback: undefined,
    jsonFallback: [...RETRY, Duration.days(1), Duration.days(3)],
    doc: "The wait after each attempt that left the recipient undelivered: the n-th wait after the n-th attempt, the " +
      "last one repeated. At least one; required in a named schedule."
  },
  notify: {
    path: "notify",
    strategies: "notify",
    json: "notify",
    stage: "domain",
    variables: SCHEDULE_VARIABLES,
    kind: "durations",
    converter: Convert.durationList(0),
    fallback: [Duration.days(1), Duration.days(3)],
    strategiesFallback: [],
    jsonFallback: [Duration.days(1), Duration.days(3)],
    doc: "When, after the message was queued, its sender gets a delay notification (RFC 3464) while a recipient is " +
      "still being retried; empty: never."
  },
  expire: {
    path: "expire",
    strategies: "expire",
    json: "expiry.expire",
    stage: "domain",
    variables: SCHEDULE_VARIABLES,
    kind: "duration",
    converter: Convert.duration,
    fallback: Duration.days(5),
    strategiesFallback: Duration.days(3),
    jsonFallback: Duration.days(3),
    doc: "How long after the message was queued a recipient still undelivered is given up (failed, with a " +
      "notification to the sender)."
  },
  maxAttempts: {
    path: "max-attempts",
    strategies: "max-attempts",
    json: "expiry.maxAttempts",
    stage: "domain",
    variables: SCHEDULE_VARIABLES,
    kind: "attempts",
    converter: Convert.maxAttempts,
    fallback: Option.none(),
    strategiesFallback: Option.none(),
    jsonFallback: Option.none(),
    doc: "Give a recipient up after this many attempts instead of after `expire` (v0.13+; in `[queue.schedule]` " +
      "this library's extension, false: by `expire`). Not with `expire` in a named schedule."
  }
}

/** @internal */
export const SCHEDULE_NAMES: ReadonlyArray<ScheduleName> = ["retry", "notify", "expire", "maxAttempts"]

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
