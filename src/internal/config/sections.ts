/**
 * What every Stalwart version has below `[queue]` and `[remote]`, so that nothing in a file is read silently as a
 * default: a table or key the transport reads is loaded; one Stalwart has but a transport does not use is listed once
 * as "not used by the transport"; one of another version is an error naming its version; anything else below
 * `[queue]` or `[remote]` is an error with a "did you mean". Other top-level tables (`[server]`, `[storage]`,
 * `[session]` …) belong to other subsystems and are ignored.
 */
import type { Layout } from "./keys.js"

/** The top-level tables of the layouts' outbound settings. @internal */
export const LAYOUT_TABLES: { readonly [L in Exclude<Layout, "json">]: ReadonlyArray<string> } = {
  outbound: ["queue.outbound", "remote"],
  strategies: ["queue.strategy", "queue.route", "queue.connection", "queue.tls", "queue.source-ip"]
}

/**
 * The outbound limiters' tables, read in both TOML layouts (internal/config/limiters.ts): `[queue.limiter.outbound.<id>]`
 * (v0.11.4+, v0.13–v0.15) and `[[queue.throttle]]` (v0.7–v0.11.3, so only next to `[queue.outbound]`).
 *
 * @internal
 */
export const LIMITER_TABLE = "queue.limiter"

/** @internal */
export const THROTTLE_TABLE = "queue.throttle"

/**
 * The delivery schedules (internal/config/schedule.ts): `[queue.schedule]` beside `[queue.outbound]` (v0.7–v0.12),
 * `[queue.schedule.<name>]` beside `[queue.strategy]` (v0.13–v0.15).
 *
 * @internal
 */
export const SCHEDULE_TABLE = "queue.schedule"

/** Stalwart settings below `[queue]` a transport does not use (delivery scheduling, quotas, DSN …), and why. @internal */
export const NOT_USED: ReadonlyArray<{ readonly table: string; readonly what: string }> = [
  { table: "queue.virtual", what: "virtual queues, v0.13+" },
  { table: "queue.quota", what: "queue quotas" },
  { table: "queue.threads", what: "queue worker threads, v0.11.2+" },
  { table: "queue.hash", what: "queue sharding" },
  { table: "queue.path", what: "the queue's spool directory, v0.6 and earlier" },
  { table: "queue.dsn", what: "DSN settings" },
  { table: "queue.outbound.dsn", what: "DSN settings" }
]

/** Keys and tables of other Stalwart versions, with the version and what replaced them. @internal */
export const OTHER_VERSION: ReadonlyArray<{ readonly table: string; readonly why: string }> = [
  { table: "queue.outbound.concurrency", why: "Stalwart v0.11.0–v0.11.1; since v0.11.2 `queue.threads.remote`" },
  {
    table: "queue.outbound.throttle",
    why: "Stalwart before v0.7 (`[[queue.outbound.throttle]]`); since v0.11.4 `[queue.limiter.outbound.<id>]`"
  },
  { table: "queue.outbound.limits.concurrency", why: "no Stalwart version reads it here; see `queue.limiter.outbound`" }
]

/** Names a path under `[queue]`/`[remote]` is matched against for a "did you mean". @internal */
export const KNOWN_QUEUE_TABLES: ReadonlyArray<string> = [
  ...LAYOUT_TABLES.outbound,
  ...LAYOUT_TABLES.strategies,
  LIMITER_TABLE,
  THROTTLE_TABLE,
  SCHEDULE_TABLE,
  ...NOT_USED.map((n) => n.table).filter((t) => t.split(".").length === 2)
]

/** The entry of a list whose table is `path` or a prefix of it. @internal */
export const findTable = <T extends { readonly table: string }>(
  list: ReadonlyArray<T>,
  path: ReadonlyArray<string>
): T | undefined => {
  const dotted = path.join(".")
  return list.find((entry) => dotted === entry.table || dotted.startsWith(`${entry.table}.`))
}
