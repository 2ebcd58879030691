// What the one-process harnesses (bench/reuseBudget.mjs, bench/connectionCycle.mjs) count and how they run it, in one
// place.
import v8 from "node:v8"
import { Effect, RuntimeFlags, RuntimeFlagsPatch, Supervisor } from "effect"

/**
 * Run-loop steps and fibers started, and the steps by Effect primitive: an effect/Supervisor (public API), counting
 * under the OpSupervision runtime flag.
 */
export class StepCounter extends Supervisor.AbstractSupervisor {
  steps = 0
  fibers = 0
  ops = new Map()
  get value() {
    return Effect.void
  }
  onStart() {
    this.fibers++
  }
  onEffect(_fiber, effect) {
    this.steps++
    const op = effect?._op ?? "?"
    this.ops.set(op, (this.ops.get(op) ?? 0) + 1)
  }
}

/**
 * Bytes allocated from now until the returned function is called: V8's GC statistics (what each collection found in
 * use before it ran, minus what the previous one left), plus what is in use at the end beyond the last collection.
 */
export const allocation = () => {
  const profiler = new v8.GCProfiler()
  const start = v8.getHeapStatistics().used_heap_size
  profiler.start()
  return () => {
    const end = v8.getHeapStatistics().used_heap_size
    let allocated = 0
    let previous = start
    for (const gc of profiler.stop().statistics) {
      allocated += Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - previous)
      previous = gc.afterGC.heapStatistics.usedHeapSize
    }
    return allocated + Math.max(0, end - previous)
  }
}

/** `effect` run on `runtime` under a fresh StepCounter (OpSupervision on): the counter, once it has ended. */
export const countSteps = async (runtime, effect) => {
  const counter = new StepCounter()
  await runtime.runPromise(effect.pipe(
    Effect.supervised(counter),
    Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
  ))
  return counter
}

/**
 * `run(rep)` `reps` times, each doing `count` units of work: CPU µs (process.cpuUsage) and KB allocated a unit, one
 * value per repetition.
 */
export const costPerUnit = async (reps, count, run) => {
  const cpu = []
  const kb = []
  for (let rep = 0; rep < reps; rep++) {
    const allocated = allocation()
    const cpu0 = process.cpuUsage()
    await run(rep)
    const used = process.cpuUsage(cpu0)
    kb.push(Math.round(allocated() / count / 102.4) / 10)
    cpu.push(Math.round((used.user + used.system) / count))
  }
  return { cpu, kb }
}
