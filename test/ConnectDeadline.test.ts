/**
 * A connect's deadline holds however its fiber is descheduled: a Scheduler (public API) that holds the connecting
 * fiber at each of its run-loop steps in turn while the TestClock moves on, then lets it go. Whatever the step, a
 * peer that never answers the connect ends in `connect/timeout`, and the connection is closed. Found by a review
 * sweep: a timer forked just before the connect registered could wake first, see nothing pending and end, leaving
 * the connect without a deadline; and an operation registered after its deadline had passed was never expired.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Duration, Effect, Exit, Layer, ManagedRuntime, Option, type Scheduler, TestClock, TestContext } from "effect"
import * as Fiber from "effect/Fiber"
import * as ConnectorTest from "../src/ConnectorTest.js"
import * as SmtpSession from "../src/SmtpSession.js"

const IP = "192.0.2.10"
const CONNECT_MS = 1_000

/** Holds `target` at its `pauseAt`-th run-loop step (it yields there, and its next task is kept until released). */
class Holder implements Scheduler.Scheduler {
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
const settle = async (s: Holder) => {
  let idle = 0
  for (let round = 0; round < 400 && idle < 3; round++) {
    for (let i = 0; i < 100_000 && s.queue.length > 0; i++) s.queue.shift()!()
    await new Promise<void>((resolve) => setTimeout(resolve, 0))
    idle = s.queue.length === 0 ? idle + 1 : 0
  }
}

const failureOf = (exit: Exit.Exit<unknown, unknown> | null): string => {
  if (exit === null) return "not done"
  if (Exit.isSuccess(exit)) return "connected"
  const error = Cause.failureOption(exit.cause)
  if (Option.isSome(error)) {
    const e = error.value as { readonly phase: string; readonly kind: string }
    return `${e.phase}/${e.kind}`
  }
  return Cause.pretty(exit.cause)
}

const makeRuntime = () =>
  ManagedRuntime.make(Layer.merge(ConnectorTest.layer({ [IP]: { script: [], connect: "stall" } }), TestContext.TestContext))

/** One connect held at step `pauseAt` while the clock moves `heldMs`; then the clock moves on until it ends. */
const once = async (
  runtime: ReturnType<typeof makeRuntime>,
  pauseAt: number,
  heldMs: number
) => {
  const s = new Holder(pauseAt)
  const connect = SmtpSession.connect({ ip: IP, port: 25 }, { timeouts: { connect: Duration.millis(CONNECT_MS) } })
  // Started by the scheduler, not inside `runFork`: every step of it is counted
  const fiber = runtime.runFork(connect, { scheduler: s, immediate: false })
  s.target = fiber
  const advance = async (ms: number) => {
    runtime.runFork(TestClock.adjust(Duration.millis(ms)), { scheduler: s })
    await settle(s)
  }
  // The fiber is held at its step once it yields there, which may be only after the clock moved (a step after an
  // async wait): the clock moves `heldMs` while it is held, then it goes on.
  let wasHeld = false
  const whileHeld = async () => {
    if (s.held === null || wasHeld) return
    wasHeld = true
    await advance(heldMs)
    s.release()
    await settle(s)
  }
  await settle(s)
  await whileHeld()
  // A deadline passed is noticed within one timer wake (at most 200 ms), so a few of these end any connect.
  for (let i = 0; i < 12 && fiber.unsafePoll() === null; i++) {
    await advance(500)
    await whileHeld()
  }
  return { exit: fiber.unsafePoll(), wasHeld, steps: s.steps }
}

describe("a connect whose fiber is held at any run-loop step while the clock moves", () => {
  for (const heldMs of [250, 2 * CONNECT_MS]) {
    it(`held ${heldMs} ms: still connect/timeout, the connection closed`, async () => {
      const runtime = makeRuntime()
      try {
        await runtime.runPromise(Effect.void) // the layers built outside the fibers counted
        const base = await once(runtime, Infinity, heldMs)
        expect(failureOf(base.exit)).toBe("connect/timeout")
        const problems: Array<string> = []
        for (let step = 1; step <= base.steps; step++) {
          const run = await once(runtime, step, heldMs)
          if (!run.wasHeld) continue
          const failure = failureOf(run.exit)
          if (failure !== "connect/timeout") problems.push(`step ${step}: ${failure}`)
        }
        const log = await runtime.runPromise(ConnectorTest.ConnectorTest)
        const records = await runtime.runPromise(log.connections)
        expect(problems).toEqual([])
        expect(records.length).toBe(base.steps + 1)
        expect(records.filter((r) => !r.closed)).toEqual([])
      } finally {
        await runtime.dispose()
      }
    }, 60_000)
  }
})

describe("a scoped connect interrupted at any run-loop step", () => {
  it("the connection is closed whatever the step: by the connect, or by the scope that owns it", async () => {
    const runtime = ManagedRuntime.make(
      Layer.merge(ConnectorTest.layer({ [IP]: { script: [ConnectorTest.Script.stall] } }), TestContext.TestContext)
    )
    try {
      await runtime.runPromise(Effect.void)
      const connect = Effect.scoped(Effect.asVoid(
        SmtpSession.connectScoped({ ip: IP, port: 25 }, { timeouts: { connect: Duration.millis(CONNECT_MS) } })
      ))
      const interruptAt = async (pauseAt: number) => {
        const s = new Holder(pauseAt)
        const fiber = runtime.runFork(connect, { scheduler: s, immediate: false })
        s.target = fiber
        await settle(s)
        const held = s.held !== null
        if (held) {
          runtime.runFork(Fiber.interrupt(fiber), { scheduler: s })
          s.release()
          await settle(s)
        }
        return { held, steps: s.steps, done: fiber.unsafePoll() !== null }
      }
      const base = await interruptAt(Infinity)
      expect(base.done).toBe(true)
      const problems: Array<string> = []
      for (let step = 1; step <= base.steps; step++) {
        const run = await interruptAt(step)
        if (!run.done) problems.push(`step ${step}: not done`)
      }
      const log = await runtime.runPromise(ConnectorTest.ConnectorTest)
      const records = await runtime.runPromise(log.connections)
      expect(problems).toEqual([])
      expect(records.map((r, i) => (r.closed ? null : i)).filter((i) => i !== null)).toEqual([])
    } finally {
      await runtime.dispose()
    }
  }, 60_000)
})
