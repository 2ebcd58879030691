/**
 * The in-memory connection pool. Idle connections sit in a list per destination, most recently used last. One
 * sweeper fiber, forked into the pool's scope, sleeps on the Clock to the earliest moment an idle connection must go
 * (its idle time or its age) and closes those; it ends when nothing is idle and is started again by the next `put`.
 *
 * @internal
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { ConnectionPool, Destination, Idle } from "../../ConnectionPool.js"
import * as SmtpSession from "../../SmtpSession.js"

interface Entry {
  readonly idle: Idle
  /** When it must be closed: the earlier of its idle deadline and its age. */
  readonly closeAtMs: number
}

const indexOf = (destination: Destination) => `${destination.ip} ${destination.port} ${destination.session}`

const ageDeadline = (idle: Idle) => idle.openedMs + Duration.toMillis(idle.reuse.age)

/**
 * QUIT and close. The close is a finalizer of the QUIT, so an interrupted QUIT (the pool's scope closing under it)
 * still releases the socket.
 *
 * @internal
 */
export const close = (idle: Idle): Effect.Effect<void> =>
  Effect.ensuring(SmtpSession.quit({ connection: idle.session.connection }), idle.session.connection.close)

/** @internal */
export const make: Effect.Effect<ConnectionPool.Service, never, Scope.Scope> = Effect.gen(function*() {
  const scope = yield* Effect.scope
  const idle = new Map<string, Array<Entry>>()
  let count = 0
  let ids = 0
  let closing = false
  /** The running sweeper, and when it wakes next (`Infinity`: none runs). */
  let sweeper: Fiber.RuntimeFiber<void> | null = null
  let wakeMs = Infinity

  const remove = (list: Array<Entry>, at: number, key: string) => {
    list.splice(at, 1)
    count--
    if (list.length === 0) idle.delete(key)
  }

  /** Removes and returns every entry due at `now`. */
  const due = (now: number): Array<Idle> => {
    const out: Array<Idle> = []
    for (const [key, list] of idle) {
      for (let i = list.length - 1; i >= 0; i--) {
        if (list[i]!.closeAtMs <= now) {
          out.push(list[i]!.idle)
          remove(list, i, key)
        }
      }
    }
    return out
  }

  const earliest = (): number => {
    let min = Infinity
    for (const list of idle.values()) for (const entry of list) if (entry.closeAtMs < min) min = entry.closeAtMs
    return min
  }

  // Each closing connection in a fiber of its own in the pool's scope: a sweeper interrupted to sleep less (below)
  // does not interrupt a QUIT under way.
  // Forked interruptible whatever the caller's region (a `put` may run uninterruptibly): the scope's close must be
  // able to stop them.
  const closeAll = (idles: ReadonlyArray<Idle>) =>
    Effect.forEach(idles, (i) => Effect.forkIn(Effect.interruptible(close(i)), scope), { discard: true })

  // A sweeper replaced by one that wakes earlier is interrupted; `generation` keeps a replaced one that has not yet
  // seen its interruption from touching the state.
  let generation = 0
  const sweep = (gen: number): Effect.Effect<void> =>
    Effect.gen(function*() {
      while (true) {
        const now = yield* Clock.currentTimeMillis
        if (wakeMs > now) yield* Effect.sleep(Duration.millis(wakeMs - now))
        if (gen !== generation) return
        yield* closeAll(due(yield* Clock.currentTimeMillis))
        if (gen !== generation) return
        wakeMs = earliest()
        if (wakeMs === Infinity) {
          sweeper = null
          return
        }
      }
    })

  /** The sweeper wakes at `closeAtMs` at the latest: started if none runs, replaced if it sleeps longer. */
  const schedule = (closeAtMs: number) =>
    Effect.suspend(() => {
      if (wakeMs <= closeAtMs) return Effect.void
      const previous = sweeper
      const gen = ++generation
      wakeMs = closeAtMs
      return Effect.flatMap(
        Effect.forkIn(Effect.interruptible(sweep(gen)), scope),
        (fiber) =>
          Effect.suspend(() => {
            if (gen === generation && wakeMs !== Infinity) sweeper = fiber
            return previous === null ? Effect.void : Fiber.interruptFork(previous)
          })
      )
    })

  // On every message's path: the Clock read in the step that uses it (`clockWith` reads the Clock
  // `Clock.currentTimeMillis` would), and nothing more to run when there is nothing to close or to reschedule.
  const takeNow = (
    destination: Destination,
    accept: (idle: Idle) => boolean,
    now: number
  ): Idle | null | Effect.Effect<Option.Option<Idle>> => {
    const key = indexOf(destination)
    const list = idle.get(key)
    if (list === undefined) return null
    const stale: Array<Idle> = []
    let found: Idle | null = null
    for (let i = list.length - 1; i >= 0 && found === null; i--) {
      const entry = list[i]!
      // Bytes from the server while idle: a 421 before it closes, or garbage. Either way not a session to use.
      if (entry.closeAtMs <= now || entry.idle.session.connection.buffered > 0) {
        stale.push(entry.idle)
        remove(list, i, key)
      } else if (accept(entry.idle)) {
        found = entry.idle
        remove(list, i, key)
      }
    }
    return stale.length === 0 ? found : Effect.as(closeAll(stale), Option.fromNullable(found))
  }

  const take = (destination: Destination, accept: (idle: Idle) => boolean) =>
    Effect.clockWith((clock) => {
      const taken = takeNow(destination, accept, clock.unsafeCurrentTimeMillis())
      return taken === null || !Effect.isEffect(taken) ? Effect.succeed(Option.fromNullable(taken)) : taken
    })

  const putNow = (entry: Idle, now: number): Effect.Effect<void> | null => {
    const age = ageDeadline(entry)
    if (closing) return close(entry)
    // Done with: QUIT in a fiber of the pool's, so that the delivery that gave it back does not wait for it.
    if (entry.messages >= entry.reuse.messages || age <= now) return closeAll([entry])
    const closeAtMs = Math.min(now + Duration.toMillis(entry.reuse.idle), age)
    const key = indexOf(entry.destination)
    const list = idle.get(key)
    if (list === undefined) idle.set(key, [{ idle: entry, closeAtMs }])
    else list.push({ idle: entry, closeAtMs })
    count++
    return wakeMs <= closeAtMs ? null : schedule(closeAtMs)
  }

  const put = (entry: Idle): Effect.Effect<void> =>
    Effect.clockWith((clock) => putNow(entry, clock.unsafeCurrentTimeMillis()) ?? Effect.void)

  // The scope interrupts the fibers forked into it first (they were added after this finalizer; a close under way
  // still releases its socket), then this closes what is idle, with QUIT.
  yield* Scope.addFinalizer(scope, Effect.suspend(() => {
    closing = true
    generation++
    return Effect.forEach(due(Infinity), close, { concurrency: "unbounded", discard: true })
  }))

  const service: ConnectionPool.Service = {
    connectionId: Effect.sync(() => `c${++ids}`),
    take,
    takeNow,
    put,
    putNow,
    size: Effect.sync(() => count)
  }
  return service
})
