/**
 * Spans with an explicit parent. `Effect.withSpan` makes its span the current one around the effect, a FiberRef
 * change each way that costs about 25 run-loop steps; a delivery has a span per delivery, per domain, per lookup and
 * per attempt, so the transport passes its spans down as values instead and never switches the current span.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Tracer from "effect/Tracer"

/** What every span here is made with: no stack capture (an Error per span, for a location its name gives). */
const base = { captureStackTrace: false } as const

/** A span under `parent` (the current span when `undefined`). @internal */
export const make = (
  name: string,
  parent: Tracer.AnySpan | undefined,
  attributes?: Record<string, unknown>
): Effect.Effect<Tracer.Span> =>
  Effect.makeSpan(name, {
    ...base,
    ...(parent === undefined ? {} : { parent }),
    ...(attributes === undefined ? {} : { attributes })
  })

/**
 * Ends `span` with `exit`, at the Clock's time. One run-loop step: the Clock read from the fiber's default services
 * (what `Effect.clockWith` reads) and the span ended in the same step, not in a `sync` after it. @internal
 */
export const end = (span: Tracer.Span, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> =>
  Effect.withFiberRuntime((fiber) => {
    span.end(Context.get(fiber.currentDefaultServices, Clock.Clock).unsafeCurrentTimeNanos(), exit)
    return Effect.void
  })

/** `f(span)` in a span under `parent`, ended with its exit; the current span is left as it is. @internal */
export const within = <A, E, R>(
  name: string,
  parent: Tracer.AnySpan | undefined,
  attributes: Record<string, unknown> | undefined,
  f: (span: Tracer.Span) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  // Uninterruptible between making the span and registering its end, so that no interruption leaves it open. Inside
  // the mask a `matchCauseEffect` is what `Effect.onExit` would add (its own mask around the same match), one
  // uninterruptible region per span instead of two.
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(make(name, parent, attributes), (span) =>
      Effect.matchCauseEffect(restore(f(span)), {
        onFailure: (cause) => Effect.zipRight(end(span, Exit.failCause(cause)), Effect.failCause(cause)),
        onSuccess: (a) => Effect.as(end(span, Exit.succeed(a)), a)
      }))
  )

/** The options of a leaf span (`Effect.useSpan`) under `parent`, or under the current span. @internal */
export const leafOptions = (parent: Tracer.AnySpan | undefined) =>
  parent === undefined ? base : { ...base, parent }

/**
 * A connection attempt's identity by OpenTelemetry's conventions: `server.address` is the MX host (when known),
 * `network.peer.address` the remote IP, `network.local.address` the bound source (empty when the OS picks). The one
 * place the transport's spans and the session's events get these names from.
 *
 * @internal
 */
export const peerAttributes = (peer: {
  readonly servername?: string | undefined
  readonly ip: string
  readonly port: number
  readonly localAddress?: string | null | undefined
}): Record<string, unknown> => ({
  ...(peer.servername === undefined ? {} : { "server.address": peer.servername }),
  "server.port": peer.port,
  "network.peer.address": peer.ip,
  "network.peer.port": peer.port,
  "network.local.address": peer.localAddress ?? ""
})
