/**
 * A host's settings as `explain` reports them, from the stage settings `deliver` uses and the key table.
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import type { ExplainedHost, ExplainedTimeouts } from "../../DeliveryReport.js"
import type { ConnectionSettings, HostSettings, SessionPhase } from "../../Settings.js"
import * as Keys from "../config/keys.js"

/** `mail-from` → `mailFrom`: the report's JSON field names. @internal */
export const camelCase = (name: string): string => name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())

// The session's timeouts in table order, the order the report and the plan list them.
const SESSION_TIMEOUTS: ReadonlyArray<SessionPhase> = Keys.stageEntries("connection")
  .filter((e) => e.at[0] === "timeouts")
  .map((e) => e.at[1] as SessionPhase)

/** @internal */
export const explainedTimeouts = (timeouts: ConnectionSettings["timeouts"]): ExplainedTimeouts =>
  Object.fromEntries(
    SESSION_TIMEOUTS.map((phase) => [camelCase(phase), Duration.toMillis(timeouts[phase])])
  ) as unknown as ExplainedTimeouts

/** @internal */
export const explainedSettings = (
  host: HostSettings,
  connection: ConnectionSettings,
  tls: { readonly allowInvalidCerts: boolean; readonly requireTls: boolean }
): NonNullable<ExplainedHost["settings"]> => ({
  ehlo: connection.ehloName,
  starttls: host.tls.starttls,
  dane: host.tls.dane,
  allowInvalidCerts: tls.allowInvalidCerts,
  requireTls: tls.requireTls,
  connectionAttemptDelayMs: Option.getOrNull(Option.map(host.connectionAttemptDelay, Duration.toMillis)),
  timeouts: explainedTimeouts(connection.timeouts)
})
