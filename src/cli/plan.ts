/**
 * `smtp-transport plan`: what `send` would do, without sending; DNS is queried, no SMTP connection is made.
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Transport from "../Transport.js"
import * as Format from "./format.js"
import { common, environment, invalidRequest } from "./options.js"

/**
 * @since 0.1.0
 */
export const command = Command.make(
  "plan",
  { ...common, recipients: Args.text({ name: "recipient" }).pipe(Args.atLeast(1)) },
  (options) =>
    Effect.gen(function*() {
      const env = yield* environment(options)
      const plan = yield* Transport.explain({
        message: "",
        sender: options.from,
        recipients: options.recipients,
        attempt: { retryNum: options.retryNum }
      }).pipe(
        Effect.mapError(invalidRequest),
        Effect.provide(env.layer),
        Effect.provideService(Transport.TransportOptions, env.options)
      )
      yield* Console.log(options.json ? JSON.stringify(plan, null, 2) : Format.explain(plan, options))
    })
).pipe(
  Command.withDescription(
    "Explain a delivery without sending: MX records, hosts, strategy, addresses, source IPs, EHLO name, timeouts."
  )
)
