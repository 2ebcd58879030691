/**
 * Many deadlines on Effect's Clock, kept by one sleeper fiber.
 *
 * `Effect.timeoutFail` forks two fibers per bounded effect. For waits whose completion is a callback (a DNS query),
 * a deadline needs no fiber of its own: it is an entry here, and one sleeper sleeps until the earliest entry, fires
 * what has expired, and sleeps on to the next. Entries of one budget arrive in deadline order, so the sleeper is
 * only restarted when an entry comes due before the time it sleeps to.
 *
 * @internal
 */
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"

/** @internal */
export interface Entry {
  readonly at: number
  /** `null` once fired or cancelled. */
  fire: (() => void) | null
}

/** @internal */
export class DeadlineTimer {
  /** Pending entries by deadline (cancelled ones are dropped lazily), from `head` on. */
  private entries: Array<Entry> = []
  private head = 0
  /** When the sleeper, if any, wakes up next. */
  private wakeAt = Infinity
  private sleeper: Fiber.RuntimeFiber<void> | null = null
  /** Tells a sleeper whether it is still the timer's sleeper (a replaced one may be past its sleep). */
  private sleeperId = 0
  private closed = false

  /**
   * Calls `fire` at `at` (ms on `clock`) unless the entry is cancelled first. Run the returned Effect to make sure
   * a sleeper will wake for it (it forks one only when none wakes early enough).
   *
   * @internal
   */
  schedule(clock: Clock.Clock, at: number, fire: () => void): readonly [Entry, Effect.Effect<void>] {
    const entry: Entry = { at, fire }
    this.insert(entry)
    if (this.closed || (this.sleeper !== null && this.sleeper.unsafePoll() === null && this.wakeAt <= at)) {
      return [entry, Effect.void]
    }
    return [entry, this.startSleeper(clock)]
  }

  /** @internal */
  cancel(entry: Entry): void {
    entry.fire = null
    this.dropDead()
  }

  /** Stops the sleeper; nothing fires any more. @internal */
  close(): void {
    this.closed = true
    this.entries = []
    this.head = 0
    this.stopSleeper()
  }

  private insert(entry: Entry): void {
    const entries = this.entries
    let i = entries.length
    // Usually the latest deadline: appended without a search.
    while (i > this.head && entries[i - 1]!.at > entry.at) i--
    if (i === entries.length) entries.push(entry)
    else entries.splice(i, 0, entry)
  }

  private dropDead(): void {
    const entries = this.entries
    while (this.head < entries.length && entries[this.head]!.fire === null) this.head++
    if (this.head === entries.length) {
      this.entries = []
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > entries.length) {
      this.entries = entries.slice(this.head)
      this.head = 0
    }
  }

  private stopSleeper(): void {
    this.sleeperId++
    this.wakeAt = Infinity
    if (this.sleeper !== null) {
      this.sleeper.unsafeInterruptAsFork(FiberId.none)
      this.sleeper = null
    }
  }

  private startSleeper(clock: Clock.Clock): Effect.Effect<void> {
    this.stopSleeper()
    const id = this.sleeperId
    this.wakeAt = this.entries[this.head]?.at ?? Infinity
    // A daemon: the timer outlives whichever fiber scheduled the entry that started it; `close` stops it.
    return Effect.map(Effect.forkDaemon(this.sleep(clock, id)), (fiber) => {
      if (id === this.sleeperId) this.sleeper = fiber
    })
  }

  private sleep(clock: Clock.Clock, id: number): Effect.Effect<void> {
    const loop: Effect.Effect<void> = Effect.suspend(() =>
      Effect.flatMap(clock.sleep(Duration.millis(Math.max(0, this.wakeAt - clock.unsafeCurrentTimeMillis()))), () => {
        if (id !== this.sleeperId) return Effect.void
        const now = clock.unsafeCurrentTimeMillis()
        // `fire` may cancel or add entries, which moves `head` and may replace `entries`: both re-read each time.
        while (this.head < this.entries.length && this.entries[this.head]!.at <= now) {
          const entry = this.entries[this.head++]!
          const fire = entry.fire
          entry.fire = null
          fire?.()
        }
        this.dropDead()
        const next = this.entries[this.head]
        if (next === undefined) {
          this.sleeperId++
          this.sleeper = null
          this.wakeAt = Infinity
          return Effect.void
        }
        this.wakeAt = next.at
        return loop
      })
    )
    return loop
  }
}
