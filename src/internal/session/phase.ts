/**
 * One phase of a session: its deadline on Effect's Clock, its span event, its span when asked for, and the mapping
 * of the socket layer's errors to the phase's `TransportError`.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import type { Connection, Exchange, SocketError } from "../../Connector.js"
import type { Phase } from "../../Settings.js"
import * as SmtpReply from "../../SmtpReply.js"
import * as TransportError from "../../TransportError.js"
import * as socketError from "../connection/socketError.js"
import * as tracing from "../tracing.js"

/** What a phase's body gets. */
export interface Step {
  readonly deadline: number
  /** Debug is enabled: the transcript is logged. */
  readonly debug: boolean
  readonly clock: Clock.Clock
}

/** What identifies a phase in spans and events, by OpenTelemetry's conventions. */
export type Attributes = Record<string, unknown>

export interface PhaseOptions {
  readonly phase: Phase
  readonly timeoutMs: number
  readonly phaseSpans: boolean
  /** The span to report to; the current span when absent. */
  readonly span?: Tracer.AnySpan | undefined
  /** Built only when a span or an event will carry them. */
  readonly attributes: () => Attributes
}

/** The socket layer's failure as the phase's error; every network failure is temporary. */
export const fromSocket = (error: SocketError, phase: Phase, timeoutMs: number): TransportError.TransportError =>
  socketError.isDeadline(error)
    ? TransportError.timeout(phase, timeoutMs)
    : TransportError.make(phase, error.kind === "closed" ? "reset" : error.kind, `${phase}: ${error.message}`)

/**
 * `Effect.mapError(effect, (e) => fromSocket(e, phase, timeoutMs))` as a failure handler alone: `mapError` is a match
 * whose success side is a run-loop step of its own, where a success passes a failure handler's frame for free.
 */
export const socketFailure = <A>(
  effect: Effect.Effect<A, SocketError>,
  phase: Phase,
  timeoutMs: number
): Effect.Effect<A, TransportError.TransportError> =>
  Effect.catchAllCause(effect, (cause) => {
    const failure = Cause.failureOrCause(cause)
    return Either.isLeft(failure) ? Effect.fail(fromSocket(failure.left, phase, timeoutMs)) : Effect.failCause(failure.right)
  })

/**
 * Runs `body` as the phase. Default: a span event `smtp.<phase>` on the current span (duration and outcome), no
 * span of its own; with `phaseSpans` the phase also runs in `Effect.useSpan` (a leaf: nothing inside opens a span,
 * so it need not become the current span, which spares most of a span's cost).
 */
export const run = <A, R>(
  options: PhaseOptions,
  body: (step: Step) => Effect.Effect<A, TransportError.TransportError, R>
): Effect.Effect<A, TransportError.TransportError, R> =>
  Effect.withFiberRuntime((fiber) => {
    const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
    const startMs = clock.unsafeCurrentTimeMillis()
    const debug = isDebug(fiber)
    const span = options.span ?? fiber.currentSpan
    // A span that records nothing (see internal/tracing) gets no event: no attributes built, no region to end it in.
    const silent = span === undefined || span._tag !== "Span" || !tracing.records(span)
    const withEvent = (effect: Effect.Effect<A, TransportError.TransportError, R>, target: Tracer.Span) =>
      Effect.onExit(effect, (exit) =>
        Effect.sync(() => {
          const end = clock.unsafeCurrentTimeNanos()
          target.event(`smtp.${options.phase}`, end, {
            ...options.attributes(),
            "smtp.phase": options.phase,
            "smtp.duration_ms": clock.unsafeCurrentTimeMillis() - startMs,
            "smtp.outcome": Exit.isSuccess(exit)
              ? "ok"
              : Option.match(Cause.failureOption(exit.cause), { onNone: () => "interrupted", onSome: (e) => e.kind })
          })
        }))
    // Made where it runs: a body may start its exchange when called (`exchangeFirstEitherNow`), which under a span of
    // its own belongs inside that span.
    const make = () => {
      const effect = body({ deadline: startMs + options.timeoutMs, debug, clock })
      return silent ? effect : withEvent(effect, span)
    }
    if (!options.phaseSpans) return make()
    return tracing.leaf(
      `smtp.${options.phase}`,
      span,
      () => ({ ...options.attributes(), "smtp.phase": options.phase, "smtp.timeout_ms": options.timeoutMs }),
      make
    )
  })

const isDebug = (fiber: Fiber.RuntimeFiber<unknown, unknown>) =>
  !LogLevel.lessThan(LogLevel.Debug, fiber.getFiberRef(FiberRef.currentMinimumLogLevel))

/**
 * `Effect.either(run(options, …))` for a body that gives its outcome as an Either. Where the phase reports to nothing
 * (no span of its own, no event: see internal/tracing) the Either is the body's own, with no frame of its own; where
 * it reports, the phase runs as `run` does, so its event and span end with the failure.
 */
export const attempt = <A, R>(
  options: PhaseOptions,
  body: (step: Step) => Effect.Effect<Either.Either<A, TransportError.TransportError>, never, R>
): Effect.Effect<Either.Either<A, TransportError.TransportError>, never, R> =>
  Effect.withFiberRuntime((fiber) => {
    const span = options.span ?? fiber.currentSpan
    if (!options.phaseSpans && (span === undefined || span._tag !== "Span" || !tracing.records(span))) {
      const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
      return body({ deadline: clock.unsafeCurrentTimeMillis() + options.timeoutMs, debug: isDebug(fiber), clock })
    }
    return Effect.either(run(options, (step) => Effect.flatMap(body(step), (outcome) => outcome)))
  })

/** What a phase reads of its fiber, read once for phases that follow each other in one fiber (a transaction's). */
export interface Reader {
  readonly clock: Clock.Clock
  readonly debug: boolean
  readonly currentSpan: Tracer.AnySpan | undefined
}

export const reader = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Reader => ({
  clock: Context.get(fiber.currentDefaultServices, Clock.Clock),
  debug: isDebug(fiber),
  currentSpan: fiber.currentSpan
})

/**
 * A phase under these options reports to nothing: no span of its own, and the span it would report to records
 * nothing (see internal/tracing), so it gets no event either.
 */
export const reportsNothing = (read: Reader, phaseSpans: boolean, span: Tracer.AnySpan | undefined): boolean => {
  const target = span ?? read.currentSpan
  return !phaseSpans && (target === undefined || target._tag !== "Span" || !tracing.records(target))
}

/** A phase's step, its deadline `timeoutMs` from now. */
export const stepOf = (read: Reader, timeoutMs: number): Step => ({
  deadline: read.clock.unsafeCurrentTimeMillis() + timeoutMs,
  debug: read.debug,
  clock: read.clock
})

const crlf = (lines: ReadonlyArray<string>) => {
  if (lines.length === 1) return `${lines[0]}\r\n`
  let out = ""
  for (const line of lines) out += `${line}\r\n`
  return out
}

const first = (replies: ReadonlyArray<SmtpReply.Reply>) => replies[0]!

/** The exchange, its failure as the phase's error, its replies mapped by `f`: one continuation, not two. */
const wire = <B>(
  connection: Connection,
  phase: Phase,
  timeoutMs: number,
  step: Step,
  write: ReadonlyArray<string> | Uint8Array | undefined,
  replies: number,
  f: (replies: ReadonlyArray<SmtpReply.Reply>) => B,
  describe: string | undefined
): Effect.Effect<B, TransportError.TransportError> => {
  const request = {
    write: write === undefined || write instanceof Uint8Array ? write : crlf(write),
    replies,
    deadline: step.deadline
  }
  // matchEffect rather than mapBoth, whose `sync` around each mapping is a run-loop step more per exchange
  const effect = Effect.matchEffect(connection.exchange(request), {
    onFailure: (e) => Effect.fail(fromSocket(e, phase, timeoutMs)),
    onSuccess: (replies) => Effect.succeed(f(replies))
  })
  if (!step.debug) return effect
  const sent = write === undefined
    ? Effect.void
    : write instanceof Uint8Array
    ? Effect.logDebug(`C: ${describe ?? `<${write.length} bytes>`}`)
    : Effect.forEach(write, (line) => Effect.logDebug(`C: ${line}`), { discard: true })
  return Effect.zipRight(
    sent,
    Effect.flatMap(
      Effect.mapError(
        connection.exchange(request),
        (e) => fromSocket(e, phase, timeoutMs)
      ),
      (got) =>
        Effect.as(
          Effect.forEach(got, (reply) => Effect.logDebug(`S: ${SmtpReply.format(reply)}`), { discard: true }),
          f(got)
        )
    )
  )
}

const all = <A>(a: A) => a

/**
 * Writes `lines` (or `bytes`) and reads `replies` replies under the step's deadline, logging the transcript when
 * Debug is on.
 */
export const exchange = (
  connection: Connection,
  phase: Phase,
  timeoutMs: number,
  step: Step,
  write: ReadonlyArray<string> | Uint8Array | undefined,
  replies: number,
  /** What the transcript says of a byte payload. */
  describe?: string
): Effect.Effect<ReadonlyArray<SmtpReply.Reply>, TransportError.TransportError> =>
  wire(connection, phase, timeoutMs, step, write, replies, all, describe)

/** `exchange`, its first reply. */
export const exchangeFirst = (
  connection: Connection,
  phase: Phase,
  timeoutMs: number,
  step: Step,
  write: ReadonlyArray<string> | Uint8Array | undefined,
  describe?: string
): Effect.Effect<SmtpReply.Reply, TransportError.TransportError> =>
  wire(connection, phase, timeoutMs, step, write, 1, first, describe)

/** `exchangeFirst`, its outcome as an Either (one match, no `Effect.either` around it). */
export const exchangeFirstEither = (
  connection: Connection,
  phase: Phase,
  timeoutMs: number,
  step: Step,
  write: ReadonlyArray<string> | Uint8Array | undefined
): Effect.Effect<Either.Either<SmtpReply.Reply, TransportError.TransportError>> => {
  if (step.debug) return Effect.either(wire(connection, phase, timeoutMs, step, write, 1, first, undefined))
  const request = {
    write: write === undefined || write instanceof Uint8Array ? write : crlf(write),
    replies: 1,
    deadline: step.deadline
  }
  const onFailure = (e: SocketError): Either.Either<SmtpReply.Reply, TransportError.TransportError> =>
    Either.left(fromSocket(e, phase, timeoutMs))
  const onSuccess = (replies: ReadonlyArray<SmtpReply.Reply>): Either.Either<SmtpReply.Reply, TransportError.TransportError> =>
    Either.right(replies[0]!)
  if (connection.exchangeEither !== undefined) return connection.exchangeEither(request, onFailure, onSuccess)
  return Effect.matchEffect(connection.exchange(request), {
    onFailure: (e) => Effect.succeed(onFailure(e)),
    onSuccess: (replies) => Effect.succeed(onSuccess(replies))
  })
}

/**
 * `exchangeFirstEither`, started in the caller's step where the connection has `exchangeEitherNow` (the library's
 * own: `Connector.layer`, the scripted connector): for a caller that runs the returned effect at once, in the fiber
 * that called it. A buffered reply is then a value, taken with no step (see `Wire.exchangeEitherNow`); any other
 * connection, and a transcript logged under Debug, go through `exchangeFirstEither`.
 */
export const exchangeFirstEitherNow = (
  connection: Connection,
  phase: Phase,
  timeoutMs: number,
  step: Step,
  write: ReadonlyArray<string> | Uint8Array | undefined
): Effect.Effect<Either.Either<SmtpReply.Reply, TransportError.TransportError>> => {
  if (step.debug || connection.exchangeEitherNow === undefined) {
    return exchangeFirstEither(connection, phase, timeoutMs, step, write)
  }
  return connection.exchangeEitherNow(
    step.clock,
    oneReply(write, step),
    (e) => Either.left(fromSocket(e, phase, timeoutMs)),
    firstRight
  )
}

/**
 * `exchangeFirstEitherNow` followed by `f`: on the library's own connection the fiber resumes with `f`'s effect (see
 * `Wire.exchangeThenNow`), for an exchange that waits for the server; for a caller that runs the returned effect at
 * once.
 */
export const exchangeFirstThen = <B, E>(
  connection: Connection,
  phase: Phase,
  timeoutMs: number,
  step: Step,
  write: ReadonlyArray<string> | Uint8Array | undefined,
  f: (reply: Either.Either<SmtpReply.Reply, TransportError.TransportError>) => Effect.Effect<B, E>
): Effect.Effect<B, E> => {
  if (step.debug || connection.exchangeThenNow === undefined) {
    return Effect.flatMap(exchangeFirstEither(connection, phase, timeoutMs, step, write), f)
  }
  return connection.exchangeThenNow(
    step.clock,
    oneReply(write, step),
    (e) => f(Either.left(fromSocket(e, phase, timeoutMs))),
    (replies) => f(Either.right(replies[0]!))
  )
}

/**
 * `exchangeFirstEitherNow`, its outcome mapped by `f` where the exchange completes: for the last exchange of a
 * transaction, whose outcome is the transaction's result (`f` pure: it may run in a socket's callback).
 */
export const exchangeFirstMap = <B>(
  connection: Connection,
  phase: Phase,
  timeoutMs: number,
  step: Step,
  write: ReadonlyArray<string> | Uint8Array,
  f: (reply: Either.Either<SmtpReply.Reply, TransportError.TransportError>) => B
): Effect.Effect<B> => {
  if (step.debug || connection.exchangeEitherNow === undefined) {
    return Effect.map(exchangeFirstEither(connection, phase, timeoutMs, step, write), f)
  }
  return connection.exchangeEitherNow(
    step.clock,
    oneReply(write, step),
    (e) => f(Either.left(fromSocket(e, phase, timeoutMs))),
    (replies) => f(Either.right(replies[0]!))
  )
}

/** An exchange of one reply under the step's deadline. */
const oneReply = (write: ReadonlyArray<string> | Uint8Array | undefined, step: Step): Exchange => ({
  write: write === undefined || write instanceof Uint8Array ? write : crlf(write),
  replies: 1,
  deadline: step.deadline
})

const firstRight = (replies: ReadonlyArray<SmtpReply.Reply>): Either.Either<SmtpReply.Reply, TransportError.TransportError> =>
  Either.right(replies[0]!)

/** One command, one reply. */
export const command = (
  connection: Connection,
  phase: Phase,
  timeoutMs: number,
  step: Step,
  line: string
): Effect.Effect<SmtpReply.Reply, TransportError.TransportError> =>
  wire(connection, phase, timeoutMs, step, [line], 1, first, undefined)

/** The next reply, to a command already sent. */
export const reply = (
  connection: Connection,
  phase: Phase,
  timeoutMs: number,
  step: Step
): Effect.Effect<SmtpReply.Reply, TransportError.TransportError> =>
  wire(connection, phase, timeoutMs, step, undefined, 1, first, undefined)
