/**
 * The configuration reference, rendered from the key table: what the docs say is what the loader reads, in the
 * spelling of each of Stalwart's layouts.
 */
import * as Keys from "./keys.js"
import * as Layouts from "./layouts.js"
import { JSON_OBJECT } from "./model.js"
import * as Sections from "./sections.js"
import { REMOTE_REFERENCE } from "./relays.js"
import { renderDefault } from "./setting.js"

const STAGE_TEXT = {
  domain: "domain",
  host: "host (+ `mx`)",
  connection: "connection (+ `remote_ip`, `local_ip`)"
} as const

const cell = (text: string) => text.replace(/\|/g, "\\|").replace(/\n/g, " ")

/** @internal */
export const renderReference = (): string => {
  const rows = Keys.ENTRIES.map(({ name, spec }) => {
    const fallback = spec.fallbackDoc ?? `\`${renderDefault(spec.fallback)}\``
    const later = spec.strategiesFallback === undefined ? "" : ` (v0.13+: \`${renderDefault(spec.strategiesFallback)}\`)`
    return `| \`${spec.path.join(".")}\` | \`[queue.${spec.group}.<name>] ${spec.strategies}\` | \`${
      JSON_OBJECT[spec.group]
    }.${spec.json}\` | \`${name}\` | ${STAGE_TEXT[spec.stage]} | ${cell(fallback + later)} | ${
      cell(spec.converter.expected)
    } | ${cell(spec.doc)} |`
  })
  const relay = REMOTE_REFERENCE.map(([key, fallback, accepts, doc]) => {
    const field = Layouts.RELAY_FIELD_NAMES.find((f) => Layouts.relaySpelling(f, false) === key)
    const json = field === undefined ? "" : `\`${Layouts.relaySpelling(field, true)}\``
    return `| \`${key}\` | ${json} | ${fallback} | ${cell(accepts)} | ${cell(doc)} |`
  })
  const scheduleDefault = (value: unknown) => value === undefined ? "required" : `\`${renderDefault(value)}\``
  const schedule = Keys.SCHEDULE_NAMES.map((n) => {
    const spec = Keys.SCHEDULE_KEYS[n] as Keys.ScheduleKeySpec<unknown>
    const none = (value: unknown) =>
      Array.isArray(value) && value.length === 0 ? "`[]` (none)" : n === "maxAttempts" ? "`false` (by `expire`)" : scheduleDefault(value)
    return `| \`${spec.path}\` | \`${spec.strategies}\` | \`${spec.json}\` | ${none(spec.fallback)} | ${
      none(spec.strategiesFallback)
    } | ${n === "maxAttempts" ? "`5` with an `Attempts` expiry" : none(spec.jsonFallback)} | ${cell(spec.converter.expected)} | ${
      cell(spec.doc)
    } |`
  })
  return [
    "# Configuration reference",
    "",
    "Generated from the key table (`src/internal/config/keys.ts`). Each key is spelled three ways, one per Stalwart " +
    "layout (see [stalwart-compatibility.md](../stalwart-compatibility.md)): a key of `[queue.outbound]` (v0.7–v0.12; " +
    "a plain value, an expression or an if-list), a key of a named strategy table (v0.13–v0.15; a plain value) and a " +
    "field of a v0.16 registry object (JSON; durations in milliseconds). The stage says when it is evaluated and so " +
    "which variables an expression may read.",
    "",
    "| `[queue.outbound]` | v0.13–v0.15 | v0.16 | name in code | stage | default | accepts | meaning |",
    "|---|---|---|---|---|---|---|---|",
    ...rows,
    "",
    "## Strategy selectors",
    "",
    "| strategy | v0.7–v0.12 | v0.13–v0.15 | v0.16 | evaluated with | default (v0.13+) |",
    "|---|---|---|---|---|---|",
    "| route | `queue.outbound.next-hop` (a `[remote.<id>]` name, `'local'`, or false for MX) | " +
    "`[queue.strategy] route` | `MtaOutboundStrategy.route` | the domain variables | `'mx'` |",
    "| connection | (one implicit strategy) | `[queue.strategy] connection` | `MtaOutboundStrategy.connection` | " +
    "the domain variables and `mx` | `'default'` |",
    "| tls | (one implicit strategy) | `[queue.strategy] tls` | `MtaOutboundStrategy.tls` | the domain variables " +
    "and `mx` (`\"\"` for the MTA-STS keys, evaluated per domain) | `'invalid-tls'` on a retry after a TLS error, " +
    "else `'default'` |",
    "| schedule | (one schedule, named `default`) | `[queue.strategy] schedule` | `MtaOutboundStrategy.schedule` | " +
    "the domain variables and `source` (`'dsn'` for a delivery status notification), `notify_num`, `queue_age` | " +
    "`'dsn'` when `source == 'dsn'`, `'report'` when `source == 'report'`, else `'remote'` |",
    "",
    "Built-in strategies (a file may redefine them): routes `mx` and `local`, connection `default`, TLS `default` and " +
    "`invalid-tls` (`allow-invalid-certs = true`). A literal name no strategy has is an error at load. A name no " +
    "strategy has, computed at delivery time: for a connection or TLS strategy, Stalwart's default strategy and a " +
    "warning; for a route, the domain's delivery fails (kind `route`, deferred), never sent by MX instead.",
    "",
    "## Delivery schedule",
    "",
    "When a recipient not delivered yet is retried, when its sender is told (a delay notification, RFC 3464), and " +
    "when it is given up (failed, with a notification). `[queue.schedule]` beside `[queue.outbound]` (v0.7–v0.12: " +
    "each key a value, an expression or an if-list of the schedule variables), `[queue.schedule.<name>]` tables chosen " +
    "by `[queue.strategy] schedule` (v0.13–v0.15, plain values; `queue-name` and the `[queue.virtual.<name>]` it " +
    "names are read and carried, not used) and " +
    "`MtaDeliverySchedule` objects chosen by `MtaOutboundStrategy.schedule` (v0.16: durations in milliseconds, " +
    "`\"retry\": \"default\"` for the default list, `expiry` `{ \"@type\": \"Ttl\", \"expire\" }` or " +
    "`{ \"@type\": \"Attempts\", \"maxAttempts\" }`). The outbox evaluates it per recipient (`Config.schedule`).",
    "",
    "| `[queue.schedule]` | `[queue.schedule.<name>]` | `MtaDeliverySchedule` | default v0.7–v0.12 | " +
    "default v0.13–v0.15 | default v0.16 | accepts | meaning |",
    "|---|---|---|---|---|---|---|---|",
    ...schedule,
    "",
    "Built-in schedules of v0.13+ (Stalwart's first-boot ones; a file may redefine them): `remote` and `local` (retry " +
    "2m … 2h, notify 1d and 3d, expire 3d), `dsn` (retry 15m, 30m, 1h, 2h; no notify; 10 attempts), `report` " +
    "(retry 30m, 1h, 2h; no notify; 8 attempts). A named schedule sets `expire` or `max-attempts`, not both. A literal " +
    "name no schedule has is an error at load; the name `default`, or a computed name no schedule has, is Stalwart's " +
    "fallback (retry 2m … 2h, notify 1d and 3d, expire 5d), with a warning for a name other than `default`.",
    "",
    "## Routes",
    "",
    "`[queue.route.<name>] type = \"mx\" | \"relay\" | \"local\"` (v0.13–v0.15), `MtaRoute` objects with " +
    "`\"@type\": \"Mx\" | \"Relay\" | \"Local\"` (v0.16), `[remote.<id>]` relays (v0.7–v0.12). An `mx` route holds " +
    "the route keys above (`limits`, `ip-lookup`); a relay route (plain values in every layout; `tls.implicit` is " +
    "false by default in JSON, as in v0.16):",
    "",
    "| TOML | JSON | default | accepts | meaning |",
    "|---|---|---|---|---|",
    ...relay,
    "",
    "Per source address: `[queue.source-ip.\"<ip>\"] ehlo-hostname` (v0.13–v0.15), `sourceIps[].ehloHostname` " +
    "(v0.16): the EHLO name of connections bound to that address.",
    "",
    "## Not used, or refused",
    "",
    "Stalwart settings recognised and listed once as not used by the transport:",
    "",
    ...Sections.NOT_USED.map(({ table, what }) => `- \`${table}\`: ${what}`),
    "",
    "Settings of other Stalwart versions (errors that name the version):",
    "",
    ...Sections.OTHER_VERSION.map(({ table, why }) => `- \`${table}\`: ${cell(why)}`),
    ""
  ].join("\n")
}
