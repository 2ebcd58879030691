/**
 * The routes besides MX: a relay as a plan of one host, the hand-over of `local` recipients to `LocalDelivery`, and
 * the route as the plan shows it.
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import { isIP } from "node:net"
import type { RecipientResult, RoutePlan } from "../../DeliveryReport.js"
import * as LocalDelivery from "../../LocalDelivery.js"
import type { MxPlan } from "../../MxPlan.js"
import type { LocalRoute, RelayRoute, Route } from "../../Settings.js"
import * as TransportError from "../../TransportError.js"
import { failedBy } from "./report.js"

/**
 * The relay as the one host of the domain's plan: no MX lookup, no MTA-STS (as Stalwart: the operator chose the
 * host). An IP address skips DNS; a name is resolved by A/AAAA with the host's IP strategy.
 *
 * @internal
 */
export const relayPlan = (domain: string, relay: RelayRoute): MxPlan => ({
  domain,
  records: [],
  hosts: [{ name: relay.address, preference: 0, implicit: false, literal: isIP(relay.address) !== 0 }],
  dropped: []
})

/**
 * `next-hop` computed a name no relay has. Temporary: the configuration is what is wrong, and mail waits for it
 * to be fixed. The route is decided before anything is connected, hence the phase.
 *
 * @internal
 */
export const unknownRoute = (why: string): TransportError.TransportError =>
  TransportError.make("connect", "route", `route: ${why}`)

/**
 * The relay's address did not resolve. Temporary even on NXDOMAIN: the name is the configuration's, not the
 * recipient's, and mail waits for it to be fixed rather than bouncing.
 *
 * @internal
 */
export const relayUnresolved = (relay: RelayRoute, error: TransportError.TransportError): TransportError.TransportError =>
  new TransportError.TransportError({
    phase: error.phase,
    kind: error.kind,
    permanent: false,
    message: `relay ${relay.name}: the address ${relay.address} did not resolve (${error.message})`,
    reply: error.reply
  })

const noLocalDelivery = (route: LocalRoute) =>
  TransportError.make(
    "connect",
    "route",
    `route: the recipients are routed to ${route.name} (local delivery), which this transport does not do, and no ` +
      "LocalDelivery service is provided",
    true
  )

const localError = (message: string, permanent: boolean) =>
  TransportError.make("data", "route", `local delivery: ${message}`, permanent)

/**
 * The `local` recipients handed to the embedder's `LocalDelivery`, or `failed` (kind `route`) without one.
 *
 * @internal
 */
export const deliverLocal = (
  route: LocalRoute,
  request: Omit<LocalDelivery.LocalRequest, "route">
): Effect.Effect<ReadonlyArray<RecipientResult>> =>
  Effect.gen(function*() {
    const service = yield* Effect.serviceOption(LocalDelivery.LocalDelivery)
    if (Option.isNone(service)) {
      const error = noLocalDelivery(route)
      return request.recipients.map((rcpt) => failedBy(rcpt, error, null))
    }
    const answer = yield* Effect.either(service.value.deliver({ ...request, route: route.name }))
    if (Either.isLeft(answer)) {
      const error = localError(answer.left.message, answer.left.permanent)
      return request.recipients.map((rcpt) => failedBy(rcpt, error, null))
    }
    const byAddress = new Map(answer.right.map((o) => [o.address, o] as const))
    return request.recipients.map((address): RecipientResult => {
      const outcome = byAddress.get(address)
      if (outcome === undefined) {
        return failedBy(address, localError("the LocalDelivery service gave no outcome for this recipient", false), null)
      }
      if (outcome.status === "delivered") return { address, status: "delivered", host: null, reply: null, error: null }
      return failedBy(address, localError(outcome.reason ?? outcome.status, outcome.status === "failed"), null)
    })
  })

/** @internal */
export const routePlan = (route: Route): RoutePlan => {
  switch (route._tag) {
    case "mx":
      return { type: "mx", name: route.name }
    case "local":
      return { type: "local", name: route.name }
    case "relay":
      return {
        type: "relay",
        name: route.name,
        address: route.address,
        port: route.port,
        protocol: route.protocol,
        tls: route.implicitTls ? "implicit" : "starttls",
        allowInvalidCerts: route.allowInvalidCerts,
        auth: Option.isSome(route.auth)
      }
  }
}
