/**
 * `Stream.mapEffect(self, f, { concurrency, unordered: true })` for an `f` that does not fail, with what each element
 * costs brought down to what the work itself costs.
 *
 * Effect 3's `mapEffect` with concurrency runs every element through a merged inner stream (fibers, queues and
 * channels per element): measured on this project's machine with an `f` that only waits for `setImmediate`, 424 µs
 * of CPU an element unordered and 197 ordered, against 6.7 for `Effect.forEach` at the same concurrency; `deliverAll`
 * over it was 521 run-loop steps and 3 fibers a message against 24 for the message itself (docs/performance.md). Here
 * `concurrency` worker fibers take elements from the input in turn, run `f`, and hand each result to the output
 * through a mailbox built on `Effect.async` (a `Queue`'s hand-over measured 18 µs an element, this one about 7).
 *
 * What it keeps of `mapEffect`'s contract: at most `concurrency` elements in `f` at once; results in completion
 * order; the input pulled only when a worker is free, one chunk at a time, and not while `concurrency` results wait
 * for the consumer; closing the output (the consumer stopped early, or was interrupted) interrupts the workers, all
 * at once, and no element starts after it. What it does better: when the input fails, no element is started after
 * the failure and every element already in `f` finishes and is emitted before the output fails with the input's
 * error. A defect in `f` (or `f` interrupting itself) stops the pulling the same way, ends a worker's wait on the
 * input, and fails the output with that cause once the others have finished.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as scopeFinalizer from "./scopeFinalizer.js"

export const mapUnordered = <A, B, E, R, R2>(
  self: Stream.Stream<A, E, R>,
  f: (a: A) => Effect.Effect<B, never, R2>,
  concurrency: number
): Stream.Stream<B, E, R | R2> => {
  if (!Number.isSafeInteger(concurrency) || concurrency < 1) {
    return Stream.dieMessage(`concurrency must be a positive integer, got ${concurrency}`)
  }
  return Stream.unwrapScoped(Effect.gen(function*() {
    const pull = yield* Stream.toPull(self)
    // One pull at a time: a chunk's elements are handed out before the next chunk is asked for.
    const lock = yield* Effect.makeSemaphore(1)
    let input: ReadonlyArray<A> = []
    let next = 0
    // Set when the input ended or failed, or a worker died: no element is taken after it.
    let stopped = false
    // Why the output fails once every worker is done: the input's error, or a worker's defect.
    let failure: Cause.Cause<E> | null = null
    // Workers started, and those not yet done.
    let started = 0
    let working = 0

    // The results the consumer has not taken yet, and the fibers waiting on them. Fibers run one at a time, so each
    // check and the registration of its waiter happen together inside `Effect.async`'s register.
    let results: Array<B> = []
    let consumer: ((resume: Effect.Effect<void>) => void) | null = null
    const producers: Array<(resume: Effect.Effect<void>) => void> = []
    const wakeConsumer = () => {
      if (consumer === null) return
      const resume = consumer
      consumer = null
      resume(Effect.void)
    }
    // The worker waiting on the input, if any: a defect elsewhere interrupts it rather than wait for the input (a
    // queue or standard input may not give another element for a long time).
    let puller: Fiber.RuntimeFiber<unknown, unknown> | null = null
    const stop = (cause: Cause.Cause<E> | null) => {
      stopped = true
      // What is left of the chunk is not started (the input's end and errors come after its last element anyway).
      input = []
      next = 0
      if (failure === null && cause !== null) failure = cause
    }

    // The next element, or `null` when there is none left to start. Workers are started as elements come, up to
    // `concurrency`: one more whenever one takes an element and the input may hold another.
    const take: Effect.Effect<{ readonly value: A } | null, never, R | R2> = Effect.suspend(() => {
      if (next < input.length) {
        const taken = { value: input[next++]! }
        if (started < concurrency && (next < input.length || !stopped)) return Effect.as(start, taken)
        return Effect.succeed(taken)
      }
      if (stopped) return Effect.succeed(null)
      return Effect.zipRight(refill, take)
    })
    const refill: Effect.Effect<void, never, R> = lock.withPermits(1)(Effect.suspend(() => {
      // Another worker refilled (or the input ended) while this one waited for the lock.
      if (next < input.length || stopped) return Effect.void
      const pulling = Effect.withFiberRuntime<Chunk.Chunk<A>, Option.Option<E>, R>((fiber) => {
        puller = fiber
        return Effect.ensuring(
          pull,
          Effect.sync(() => {
            puller = null
          })
        )
      })
      return Effect.matchCause(pulling, {
        onFailure: (cause) => {
          // `Option.none()` is the end of the input; `Option.some(e)` its error; anything else (a defect) as it is.
          const error = Cause.failureOption(cause)
          if (Option.isNone(error)) stop(cause as Cause.Cause<never>)
          else stop(Option.isSome(error.value) ? Cause.fail(error.value.value) : null)
        },
        onSuccess: (chunk) => {
          // Stopped while the pull was under way (a defect in `f`, the output closed): none of it is started.
          if (stopped) return
          input = Chunk.toReadonlyArray(chunk)
          next = 0
        }
      })
    }))

    // The result is kept before its worker waits for room, so a worker interrupted while waiting loses nothing.
    const put = (b: B): Effect.Effect<void> => {
      results.push(b)
      wakeConsumer()
      if (results.length < concurrency) return Effect.void
      return Effect.async<void>((resume) => {
        if (results.length < concurrency) return resume(Effect.void)
        producers.push(resume)
        return Effect.sync(() => {
          const at = producers.indexOf(resume)
          if (at >= 0) producers.splice(at, 1)
        })
      })
    }
    const finished = () => {
      working--
      if (working === 0) wakeConsumer()
    }
    const worker: Effect.Effect<void, never, R | R2> = Effect.flatMap(take, function loop(
      taken
    ): Effect.Effect<void, never, R | R2> {
      if (taken === null) return Effect.sync(finished)
      return Effect.flatMap(f(taken.value), (b) => Effect.flatMap(put(b), () => Effect.flatMap(take, loop)))
    })
    // The workers' own scope, closed by the stream's once nothing may start any more: all of them interrupted at once
    // (a sequential close would let the last ones take new elements while the first ones' finalizers run, and would
    // take the sum of those finalizers' times rather than the longest).
    const scope = yield* Scope.make(ExecutionStrategy.parallel)
    yield* scopeFinalizer.add((exit) =>
      Effect.suspend(() => {
        stop(null)
        return Scope.close(scope, exit)
      })
    )
    const start: Effect.Effect<void, never, R | R2> = Effect.suspend(() => {
      started++
      working++
      return Effect.asVoid(Effect.forkIn(
        Effect.onExit(worker, (exit) =>
          Effect.suspend(() => {
            if (exit._tag === "Success") return Effect.void
            // A defect in `f`, or `f` interrupted by itself: stop, and fail once the others are done; the worker waiting
            // on the input is interrupted (it has no element under way). Interrupted by the output's close: `stop`
            // came first, and nobody reads `failure` any more.
            stop(exit.cause as Cause.Cause<never>)
            finished()
            return puller === null ? Effect.void : Effect.asVoid(Fiber.interruptFork(puller))
          })),
        scope
      ))
    })
    yield* start

    // Whatever results are there, in one chunk; the end when every worker is done and nothing is left.
    const emit: Effect.Effect<Chunk.Chunk<B>, Option.Option<E>> = Effect.suspend(() => {
      if (results.length > 0) {
        const chunk = Chunk.unsafeFromArray(results)
        results = []
        for (const resume of producers.splice(0)) resume(Effect.void)
        return Effect.succeed(chunk)
      }
      if (working === 0) {
        return failure === null ? Effect.fail(Option.none()) : Effect.failCause(Cause.map(failure, Option.some))
      }
      return Effect.zipRight(
        Effect.async<void>((resume) => {
          if (results.length > 0 || working === 0) return resume(Effect.void)
          consumer = resume
          return Effect.sync(() => {
            consumer = null
          })
        }),
        emit
      )
    })
    return Stream.repeatEffectChunkOption(emit)
  }))
}
