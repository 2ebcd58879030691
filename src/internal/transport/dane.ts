/**
 * The host stage's DANE step (RFC 7672): the decision for a host before it is raced, and its place in the plan and
 * in each attempt. Shared by `deliver` and `explain`.
 */
import * as Effect from "effect/Effect"
import * as Candidates from "../../Candidates.js"
import type { TlsInfo } from "../../Connector.js"
import * as Dane from "../../Dane.js"
import type { AttemptDane, DanePlan } from "../../DeliveryReport.js"
import type { Dns } from "../../Dns.js"
import type { MxHost, MxPlan } from "../../MxPlan.js"
import type { HostSettings } from "../../Settings.js"
import { withoutLookup } from "../dane/lookup.js"

/** Whether a host gets a DANE decision: `tls.dane` enabled, and a name to look TLSA records up for. @internal */
export const daneApplies = (host: MxHost, settings: HostSettings): boolean =>
  settings.tls.dane !== "disable" && !host.literal

/**
 * `null` when `tls.dane = disable` or the host is an address literal (no name, no TLSA); otherwise RFC 7672 §2.2's
 * decision. `plan`: the domain's MX plan (its name and whether its MX lookup validated); `port`: where the
 * connection goes.
 *
 * @internal
 */
export const hostDane = (
  plan: MxPlan,
  port: number,
  host: MxHost,
  settings: HostSettings
): Effect.Effect<Dane.HostDane | null, never, Dns> =>
  !daneApplies(host, settings) ? Effect.succeed(null) : Dane.lookupHost(lookupOptions(plan, port, host, settings))

/**
 * `hostDane`'s decision when it needs no lookup (DANE does not apply: `null`; an MX RRset that is not secure), else
 * `undefined`: for a caller that goes on in the same step. @internal
 */
export const hostDaneNow = (
  plan: MxPlan,
  port: number,
  host: MxHost,
  settings: HostSettings
): Dane.HostDane | null | undefined =>
  !daneApplies(host, settings) ? null : withoutLookup(lookupOptions(plan, port, host, settings))

const lookupOptions = (plan: MxPlan, port: number, host: MxHost, settings: HostSettings): Dane.LookupOptions => ({
  policy: settings.tls.dane,
  domain: plan.domain,
  mxSecure: plan.secure === true,
  host: host.name,
  implicit: host.implicit,
  families: Candidates.families(settings.ipStrategy),
  port
})

/** @internal */
export const danePlan = (dane: Dane.HostDane | null): DanePlan | null =>
  dane === null ? null : {
    status: dane.status,
    name: dane.name,
    secure: dane.secure,
    records: dane.records.map(Dane.format),
    reason: dane.reason
  }

/**
 * What an attempt's TLS session says of DANE: the connection's verification where DANE authenticated the host,
 * otherwise why it did not apply.
 *
 * @internal
 */
export const attemptDane = (dane: Dane.HostDane | null, tls: TlsInfo): AttemptDane | null => {
  if (dane === null) return null
  if (dane.authenticate !== null) {
    return tls.dane === null
      ? { status: "failed", record: null, reason: "no DANE verification was made" }
      : { status: tls.dane.status, record: tls.dane.record, reason: tls.dane.reason }
  }
  return { status: dane.status === "insecure" ? "insecure" : "none", record: null, reason: dane.reason }
}
