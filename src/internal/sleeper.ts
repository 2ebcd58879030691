/**
 * One daemon fiber sleeping on Effect's Clock until a time, restartable: the sleeper behind the DNS layer's shared
 * deadlines (deadlineTimer) and behind each connection's phase deadlines (phaseDeadline). Its owner says, each time
 * it wakes, when to wake next; a sleeper that must wake earlier than it sleeps to is replaced.
 *
 * @internal
 */
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"

/** @internal */
export class Sleeper {
  private fiber: Fiber.RuntimeFiber<void> | null = null
  /** Tells a sleeper whether it is still the current one (a replaced one may be past its sleep). */
  private id = 0
  private at = Infinity

  /**
   * @param onWake called when the sleeper wakes (at the time it slept to, or later): the time to sleep on to, or
   *   `Infinity` to stop
   */
  constructor(private readonly onWake: (now: number) => number) {}

  /** A running sleeper wakes no later than `at`. */
  covers(at: number): boolean {
    return this.fiber !== null && this.fiber.unsafePoll() === null && this.at <= at
  }

  stop(): void {
    this.id++
    this.at = Infinity
    if (this.fiber !== null) {
      this.fiber.unsafeInterruptAsFork(FiberId.none)
      this.fiber = null
    }
  }

  /** A sleeper waking at `at`, in place of the current one. */
  start(clock: Clock.Clock, at: number): Effect.Effect<void> {
    this.stop()
    const id = this.id
    this.at = at
    // A daemon: its owner stops it (`stop`), not whichever fiber happened to start it.
    return Effect.map(Effect.forkDaemon(this.sleep(clock, id)), (fiber) => {
      if (id === this.id) this.fiber = fiber
    })
  }

  private sleep(clock: Clock.Clock, id: number): Effect.Effect<void> {
    const loop: Effect.Effect<void> = Effect.suspend(() =>
      Effect.flatMap(clock.sleep(Duration.millis(Math.max(0, this.at - clock.unsafeCurrentTimeMillis()))), () => {
        if (id !== this.id) return Effect.void
        // While `onWake` runs this sleeper covers nothing, so anything it schedules starts a sleeper of its own.
        this.at = Infinity
        const next = this.onWake(clock.unsafeCurrentTimeMillis())
        // Replaced or stopped meanwhile: the new state is not this sleeper's to touch.
        if (id !== this.id) return Effect.void
        if (next === Infinity) {
          this.id++
          this.fiber = null
          return Effect.void
        }
        this.at = next
        return loop
      })
    )
    return loop
  }
}
