/**
 * Storing a message: the request is checked as `Transport.deliver` would check it, then the message, its envelope and
 * every recipient's first schedule (expiry, first notify point) are written in one transaction.
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import type * as OutboundConfig from "../../OutboundConfig.js"
import type { DeliveryRequest } from "../../Transport.js"
import * as request_ from "../transport/request.js"
import { recipientVariables, scheduleFor } from "./delivery.js"
import type { Store } from "./store.js"

const encoder = new TextEncoder()

/**
 * A new id: the time (base 36, so ids sort by enqueue time) and 64 random bits, both from Effect's services.
 *
 * @internal
 */
export const newId: Effect.Effect<string> = Effect.gen(function*() {
  const now = yield* Clock.currentTimeMillis
  const a = yield* Random.nextIntBetween(0, 0x1_0000_0000)
  const b = yield* Random.nextIntBetween(0, 0x1_0000_0000)
  return `${now.toString(36)}-${a.toString(16).padStart(8, "0")}${b.toString(16).padStart(8, "0")}`
})

/**
 * Stores the request under `id`. `dsnOf` is the id of the message a DSN reports on (`""` for a message of the
 * user's). An id already stored is left as it is (a replayed step enqueues its DSN once).
 *
 * @internal
 */
export const insertMessage = (
  store: Store,
  id: string,
  request: DeliveryRequest,
  nowMs: number,
  dsnOf: string,
  config: OutboundConfig.Config
) =>
  Effect.gen(function*() {
    const { groups } = yield* request_.validate(request)
    const body = typeof request.message === "string" ? encoder.encode(request.message) : request.message
    const recipients = groups.flatMap((group) =>
      group.recipients.map((address) => {
        const schedule = scheduleFor(
          config,
          recipientVariables(
            request.sender,
            { address, domain: group.domain, retryNum: 0, lastError: "none", notifyNum: 0 },
            request.recipients,
            { createdMs: nowMs, nowMs, expiresMs: null, dsn: dsnOf !== "" }
          )
        )
        const notify = schedule.notify[0]
        return {
          address,
          domain: group.domain,
          nextAttemptMs: nowMs,
          expiresMs: schedule.expiry._tag === "Ttl" ? nowMs + Duration.toMillis(schedule.expiry.ttl) : null,
          nextNotifyMs: notify === undefined ? null : nowMs + Duration.toMillis(notify)
        }
      })
    )
    return yield* store.insert({
      id,
      sender: request.sender,
      body: Buffer.from(body).toString("base64"),
      requireTls: request.requireTls === true,
      createdMs: nowMs,
      dsnOf
    }, recipients)
  })
