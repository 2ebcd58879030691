/**
 * The delivery schedules (Stalwart's `[queue.schedule]`, `[queue.schedule.<name>]`, `MtaDeliverySchedule`): their
 * defaults per layout and their evaluation with the variables of a recipient.
 */
import * as Duration from "effect/Duration"
import type { Variables } from "../../Expression.js"
import type { DeliverySchedule } from "../../Settings.js"
import type * as Keys from "./keys.js"

/** Stalwart's retry list (v0.7–v0.15, and v0.16's fallback for a name no schedule has). @internal */
export const DEFAULT_RETRY: ReadonlyArray<Duration.Duration> = ["2 minutes", "5 minutes", "10 minutes", "15 minutes",
  "30 minutes", "1 hour", "2 hours"].map((d) => Duration.decode(d as Duration.DurationInput))

/** v0.16's `MtaDeliverySchedule.retry` default: the list above, then a day and three days. @internal */
export const JSON_DEFAULT_RETRY: ReadonlyArray<Duration.Duration> = [...DEFAULT_RETRY, Duration.days(1), Duration.days(3)]

/** @internal */
export const DEFAULT_NOTIFY: ReadonlyArray<Duration.Duration> = [Duration.days(1), Duration.days(3)]

/**
 * The schedule Stalwart uses where none is configured: v0.7–v0.12's defaults, and v0.13+'s `get_queue_or_default` for
 * a name no schedule has (a five-day TTL, where the named schedules default to three days).
 *
 * @internal
 */
export const FALLBACK_SCHEDULE: DeliverySchedule = {
  name: "default",
  retry: DEFAULT_RETRY,
  notify: DEFAULT_NOTIFY,
  expiry: { _tag: "Ttl", ttl: Duration.days(5) }
}

/** The schedule's evaluation: the schedule and what could not be used on the way (a computed value, a name). @internal */
export interface ScheduleEvaluation {
  readonly settings: DeliverySchedule
  readonly warnings: ReadonlyArray<string>
}

const noWarnings: ReadonlyArray<string> = []

/** @internal */
export const evaluate = (_layout: Keys.Layout, _variables: Variables): ScheduleEvaluation => ({
  settings: FALLBACK_SCHEDULE,
  warnings: noWarnings
})
