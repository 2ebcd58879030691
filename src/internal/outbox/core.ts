/**
 * The outbox's state shared by its parts in one process: the SQL store, the stream of status events, and the
 * options. The models the public module exports are defined here, so that the internal modules need not import
 * the public one.
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as FiberSet from "effect/FiberSet"
import type * as Stream from "effect/Stream"
import type { AttemptRecord, RecipientResult, ReportError, ReportReply } from "../../DeliveryReport.js"
import type { StatusEvent } from "./events.js"
import type { RecipientState, Store } from "./store.js"

export type { RecipientState } from "./store.js"

/** One recipient as `status` shows it. @internal */
export interface RecipientStatus {
  readonly address: string
  readonly state: RecipientState
  /** Counted failed attempts (`retry_num`); rate and concurrency deferrals do not count, as in Stalwart. */
  readonly retryNum: number
  /** Category of the last failure (`last_error`): `none`, `dns`, `connection`, `tls`, `unexpected-reply`, … */
  readonly lastError: string
  /** When the next attempt is due (epoch ms), for a queued or deferred recipient. */
  readonly nextAttemptMs: number | null
  /** When a TTL schedule gives it up (epoch ms). */
  readonly expiresMs: number | null
  /** The delivering server's reply, or the reply that refused it. */
  readonly reply: ReportReply | null
  /** The last error (deferred, failed, expired). */
  readonly error: ReportError | null
  /** The host whose answer decided the state. */
  readonly host: string | null
  readonly updatedMs: number
}

/** One domain's attempt, as the report of `Transport.deliver` gave it. @internal */
export interface AttemptEntry {
  readonly step: number
  readonly domain: string
  readonly startedMs: number
  readonly recipients: ReadonlyArray<RecipientResult>
  readonly attempts: ReadonlyArray<AttemptRecord>
}

/** @internal */
export interface MessageStatus {
  readonly id: string
  readonly sender: string
  readonly createdMs: number
  /** Every recipient is final (delivered, failed or expired). */
  readonly done: boolean
  /** The id of the message this one is a delivery status notification about. */
  readonly dsnOf: string | null
  readonly recipients: ReadonlyArray<RecipientStatus>
  readonly attempts: ReadonlyArray<AttemptEntry>
}

export type { StatusEvent } from "./events.js"

/** The SQL storage failed (after the retries the outbox makes). @internal */
export class OutboxError extends Data.TaggedError("OutboxError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** @internal */
export interface CoreOptions {
  /** `Reporting-MTA` and the Message-ID domain of the DSNs; the configuration's `hostname` when absent. */
  readonly reportingMta: string | undefined
}

/** @internal */
export class Core extends Context.Tag("effect-smtp-transport/internal/OutboxCore")<Core, {
  readonly store: Store
  /** What this process hears of the recorded changes (events.ts: every process's on PostgreSQL, its own on SQLite). */
  readonly events: Stream.Stream<StatusEvent>
  readonly options: CoreOptions
  /**
   * Where attempts run: a set of the outbox layer's, so that the cluster stopping first does not cut them, which the
   * layer's close waits to be empty before it interrupts what is left: every attempt under way ends (its transaction
   * and the write of its outcome), nothing sent is left unrecorded.
   */
  readonly attempts: FiberSet.FiberSet
}>() {}
