/**
 * Phase timeouts for the connections of this library's own connectors, without a fiber per phase.
 *
 * `Effect.timeoutFail` runs the bounded effect in a fiber of its own and races it against a sleeping fiber: two
 * forks, a join and a FiberRefs merge per phase, seven phases per delivery, about half of a session's CPU time.
 * A session's phases only ever block on their connection, though (a line to read, a write to be handed to the OS, a
 * TLS handshake), so a deadline can end a phase by failing that one wait. The connectors route their blocking waits
 * through a `Waits`; one sleeper fiber per connection, on Effect's Clock, times the phases: it sleeps until the
 * current phase's deadline and, when the phase ended earlier, sleeps on to the next phase's deadline instead of
 * being stopped and forked again (a phase with an earlier deadline than the sleeper's does restart it).
 *
 * Semantics are those of `Effect.timeoutFail`: a phase still running when its deadline passes fails with the
 * timeout error, whatever it was doing; its pending wait is abandoned as an interruption would abandon it (the
 * connectors' clean-up runs, unread bytes stay buffered).
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { Sleeper } from "./sleeper.js"

/**
 * What a connector's blocking wait registers: it calls `resume` once (possibly at once), and may return the
 * clean-up to run when the wait is abandoned (interrupted, or cut short by a deadline).
 *
 * @internal
 */
export type Register<A, E> = (resume: (effect: Effect.Effect<A, E>) => void) => (() => void) | void

/**
 * The waits of one connection and the deadline of its current phase.
 *
 * @internal
 */
export class Waits<E> {
  /** Fails the pending wait (after its clean-up); `null` when nothing waits. */
  private pending: ((error: E) => void) | null = null
  /** The current phase's deadline passed: every wait fails at once until the phase ends. */
  private expired: E | null = null
  /** The current phase, `0` when none. */
  private phase = 0
  private phases = 0
  /** Clock time (ms) at which the current phase expires; Infinity with no phase running. */
  private deadline = Infinity
  private readonly sleeper = new Sleeper((now) => this.onWake(now))
  private closed = false

  /** @param timeoutError the error a wait fails with when its phase's deadline passes */
  constructor(private readonly timeoutError: () => E) {}

  /**
   * `Effect.async`, with a wait that the phase's deadline can cut short.
   *
   * @internal
   */
  wait<A, E2 extends E>(register: Register<A, E2>): Effect.Effect<A, E | E2> {
    return Effect.async<A, E | E2>((resume) => {
      if (this.expired !== null) return resume(Effect.fail(this.expired))
      let done = false
      let cleanup: (() => void) | void = undefined
      const fail = (error: E) => {
        if (done) return
        done = true
        this.pending = null
        cleanup?.()
        resume(Effect.fail(error))
      }
      cleanup = register((effect) => {
        if (done) return
        done = true
        if (this.pending === fail) this.pending = null
        resume(effect)
      })
      if (done) return
      this.pending = fail
      return Effect.sync(() => {
        done = true
        if (this.pending === fail) this.pending = null
        cleanup?.()
      })
    })
  }

  /**
   * Runs one phase under a deadline of `millis` on Effect's Clock: past it, the phase fails with `onTimeout()`.
   * Phases of one connection run one at a time.
   *
   * @internal
   */
  within<A, E1, R, E2>(
    effect: Effect.Effect<A, E1, R>,
    millis: number,
    onTimeout: () => E2
  ): Effect.Effect<A, E1 | E2, R> {
    // No deadline, no timer: `Effect.timeoutFail` would never fire either.
    if (!(millis < Infinity)) return effect
    return Effect.clockWith((clock) =>
      Effect.suspend(() => {
        const phase = this.begin(clock.unsafeCurrentTimeMillis() + Math.max(0, millis))
        // Uninterruptible outside `restore`, so that the phase ends whatever happens, interruption included.
        const timed = Effect.uninterruptibleMask((restore) =>
          Effect.matchCauseEffect(restore(effect), {
            onFailure: (cause): Effect.Effect<A, E1 | E2> =>
              this.end(phase) && !Cause.isInterruptedOnly(cause) ? Effect.fail(onTimeout()) : Effect.failCause(cause),
            onSuccess: (a): Effect.Effect<A, E1 | E2> =>
              this.end(phase) ? Effect.fail(onTimeout()) : Effect.succeed(a)
          })
        )
        // A running sleeper that wakes no later than this deadline will see to it.
        return this.closed || this.sleeper.covers(this.deadline)
          ? timed
          : Effect.zipRight(this.sleeper.start(clock, this.deadline), timed)
      })
    )
  }

  /**
   * The connection is gone: its sleeper is stopped, and no phase will start again.
   *
   * @internal
   */
  close(): void {
    this.closed = true
    this.deadline = Infinity
    this.sleeper.stop()
  }

  private begin(deadline: number): number {
    this.phase = ++this.phases
    this.deadline = deadline
    this.expired = null
    return this.phase
  }

  /** Ends the phase; `true` when its deadline passed first. */
  private end(phase: number): boolean {
    if (phase !== this.phase) return false
    this.phase = 0
    this.deadline = Infinity
    const expired = this.expired !== null
    this.expired = null
    return expired
  }

  /** The sleeper woke: sleep on to a later phase's deadline, or expire the phase whose deadline has passed. */
  private onWake(now: number): number {
    // The phase it slept for ended and a later one began: sleep on to that one's deadline.
    if (now < this.deadline && this.deadline < Infinity) return this.deadline
    if (this.deadline <= now) this.expire()
    return Infinity
  }

  private expire(): void {
    const error = this.timeoutError()
    this.expired = error
    const pending = this.pending
    this.pending = null
    pending?.(error)
  }
}

const registry = new WeakMap<object, Waits<any>>()

/**
 * Makes `connection`'s phases timed by `waits`.
 *
 * @internal
 */
export const register = <C extends object>(connection: C, waits: Waits<any>): C => {
  registry.set(connection, waits)
  return connection
}

/**
 * `Effect.timeoutFail` for one phase on `connection`: through its `Waits` when its connector has them, otherwise
 * `Effect.timeoutFail` itself (a connection from another `Connector`).
 *
 * @internal
 */
export const timeoutFail = <A, E, R, E2>(
  connection: object,
  effect: Effect.Effect<A, E, R>,
  duration: Duration.Duration,
  onTimeout: () => E2
): Effect.Effect<A, E | E2, R> => {
  const waits = registry.get(connection)
  return waits === undefined
    ? Effect.timeoutFail(effect, { duration, onTimeout })
    : waits.within(effect, Duration.toMillis(duration), onTimeout)
}

/**
 * A connector's `connect` with the connect phase timed by the new connection's `Waits`, from before the socket
 * connects: the same sleeper then times the session's phases.
 *
 * @internal
 */
export type TimedConnect<O, C, E> = <E2>(
  options: O,
  millis: number,
  onTimeout: () => E2
) => Effect.Effect<C, E | E2, Scope.Scope>

const connectors = new WeakMap<object, TimedConnect<any, any, any>>()

/**
 * Declares `service`'s timed connect.
 *
 * @internal
 */
export const registerConnector = <S extends object>(service: S, timed: TimedConnect<any, any, any>): S => {
  connectors.set(service, timed)
  return service
}

/**
 * The timed connect of a connector of this library; `undefined` for any other.
 *
 * @internal
 */
export const timedConnect = <O, C, E>(service: object): TimedConnect<O, C, E> | undefined => connectors.get(service)
