import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { Loser, RaceOptions, RaceResult, Winner } from "../../HappyEyeballs.js"
import type { Pull } from "../../Pull.js"
import * as pull from "./pull.js"

/** `restore` of the `uninterruptibleMask` the race runs in: the caller's interruptibility. */
type Restore = <X, E, R>(effect: Effect.Effect<X, E, R>) => Effect.Effect<X, E, R>

/** @internal */
export const race = <C, A, E, R>(options: RaceOptions<C, A, E, R>): Effect.Effect<RaceResult<C, A, E>, never, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(run(options, restore), (result) => {
      const winner = result.winner
      if (Option.isNone(winner)) return Effect.succeed(result)
      // Last chance for an interruption that came while the race was finishing: the winner is released rather than
      // dropped on the way out.
      return Effect.catchAllCause(
        restore(Effect.succeed(result)),
        (cause) => Effect.zipRight(options.release(winner.value.value), Effect.failCause(cause))
      )
    })
  )

/** @internal */
export const raceUse = <C, A, E, R, B, E2, R2>(
  options: RaceOptions<C, A, E, R>,
  use: (result: RaceResult<C, A, E>) => Effect.Effect<B, E2, R2>
): Effect.Effect<B, E2, R | R2> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(run(options, restore), (result) => {
      const winner = result.winner
      return Option.isNone(winner)
        ? restore(use(result))
        : Effect.ensuring(restore(use(result)), options.release(winner.value.value))
    })
  )

/** @internal */
export const raceStream = <C, A, E, R>(
  options: Omit<RaceOptions<C, A, E, R>, "candidates"> & { readonly candidates: Stream.Stream<C, never, R> }
): Effect.Effect<RaceResult<C, A, E>, never, R> =>
  // The Stream's scope is closed once the race is over, uninterruptibly; an interruption that comes meanwhile
  // releases the winner rather than dropping it.
  Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Scope.make(), (scope) =>
      Effect.flatMap(
        Effect.exit(restore(Effect.flatMap(
          Scope.extend(pull.fromStream(options.candidates), scope),
          (candidates) => race({ ...options, candidates })
        ))),
        (exit) =>
          Effect.zipRight(
            Scope.close(scope, exit),
            Exit.match(exit, {
              onFailure: (cause) => Effect.failCause(cause),
              onSuccess: (result) =>
                Option.match(result.winner, {
                  onNone: () => Effect.succeed(result),
                  onSome: (winner) =>
                    Effect.catchAllCause(
                      restore(Effect.succeed(result)),
                      (cause) => Effect.zipRight(options.release(winner.value), Effect.failCause(cause))
                    )
                })
            })
          )
      ))
  )

interface Context<C, A, E, R> {
  readonly options: RaceOptions<C, A, E, R>
  readonly restore: Restore
  readonly clock: Clock.Clock
  readonly losers: Array<Loser<C, E>>
}

/** The race, run inside an `uninterruptibleMask` whose `restore` it is given. */
const run = <C, A, E, R>(options: RaceOptions<C, A, E, R>, restore: Restore) =>
  Effect.clockWith((clock) => {
    const ctx: Context<C, A, E, R> = { options, restore, clock, losers: [] }
    const body = Option.isNone(options.delay) ? sequential(ctx) : staggered(ctx, Duration.decode(options.delay.value))
    return Effect.map(body, (winner): RaceResult<C, A, E> => ({
      winner,
      losers: ctx.losers.sort((a, b) => a.index - b.index)
    }))
  })

/**
 * One attempt run in the race's own fiber: its winner, or `None` once it has failed (recorded as a loser). A defect
 * or an interruption ends the race with it.
 */
const inFiber = <C, A, E, R>(
  ctx: Context<C, A, E, R>,
  candidate: C,
  index: number
): Effect.Effect<Option.Option<Winner<C, A>>, never, R> => {
  const startMs = ctx.clock.unsafeCurrentTimeMillis()
  return Effect.flatMap(Effect.exit(ctx.restore(ctx.options.attempt(candidate, index))), (exit) => {
    const endMs = ctx.clock.unsafeCurrentTimeMillis()
    if (Exit.isSuccess(exit)) {
      return Effect.succeed(Option.some({ candidate, index, startMs, endMs, value: exit.value }))
    }
    const failure = Cause.failureOption(exit.cause)
    if (Option.isNone(failure)) return Effect.failCause(exit.cause as Cause.Cause<never>)
    ctx.losers.push({ _tag: "Failed", candidate, index, startMs, endMs, error: failure.value })
    return Effect.succeedNone
  })
}

/** No delay: one attempt at a time, each in the race's own fiber, so nothing is forked. */
const sequential = <C, A, E, R>(ctx: Context<C, A, E, R>): Effect.Effect<Option.Option<Winner<C, A>>, never, R> => {
  const candidates: Pull<C, R> = ctx.options.candidates
  let index = 0
  const loop: Effect.Effect<Option.Option<Winner<C, A>>, never, R> = Effect.flatMap(
    ctx.restore(candidates.next),
    (next) =>
      Option.isNone(next)
        ? Effect.succeedNone
        : Effect.flatMap(inFiber(ctx, next.value, index++), (won) => (Option.isSome(won) ? Effect.succeed(won) : loop))
  )
  return loop
}

interface Running<C> {
  readonly candidate: C
  readonly index: number
  readonly startMs: number
  readonly fiber: Fiber.RuntimeFiber<void>
}

/** What the race's fiber waits for: an attempt settled, or the delay elapsed (`timer` tells a stale one apart). */
type Event<A, E> =
  | { readonly _tag: "Settled"; readonly index: number; readonly endMs: number; readonly exit: Exit.Exit<A, E> }
  | { readonly _tag: "Elapsed"; readonly timer: number }

/**
 * With a delay: attempts run as child fibers of the race's fiber and post their exit to a mailbox; the delay is a
 * child fiber sleeping on the Clock that posts to the same mailbox, interrupted by the race's fiber when an attempt
 * settles first. The race's fiber waits on the mailbox, interruptibly; everything else it does is uninterruptible,
 * so that no fiber it forks and no success posted to it can be lost. Called once per run: its state is the run's.
 */
const staggered = <C, A, E, R>(
  ctx: Context<C, A, E, R>,
  delay: Duration.Duration
): Effect.Effect<Option.Option<Winner<C, A>>, never, R> => {
  const { clock, losers, options, restore } = ctx
  const candidates: Pull<C, R> = options.candidates
  const running = new Map<number, Running<C>>()
  const mailbox: Array<Event<A, E>> = []
  let waiting: (() => void) | null = null
  // Set once the race is decided (or interrupted): a success settling after that releases itself.
  let closed = false
  let timer: Fiber.RuntimeFiber<void> | null = null
  let timerId = 0
  let nextIndex = 0

  const post = (event: Event<A, E>) => {
    mailbox.push(event)
    if (waiting === null) return
    const wake = waiting
    waiting = null
    wake()
  }

  // The wait alone is interruptible; the event stays in the mailbox until taken in the uninterruptible region, so
  // an interruption that comes with it cannot drop a success (`cancelAll` finds it there and releases it).
  const take: Effect.Effect<Event<A, E>> = Effect.zipRight(
    Effect.suspend(() =>
      mailbox.length > 0 ? Effect.void : restore(Effect.async<void>((resume) => {
        waiting = () => resume(Effect.void)
        return Effect.sync(() => {
          waiting = null
        })
      }))
    ),
    Effect.sync(() => mailbox.shift()!)
  )

  const settle = (index: number, exit: Exit.Exit<A, E>): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (!closed) {
        post({ _tag: "Settled", index, endMs: clock.unsafeCurrentTimeMillis(), exit })
        return Effect.void
      }
      return Exit.isSuccess(exit) ? options.release(exit.value) : Effect.void
    })

  // Forked from the race's uninterruptible region: the child is uninterruptible but for the attempt itself, so its
  // exit, success included, always reaches `settle`.
  const start = (candidate: C): Effect.Effect<void, never, R> => {
    const index = nextIndex++
    const startMs = clock.unsafeCurrentTimeMillis()
    const child = Effect.flatMap(
      Effect.exit(Effect.interruptible(options.attempt(candidate, index))),
      (exit) => settle(index, exit)
    )
    return Effect.map(Effect.fork(child), (fiber) => {
      running.set(index, { candidate, index, startMs, fiber })
    })
  }

  const startNext: Effect.Effect<void, never, R> = Effect.suspend(() =>
    candidates.isDone()
      ? Effect.void
      : Effect.flatMap(restore(candidates.next), (next) => (Option.isNone(next) ? Effect.void : start(next.value)))
  )

  const startTimer = Effect.suspend(() => {
    const id = ++timerId
    const sleeper = Effect.zipRight(
      Effect.interruptible(clock.sleep(delay)),
      Effect.sync(() => post({ _tag: "Elapsed", timer: id }))
    )
    return Effect.map(Effect.fork(sleeper), (fiber) => {
      timer = fiber
    })
  })

  const stopTimer = Effect.suspend(() => {
    const fiber = timer
    timer = null
    return fiber === null ? Effect.void : Fiber.interrupt(fiber)
  })

  /** Every attempt still running is interrupted and recorded; a success already posted is released. */
  const cancelAll = Effect.suspend(() => {
    closed = true
    if (running.size === 0 && timer === null) return Effect.void
    const all = Array.from(running.values())
    running.clear()
    const posted = new Map<number, Event<A, E> & { _tag: "Settled" }>()
    for (const event of mailbox.splice(0)) if (event._tag === "Settled") posted.set(event.index, event)
    return Effect.zipRight(
      stopTimer,
      Effect.flatMap(Fiber.interruptAll(all.map((r) => r.fiber)), () => {
        const endMs = clock.unsafeCurrentTimeMillis()
        const releases: Array<Effect.Effect<void>> = []
        for (const { candidate, index, startMs } of all) {
          const event = posted.get(index)
          const failure = event === undefined || Exit.isSuccess(event.exit)
            ? Option.none()
            : Cause.failureOption(event.exit.cause)
          if (Option.isSome(failure)) {
            losers.push({ _tag: "Failed", candidate, index, startMs, endMs: event!.endMs, error: failure.value })
            continue
          }
          if (event !== undefined && Exit.isSuccess(event.exit)) releases.push(options.release(event.exit.value))
          losers.push({ _tag: "Cancelled", candidate, index, startMs, endMs })
        }
        return releases.length === 0 ? Effect.void : Effect.all(releases, { discard: true })
      })
    )
  })

  const onEvent = (event: Event<A, E>): Effect.Effect<Option.Option<Winner<C, A>>, never, R> => {
    if (event._tag === "Elapsed") {
      // A delay stopped after it had fired: keep waiting, without a new one.
      if (event.timer !== timerId || timer === null) return Effect.flatMap(take, onEvent)
      timer = null
      // The delay elapsed with every running attempt still pending: stagger in the next candidate.
      return Effect.zipRight(startNext, loop)
    }
    const { endMs, exit, index } = event
    const r = running.get(index)!
    running.delete(index)
    const { candidate, startMs } = r
    if (Exit.isSuccess(exit)) {
      return Effect.succeed(Option.some({ candidate, index, startMs, endMs, value: exit.value }))
    }
    const failure = Cause.failureOption(exit.cause)
    if (Option.isNone(failure)) return Effect.failCause(exit.cause as Cause.Cause<never>)
    losers.push({ _tag: "Failed", candidate, index, startMs, endMs, error: failure.value })
    // A failure frees a slot at once: no reason to sit out the rest of the delay (RFC 8305 §5). With nothing else
    // running, `loop` pulls the next itself (and runs a last one in this fiber).
    return Effect.zipRight(stopTimer, running.size === 0 ? loop : Effect.zipRight(startNext, loop))
  }

  const loop: Effect.Effect<Option.Option<Winner<C, A>>, never, R> = Effect.suspend(() => {
    if (running.size === 0) {
      return Effect.flatMap(restore(candidates.next), (next) => {
        if (Option.isNone(next)) return Effect.succeedNone
        // The last candidate with nothing else running has no one to race and nothing to stagger in after it:
        // it runs in this fiber, as without a delay (the one-address host, the usual case, forks nothing).
        if (candidates.isDone()) return inFiber(ctx, next.value, nextIndex++)
        return Effect.zipRight(start(next.value), loop)
      })
    }
    const wait = candidates.isDone() ? take : Effect.zipRight(startTimer, take)
    return Effect.flatMap(wait, onEvent)
  })

  // As `loop` with nothing running, and the cleanup set up only once there is something to clean up.
  return Effect.flatMap(restore(candidates.next), (first) => {
    if (Option.isNone(first)) return Effect.succeedNone
    if (candidates.isDone()) return inFiber(ctx, first.value, nextIndex++)
    return Effect.ensuring(Effect.zipRight(start(first.value), loop), cancelAll)
  })
}
