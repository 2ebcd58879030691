/**
 * A staggered race over a Stream of candidates, after RFC 8305 ("Happy Eyeballs v2") §5: start the first attempt;
 * start the next one when the connection-attempt delay elapses or as soon as a running attempt fails; the first
 * attempt to succeed wins and every other one is interrupted and its resources released.
 *
 * No Effect combinator does this: `Effect.raceAll` starts everything at once, `Effect.firstSuccessOf` is strictly
 * sequential, and `race(a, delay(b))` keeps waiting for the delay after `a` has already failed.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * @since 0.1.0
 */
export interface Started<C> {
  readonly candidate: C
  /** Position of the candidate in the Stream. */
  readonly index: number
  /** Clock time (ms) at which the attempt started. */
  readonly startMs: number
  /** Clock time (ms) at which the attempt succeeded, failed or was cancelled. */
  readonly endMs: number
}

/**
 * @since 0.1.0
 */
export interface Winner<C, A> extends Started<C> {
  readonly value: A
}

/**
 * An attempt that did not win: it failed on its own, or it was still running (or had just succeeded) when another
 * attempt won and was cancelled.
 *
 * @since 0.1.0
 */
export type Loser<C, E> =
  | (Started<C> & { readonly _tag: "Failed"; readonly error: E })
  | (Started<C> & { readonly _tag: "Cancelled" })

/**
 * @since 0.1.0
 */
export interface RaceResult<C, A, E> {
  readonly winner: Option.Option<Winner<C, A>>
  /** Every attempt that was started and did not win, in start order. */
  readonly losers: ReadonlyArray<Loser<C, E>>
}

/**
 * @since 0.1.0
 */
export interface RaceOptions<C, A, E, R> {
  readonly candidates: Stream.Stream<C, never, R>
  /**
   * One attempt. Whatever it acquires in its `Scope` stays open for the winner (its scope is a child of the
   * caller's) and is released at once for every loser.
   */
  readonly attempt: (candidate: C, index: number) => Effect.Effect<A, E, R | Scope.Scope>
  /** `None` runs the candidates strictly one after another. */
  readonly delay: Option.Option<Duration.DurationInput>
}

interface Running<C> {
  readonly candidate: C
  readonly index: number
  readonly startMs: number
  readonly scope: Scope.CloseableScope
  readonly fiber: Fiber.RuntimeFiber<void>
}

interface Settled<A, E> {
  readonly index: number
  readonly exit: Exit.Exit<A, E>
}

/**
 * Runs the race. Candidates are pulled from the Stream only when an attempt is about to start, so a race that is
 * won early never evaluates the rest of the Stream. The winner's resources live in the caller's `Scope`.
 *
 * An attempt that dies (a defect, not a typed failure) makes the whole race die once the other attempts are
 * cleaned up: a defect is a bug, not a reason to try the next address.
 *
 * @since 0.1.0
 */
export const race = <C, A, E, R>(
  options: RaceOptions<C, A, E, R>
): Effect.Effect<RaceResult<C, A, E>, never, R | Scope.Scope> =>
  Effect.gen(function*() {
    const outer = yield* Effect.scope
    const delay = Option.map(options.delay, Duration.decode)
    const running = new Map<number, Running<C>>()
    const losers: Array<Loser<C, E>> = []

    const cancelAll = Effect.gen(function*() {
      const all = Array.from(running.values())
      running.clear()
      for (const r of all) {
        yield* Fiber.interrupt(r.fiber)
        yield* Scope.close(r.scope, Exit.void)
        losers.push({ _tag: "Cancelled", candidate: r.candidate, index: r.index, startMs: r.startMs, endMs: yield* Clock.currentTimeMillis })
      }
    })

    const body = Effect.gen(function*() {
      const pull = yield* Stream.toPull(options.candidates)
      const settled = yield* Queue.unbounded<Settled<A, E>>()
      let buffer: Array<C> = []
      let exhausted = false
      let nextIndex = 0

      // A pull may bring a whole chunk; keep the rest for later attempts instead of pulling again.
      const next: Effect.Effect<Option.Option<C>, never, R> = Effect.suspend(() => {
        if (buffer.length > 0) return Effect.succeed(Option.some(buffer.shift()!))
        if (exhausted) return Effect.succeed(Option.none())
        return pull.pipe(
          Effect.map((chunk) => {
            buffer = Chunk.toArray(chunk)
            return buffer.length > 0 ? Option.some(buffer.shift()!) : Option.none<C>()
          }),
          Effect.catchAll(() => {
            exhausted = true
            return Effect.succeed(Option.none<C>())
          }),
          Effect.flatMap((c) => Option.isNone(c) && !exhausted ? next : Effect.succeed(c))
        )
      })

      const startNext = Effect.gen(function*() {
        const candidate = yield* next
        if (Option.isNone(candidate)) return false
        const index = nextIndex++
        const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
        const startMs = yield* Clock.currentTimeMillis
        const fiber = yield* options.attempt(candidate.value, index).pipe(
          Scope.extend(scope),
          Effect.exit,
          Effect.flatMap((exit) => Queue.offer(settled, { index, exit })),
          Effect.asVoid,
          Effect.forkScoped
        )
        running.set(index, { candidate: candidate.value, index, startMs, scope, fiber })
        return true
      })

      while (true) {
        if (running.size === 0) {
          if (!(yield* startNext)) return Option.none<Winner<C, A>>()
          continue
        }
        const mayStagger = Option.isSome(delay) && !(exhausted && buffer.length === 0)
        const event = mayStagger
          ? yield* Effect.timeoutOption(Queue.take(settled), delay.value)
          : Option.some(yield* Queue.take(settled))
        if (Option.isNone(event)) {
          // The delay elapsed with every running attempt still pending: stagger in the next candidate.
          yield* startNext
          continue
        }
        const { exit, index } = event.value
        const r = running.get(index)!
        running.delete(index)
        const endMs = yield* Clock.currentTimeMillis
        if (Exit.isSuccess(exit)) {
          yield* cancelAll
          return Option.some<Winner<C, A>>({ candidate: r.candidate, index, startMs: r.startMs, endMs, value: exit.value })
        }
        yield* Scope.close(r.scope, exit)
        const cause = exit.cause
        const failure = Cause.failureOption(cause)
        if (Option.isNone(failure)) {
          yield* cancelAll
          return yield* Effect.failCause(cause)
        }
        losers.push({ _tag: "Failed", candidate: r.candidate, index, startMs: r.startMs, endMs, error: failure.value })
        // A failure frees a slot at once: no reason to sit out the rest of the delay (RFC 8305 §5).
        yield* startNext
      }
    })

    const winner = yield* Effect.scoped(body).pipe(Effect.ensuring(cancelAll), Effect.orDie)
    return { winner, losers: losers.sort((a, b) => a.index - b.index) }
  })
