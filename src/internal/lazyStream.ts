/**
 * Lazy Streams over a known list, and a cheap way for this library to pull them.
 *
 * Running any Stream builds a channel executor: about 180 fiber-loop steps and a dozen allocations before the
 * first element, even through `Stream.toPull`, which is a tenth of a delivery for the one-host, one-address Streams
 * of `Candidates`. A Stream made here is an ordinary Stream (any consumer may run it, with the same elements and
 * the same laziness) that also carries its list and its per-element effect; `puller` reads those when it finds
 * them and pulls element by element without an executor, and falls back to `Stream.toPull` for any other Stream.
 *
 * @internal
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

const Source = Symbol.for("effect-smtp-transport/internal/lazyStream/Source")

interface Source<B, R> {
  readonly items: ReadonlyArray<unknown>
  readonly f: (item: any) => Effect.Effect<B, never, R>
}

/**
 * The Stream of `f(item)` for each item, in order, each effect run only when its element is pulled; every run of
 * the Stream starts over.
 *
 * @internal
 */
export const make = <A, B, R>(
  items: ReadonlyArray<A>,
  f: (item: A) => Effect.Effect<B, never, R>
): Stream.Stream<B, never, R> => {
  // `repeatEffectOption` over a cursor is the cheapest of Effect's lazy constructors to run (half the work of
  // `fromIterable` + `mapEffect`); `suspend` gives each run its own cursor.
  const stream = Stream.suspend(() => {
    let next = 0
    return Stream.repeatEffectOption(
      Effect.suspend(() => (next < items.length ? f(items[next++]!) : Effect.fail(Option.none())))
    )
  })
  const source: Source<B, R> = { items, f }
  Object.defineProperty(stream, Source, { value: source })
  return stream
}

/**
 * Pulls elements one at a time.
 *
 * @internal
 */
export interface Puller<A, R> {
  /** The next element, `None` once the Stream has ended. */
  readonly next: Effect.Effect<Option.Option<A>, never, R>
  /** The Stream has ended and every element pulled has been handed out. */
  readonly done: boolean
}

/**
 * Runs `use` with a puller over `stream`. A Stream from {@link make} is pulled directly; any other through
 * `Stream.toPull`, whose executor lives in a scope closed once `use` is done (a pull may bring a whole chunk: the
 * rest waits for the next calls).
 *
 * @internal
 */
export const pulling = <A, R, X, E2, R2>(
  stream: Stream.Stream<A, never, R>,
  use: (puller: Puller<A, R>) => Effect.Effect<X, E2, R2>
): Effect.Effect<X, E2, R | R2> => {
  const source = (stream as { readonly [Source]?: Source<A, R> })[Source]
  return source !== undefined
    ? Effect.suspend(() => use(direct(source)))
    : Effect.acquireUseRelease(
      Scope.make(),
      (scope) => Effect.flatMap(Scope.extend(Stream.toPull(stream), scope), (pull) => use(chunked(pull))),
      (scope, exit) => Scope.close(scope, exit)
    )
}

const direct = <A, R>(source: Source<A, R>): Puller<A, R> => {
  let at = 0
  return {
    next: Effect.suspend(() =>
      at < source.items.length ? Effect.map(source.f(source.items[at++]), Option.some) : Effect.succeedNone
    ),
    get done() {
      return at >= source.items.length
    }
  }
}

const chunked = <A, R>(pull: Effect.Effect<Chunk.Chunk<A>, Option.Option<never>, R>): Puller<A, R> => {
  let buffer: ReadonlyArray<A> = []
  let at = 0
  let exhausted = false
  const next: Effect.Effect<Option.Option<A>, never, R> = Effect.suspend(() => {
    if (at < buffer.length) return Effect.succeed(Option.some(buffer[at++]!))
    if (exhausted) return Effect.succeedNone
    return Effect.matchEffect(pull, {
      onFailure: () => {
        exhausted = true
        return Effect.succeedNone
      },
      onSuccess: (chunk) => {
        buffer = Chunk.toReadonlyArray(chunk)
        at = 0
        return next
      }
    })
  })
  return {
    next,
    get done() {
      return exhausted && at >= buffer.length
    }
  }
}

/**
 * `Stream.runForEachWhile` for the Streams of a delivery: `f` runs on each element in order until it answers
 * `false` or the Stream ends, in the calling fiber (`Stream.run*` forks one, with two Deferreds around it).
 *
 * @internal
 */
export const forEachWhile = <A, R, E2, R2>(
  stream: Stream.Stream<A, never, R>,
  f: (a: A) => Effect.Effect<boolean, E2, R2>
): Effect.Effect<void, E2, R | R2> =>
  pulling(stream, (puller) => {
    const loop: Effect.Effect<void, E2, R | R2> = Effect.flatMap(
      puller.next,
      (next) => Option.isNone(next) ? Effect.void : Effect.flatMap(f(next.value), (go) => (go ? loop : Effect.void))
    )
    return loop
  })
