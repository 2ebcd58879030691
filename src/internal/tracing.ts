/**
 * Spans with an explicit parent. `Effect.withSpan` makes its span the current one around the effect, a FiberRef
 * change each way that costs about 25 run-loop steps; a delivery has a span per delivery, per domain, per lookup and
 * per attempt, so the transport passes its spans down as values instead and never switches the current span.
 *
 * Under Effect's built-in tracer (no tracer provided: `Layer.setTracer`, `@effect/opentelemetry`, …) a span is an
 * object in memory that nothing exports, and the transport's spans are never made current nor handed to code outside
 * the library, so nobody can read them: there the spans are made as with tracing disabled (Effect's no-op span:
 * no ids, no attribute map, no events, nothing to end), which spares a span's cost and the uninterruptible region
 * that ends it. Under any other tracer every span is made as before.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as DefaultServices from "effect/DefaultServices"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Tracer from "effect/Tracer"

/** What every span here is made with: no stack capture (an Error per span, for a location its name gives). */
const base = { captureStackTrace: false } as const

/** Effect's built-in tracer: the one in the default services when no tracer is provided. */
const builtIn = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/** What Effect makes a no-op span from (`makeSpan` with `DisablePropagation` in the span's context). */
const silent = { ...base, context: Context.make(Tracer.DisablePropagation, true) }

/**
 * Whether a span records anything: `false` for a no-op span (made with tracing disabled or under the built-in
 * tracer here), which every span carrying `DisablePropagation` is. @internal
 */
export const records = (span: Tracer.AnySpan): boolean =>
  span._tag === "Span" && !Context.get(span.context, Tracer.DisablePropagation)

/** A span under `parent` (the current span when `undefined`). @internal */
export const make = (
  name: string,
  parent: Tracer.AnySpan | undefined,
  attributes?: Record<string, unknown>
): Effect.Effect<Tracer.Span> =>
  Effect.withFiberRuntime((fiber) =>
    fiber.currentTracer === builtIn
      ? Effect.makeSpan(name, silent)
      : Effect.makeSpan(name, {
        ...base,
        ...(parent === undefined ? {} : { parent }),
        ...(attributes === undefined ? {} : { attributes })
      })
  )

/**
 * Ends `span` with `exit`, at the Clock's time. One run-loop step: the Clock read from the fiber's default services
 * (what `Effect.clockWith` reads) and the span ended in the same step, not in a `sync` after it; none for a span that
 * records nothing. @internal
 */
export const end = (span: Tracer.Span, exit: Exit.Exit<unknown, unknown>): Effect.Effect<void> =>
  !records(span) ? Effect.void : Effect.withFiberRuntime((fiber) => {
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
  Effect.withFiberRuntime((fiber) =>
    fiber.currentTracer === builtIn
      // nothing to end
      ? Effect.flatMap(Effect.makeSpan(name, silent), f)
      // Uninterruptible between making the span and registering its end, so that no interruption leaves it open.
      // Inside the mask a `matchCauseEffect` is what `Effect.onExit` would add (its own mask around the same
      // match), one uninterruptible region per span instead of two.
      : Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(make(name, parent, attributes), (span) =>
          Effect.matchCauseEffect(restore(f(span)), {
            onFailure: (cause) => Effect.zipRight(end(span, Exit.failCause(cause)), Effect.failCause(cause)),
            onSuccess: (a) => Effect.as(end(span, Exit.succeed(a)), a)
          }))
      )
  )

/**
 * `f(span)` in a leaf span under `parent` (`Effect.useSpan`: timed, ended with `f`'s exit, not made the current
 * span), or in a no-op span under the built-in tracer. @internal
 */
export const leaf = <A, E, R>(
  name: string,
  parent: Tracer.AnySpan | undefined,
  attributes: Record<string, unknown> | undefined,
  f: (span: Tracer.Span) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) =>
    fiber.currentTracer === builtIn
      ? Effect.flatMap(Effect.makeSpan(name, silent), f)
      : Effect.useSpan(name, {
        ...leafOptions(parent),
        ...(attributes === undefined ? {} : { attributes })
      }, f)
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
