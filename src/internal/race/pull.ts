import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import type { LazyArg } from "effect/Function"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { Pull } from "../../Pull.js"

/** @internal */
export const make = <A, B, R = never>(
  items: ReadonlyArray<A>,
  f: (item: A, index: number) => Effect.Effect<B, never, R>
): Pull<B, R> => {
  let at = 0
  return {
    next: Effect.suspend(() => {
      if (at >= items.length) return Effect.succeedNone
      const index = at++
      return Effect.map(f(items[index]!, index), Option.some)
    }),
    isDone: () => at >= items.length
  }
}

/** @internal */
export const fromIterable = <A>(items: Iterable<A>): Pull<A> => {
  if (Array.isArray(items)) {
    const array: ReadonlyArray<A> = items
    let at = 0
    return {
      next: Effect.sync(() => (at < array.length ? Option.some(array[at++]!) : Option.none())),
      isDone: () => at >= array.length
    }
  }
  // Not read ahead: a lazy iterable does its work only when pulled.
  let iterator: Iterator<A> | null = null
  let done = false
  return {
    next: Effect.sync(() => {
      if (done) return Option.none()
      iterator ??= items[Symbol.iterator]()
      const step = iterator.next()
      if (step.done === true) {
        done = true
        return Option.none()
      }
      return Option.some(step.value)
    }),
    isDone: () => done
  }
}

/** @internal */
export const fromStream = <A, R>(
  stream: Stream.Stream<A, never, R>
): Effect.Effect<Pull<A, R>, never, R | Scope.Scope> =>
  Effect.map(Stream.toPull(stream), (pullChunk) => {
    // A pull from the Stream may bring a whole chunk: the rest waits for the next runs of `next`.
    let buffer: ReadonlyArray<A> = []
    let at = 0
    let exhausted = false
    const next: Effect.Effect<Option.Option<A>, never, R> = Effect.suspend(() => {
      if (at < buffer.length) return Effect.succeed(Option.some(buffer[at++]!))
      if (exhausted) return Effect.succeedNone
      return Effect.matchEffect(pullChunk, {
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
    return { next, isDone: () => exhausted && at >= buffer.length }
  })

/** @internal */
export const toStream = <A, R>(pull: Pull<A, R> | LazyArg<Pull<A, R>>): Stream.Stream<A, never, R> =>
  Stream.suspend(() => {
    const source = typeof pull === "function" ? pull() : pull
    return Stream.repeatEffectOption(
      Effect.flatMap(
        source.next,
        (next) => (Option.isNone(next) ? Effect.fail(Option.none()) : Effect.succeed(next.value))
      )
    )
  })
