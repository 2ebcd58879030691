/**
 * A Scheduler (Effect's public interface) that holds one fiber at its n-th run-loop step: the fiber yields there and
 * its next task is kept until `release`. With it a test can interrupt a fiber, or move the TestClock, at every step
 * of an operation in turn: the sweeps of test/ConnectionSweep.test.ts.
 */
import type * as Fiber from "effect/Fiber"
import type { Scheduler } from "effect/Scheduler"

export class Holder implements Scheduler {
  readonly queue: Array<() => void> = []
  target: Fiber.RuntimeFiber<unknown, unknown> | null = null
  steps = 0
  held: (() => void) | null = null
  private holding = false
  constructor(readonly pauseAt: number) {}
  scheduleTask(task: () => void, _priority: number, fiber?: Fiber.RuntimeFiber<unknown, unknown>): void {
    if (this.holding && fiber === this.target) {
      this.holding = false
      this.held = task
      return
    }
    this.queue.push(task)
  }
  shouldYield(fiber: Fiber.RuntimeFiber<unknown, unknown>): number | false {
    if (fiber === this.target && ++this.steps === this.pauseAt) {
      this.holding = true
      return 0
    }
    return fiber.currentOpCount > 2048 ? 0 : false
  }
  release(): void {
    if (this.held !== null) this.queue.push(this.held)
    this.held = null
  }
}

/** Runs every task until none is left for a few macrotasks (the TestClock yields to real timers while it adjusts). */
export const settle = async (s: Holder): Promise<void> => {
  let idle = 0
  for (let round = 0; round < 400 && idle < 3; round++) {
    for (let i = 0; i < 100_000 && s.queue.length > 0; i++) s.queue.shift()!()
    await new Promise<void>((resolve) => setTimeout(resolve, 0))
    idle = s.queue.length === 0 ? idle + 1 : 0
  }
}
