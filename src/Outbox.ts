/**
 * A durable outbox: messages stored in SQL, each delivered by a durable workflow (`@effect/workflow`) that retries
 * on the configured schedule (Stalwart's `[queue.schedule]`), until every recipient is delivered, failed or expired,
 * with delivery status notifications to the sender at the `notify` points and on failure.
 *
 * Engines, one code: `layerSqlite` runs everything in one process on a SQLite file (a single-runner cluster);
 * `layerPg` is a runner of a cluster of processes sharing PostgreSQL (`@effect/cluster`). Every attempt for a
 * recipient domain is sent to an entity keyed by the domain's primary MX host, so one runner at a time holds the
 * host, and the connection pool and limiters of its `Transport` layer see every delivery to it in the cluster.
 * `layerClient` enqueues and reads without running anything (the CLI's `outbox enqueue`, `status`, `list`);
 * `layerTest` is the in-memory workflow engine on SQLite in memory, for tests on `TestClock`.
 *
 * The outbox's packages (`@effect/cluster`, `@effect/workflow`, `@effect/sql`, `@effect/rpc`, and the driver:
 * `@effect/sql-sqlite-node` or `@effect/sql-pg`) are optional peer dependencies: only this module loads them, and
 * the drivers are loaded when their layer is built. docs/outbox.md has the design and the guarantees.
 *
 * @since 0.3.0
 */
import * as RunnerAddress from "@effect/cluster/RunnerAddress"
import * as RunnerHealth from "@effect/cluster/RunnerHealth"
import * as Runners from "@effect/cluster/Runners"
import * as RunnerStorage from "@effect/cluster/RunnerStorage"
import * as Sharding from "@effect/cluster/Sharding"
import * as ShardingConfig from "@effect/cluster/ShardingConfig"
import * as SqlMessageStorage from "@effect/cluster/SqlMessageStorage"
import * as SqlRunnerStorage from "@effect/cluster/SqlRunnerStorage"
import type * as SqlClient from "@effect/sql/SqlClient"
import * as WorkflowEngine from "@effect/workflow/WorkflowEngine"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Stream from "effect/Stream"
import type * as Connector from "./Connector.js"
import type * as Dns from "./Dns.js"
import * as core from "./internal/outbox/core.js"
import * as service from "./internal/outbox/service.js"
import * as store from "./internal/outbox/store.js"
import * as workflow from "./internal/outbox/workflow.js"
import type * as MtaSts from "./MtaSts.js"
import type { OutboundConfig } from "./OutboundConfig.js"
import type * as PolicyCache from "./PolicyCache.js"
import type { DeliveryRequest, InvalidRequest } from "./Transport.js"

/**
 * A recipient's state: `queued` (not tried yet), `deferred` (tried, retried at `nextAttemptMs`), `delivered`,
 * `failed` (refused for good), `expired` (given up by the schedule: its TTL or `max-attempts`).
 *
 * @since 0.3.0
 * @category models
 */
export type RecipientState = core.RecipientState

/**
 * @since 0.3.0
 * @category models
 */
export type RecipientStatus = core.RecipientStatus

/**
 * @since 0.3.0
 * @category models
 */
export type AttemptEntry = core.AttemptEntry

/**
 * A message's state: each recipient's, and every attempt made (per domain, the report `Transport.deliver` gave).
 *
 * @since 0.3.0
 * @category models
 */
export type MessageStatus = core.MessageStatus

/**
 * A recipient's state as one write recorded it (`atMs`: its `updatedMs`); it is in SQL when the event is heard.
 *
 * @since 0.3.0
 * @category models
 */
export type StatusEvent = core.StatusEvent

/**
 * The outbox's storage failed (after the retries it makes).
 *
 * @since 0.3.0
 * @category errors
 */
export const OutboxError: typeof core.OutboxError = core.OutboxError

/**
 * @since 0.3.0
 * @category errors
 */
export type OutboxError = core.OutboxError

/**
 * @since 0.3.0
 * @category models
 */
export interface ListOptions {
  /** At most this many messages, newest first. Default 100. */
  readonly limit?: number | undefined
  /** Only messages with a recipient not final. */
  readonly pendingOnly?: boolean | undefined
}

/**
 * @since 0.3.0
 * @category models
 */
export declare namespace Outbox {
  /**
   * @since 0.3.0
   * @category models
   */
  export interface Service {
    /**
     * Checks the request (as `Transport.deliver` does), stores the message, its envelope and every recipient's
     * schedule in one transaction, and returns the message's id. On a runner its workflow begins at once; through
     * `layerClient`, a runner begins it within a second.
     */
    readonly enqueue: (request: DeliveryRequest) => Effect.Effect<string, InvalidRequest | OutboxError>
    readonly status: (id: string) => Effect.Effect<Option.Option<MessageStatus>, OutboxError>
    readonly list: (options?: ListOptions) => Effect.Effect<ReadonlyArray<MessageStatus>, OutboxError>
    /**
     * Recipients' state changes, each once, after it is in SQL: enqueues, attempts' outcomes, expiries. On PostgreSQL
     * every change of the cluster (any runner's, any client's enqueue), announced by the transaction that records it
     * (`pg_notify` on `<prefix>_events`) and heard in commit order, from the moment the layer listens: the stream
     * starts once the layer's one LISTEN session (shared by its subscribers) has heard its first probe back, typically
     * within milliseconds of the first subscription, at once for a later one; it listens again after a lost
     * connection, and the changes made while it did not listen are not replayed (`status` has them). On SQLite the
     * changes this process records from the moment of subscription. docs/outbox.md, "Status events".
     */
    readonly events: Stream.Stream<StatusEvent>
  }
}

/**
 * @since 0.3.0
 * @category tags
 */
export const Outbox: typeof service.Outbox = service.Outbox

/**
 * @since 0.3.0
 * @category tags
 */
export type Outbox = service.Outbox

/**
 * Options every layer takes.
 *
 * @since 0.3.0
 * @category options
 */
export interface Options {
  /**
   * The outbox's table names start with `<prefix>_`, the cluster's with `<prefix>_cluster_`; default `outbox`.
   * Several outboxes (or test runs) can share one database under different prefixes.
   */
  readonly prefix?: string | undefined
  /** `Reporting-MTA` of the DSNs; default: the configuration's `hostname` for the message's sender. */
  readonly reportingMta?: string | undefined
  /** A runner's attempts at once (domain attempts, each one SMTP transaction); default 100. */
  readonly concurrency?: number | undefined
  /**
   * A runner's watchdog: a message whose pending recipient has been due for longer than this with no attempt
   * holding it has a stalled workflow, which the runner brings back (docs/outbox.md); default 20 seconds. A running
   * workflow attempts a due recipient within seconds, so this bounds how long the cluster can lose a message.
   */
  readonly stallAfter?: Duration.DurationInput | undefined
}

/**
 * What a runner delivers with: the configuration and the services `Transport.layer` provides. Its
 * `ConnectionPool.ConnectionPool` and `Limiter.Limiter`, when present (`Transport.layer` provides both), are shared
 * by every delivery of the runner; without them each attempt has its own.
 *
 * @since 0.3.0
 * @category models
 */
export type RunnerRequirements =
  | OutboundConfig
  | Dns.Dns
  | Connector.Connector
  | MtaSts.PolicyFetcher
  | PolicyCache.PolicyCache

const prefixOf = (options: Options) => options.prefix ?? "outbox"

const coreOf = (options: Options) =>
  service.coreLayer(prefixOf(options), { reportingMta: options.reportingMta })

/** The workflow, the domain entity and the service, on a cluster's `Sharding` and storage. */
const clusterRunner = (options: Options) =>
  service.clusterRunnerLayer(
    prefixOf(options),
    { reportingMta: options.reportingMta },
    options.concurrency ?? 100,
    { ...service.defaultSweep, stallAfter: options.stallAfter ?? service.defaultSweep.stallAfter }
  )

/**
 * Sharding settings that suit an outbox: storage polled every second, so that timed wake-ups are not late by ten.
 *
 * A runner that stops (or hands a shard over) gives each entity's requests `entityTerminationTimeout` to end, then
 * interrupts them. That wait is not what keeps an SMTP transaction whole: the attempt runs from its claim to the
 * write of its outcome in a region nothing interrupts (deliverDomain), so a stop waits for it whatever this bound,
 * for as long as the transaction's phase timeouts let it run. What is interrupted is replayable: a workflow's run
 * and its step resume on the runner that takes the shard, and an attempt not begun is made there. A long bound (it
 * was five minutes) let the stop wait on requests that cannot end while the runner stops: a run waiting for a step
 * whose domain entity is on a shard this runner holds until its entities end (issue 19's slow stop).
 */
const shardingDefaults: Partial<ShardingConfig.ShardingConfig["Type"]> = {
  entityMessagePollInterval: "1 second",
  entityTerminationTimeout: "3 seconds"
}

/**
 * A cluster's, for a `lease` (6 s by default): a runner that died stops counting once its heartbeat (every third of
 * the lease) is a lease old, or sooner when the health check's pings (as often) fail, and its shards go to the others
 * at the next refresh (every second). Cluster defaults are 35 s, 10 s and 1 min: a killed runner's domains would wait
 * half a minute.
 *
 * The shard locks are rows of the prefix's own table (`<prefix>_cluster_locks`, a lease renewed every third of it),
 * not PostgreSQL advisory locks: an advisory lock is numbered by the shard alone (1000001 + its number), the same in
 * every cluster of the database, so two outboxes on one database under different prefixes (or two test runs, or a
 * benchmark beside them) took each other's shards, and a message whose shard the other cluster held waited, with no
 * runner of its own cluster to run it, until the other let go (issue 19's stuck message).
 */
const clusterDefaults = (lease: Duration.Duration): Partial<ShardingConfig.ShardingConfig["Type"]> => ({
  ...shardingDefaults,
  shardLockDisableAdvisory: true,
  shardLockExpiration: lease,
  shardLockRefreshInterval: Duration.unsafeDivide(lease, 3),
  runnerHealthCheckInterval: Duration.unsafeDivide(lease, 3),
  refreshAssignmentsInterval: "1 second",
  entityMessagePollInterval: "100 millis",
  entityReplyPollInterval: "50 millis"
})

/**
 * Everything in one process on a SQLite file (`@effect/sql-sqlite-node`): a cluster with one runner, its message
 * storage and the outbox's tables in the file. Needs the configuration and `Transport.layer()`.
 *
 * @since 0.3.0
 * @category layers
 */
export const layerSqlite = (
  options: Options & { readonly filename: string }
): Layer.Layer<Outbox, OutboxError, RunnerRequirements> => {
  const prefix = prefixOf(options)
  const sqlite = Layer.unwrapEffect(
    Effect.map(
      Effect.promise(() => import("@effect/sql-sqlite-node/SqliteClient")),
      (m) => m.layer({ filename: options.filename })
    )
  )
  const single = Sharding.layer.pipe(
    Layer.provideMerge(Runners.layerNoop),
    Layer.provideMerge(SqlMessageStorage.layerWith({ prefix: `${prefix}_cluster` })),
    Layer.provide([RunnerStorage.layerMemory, RunnerHealth.layerNoop]),
    Layer.provide(ShardingConfig.layer(shardingDefaults))
  )
  return clusterRunner(options).pipe(
    Layer.provide(single),
    Layer.provide(Layer.mapError(sqlite, (e) => new core.OutboxError({ message: `SQLite: ${e.message}`, cause: e })))
  ) as Layer.Layer<Outbox, OutboxError, RunnerRequirements>
}

/**
 * A runner of a cluster on PostgreSQL (`@effect/sql-pg`): runners reach each other over TCP at `runner` (the
 * address the others use; it listens there too), and keep their shards, messages and the outbox's tables in the
 * database. Start as many as needed, each with its own address.
 *
 * `lease` (default 6 seconds, whole seconds: the cluster stores it so) is how long a runner's shard locks and its
 * heartbeat last; it renews them, and checks the other runners, every third of it. A runner that dies stops counting,
 * and its shards go to the others, within a lease: shorter takes over sooner, at more queries, and a runner whose
 * renewal is late by a third of it (a loaded machine, a slow database) lets its shards go. Every runner of a cluster
 * should have the same. `sharding` overrides any of the cluster's settings.
 *
 * @since 0.3.0
 * @category layers
 */
export const layerPg = (
  options: Options & {
    readonly url: string
    readonly runner: { readonly host: string; readonly port: number }
    readonly lease?: Duration.DurationInput | undefined
    readonly sharding?: Partial<ShardingConfig.ShardingConfig["Type"]> | undefined
  }
): Layer.Layer<Outbox, OutboxError, RunnerRequirements> => {
  const prefix = prefixOf(options)
  const shardingConfig: Partial<ShardingConfig.ShardingConfig["Type"]> = {
    ...clusterDefaults(Duration.decode(options.lease ?? "6 seconds")),
    runnerAddress: Option.some(RunnerAddress.make(options.runner.host, options.runner.port)),
    ...options.sharding
  }
  const configLayer = ShardingConfig.layer(shardingConfig)
  // Built under the prefix's start lock: the storage makes the cluster's tables when built, and runners starting at
  // once on a new prefix would fail on PostgreSQL's catalog.
  const storage = Layer.merge(
    SqlMessageStorage.layerWith({ prefix: `${prefix}_cluster` }),
    Layer.orDie(SqlRunnerStorage.layerWith({ prefix: `${prefix}_cluster` }))
  ).pipe(Layer.provide(configLayer), store.exclusiveLayer(prefix))
  const cluster = Layer.unwrapEffect(
    Effect.map(
      Effect.promise(() => import("@effect/platform-node/NodeClusterSocket")),
      (m) => m.layer({ storage: "byo", shardingConfig })
    )
  ).pipe(Layer.provideMerge(storage))
  return clusterRunner(options).pipe(
    Layer.provide(Layer.mapError(cluster, (e) => new core.OutboxError({ message: `cluster: ${String(e)}`, cause: e }))),
    Layer.provide(pgLayer(options.url))
  ) as Layer.Layer<Outbox, OutboxError, RunnerRequirements>
}

const pgLayer = (url: string): Layer.Layer<SqlClient.SqlClient, OutboxError> =>
  Layer.unwrapEffect(
    Effect.map(
      Effect.promise(() => import("@effect/sql-pg/PgClient")),
      (m) => m.layer({ url: Redacted.make(url), onnotice: () => {} } as any)
    )
  ).pipe(
    // Its first connection is made when it is built: a start while PostgreSQL restarts (or is not up yet) waits for
    // it, up to store.START_PATIENCE, rather than failing at once.
    Layer.retry(store.startRetry),
    Layer.mapError((e) =>
      new core.OutboxError({
        message: `PostgreSQL (tried for ${Duration.format(store.START_PATIENCE)}): ${e.message}` +
          (e.cause instanceof Error ? ` (${e.cause.message})` : ""),
        cause: e
      })
    )
  )

const sqliteLayer = (filename: string): Layer.Layer<SqlClient.SqlClient, OutboxError> =>
  Layer.unwrapEffect(
    Effect.map(
      Effect.promise(() => import("@effect/sql-sqlite-node/SqliteClient")),
      (m) => m.layer({ filename })
    )
  ).pipe(Layer.mapError((e) => new core.OutboxError({ message: `SQLite: ${e.message}`, cause: e })))

/**
 * The database of a `--db` value: `file:<path>` (or a path) for SQLite, `postgres://…` / `postgresql://…` for
 * PostgreSQL.
 *
 * @since 0.3.0
 * @category layers
 */
export const layerSql = (db: string): Layer.Layer<SqlClient.SqlClient, OutboxError> =>
  /^postgres(ql)?:\/\//.test(db) ? pgLayer(db) : sqliteLayer(db.replace(/^file:/, ""))

/**
 * Enqueue and read, without running deliveries: the messages it stores are begun by a runner on the same database
 * within a second. Needs the configuration (the schedule of each recipient is fixed at enqueue).
 *
 * @since 0.3.0
 * @category layers
 */
export const layerClient = (
  options: Options & { readonly db: string }
): Layer.Layer<Outbox, OutboxError, OutboundConfig> =>
  service.serviceLayer(false).pipe(
    Layer.provide(coreOf(options)),
    Layer.provide(layerSql(options.db))
  )

/**
 * The in-memory workflow engine (`WorkflowEngine.layerMemory`) on SQLite in memory, domains delivered in place: for
 * tests, where it runs on `TestClock` (a retry schedule of hours takes no time). Not durable.
 *
 * @since 0.3.0
 * @category layers
 */
export const layerTest = (
  options: Options = {}
): Layer.Layer<Outbox, OutboxError, RunnerRequirements> =>
  // No sweeper: every message of this layer is begun when it is enqueued, and its wake-ups would cost TestClock steps.
  service.serviceLayer(true).pipe(
    Layer.provideMerge(workflow.workflowLayer),
    Layer.provide(workflow.dispatchLocal),
    Layer.provide(WorkflowEngine.layerMemory),
    Layer.provide(coreOf(options)),
    Layer.provide(sqliteLayer(":memory:"))
  ) as Layer.Layer<Outbox, OutboxError, RunnerRequirements>
