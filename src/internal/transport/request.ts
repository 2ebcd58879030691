/**
 * The request, checked before anything is looked up, grouped by recipient domain, and the expression variables of
 * each stage.
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import type { Variables } from "../../Expression.js"
import type { MxHost } from "../../MxPlan.js"
import type { DeliveryRequest } from "../../Transport.js"
import * as address from "../address.js"
import { extend } from "../extend.js"

/** @internal */
export class InvalidRequest extends Data.TaggedError("InvalidRequest")<{
  readonly issues: ReadonlyArray<{ readonly field: string; readonly value: string; readonly reason: string }>
}> {
  override get message(): string {
    return this.issues.map((i) => `${i.field} ${JSON.stringify(i.value)} ${i.reason}`).join("; ")
  }
}

/** The recipients of one domain: `target` is the name to resolve (A-label form), `domain` as written. @internal */
export interface Group {
  readonly domain: string
  readonly target: string
  readonly literal: boolean
  readonly recipients: ReadonlyArray<string>
}

/** @internal */
export interface Validated {
  readonly groups: ReadonlyArray<Group>
  readonly message: Uint8Array
  readonly sender: address.Address | null
  /** The variables every stage knows: the message's and the queue's. */
  readonly variables: Variables
}

const encoder = new TextEncoder()

/** Every problem of the request at once, or the groups in first-seen order. @internal */
export const validate = (request: DeliveryRequest): Effect.Effect<Validated, InvalidRequest> =>
  Effect.suspend(() => {
    const validated = check(request)
    return Either.isLeft(validated) ? Effect.fail(validated.left) : Effect.succeed(validated.right)
  })

/** `validate`, synchronously: for a caller already in a step of its own. @internal */
export const check = (request: DeliveryRequest): Either.Either<Validated, InvalidRequest> => {
  const issues: Array<{ field: string; value: string; reason: string }> = []
  let sender: address.Address | null = null
  if (request.sender !== "") {
    const parsed = address.parse(request.sender)
    if (typeof parsed === "string") issues.push({ field: "sender", value: request.sender, reason: parsed })
    else sender = parsed
  }
  if (request.recipients.length === 0) issues.push({ field: "recipients", value: "", reason: "is empty" })
  const groups = new Map<string, { domain: string; target: string; literal: boolean; recipients: Array<string> }>()
  const seen = new Set<string>()
  request.recipients.forEach((rcpt, i) => {
    const parsed = address.parse(rcpt)
    if (typeof parsed === "string") return issues.push({ field: `recipients[${i}]`, value: rcpt, reason: parsed })
    if (seen.has(rcpt)) return issues.push({ field: `recipients[${i}]`, value: rcpt, reason: "is listed twice" })
    seen.add(rcpt)
    const group = groups.get(parsed.domain)
    if (group === undefined) {
      groups.set(parsed.domain, { domain: parsed.domain, target: parsed.target, literal: parsed.literal, recipients: [rcpt] })
    } else group.recipients.push(rcpt)
  })
  if (issues.length > 0) return Either.left(new InvalidRequest({ issues }))
  const message = typeof request.message === "string" ? encoder.encode(request.message) : request.message
  return Either.right({
    groups: Array.from(groups.values()),
    message,
    sender,
    variables: requestVariables(request, sender)
  })
}

const requestVariables = (request: DeliveryRequest, sender: address.Address | null): Variables => {
  const attempt = request.attempt ?? {}
  return {
    sender: request.sender,
    sender_domain: sender?.domain ?? "",
    recipients: request.recipients,
    priority: attempt.priority ?? 0,
    retry_num: attempt.retryNum ?? 0,
    last_error: attempt.lastError ?? "none",
    last_status: attempt.lastStatus ?? "Scheduled",
    expires_in: attempt.expiresIn ?? 0,
    queue_name: attempt.queueName ?? "default"
  }
}

// Each stage's variables are the previous stage's and its own (see Settings' stages).

/** @internal */
export const domainVariables = (request: Variables, group: Group): Variables =>
  extend(request, { rcpt: group.recipients[0]!, rcpt_domain: group.domain })

/** @internal */
export const hostVariables = (domain: Variables, host: MxHost): Variables => extend(domain, { mx: host.name })

/** @internal */
export const connectionVariables = (host: Variables, remoteIp: string, sourceIp: string | null): Variables =>
  extend(host, { remote_ip: remoteIp, local_ip: sourceIp ?? unbound(remoteIp) })

/** `local_ip` when no source address is bound: the unspecified address of the remote's family (Stalwart: 0.0.0.0). */
const unbound = (remoteIp: string) => (remoteIp.includes(":") ? "::" : "0.0.0.0")
