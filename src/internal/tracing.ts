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
import type * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

/** What every span here is made with: no stack capture (an Error per span, for a location its name gives). */
const base = { captureStackTrace: false } as const

/** Effect's built-in tracer: the one in the default services when no tracer is provided. */
const builtIn = Context.get(DefaultServices.liveServices, Tracer.Tracer)

/**
 * The span every span here is under the built-in tracer: Effect's no-op span (what `makeSpan` gives with tracing
 * disabled), one for all. It carries `DisablePropagation`, as Effect's does, which is how `records` knows it.
 */
const noop: Tracer.Span = {
  _tag: "Span",
  name: "smtp-transport",
  spanId: "noop",
  traceId: "noop",
  parent: Option.none(),
  context: Context.make(Tracer.DisablePropagation, true),
  status: { _tag: "Ended", startTime: BigInt(0), endTime: BigInt(0), exit: Exit.void },
  attributes: new Map(),
  links: [],
  sampled: false,
  kind: "internal",
  attribute() {},
  event() {},
  end() {},
  addLinks() {}
}

/**
 * Whether a span records anything: `false` for a no-op span (made with tracing disabled or under the built-in
 * tracer here), which every span carrying `DisablePropagation` is. @internal
 */
export const records = (span: Tracer.AnySpan): boolean =>
  span._tag === "Span" && !Context.get(span.context, Tracer.DisablePropagation)

/** A span's attributes, or a function building them: called only when the span records. @internal */
export type Attributes = Record<string, unknown> | (() => Record<string, unknown>)

const attributesOf = (attributes: Attributes | undefined) =>
  typeof attributes === "function" ? attributes() : attributes

/**
 * Whether a span under `parent` would record nothing, known without looking at the fiber: its parent records nothing
 * (the transport's root span was made under the built-in tracer, or with tracing disabled, where Effect would make
 * a no-op child too).
 */
const silentUnder = (parent: Tracer.AnySpan | undefined): boolean => parent !== undefined && !records(parent)

const succeedNoop = Effect.succeed(noop)

/**
 * The span `make` would give under `parent` when that is known without a step (a parent that records nothing: the
 * no-op span), else `null`. @internal
 */
export const knownUnder = (parent: Tracer.AnySpan | undefined): Tracer.Span | null => silentUnder(parent) ? noop : null

/** A span under `parent` (the current span when `undefined`). @internal */
export const make = (
  name: string,
  parent: Tracer.AnySpan | undefined,
  attributes?: Attributes,
  kind?: Tracer.SpanKind
): Effect.Effect<Tracer.Span> =>
  silentUnder(parent) ? succeedNoop : Effect.withFiberRuntime((fiber) => {
    if (fiber.currentTracer === builtIn) return succeedNoop
    const built = attributesOf(attributes)
    return Effect.makeSpan(name, {
      ...base,
      ...(kind === undefined ? {} : { kind }),
      ...(parent === undefined ? {} : { parent }),
      ...(built === undefined ? {} : { attributes: built })
    })
  })

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
  attributes: Attributes | undefined,
  f: (span: Tracer.Span) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  silentUnder(parent) ? f(noop) : Effect.withFiberRuntime((fiber) =>
    fiber.currentTracer === builtIn
      // nothing to end
      ? f(noop)
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
 * `within` for a body that starts by reading its fiber: `f` gets the span and the fiber, in the step that decides
 * the span where nothing is to be recorded (no step of its own for the read). @internal
 */
export const withinFiber = <A, E, R>(
  name: string,
  parent: Tracer.AnySpan | undefined,
  attributes: Attributes | undefined,
  f: (span: Tracer.Span, fiber: Fiber.RuntimeFiber<unknown, unknown>) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) =>
    silentUnder(parent) || fiber.currentTracer === builtIn
      ? f(noop, fiber)
      : within(name, parent, attributes, (span) => Effect.withFiberRuntime((inner) => f(span, inner)))
  )

/**
 * `f(span)` in a leaf span under `parent` (`Effect.useSpan`: timed, ended with `f`'s exit, not made the current
 * span), or in a no-op span under the built-in tracer. @internal
 */
export const leaf = <A, E, R>(
  name: string,
  parent: Tracer.AnySpan | undefined,
  attributes: Attributes | undefined,
  f: (span: Tracer.Span) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  silentUnder(parent) ? f(noop) : Effect.withFiberRuntime((fiber) => {
    if (fiber.currentTracer === builtIn) return f(noop)
    const built = attributesOf(attributes)
    return Effect.useSpan(name, { ...leafOptions(parent), ...(built === undefined ? {} : { attributes: built }) }, f)
  })

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
