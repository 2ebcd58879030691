/**
 * A staggered race over a pull of candidates, after RFC 8305 ("Happy Eyeballs v2") §5: start the first attempt;
 * start the next one when the connection-attempt delay elapses or as soon as a running attempt fails; the first
 * attempt to succeed wins and every other one is interrupted, a success that did not win released.
 *
 * No Effect combinator does this: `Effect.raceAll` starts everything at once, `Effect.firstSuccessOf` is strictly
 * sequential, and `race(a, delay(b))` keeps waiting for the delay after `a` has already failed.
 *
 * The race knows nothing of sockets: an attempt is any interruptible Effect that cleans up after itself when it
 * fails or is interrupted, and `release` disposes of a success.
 *
 * @since 0.1.0
 */
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Stream from "effect/Stream"
import * as internal from "./internal/race/race.js"
import type { Pull } from "./Pull.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Started<C> {
  readonly candidate: C
  /** Position of the candidate in the pull. */
  readonly index: number
  /** Clock time (ms) at which the attempt started. */
  readonly startMs: number
  /** Clock time (ms) at which the attempt succeeded, failed or was cancelled. */
  readonly endMs: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Winner<C, A> extends Started<C> {
  readonly value: A
}

/**
 * An attempt that did not win: it failed on its own, or it was still running (or had just succeeded) when another
 * attempt won and was cancelled.
 *
 * @since 0.1.0
 * @category models
 */
export type Loser<C, E> =
  | (Started<C> & { readonly _tag: "Failed"; readonly error: E })
  | (Started<C> & { readonly _tag: "Cancelled" })

/**
 * @since 0.1.0
 * @category models
 */
export interface RaceResult<C, A, E> {
  readonly winner: Option.Option<Winner<C, A>>
  /** Every attempt that was started and did not win, in start order. */
  readonly losers: ReadonlyArray<Loser<C, E>>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RaceOptions<C, A, E, R> {
  /** Pulled only when an attempt is about to start: a race won early never evaluates the rest. */
  readonly candidates: Pull<C, R>
  /**
   * One attempt. Interruptible; what it acquired and did not return it frees itself when it fails or is
   * interrupted. A resource it returns should come out of an uninterruptible tail (as `Effect.acquireRelease`'s
   * acquire does), so that an interruption cannot fall between the two.
   */
  readonly attempt: (candidate: C, index: number) => Effect.Effect<A, E, R>
  /** Disposes of a success that did not win (two attempts succeeding at once, or one succeeding as it is cancelled). */
  readonly release: (value: A) => Effect.Effect<void>
  /** `None` runs the candidates strictly one after another. */
  readonly delay: Option.Option<Duration.DurationInput>
}

/**
 * Runs the race. The winner's value is the caller's from then on; use {@link raceUse} to have it released after
 * use with no gap for an interruption between the race and the use.
 *
 * Forks nothing for a race of one candidate or without a delay: the attempts run in the caller's fiber. With a
 * delay, every attempt but a last one with nothing else running is a child fiber, and each wait for the delay one
 * more. An attempt that dies (a defect, not a typed failure) makes the whole race die once the other attempts are
 * cleaned up: a defect is a bug, not a reason to try the next candidate. Interrupting the race interrupts every
 * attempt and releases every success.
 *
 * @since 0.1.0
 * @category racing
 */
export const race: <C, A, E, R>(options: RaceOptions<C, A, E, R>) => Effect.Effect<RaceResult<C, A, E>, never, R> =
  internal.race

/**
 * Runs the race, then `use` on its result; the winner is released (with `options.release`) once `use` is done,
 * however it ends, or at once if the race is interrupted as it ends. Acquire/use/release for a race, without a
 * `Scope`.
 *
 * @since 0.2.0
 * @category racing
 */
export const raceUse: <C, A, E, R, B, E2, R2>(
  options: RaceOptions<C, A, E, R>,
  use: (result: RaceResult<C, A, E>) => Effect.Effect<B, E2, R2>
) => Effect.Effect<B, E2, R | R2> = internal.raceUse

/**
 * {@link race} over a Stream of candidates, pulled through `Stream.toPull` in a scope of its own.
 *
 * @since 0.2.0
 * @category racing
 */
export const raceStream: <C, A, E, R>(
  options: Omit<RaceOptions<C, A, E, R>, "candidates"> & { readonly candidates: Stream.Stream<C, never, R> }
) => Effect.Effect<RaceResult<C, A, E>, never, R> = internal.raceStream
