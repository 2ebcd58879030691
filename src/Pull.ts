/**
 * A pull: a cursor over elements produced one at a time by an Effect, for the hot paths where running a `Stream`
 * costs more than the work it organises (about 180 run-loop steps before a Stream's first element, 300–400 for
 * `Stream.toPull` on a one-element Stream, against a handful for a pull). The candidates of a delivery are pulls;
 * `toStream` and `fromStream` convert both ways for code that speaks Streams.
 *
 * A pull is stateful, as a `Queue` is: every run of `next` takes the next element. A source that can be read more
 * than once hands out a fresh pull per reader (`() => Pull<A>`).
 *
 * @since 0.2.0
 */
import type * as Effect from "effect/Effect"
import type { LazyArg } from "effect/Function"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type * as Stream from "effect/Stream"
import * as internal from "./internal/race/pull.js"

/**
 * @since 0.2.0
 * @category models
 */
export interface Pull<A, R = never> {
  /** The next element, `None` once the source is exhausted (and on every run after that). */
  readonly next: Effect.Effect<Option.Option<A>, never, R>
  /**
   * Whether `next` is known to answer `None`, without running it. A source that cannot know ahead answers `false`
   * until `next` has answered `None`. Lets a consumer treat the last element specially (the race runs a last
   * candidate in its own fiber rather than forking it).
   */
  readonly isDone: () => boolean
}

/**
 * `f(item)` for each item in order, each run only when its element is pulled.
 *
 * @since 0.2.0
 * @category constructors
 */
export const make: <A, B, R = never>(
  items: ReadonlyArray<A>,
  f: (item: A, index: number) => Effect.Effect<B, never, R>
) => Pull<B, R> = internal.make

/**
 * The elements of an iterable, in order. An array's end is known ahead (`isDone`); another iterable's only once
 * it has been reached.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fromIterable: <A>(items: Iterable<A>) => Pull<A> = internal.fromIterable

/**
 * A pull over a Stream, through `Stream.toPull`: the Stream runs in the scope, a chunk at a time.
 *
 * @since 0.2.0
 * @category constructors
 */
export const fromStream: <A, R>(
  stream: Stream.Stream<A, never, R>
) => Effect.Effect<Pull<A, R>, never, R | Scope.Scope> = internal.fromStream

/**
 * The elements of a pull as a Stream, pulled one at a time as the Stream is pulled. Given a function, every run of
 * the Stream calls it for a fresh pull, so the Stream can be run again; given a pull, the Stream consumes it.
 *
 * @since 0.2.0
 * @category conversions
 */
export const toStream: <A, R>(pull: Pull<A, R> | LazyArg<Pull<A, R>>) => Stream.Stream<A, never, R> =
  internal.toStream
