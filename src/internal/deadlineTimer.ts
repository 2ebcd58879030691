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
import * as Effect from "effect/Effect"
import { Sleeper } from "./sleeper.js"

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
  private readonly sleeper = new Sleeper((now) => this.fireDue(now))
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
    if (this.closed || this.sleeper.covers(at)) return [entry, Effect.void]
    return [entry, this.sleeper.start(clock, this.entries[this.head]?.at ?? Infinity)]
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
    this.sleeper.stop()
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

  /** Fires every entry due at `now`; the next deadline to sleep to, `Infinity` when none is left. */
  private fireDue(now: number): number {
    // `fire` may cancel or add entries, which moves `head` and may replace `entries`: both re-read each time.
    while (this.head < this.entries.length && this.entries[this.head]!.at <= now) {
      const entry = this.entries[this.head++]!
      const fire = entry.fire
      entry.fire = null
      fire?.()
    }
    this.dropDead()
    return this.entries[this.head]?.at ?? Infinity
  }
}
