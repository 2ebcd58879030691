import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import type { DeliveryReport } from "../../src/DeliveryReport.js"
import * as Transport from "../../src/Transport.js"

/** Runs a delivery on virtual time, moving the clock far enough for every timeout to fire. */
export const run = (request: Transport.DeliveryRequest) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Transport.deliver(request))
    yield* TestClock.adjust(Duration.minutes(30))
    return yield* Fiber.join(fiber)
  })

/** Each recipient with its status, in the request's order. */
export const statuses = (report: DeliveryReport) => report.recipients.map((r) => [r.address, r.status])
