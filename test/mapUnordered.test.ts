import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import { mapUnordered } from "../src/internal/mapUnordered.js"

/** Runs `stream` in a fiber, moving the TestClock on by `ms` (in 1 ms ticks), and returns what it emitted and its exit. */
const run = <A, E>(stream: Stream.Stream<A, E>, ms: number) =>
  Effect.gen(function*() {
    const out: Array<A> = []
    const fiber = yield* Effect.fork(Stream.runForEach(stream, (a) => Effect.sync(() => out.push(a))))
    for (let t = 0; t < ms; t++) yield* TestClock.adjust(Duration.millis(1))
    const exit = yield* Fiber.await(fiber)
    return { out, exit }
  })

const sleepy = (ms: number) => Effect.as(Effect.sleep(Duration.millis(ms)), ms)

describe("mapUnordered", () => {
  it.effect("emits every result in completion order, at most `concurrency` at once", () =>
    Effect.gen(function*() {
      let inFlight = 0
      let most = 0
      const f = (ms: number) =>
        Effect.acquireUseRelease(
          Effect.sync(() => {
            inFlight++
            most = Math.max(most, inFlight)
          }),
          () => sleepy(ms),
          () => Effect.sync(() => inFlight--)
        )
      const { exit, out } = yield* run(mapUnordered(Stream.make(30, 10, 20, 5, 40, 15, 26), f, 3), 200)
      expect(Exit.isSuccess(exit)).toBe(true)
      // 30, 10, 20 start at 0; 5 after 10 (ends 15), 40 after 15 (ends 55), 15 after 20 (ends 35), 26 after 30 (ends 56)
      expect(out).toEqual([10, 5, 20, 30, 15, 40, 26])
      expect(most).toBe(3)
    }))

  it.effect("starts nothing on empty input, and ends", () =>
    Effect.gen(function*() {
      const { exit, out } = yield* run(mapUnordered(Stream.empty, sleepy, 4), 1)
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(out).toEqual([])
    }))

  it.effect("pulls the input only as workers free up: an endless input, five results taken", () =>
    Effect.gen(function*() {
      let pulled = 0
      const input = Stream.repeatEffect(Effect.sync(() => ++pulled))
      const { exit, out } = yield* run(Stream.take(mapUnordered(input, () => sleepy(10), 2), 5), 100)
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(out).toEqual([10, 10, 10, 10, 10])
      // five finished, at most two more started when the output closed (and one chunk read ahead)
      expect(pulled).toBeLessThanOrEqual(5 + 2 + 1)
    }))

  it.effect("stops pulling while `concurrency` results wait for the consumer", () =>
    Effect.gen(function*() {
      let started = 0
      const f = (n: number) => Effect.sync(() => started++).pipe(Effect.zipRight(sleepy(1)), Effect.as(n))
      const pull = yield* Stream.toPull(mapUnordered(Stream.range(1, 1000), f, 4))
      const first = yield* Effect.fork(pull)
      for (let t = 0; t < 50; t++) yield* TestClock.adjust(Duration.millis(1))
      const chunk = yield* Fiber.join(first)
      expect(Chunk.size(chunk)).toBeGreaterThan(0)
      // nothing more is read while the consumer waits: the chunk taken, then at most 2 × 4 started and held
      for (let t = 0; t < 50; t++) yield* TestClock.adjust(Duration.millis(1))
      expect(started).toBeLessThanOrEqual(Chunk.size(chunk) + 2 * 4)
    }).pipe(Effect.scoped))

  it.effect("an input that fails: what is under way finishes and is emitted, nothing starts after, then the error", () =>
    Effect.gen(function*() {
      const started: Array<number> = []
      const input = Stream.concat(Stream.make(30, 10), Stream.fail("input broke" as const))
      const f = (ms: number) => Effect.zipRight(Effect.sync(() => started.push(ms)), sleepy(ms))
      const { exit, out } = yield* run(mapUnordered(input, f, 5), 100)
      expect(out).toEqual([10, 30])
      expect(started).toEqual([30, 10])
      expect(exit).toEqual(Exit.fail("input broke"))
    }))

  it.effect("an input that dies: what is under way finishes and is emitted, then the defect", () =>
    Effect.gen(function*() {
      const input = Stream.concat(Stream.make(20), Stream.dieMessage("input died"))
      const { exit, out } = yield* run(mapUnordered(input, sleepy, 3), 100)
      expect(out).toEqual([20])
      expect(Exit.isFailure(exit) && Cause.isDie(exit.cause)).toBe(true)
    }))

  it.effect("a defect in `f`: the others finish and are emitted, no element starts after it, then the defect", () =>
    Effect.gen(function*() {
      const started: Array<number> = []
      const f = (ms: number) =>
        Effect.zipRight(
          Effect.sync(() => started.push(ms)),
          ms === 5 ? Effect.zipRight(Effect.sleep(Duration.millis(5)), Effect.dieMessage("f broke")) : sleepy(ms)
        )
      // two at once: 20 and 5 start; 5 dies at 5 ms; 20 finishes at 20 ms; 7 and 9 never start
      const { exit, out } = yield* run(mapUnordered(Stream.make(20, 5, 7, 9), f, 2), 100)
      expect(out).toEqual([20])
      expect(started).toEqual([20, 5])
      expect(Exit.isFailure(exit) && Option.isSome(Cause.dieOption(exit.cause))).toBe(true)
    }))

  it.effect("an `f` that interrupts itself: the output fails with the interruption, nothing starts after it", () =>
    Effect.gen(function*() {
      const started: Array<number> = []
      const f = (n: number) => Effect.zipRight(Effect.sync(() => started.push(n)), n === 2 ? Effect.interrupt : Effect.succeed(n))
      const { exit, out } = yield* run(mapUnordered(Stream.make(1, 2, 3, 4, 5), f, 1), 5)
      expect(out).toEqual([1])
      expect(started).toEqual([1, 2])
      expect(Exit.isInterrupted(exit)).toBe(true)
    }))

  it.effect("a defect in `f` while another worker waits on the input: that wait ends, nothing more starts", () =>
    Effect.gen(function*() {
      const queue = yield* Queue.unbounded<number>()
      const started: Array<number> = []
      const f = (n: number) =>
        Effect.zipRight(
          Effect.sync(() => started.push(n)),
          n === 1 ? Effect.zipRight(Effect.sleep(Duration.millis(5)), Effect.dieMessage("f broke")) : Effect.succeed(n)
        )
      yield* Queue.offer(queue, 1)
      const fiber = yield* Effect.fork(Stream.runCollect(mapUnordered(Stream.fromQueue(queue), f, 2)))
      // 1 dies at 5 ms while the second worker waits on the empty queue
      for (let t = 0; t < 10; t++) yield* TestClock.adjust(Duration.millis(1))
      const polled = yield* Fiber.poll(fiber)
      expect(Option.isSome(polled) && Exit.isFailure(polled.value) && Cause.isDie(polled.value.cause)).toBe(true)
      yield* Queue.offerAll(queue, [7, 8, 9])
      yield* TestClock.adjust(Duration.millis(2))
      expect(started).toEqual([1])
    }))

  it.effect("closing the output early: no element starts after it, every worker interrupted at once", () =>
    Effect.gen(function*() {
      const started: Array<number> = []
      const f = (n: number) =>
        Effect.zipRight(
          Effect.sync(() => started.push(n)),
          n === 1
            ? Effect.succeed(n)
            : n === 2
            ? Effect.as(Effect.sleep(Duration.millis(10)), n)
            // a clean-up that takes a while, as a QUIT on the way out
            : Effect.onInterrupt(Effect.never, () => Effect.sleep(Duration.millis(50)))
        )
      const fiber = yield* Effect.fork(Stream.runCollect(Stream.take(mapUnordered(Stream.range(1, 100), f, 3), 1)))
      for (let t = 0; t < 55; t++) yield* TestClock.adjust(Duration.millis(1))
      // 1 done at once and the output closed: 2 (sleeping) and 3 (never) interrupted together, their clean-ups at
      // the same time, done by 50 ms; 4 started when 1's worker went on before the close, nothing after it
      const polled = yield* Fiber.poll(fiber)
      expect(Option.isSome(polled) && Exit.isSuccess(polled.value)).toBe(true)
      expect(started).toEqual([1, 2, 3, 4])
    }))

  it.effect("closing the output early interrupts the work under way", () =>
    Effect.gen(function*() {
      const interrupted: Array<number> = []
      const f = (n: number) =>
        n === 1 ? Effect.succeed(n) : Effect.onInterrupt(Effect.never, () => Effect.sync(() => interrupted.push(n)))
      const { exit, out } = yield* run(Stream.take(mapUnordered(Stream.make(1, 2, 3), f, 3), 1), 5)
      expect(Exit.isSuccess(exit)).toBe(true)
      expect(out).toEqual([1])
      expect(interrupted.sort()).toEqual([2, 3])
    }))

  it.effect("a `concurrency` that is not a positive integer is a defect that says so", () =>
    Effect.gen(function*() {
      for (const bad of [0, -1, 1.5, Number.NaN]) {
        const exit = yield* Effect.exit(Stream.runDrain(mapUnordered(Stream.make(1), Effect.succeed, bad)))
        expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain("concurrency must be a positive integer")
      }
    }))
})
