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
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import * as lazyStream from "./internal/lazyStream.js"

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

// The delay elapsed: what the wait for the next event returns instead of a settled attempt.
const ELAPSED = Symbol.for("effect-smtp-transport/HappyEyeballs/elapsed")

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
  Effect.flatMap(Effect.scope, (outer) =>
    Effect.clockWith((clock) =>
      Effect.suspend(() => {
        const delay = Option.map(options.delay, Duration.decode)
        const losers: Array<Loser<C, E>> = []
        const body = Option.isNone(delay)
          ? sequential(options, outer, clock, losers)
          : staggered(options, outer, clock, delay.value, losers)
        return Effect.map(body, (winner) => ({ winner, losers: losers.sort((a, b) => a.index - b.index) }))
      })
    ))

/**
 * One attempt run in the race's own fiber: its winner, or `None` once it has failed (recorded in `losers`, its scope
 * closed). A defect closes its scope and dies.
 */
const inFiber = <C, A, E, R>(
  options: RaceOptions<C, A, E, R>,
  outer: Scope.Scope,
  clock: Clock.Clock,
  losers: Array<Loser<C, E>>,
  candidate: C,
  index: number
): Effect.Effect<Option.Option<Winner<C, A>>, never, R> =>
  Effect.flatMap(Scope.fork(outer, ExecutionStrategy.sequential), (scope) => {
    const startMs = clock.unsafeCurrentTimeMillis()
    const attempt = Effect.onInterrupt(
      Effect.exit(Scope.extend(options.attempt(candidate, index), scope)),
      () => Scope.close(scope, Exit.void)
    )
    return Effect.flatMap(attempt, (exit) => {
      const endMs = clock.unsafeCurrentTimeMillis()
      if (Exit.isSuccess(exit)) {
        return Effect.succeed(Option.some<Winner<C, A>>({ candidate, index, startMs, endMs, value: exit.value }))
      }
      const failure = Cause.failureOption(exit.cause)
      if (Option.isNone(failure)) {
        return Effect.zipRight(Scope.close(scope, exit), Effect.failCause(exit.cause as Cause.Cause<never>))
      }
      losers.push({ _tag: "Failed", candidate, index, startMs, endMs, error: failure.value })
      return Effect.as(Scope.close(scope, exit), Option.none())
    })
  })

/** No delay: one attempt at a time, each run in the race's own fiber, so nothing needs forking. */
const sequential = <C, A, E, R>(
  options: RaceOptions<C, A, E, R>,
  outer: Scope.Scope,
  clock: Clock.Clock,
  losers: Array<Loser<C, E>>
): Effect.Effect<Option.Option<Winner<C, A>>, never, R> =>
  lazyStream.pulling(options.candidates, (puller) => {
    let index = 0
    const loop: Effect.Effect<Option.Option<Winner<C, A>>, never, R> = Effect.flatMap(puller.next, (next) => {
      if (Option.isNone(next)) return Effect.succeed(Option.none())
      return Effect.flatMap(
        inFiber(options, outer, clock, losers, next.value, index++),
        (won) => Option.isSome(won) ? Effect.succeed(won) : loop
      )
    })
    return loop
  }).pipe(Effect.orDie)

/**
 * With a delay: every attempt runs in its own fiber and reports its exit through a callback; the race's fiber
 * waits for the next exit or for the delay, whichever comes first, timed by a sleeper fiber on Effect's Clock.
 */
const staggered = <C, A, E, R>(
  options: RaceOptions<C, A, E, R>,
  outer: Scope.Scope,
  clock: Clock.Clock,
  delay: Duration.Duration,
  losers: Array<Loser<C, E>>
): Effect.Effect<Option.Option<Winner<C, A>>, never, R> =>
  Effect.suspend(() => {
    const running = new Map<number, Running<C>>()
    const settled: Array<Settled<A, E>> = []
    // The pending wait, if any; `null` while the race's fiber is busy.
    let wake: ((event: Settled<A, E> | typeof ELAPSED) => void) | null = null
    // The sleeper timing the pending wait; it has nothing left to do once the wait is over, so it is told to stop
    // (not waited for).
    let timer: Fiber.RuntimeFiber<void> | null = null
    // Tells a sleeper whether it still times the current wait: a stopped one may already be past its sleep.
    let timerId = 0
    // The sleeper fired before the wait was registered (the race's fiber yielded in between).
    let elapsed = false
    let nextIndex = 0

    const stopTimer = () => {
      timerId++
      elapsed = false
      if (timer !== null) {
        timer.unsafeInterruptAsFork(timer.id())
        timer = null
      }
    }

    const onSettled = (index: number, exit: Exit.Exit<A, E>) => {
      const event = { index, exit }
      if (wake !== null) wake(event)
      else settled.push(event)
    }

    /** The next settled attempt, or ELAPSED when the sleeper fires first. */
    const nextEvent = Effect.async<Settled<A, E> | typeof ELAPSED>((resume) => {
      if (settled.length > 0) {
        stopTimer()
        return resume(Effect.succeed(settled.shift()!))
      }
      if (elapsed) {
        elapsed = false
        return resume(Effect.succeed(ELAPSED))
      }
      wake = (event) => {
        wake = null
        if (event !== ELAPSED) stopTimer()
        resume(Effect.succeed(event))
      }
      return Effect.sync(() => {
        wake = null
        stopTimer()
      })
    })

    const sleeper = (id: number) =>
      Effect.zipRight(
        clock.sleep(delay),
        Effect.sync(() => {
          if (id !== timerId) return
          timer = null
          if (wake !== null) wake(ELAPSED)
          else elapsed = true
        })
      )

    const cancelAll = Effect.suspend(() => {
      const all = Array.from(running.values())
      running.clear()
      return Effect.forEach(all, (r) =>
        Effect.zipRight(
          Fiber.interrupt(r.fiber),
          Effect.zipRight(
            Scope.close(r.scope, Exit.void),
            Effect.sync(() => {
              losers.push({
                _tag: "Cancelled",
                candidate: r.candidate,
                index: r.index,
                startMs: r.startMs,
                endMs: clock.unsafeCurrentTimeMillis()
              })
            })
          )
        ), { discard: true })
    })

    const body = (puller: lazyStream.Puller<C, R>) => {
      const startNext: Effect.Effect<boolean, never, R> = Effect.flatMap(puller.next, (next) =>
        Option.isNone(next) ? Effect.succeed(false) : Effect.as(start(next.value), true))

      const start = (candidate: C): Effect.Effect<void, never, R> => {
        const index = nextIndex++
        return Effect.flatMap(Scope.fork(outer, ExecutionStrategy.sequential), (scope) => {
          const startMs = clock.unsafeCurrentTimeMillis()
          return Effect.map(
            Effect.fork(
              Effect.flatMap(Effect.exit(Scope.extend(options.attempt(candidate, index), scope)), (exit) =>
                Effect.sync(() => onSettled(index, exit)))
            ),
            (fiber) => {
              running.set(index, { candidate, index, startMs, scope, fiber })
            }
          )
        })
      }

      const loop: Effect.Effect<Option.Option<Winner<C, A>>, never, R> = Effect.suspend(() => {
        if (running.size === 0) {
          return Effect.flatMap(puller.next, (next) => {
            if (Option.isNone(next)) return Effect.succeed(Option.none())
            // The last candidate with nothing else running has no one to race and nothing to stagger in after it:
            // it runs in this fiber, as without a delay (the one-address host, the usual case, forks nothing).
            if (puller.done) return inFiber(options, outer, clock, losers, next.value, nextIndex++)
            return Effect.zipRight(start(next.value), loop)
          })
        }
        const wait = puller.done ? nextEvent : Effect.flatMap(Effect.fork(sleeper(++timerId)), (fiber) => {
          timer = fiber
          return nextEvent
        })
        return Effect.flatMap(wait, (event) => {
          if (event === ELAPSED) {
            // The delay elapsed with every running attempt still pending: stagger in the next candidate.
            return Effect.zipRight(startNext, loop)
          }
          const { exit, index } = event
          const r = running.get(index)!
          running.delete(index)
          const endMs = clock.unsafeCurrentTimeMillis()
          if (Exit.isSuccess(exit)) {
            return Effect.as(
              cancelAll,
              Option.some<Winner<C, A>>({ candidate: r.candidate, index, startMs: r.startMs, endMs, value: exit.value })
            )
          }
          const failure = Cause.failureOption(exit.cause)
          if (Option.isNone(failure)) {
            return Effect.zipRight(
              Scope.close(r.scope, exit),
              Effect.zipRight(cancelAll, Effect.failCause(exit.cause as Cause.Cause<never>))
            )
          }
          const { candidate, startMs } = r
          losers.push({ _tag: "Failed", candidate, index, startMs, endMs, error: failure.value })
          // A failure frees a slot at once: no reason to sit out the rest of the delay (RFC 8305 §5).
          return Effect.zipRight(Scope.close(r.scope, exit), Effect.zipRight(startNext, loop))
        })
      })
      return loop
    }

    return lazyStream.pulling(options.candidates, body).pipe(
      Effect.ensuring(cancelAll),
      Effect.orDie
    )
  })
