/**
 * The in-memory limiter state: per bucket, the permits in use with a queue of waiters (a permit freed goes straight
 * to the first waiter, so a newcomer cannot overtake the queue), and the start times inside the rate window. Waits
 * are on Effect's Clock.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type { Variables } from "../../Expression.js"
import * as Expression from "../../Expression.js"
import type { Bucket, Limiter, OutboundLimiter, Stage } from "../../Limiter.js"
import * as TransportError from "../../TransportError.js"

/** @internal */
export const buckets = (
  limiters: ReadonlyArray<OutboundLimiter>,
  stage: Stage,
  variables: Variables
): ReadonlyArray<Bucket> => {
  const out: Array<Bucket> = []
  for (const limiter of limiters) {
    if (limiter.stage !== stage) continue
    if (limiter.match !== null && !Expression.toBool(limiter.match.evaluate(variables))) continue
    const value = limiter.key.map((k) => String(variables[k] ?? "")).join("\u0000")
    out.push({ bucket: `${limiter.id}\u0000${value}`, concurrency: limiter.concurrency, rate: limiter.rate })
  }
  return out
}

interface State {
  active: number
  readonly waiters: Array<Deferred.Deferred<void>>
  /** Start times (Clock ms) inside the rate window, oldest first. */
  readonly starts: Array<number>
}

const exceeded = (kind: "concurrency" | "rate", bucket: string, wait: Duration.Duration) =>
  new TransportError.TransportError({
    phase: "connect",
    kind,
    permanent: false,
    message: `connect: outbound limiter ${bucket.split("\u0000")[0]} (${kind}) still full after ${
      Duration.format(wait)
    }`,
    reply: null
  })

/** @internal */
export const make: Effect.Effect<Limiter.Service> = Effect.sync(() => {
  const states = new Map<string, State>()
  const stateOf = (bucket: string) => {
    let state = states.get(bucket)
    if (state === undefined) {
      state = { active: 0, waiters: [], starts: [] }
      states.set(bucket, state)
    }
    return state
  }
  /** Gives a permit back: to the first waiter if any, else to the pool of free ones. */
  const giveBack = (bucket: string, state: State): Effect.Effect<void> =>
    Effect.suspend(() => {
      const next = state.waiters.shift()
      if (next !== undefined) return Deferred.succeed(next, undefined)
      state.active--
      if (state.active === 0 && state.waiters.length === 0 && state.starts.length === 0) states.delete(bucket)
      return Effect.void
    })

  /** A permit of `bucket`, waiting until `deadline` at most. */
  const permit = (bucket: Bucket, limit: number, deadline: number, wait: Duration.Duration) =>
    Effect.gen(function*() {
      const state = stateOf(bucket.bucket)
      if (state.active < limit) {
        state.active++
        return state
      }
      const now = yield* Clock.currentTimeMillis
      if (deadline <= now) return yield* exceeded("concurrency", bucket.bucket, wait)
      const turn = yield* Deferred.make<void>()
      state.waiters.push(turn)
      const got = yield* Effect.timeoutOption(Deferred.await(turn), Duration.millis(deadline - now)).pipe(
        Effect.onInterrupt(() => leave(bucket.bucket, state, turn))
      )
      if (Option.isNone(got)) {
        yield* leave(bucket.bucket, state, turn)
        return yield* exceeded("concurrency", bucket.bucket, wait)
      }
      return state
    })

  /** A waiter leaving: out of the queue, or, when a permit reached it meanwhile, that permit passed on. */
  const leave = (bucket: string, state: State, turn: Deferred.Deferred<void>) =>
    Effect.flatMap(Deferred.isDone(turn), (done) => {
      if (done) return giveBack(bucket, state)
      const at = state.waiters.indexOf(turn)
      if (at >= 0) state.waiters.splice(at, 1)
      return Effect.void
    })

  /** Waits until every rate bucket has room, then records a start in each. */
  const rates = (list: ReadonlyArray<Bucket>, deadline: number, wait: Duration.Duration) =>
    Effect.gen(function*() {
      while (true) {
        const now = yield* Clock.currentTimeMillis
        let until = now
        let full: Bucket | null = null
        for (const b of list) {
          const state = stateOf(b.bucket)
          const period = Duration.toMillis(b.rate!.period)
          while (state.starts.length > 0 && state.starts[0]! <= now - period) state.starts.shift()
          if (state.starts.length >= b.rate!.count) {
            const free = state.starts[state.starts.length - b.rate!.count]! + period
            if (free > until) {
              until = free
              full = b
            }
          }
        }
        if (full === null) {
          for (const b of list) stateOf(b.bucket).starts.push(now)
          return
        }
        if (until > deadline) return yield* exceeded("rate", full.bucket, wait)
        yield* Effect.sleep(Duration.millis(until - now))
      }
    })

  const acquire = (list: ReadonlyArray<Bucket>, wait: Duration.Duration) =>
    list.length === 0 ? Effect.succeed(Effect.void) : Effect.uninterruptibleMask((restore) =>
      Effect.gen(function*() {
        const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(wait)
        const held: Array<readonly [string, State]> = []
        const release = Effect.suspend(() =>
          Effect.forEach(held.splice(0), ([bucket, state]) => giveBack(bucket, state), { discard: true })
        )
        const taken = yield* Effect.either(restore(Effect.gen(function*() {
          for (const b of list) {
            if (b.concurrency === null) continue
            held.push([b.bucket, yield* permit(b, b.concurrency, deadline, wait)])
          }
          const limited = list.filter((b) => b.rate !== null)
          if (limited.length > 0) yield* rates(limited, deadline, wait)
        })).pipe(Effect.onInterrupt(() => release)))
        if (taken._tag === "Left") {
          yield* release
          return yield* taken.left
        }
        return release
      })
    )

  const service: Limiter.Service = { acquire }
  return service
})
