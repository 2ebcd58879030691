import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option, Ref, Scope, Stream, Supervisor, TestClock } from "effect"
import * as HappyEyeballs from "../src/HappyEyeballs.js"
import * as internalLazyStream from "../src/internal/lazyStream.js"

interface Peer {
  readonly name: string
  /** ms until the attempt settles; undefined = never */
  readonly after?: number
  readonly ok: boolean
}

const harness = Effect.gen(function*() {
  const log = yield* Ref.make<ReadonlyArray<string>>([])
  const record = (line: string) =>
    Effect.flatMap(Effect.clockWith((c) => c.currentTimeMillis), (t) => Ref.update(log, (l) => [...l, `${t} ${line}`]))
  const attempt = (peer: Peer) =>
    Effect.gen(function*() {
      yield* record(`start ${peer.name}`)
      yield* Effect.addFinalizer(() => record(`close ${peer.name}`))
      if (peer.after === undefined) return yield* Effect.never
      yield* Effect.sleep(Duration.millis(peer.after))
      if (!peer.ok) return yield* Effect.fail(`refused ${peer.name}`)
      return peer.name
    })
  return { log, attempt }
})

const lazyStream = (peers: ReadonlyArray<Peer>, pulled: Ref.Ref<number>) =>
  Stream.fromIterable(peers).pipe(Stream.rechunk(1), Stream.tap(() => Ref.update(pulled, (n) => n + 1)))

describe("HappyEyeballs.race", () => {
  it.scoped("staggers the second attempt by the delay when the first stalls", () =>
    Effect.gen(function*() {
      const { attempt, log } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: Stream.make<Array<Peer>>({ name: "v6", ok: true }, { name: "v4", after: 20, ok: true }),
        attempt,
        delay: Option.some(Duration.millis(250))
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(249))
      expect(yield* Ref.get(log)).toEqual(["0 start v6"])
      yield* TestClock.adjust(Duration.millis(1))
      expect(yield* Ref.get(log)).toEqual(["0 start v6", "250 start v4"])
      yield* TestClock.adjust(Duration.millis(20))
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => [w.value, w.startMs, w.endMs])).toEqual(Option.some(["v4", 250, 270]))
      expect(result.losers).toEqual([
        { _tag: "Cancelled", candidate: { name: "v6", ok: true }, index: 0, startMs: 0, endMs: 270 }
      ])
      // the loser's resources are gone; the winner's stay open until the caller's scope closes
      expect(yield* Ref.get(log)).toEqual(["0 start v6", "250 start v4", "270 close v6"])
    }))

  it.effect("starts the next attempt as soon as a running one fails", () =>
    Effect.gen(function*() {
      const { attempt, log } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: Stream.make<Array<Peer>>({ name: "a", after: 10, ok: false }, { name: "b", after: 5, ok: true }),
        attempt,
        delay: Option.some(Duration.millis(250))
      }).pipe(Effect.scoped, Effect.fork)
      yield* TestClock.adjust(Duration.millis(15))
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => [w.value, w.startMs])).toEqual(Option.some(["b", 10]))
      expect(result.losers.map((l) => [l._tag, l.index, l.endMs])).toEqual([["Failed", 0, 10]])
      expect(yield* Ref.get(log)).toEqual(["0 start a", "10 close a", "10 start b", "15 close b"])
    }))

  it.effect("with no delay, runs strictly one at a time", () =>
    Effect.gen(function*() {
      const { attempt, log } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: Stream.make<Array<Peer>>({ name: "a", after: 5000, ok: false }, { name: "b", after: 1, ok: true }),
        attempt,
        delay: Option.none()
      }).pipe(Effect.scoped, Effect.fork)
      yield* TestClock.adjust(Duration.millis(4999))
      expect(yield* Ref.get(log)).toEqual(["0 start a"])
      yield* TestClock.adjust(Duration.millis(2))
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => w.startMs)).toEqual(Option.some(5000))
    }))

  it.effect("reports every failure, in start order, when no attempt succeeds", () =>
    Effect.gen(function*() {
      const { attempt } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: Stream.make<Array<Peer>>(
          { name: "a", after: 400, ok: false },
          { name: "b", after: 10, ok: false },
          { name: "c", after: 10, ok: false }
        ),
        attempt,
        delay: Option.some(Duration.millis(250))
      }).pipe(Effect.scoped, Effect.fork)
      yield* TestClock.adjust(Duration.seconds(1))
      const result = yield* Fiber.join(fiber)
      expect(Option.isNone(result.winner)).toBe(true)
      expect(result.losers.map((l) => [l._tag, l.index, l.startMs, l.endMs])).toEqual([
        ["Failed", 0, 0, 400],
        ["Failed", 1, 250, 260],
        ["Failed", 2, 260, 270]
      ])
    }))

  it.effect("pulls nothing more from the Stream once a race is won", () =>
    Effect.gen(function*() {
      const { attempt } = yield* harness
      const pulled = yield* Ref.make(0)
      const peers: Array<Peer> = [{ name: "a", after: 1, ok: true }, { name: "b", ok: true }, { name: "c", ok: true }]
      const fiber = yield* HappyEyeballs.race({
        candidates: lazyStream(peers, pulled),
        attempt,
        delay: Option.some(Duration.millis(250))
      }).pipe(Effect.scoped, Effect.fork)
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)
      expect(yield* Ref.get(pulled)).toBe(1)
    }))

  it.effect("an empty Stream has no winner and no losers", () =>
    Effect.gen(function*() {
      const { attempt } = yield* harness
      const result = yield* HappyEyeballs.race({ candidates: Stream.empty, attempt, delay: Option.some(250) }).pipe(
        Effect.scoped
      )
      expect(result).toEqual({ winner: Option.none(), losers: [] })
    }))

  it.effect("the winner's resources are released with the caller's scope", () =>
    Effect.gen(function*() {
      const { attempt, log } = yield* harness
      const scope = yield* Scope.make()
      const fiber = yield* HappyEyeballs.race({
        candidates: Stream.make<Array<Peer>>({ name: "a", after: 1, ok: true }),
        attempt,
        delay: Option.some(250)
      }).pipe(Scope.extend(scope), Effect.fork)
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)
      expect(yield* Ref.get(log)).toEqual(["0 start a"])
      yield* Scope.close(scope, Exit.void)
      expect(yield* Ref.get(log)).toEqual(["0 start a", "1 close a"])
    }))

  it.effect("interrupting the race releases every attempt", () =>
    Effect.gen(function*() {
      const { attempt, log } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: Stream.make<Array<Peer>>({ name: "a", ok: true }, { name: "b", ok: true }),
        attempt,
        delay: Option.some(250)
      }).pipe(Effect.scoped, Effect.fork)
      yield* TestClock.adjust(Duration.millis(300))
      yield* Fiber.interrupt(fiber)
      expect(yield* Ref.get(log)).toEqual(["0 start a", "250 start b", "300 close a", "300 close b"])
    }))
})

describe("HappyEyeballs.race: the last candidate", () => {
  /** Counts the fibers forked while `effect` runs. */
  const forks = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.gen(function*() {
      let started = 0
      class Count extends Supervisor.AbstractSupervisor<void> {
        value = Effect.void
        override onStart() {
          started++
        }
      }
      const fiber = yield* Effect.fork(Effect.supervised(effect, new Count()))
      return { fiber, started: () => started }
    })

  it.scoped("with nothing else running, runs in the race's fiber (a one-address host forks nothing)", () =>
    Effect.gen(function*() {
      const { attempt, log } = yield* harness
      const { fiber, started } = yield* forks(HappyEyeballs.race({
        candidates: internalLazyStream.make([{ name: "only", after: 30, ok: true }], Effect.succeed),
        attempt,
        delay: Option.some(250)
      }))
      yield* TestClock.adjust(Duration.millis(30))
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => [w.value, w.startMs, w.endMs])).toEqual(Option.some(["only", 0, 30]))
      expect(started()).toBe(0)
      expect(yield* Ref.get(log)).toEqual(["0 start only"])
    }))

  it.effect("after the others failed, still fails over, records its failure and is released when interrupted", () =>
    Effect.gen(function*() {
      const { attempt, log } = yield* harness
      const failing = yield* HappyEyeballs.race({
        candidates: internalLazyStream.make<Peer, Peer, never>([
          { name: "a", after: 10, ok: false },
          { name: "b", after: 5, ok: false }
        ], Effect.succeed),
        attempt,
        delay: Option.some(250)
      }).pipe(Effect.scoped, Effect.fork)
      yield* TestClock.adjust(Duration.millis(15))
      const result = yield* Fiber.join(failing)
      expect(Option.isNone(result.winner)).toBe(true)
      expect(result.losers.map((l) => [l._tag, l.index, l.startMs, l.endMs]))
        .toEqual([["Failed", 0, 0, 10], ["Failed", 1, 10, 15]])

      const stalled = yield* HappyEyeballs.race({
        candidates: internalLazyStream.make<Peer, Peer, never>([{ name: "c", ok: true }], Effect.succeed),
        attempt,
        delay: Option.some(250)
      }).pipe(Effect.scoped, Effect.fork)
      yield* TestClock.adjust(Duration.millis(100))
      yield* Fiber.interrupt(stalled)
      expect((yield* Ref.get(log)).slice(-2)).toEqual(["15 start c", "115 close c"])
    }))
})
