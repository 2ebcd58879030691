import { describe, expect, it } from "@effect/vitest"
import { Cause, Deferred, Duration, Effect, Exit, Fiber, Option, Ref, Stream, Supervisor, TestClock } from "effect"
import * as HappyEyeballs from "../src/HappyEyeballs.js"
import * as Pull from "../src/Pull.js"

interface Peer {
  readonly name: string
  /** ms until the attempt settles; undefined = never */
  readonly after?: number
  readonly ok: boolean
}

/**
 * Attempts that log when they start and when what they hold is closed: by themselves when they fail or are
 * interrupted, by `release` for a success.
 */
const harness = Effect.gen(function*() {
  const log = yield* Ref.make<ReadonlyArray<string>>([])
  const record = (line: string) =>
    Effect.flatMap(Effect.clockWith((c) => c.currentTimeMillis), (t) => Ref.update(log, (l) => [...l, `${t} ${line}`]))
  const attempt = (peer: Peer) =>
    Effect.gen(function*() {
      yield* record(`start ${peer.name}`)
      if (peer.after === undefined) return yield* Effect.never
      yield* Effect.sleep(Duration.millis(peer.after))
      if (!peer.ok) return yield* Effect.fail(`refused ${peer.name}`)
      return peer.name
    }).pipe(Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : record(`close ${peer.name}`))))
  const release = (name: string) => record(`close ${name}`)
  return { log, attempt, release }
})

const peers = (...list: ReadonlyArray<Peer>) => Pull.fromIterable(list)

/** A pull that counts how many candidates were taken from it. */
const counted = (list: ReadonlyArray<Peer>, pulled: Ref.Ref<number>) =>
  Pull.make(list, (peer) => Effect.as(Ref.update(pulled, (n) => n + 1), peer))

/** Runs `effect` in a fiber under a Supervisor counting the fibers forked and the run-loop steps taken. */
const supervised = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    let forks = 0
    class Count extends Supervisor.AbstractSupervisor<void> {
      value = Effect.void
      override onStart() {
        forks++
      }
    }
    const fiber = yield* Effect.fork(Effect.supervised(effect, new Count()))
    return { fiber, forks: () => forks }
  })

describe("HappyEyeballs.race", () => {
  it.effect("staggers the second attempt by the delay when the first stalls", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: peers({ name: "v6", ok: true }, { name: "v4", after: 20, ok: true }),
        attempt,
        release,
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
      // the loser's resources are gone; the winner's are the caller's, still open
      expect(yield* Ref.get(log)).toEqual(["0 start v6", "250 start v4", "270 close v6"])
    }))

  it.effect("starts the next attempt as soon as a running one fails", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const fiber = yield* HappyEyeballs.raceUse({
        candidates: peers({ name: "a", after: 10, ok: false }, { name: "b", after: 5, ok: true }),
        attempt,
        release,
        delay: Option.some(Duration.millis(250))
      }, Effect.succeed).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(15))
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => [w.value, w.startMs])).toEqual(Option.some(["b", 10]))
      expect(result.losers.map((l) => [l._tag, l.index, l.endMs])).toEqual([["Failed", 0, 10]])
      expect(yield* Ref.get(log)).toEqual(["0 start a", "10 close a", "10 start b", "15 close b"])
    }))

  it.effect("with no delay, runs strictly one at a time", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: peers({ name: "a", after: 5000, ok: false }, { name: "b", after: 1, ok: true }),
        attempt,
        release,
        delay: Option.none()
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(4999))
      expect(yield* Ref.get(log)).toEqual(["0 start a"])
      yield* TestClock.adjust(Duration.millis(2))
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => w.startMs)).toEqual(Option.some(5000))
    }))

  it.effect("reports every failure, in start order, when no attempt succeeds", () =>
    Effect.gen(function*() {
      const { attempt, release } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: peers(
          { name: "a", after: 400, ok: false },
          { name: "b", after: 10, ok: false },
          { name: "c", after: 10, ok: false }
        ),
        attempt,
        release,
        delay: Option.some(Duration.millis(250))
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.seconds(1))
      const result = yield* Fiber.join(fiber)
      expect(Option.isNone(result.winner)).toBe(true)
      expect(result.losers.map((l) => [l._tag, l.index, l.startMs, l.endMs])).toEqual([
        ["Failed", 0, 0, 400],
        ["Failed", 1, 250, 260],
        ["Failed", 2, 260, 270]
      ])
    }))

  it.effect("pulls nothing more from the candidates once a race is won", () =>
    Effect.gen(function*() {
      const { attempt, release } = yield* harness
      const pulled = yield* Ref.make(0)
      const list: Array<Peer> = [{ name: "a", after: 1, ok: true }, { name: "b", ok: true }, { name: "c", ok: true }]
      const fiber = yield* HappyEyeballs.race({
        candidates: counted(list, pulled),
        attempt,
        release,
        delay: Option.some(Duration.millis(250))
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)
      expect(yield* Ref.get(pulled)).toBe(1)

      // and the next candidate is pulled only when its attempt is due
      yield* Ref.set(pulled, 0)
      const slow = yield* HappyEyeballs.race({
        candidates: counted([{ name: "x", ok: true }, { name: "y", after: 1, ok: true }, { name: "z", ok: true }], pulled),
        attempt,
        release,
        delay: Option.some(Duration.millis(250))
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(249))
      expect(yield* Ref.get(pulled)).toBe(1)
      yield* TestClock.adjust(Duration.millis(2))
      yield* Fiber.join(slow)
      expect(yield* Ref.get(pulled)).toBe(2)
    }))

  it.effect("no candidates: no winner and no losers", () =>
    Effect.gen(function*() {
      const { attempt, release } = yield* harness
      const result = yield* HappyEyeballs.race({ candidates: peers(), attempt, release, delay: Option.some(250) })
      expect(result).toEqual({ winner: Option.none(), losers: [] })
    }))

  it.effect("race leaves the winner to the caller; raceUse releases it once used, or when the use fails", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const options = { attempt, release, delay: Option.some(Duration.millis(250)) }
      const fiber = yield* HappyEyeballs.race({ ...options, candidates: peers({ name: "a", after: 1, ok: true }) }).pipe(
        Effect.fork
      )
      yield* TestClock.adjust(Duration.millis(1))
      yield* Fiber.join(fiber)
      expect(yield* Ref.get(log)).toEqual(["0 start a"])

      const used = yield* HappyEyeballs.raceUse(
        { ...options, candidates: peers({ name: "b", after: 1, ok: true }) },
        (result) => Effect.zipRight(Effect.sleep(Duration.millis(10)), Effect.succeed(Option.map(result.winner, (w) => w.value)))
      ).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(1))
      expect((yield* Ref.get(log)).slice(1)).toEqual(["1 start b"])
      yield* TestClock.adjust(Duration.millis(10))
      expect(yield* Fiber.join(used)).toEqual(Option.some("b"))
      expect((yield* Ref.get(log)).slice(1)).toEqual(["1 start b", "12 close b"])

      const failed = yield* HappyEyeballs.raceUse(
        { ...options, candidates: peers({ name: "c", after: 1, ok: true }) },
        () => Effect.fail("use failed")
      ).pipe(Effect.flip, Effect.fork)
      yield* TestClock.adjust(Duration.millis(1))
      expect(yield* Fiber.join(failed)).toBe("use failed")
      expect((yield* Ref.get(log)).slice(3)).toEqual(["12 start c", "13 close c"])
    }))

  it.effect("interrupting the race releases every attempt", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: peers({ name: "a", ok: true }, { name: "b", ok: true }),
        attempt,
        release,
        delay: Option.some(250)
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(300))
      yield* Fiber.interrupt(fiber)
      expect(yield* Ref.get(log)).toEqual(["0 start a", "250 start b", "300 close a", "300 close b"])
    }))

  it.effect("a defect in an attempt makes the race die once the others are cleaned up", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: peers({ name: "a", ok: true }, { name: "b", ok: true }, { name: "boom", ok: true }),
        attempt: (peer) => (peer.name === "boom" ? Effect.zipRight(Effect.sleep(5), Effect.die("bug")) : attempt(peer)),
        release,
        delay: Option.some(250)
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(505))
      const exit = yield* Fiber.await(fiber)
      expect(Exit.isFailure(exit) && exit.cause._tag === "Die" && exit.cause.defect).toBe("bug")
      expect(yield* Ref.get(log)).toEqual(["0 start a", "250 start b", "505 close a", "505 close b"])
    }))

  it.live("raceStream takes a Stream, pulled no further than the race needs", () =>
    Effect.gen(function*() {
      const pulled = yield* Ref.make(0)
      const list: Array<Peer> = [{ name: "a", after: 1, ok: true }, { name: "b", ok: true }, { name: "c", ok: true }]
      const result = yield* HappyEyeballs.raceStream({
        candidates: Stream.fromIterable(list).pipe(Stream.rechunk(1), Stream.tap(() => Ref.update(pulled, (n) => n + 1))),
        attempt: (peer: Peer) => Effect.as(Effect.sleep(Duration.millis(peer.after ?? 1000)), peer.name),
        release: () => Effect.void,
        delay: Option.some(Duration.millis(250))
      })
      expect(Option.map(result.winner, (w) => w.value)).toEqual(Option.some("a"))
      expect(yield* Ref.get(pulled)).toBe(1)
    }))
})

describe("HappyEyeballs.race: a success is released, never leaked", () => {
  it.effect("two attempts succeeding at once: one wins, the other is released", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const fiber = yield* HappyEyeballs.race({
        candidates: peers({ name: "a", after: 10, ok: true }, { name: "b", after: 5, ok: true }),
        attempt,
        release,
        delay: Option.some(Duration.millis(5))
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(10))
      const result = yield* Fiber.join(fiber)
      const winner = Option.getOrThrow(result.winner)
      const other = winner.value === "a" ? "b" : "a"
      expect(winner.endMs).toBe(10)
      expect(result.losers.map((l) => [l._tag, l.candidate.name, l.endMs])).toEqual([["Cancelled", other, 10]])
      expect(yield* Ref.get(log)).toEqual(["0 start a", "5 start b", `10 close ${other}`])
    }))

  it.effect("an attempt that succeeds as it is cancelled is cleaned up before the race returns", () =>
    Effect.gen(function*() {
      const { log, release } = yield* harness
      const record = (line: string) => Ref.update(log, (l) => [...l, line])
      const aWon = yield* Deferred.make<void>()
      const bGo = yield* Deferred.make<void>()
      const fiber = yield* HappyEyeballs.race({
        candidates: peers({ name: "a", ok: true }, { name: "b", ok: true }),
        attempt: (peer) =>
          (peer.name === "a"
            ? Effect.as(Deferred.succeed(aWon, void 0), "a")
            : Effect.as(Deferred.await(bGo), "b")).pipe(
              Effect.delay(Duration.millis(peer.name === "a" ? 10 : 0)),
              // self-cleaning: whatever it holds is closed unless it hands it over
              Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : record(`b cleaned up after ${Cause.isInterruptedOnly(exit.cause) ? "interruption" : "failure"}`)))
            ),
        release,
        delay: Option.some(Duration.millis(5))
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(5))
      yield* Effect.fork(TestClock.adjust(Duration.millis(5)))
      // a is winning: b's success comes in the same turn as the race's interruption of b
      yield* Deferred.await(aWon)
      yield* Deferred.succeed(bGo, void 0)
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => w.value)).toEqual(Option.some("a"))
      expect(result.losers.map((l) => [l._tag, l.index])).toEqual([["Cancelled", 1]])
      // b was either interrupted (and cleaned up after itself) or reached the race (and was released)
      expect(yield* Ref.get(log)).toEqual(["b cleaned up after interruption"])
    }))

  it.effect("a success posted as the race is interrupted is released", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const go = yield* Deferred.make<void>()
      const succeeded = yield* Deferred.make<void>()
      const fiber = yield* HappyEyeballs.race({
        candidates: peers({ name: "a", ok: true }, { name: "b", ok: true }),
        attempt: (peer) =>
          peer.name === "b"
            // succeeds on `go`, and wakes the test just before its success reaches the race
            ? Effect.zipRight(Deferred.await(go), Effect.as(Deferred.succeed(succeeded, void 0), "b"))
            : attempt(peer),
        release,
        delay: Option.some(Duration.millis(250))
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(250))
      yield* Deferred.succeed(go, void 0)
      yield* Deferred.await(succeeded)
      // the race's fiber has b's success to take and this interruption, both pending
      yield* Fiber.interrupt(fiber)
      expect(yield* Ref.get(log)).toEqual(["0 start a", "250 close a", "250 close b"])
    }))
})

describe("HappyEyeballs.race: forks", () => {
  it.effect("a one-candidate race runs in the race's fiber (a one-address host forks nothing)", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const { fiber, forks } = yield* supervised(HappyEyeballs.race({
        candidates: peers({ name: "only", after: 30, ok: true }),
        attempt,
        release,
        delay: Option.some(250)
      }))
      yield* TestClock.adjust(Duration.millis(30))
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => [w.value, w.startMs, w.endMs])).toEqual(Option.some(["only", 0, 30]))
      expect(forks()).toBe(0)
      expect(yield* Ref.get(log)).toEqual(["0 start only"])
    }))

  it.effect("without a delay nothing is forked, whatever the number of candidates", () =>
    Effect.gen(function*() {
      const { attempt, release } = yield* harness
      const { fiber, forks } = yield* supervised(HappyEyeballs.race({
        candidates: peers({ name: "a", after: 5, ok: false }, { name: "b", after: 5, ok: false }, {
          name: "c",
          after: 5,
          ok: true
        }),
        attempt,
        release,
        delay: Option.none()
      }))
      yield* TestClock.adjust(Duration.millis(15))
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => w.index)).toEqual(Option.some(2))
      expect(forks()).toBe(0)
    }))

  it.effect("with a delay, an attempt and a delay per staggered candidate, none for the last one alone", () =>
    Effect.gen(function*() {
      const { attempt, release } = yield* harness
      // a fails at 5 with nothing else running: b is started at once (attempt + delay forked); c, the last, is
      // started alone once b has failed too, in the race's fiber
      const { fiber, forks } = yield* supervised(HappyEyeballs.race({
        candidates: peers({ name: "a", after: 5, ok: false }, { name: "b", after: 5, ok: false }, {
          name: "c",
          after: 5,
          ok: true
        }),
        attempt,
        release,
        delay: Option.some(250)
      }))
      yield* TestClock.adjust(Duration.millis(15))
      const result = yield* Fiber.join(fiber)
      expect(Option.map(result.winner, (w) => [w.index, w.startMs])).toEqual(Option.some([2, 10]))
      expect(forks()).toBe(4)
    }))

  it.effect("after the others failed, the last still fails over, records its failure and is released when interrupted", () =>
    Effect.gen(function*() {
      const { attempt, log, release } = yield* harness
      const failing = yield* HappyEyeballs.race({
        candidates: peers({ name: "a", after: 10, ok: false }, { name: "b", after: 5, ok: false }),
        attempt,
        release,
        delay: Option.some(250)
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(15))
      const result = yield* Fiber.join(failing)
      expect(Option.isNone(result.winner)).toBe(true)
      expect(result.losers.map((l) => [l._tag, l.index, l.startMs, l.endMs]))
        .toEqual([["Failed", 0, 0, 10], ["Failed", 1, 10, 15]])

      const stalled = yield* HappyEyeballs.race({
        candidates: peers({ name: "c", ok: true }),
        attempt,
        release,
        delay: Option.some(250)
      }).pipe(Effect.fork)
      yield* TestClock.adjust(Duration.millis(100))
      yield* Fiber.interrupt(stalled)
      expect((yield* Ref.get(log)).slice(-2)).toEqual(["15 start c", "115 close c"])
    }))
})
