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
  readonly variables: RequestVariables
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

/** The variables every stage knows: the message's and the queue's. @internal */
export type RequestVariables = {
  readonly sender: string
  readonly sender_domain: string
  readonly recipients: ReadonlyArray<string>
  readonly priority: number
  readonly retry_num: number
  readonly last_error: string
  readonly last_status: string
  readonly expires_in: number
  readonly queue_name: string
}

/** @internal */
export type DomainVariables = RequestVariables & { readonly rcpt: string; readonly rcpt_domain: string }

/** @internal */
export type HostVariables = DomainVariables & { readonly mx: string }

const requestVariables = (request: DeliveryRequest, sender: address.Address | null): RequestVariables => {
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

// Each stage's variables are the previous stage's and its own (see Settings' stages): object literals, each key
// named, where a copy of the previous stage's (`extend`, the fastest generic copy) costs ten times as much, three
// times a message.

/** @internal */
export const domainVariables = (request: RequestVariables, group: Group): DomainVariables => ({
  sender: request.sender,
  sender_domain: request.sender_domain,
  recipients: request.recipients,
  priority: request.priority,
  retry_num: request.retry_num,
  last_error: request.last_error,
  last_status: request.last_status,
  expires_in: request.expires_in,
  queue_name: request.queue_name,
  rcpt: group.recipients[0]!,
  rcpt_domain: group.domain
})

/** @internal */
export const hostVariables = (domain: DomainVariables, host: MxHost): HostVariables => ({
  sender: domain.sender,
  sender_domain: domain.sender_domain,
  recipients: domain.recipients,
  priority: domain.priority,
  retry_num: domain.retry_num,
  last_error: domain.last_error,
  last_status: domain.last_status,
  expires_in: domain.expires_in,
  queue_name: domain.queue_name,
  rcpt: domain.rcpt,
  rcpt_domain: domain.rcpt_domain,
  mx: host.name
})

/** @internal */
export const connectionVariables = (host: HostVariables, remoteIp: string, sourceIp: string | null): Variables => ({
  sender: host.sender,
  sender_domain: host.sender_domain,
  recipients: host.recipients,
  priority: host.priority,
  retry_num: host.retry_num,
  last_error: host.last_error,
  last_status: host.last_status,
  expires_in: host.expires_in,
  queue_name: host.queue_name,
  rcpt: host.rcpt,
  rcpt_domain: host.rcpt_domain,
  mx: host.mx,
  remote_ip: remoteIp,
  local_ip: sourceIp ?? unbound(remoteIp)
} satisfies Required<HostVariables> & { readonly remote_ip: string; readonly local_ip: string })

/** `local_ip` when no source address is bound: the unspecified address of the remote's family (Stalwart: 0.0.0.0). */
const unbound = (remoteIp: string) => (remoteIp.includes(":") ? "::" : "0.0.0.0")
