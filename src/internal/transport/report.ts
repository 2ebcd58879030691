/**
 * The report's values, built from what the stages returned: per recipient from the server's answers, errors and
 * replies as plain data.
 */
import * as Either from "effect/Either"
import type * as Candidates from "../../Candidates.js"
import type * as Dane from "../../Dane.js"
import type { HostPlan, RecipientResult, ReportError, ReportReply } from "../../DeliveryReport.js"
import * as MtaSts from "../../MtaSts.js"
import type * as SmtpSession from "../../SmtpSession.js"
import type { Reply } from "../../SmtpReply.js"
import * as TransportError from "../../TransportError.js"
import { canQuitAfter } from "../session/session.js"
import { danePlan } from "./dane.js"

/** @internal */
export const reportReply = (reply: Reply): ReportReply => ({
  code: reply.code,
  enhanced: reply.enhanced,
  text: reply.lines.join("\n")
})

/** @internal */
export const reportError = (error: TransportError.TransportError): ReportError => ({
  phase: error.phase,
  kind: error.kind,
  message: error.message,
  permanent: error.permanent,
  code: error.reply?.code ?? null,
  enhanced: error.reply?.enhanced ?? null
})

/** @internal */
export const failedBy = (
  address: string,
  error: TransportError.TransportError,
  host: string | null
): RecipientResult => ({
  address,
  status: error.permanent ? "failed" : "deferred",
  host,
  reply: error.reply === null ? null : reportReply(error.reply),
  error: reportError(error)
})

// Accepted at RCPT yet no DATA: the session ended between the two; the server never took the message.
const noDataError = TransportError.make("data", "protocol", "the transaction ended before DATA")

/**
 * Per recipient, from what the server said. A recipient is `delivered` only when it was accepted at RCPT and the
 * server answered the end of data with 2xx (under LMTP, its own reply after the message); a rejected RCPT keeps its
 * own reply whatever happens to DATA.
 *
 * @internal
 */
export const recipientResults = (host: string, t: SmtpSession.TransactionResult): ReadonlyArray<RecipientResult> =>
  t.recipients.map((r): RecipientResult => {
    if (!r.accepted) {
      // The recipient's own reason first: its reply, or the refusal that kept it from being sent.
      if (r.error !== null) return failedBy(r.address, r.error, host)
      if (Either.isLeft(t.mailFrom)) return failedBy(r.address, t.mailFrom.left, host)
      return {
        address: r.address,
        status: r.reply !== null && r.reply.code >= 500 ? "failed" : "deferred",
        host,
        reply: r.reply === null ? null : reportReply(r.reply),
        error: null
      }
    }
    // LMTP: the recipient's own reply after the message; SMTP: the one reply for every recipient.
    const data = r.data ?? t.data
    if (data === null) return failedBy(r.address, noDataError, host)
    if (Either.isLeft(data)) return failedBy(r.address, data.left, host)
    const reply = data.right
    if (reply.code >= 200 && reply.code < 300) {
      return { address: r.address, status: "delivered", host, reply: reportReply(reply), error: null }
    }
    return { address: r.address, status: reply.code >= 500 ? "failed" : "deferred", host, reply: reportReply(reply), error: null }
  })

/**
 * A timeout, reset or protocol error inside the transaction makes the attempt `failed`; replies and policy
 * refusals (SMTPUTF8 or REQUIRETLS not offered, message over SIZE) are answers, and the attempt `completed`.
 *
 * @internal
 */
export const firstTransportError = (t: SmtpSession.TransactionResult): TransportError.TransportError | null => {
  // In this order: MAIL's, each recipient's RCPT, each recipient's own data reply (LMTP), DATA's. A loop, not a list
  // of candidates: on every message's path, where there is usually no error at all.
  const first = (error: TransportError.TransportError | null) => error !== null && !canQuitAfter(error)
  if (Either.isLeft(t.mailFrom) && first(t.mailFrom.left)) return t.mailFrom.left
  for (const r of t.recipients) if (first(r.error)) return r.error
  for (const r of t.recipients) if (r.data !== undefined && Either.isLeft(r.data) && first(r.data.left)) return r.data.left
  return t.data !== null && Either.isLeft(t.data) && first(t.data.left) ? t.data.left : null
}

/** Why a host took no transaction, and its name when it answered. @internal */
export interface HostFailure {
  readonly error: TransportError.TransportError
  readonly host: string | null
}

/**
 * Every host failed before a transaction started. Unlike Stalwart ("last error wins"), the recipients fail
 * permanently only when every host failed permanently: one unreachable host among permanent refusals is a reason to
 * try again later, not to bounce. The last error is reported with its host, when that host answered.
 *
 * @internal
 */
export const allHostsFailed = (
  recipients: ReadonlyArray<string>,
  failures: ReadonlyArray<HostFailure>
): ReadonlyArray<RecipientResult> => {
  const last = failures[failures.length - 1]!
  const permanent = failures.every((f) => f.error.permanent)
  return recipients.map((rcpt): RecipientResult => ({
    ...failedBy(rcpt, last.error, last.host),
    status: permanent ? "failed" : "deferred"
  }))
}

/** Whether an MTA-STS policy in force lists the host; `null` without such a policy. @internal */
export const mtaStsMatch = (policy: MtaSts.Policy | null, host: string): HostPlan["mtaSts"] =>
  policy === null || policy.mode === "none" ? null : MtaSts.matches(policy, host) ? "match" : "mismatch"

/** What resolution decided for a host a delivery reached. @internal */
export const hostPlan = (
  host: Candidates.HostCandidates,
  policy: MtaSts.Policy | null,
  strategies: HostPlan["strategies"],
  dane: Dane.HostDane | null
): HostPlan => {
  const resolved = Either.isRight(host.resolution) ? host.resolution.right : null
  return {
    host: host.host.name,
    preference: host.host.preference,
    implicit: host.host.implicit,
    strategy: host.settings.ipStrategy,
    addresses: resolved === null ? [] : resolved.addresses,
    truncated: resolved === null ? [] : resolved.truncated,
    sourceIps: { v4: host.settings.sourceIp.v4, v6: host.settings.sourceIp.v6 },
    strategies,
    mtaSts: mtaStsMatch(policy, host.host.name),
    dane: danePlan(dane),
    // a failed DANE lookup (or `tls.dane = require` unmet) keeps the host from being tried, as an unresolved one is
    error: Either.isLeft(host.resolution)
      ? reportError(host.resolution.left)
      : dane?.error
      ? reportError(dane.error)
      : null
  }
}
