// Which run-loop steps a message of the reuse workload takes, by kind, in one process:
//   node bench/reuseSteps.mjs [--count=2000] [--concurrency=50] [--dist=DIR] [--sequence=N]
// The workload of bench/reuseBudget.mjs (Transport.deliver on Transport.layer's pool, five domains, after a warm-up
// of 1,000 messages). An effect/Supervisor with OpSupervision (public API) sees every step; each is counted under its
// op and what identifies it: a continuation's or a thunk's source (its first 90 characters), a value's keys. It
// prints the steps per message, then each kind's count per message (those of at least 0.05), largest first; with
// --sequence=N, also the 60 steps after the N-th, in order (at --concurrency=1 these are one or two messages
// whole). Effect's own primitives are read as they are (`_op`, `effect_instruction_i0`…): a diagnostic tool, not
// a test. Every batch is bounded in count, and the servers exit by themselves after 2 minutes.
import path from "node:path"
import { Effect, RuntimeFlags, RuntimeFlagsPatch, Supervisor } from "effect"
import { parseArgs } from "./common.mjs"
import { startServers, workload } from "./reuseWorkload.mjs"

const here = path.dirname(new URL(import.meta.url).pathname)
const args = parseArgs(process.argv.slice(2))
const count = Number(args.count ?? 2000)
const concurrency = Number(args.concurrency ?? 50)
const sequence = args.sequence === undefined ? null : Number(args.sequence)
const dist = path.resolve(args.dist ?? path.join(here, "../dist"))

const describe = (f) => {
  if (typeof f !== "function") return f === undefined ? "" : String(f?.constructor?.name)
  const source = f.toString().replace(/\s+/g, " ")
  return (f.name ? f.name + " " : "") + source.slice(0, 90)
}

const kindOf = (effect) => {
  const op = effect?._op
  const kind = `${op} ${effect?.constructor?.name}`
  switch (op) {
    case "OnSuccess":
    case "OnFailure":
    case "OnSuccessAndFailure":
      return `${kind} | ${describe(effect.effect_instruction_i1)} | ${describe(effect.effect_instruction_i2)}`
    case "Sync":
    case "Async":
    case "WithRuntime":
    case "UpdateRuntimeFlags":
    case "Iterator":
      return `${kind} | ${describe(effect.effect_instruction_i0)} | ${describe(effect.effect_instruction_i1)}`
    case "Commit":
      return `${kind} | ${describe(effect.commit)}`
    case "Success": {
      const value = effect.effect_instruction_i0
      const keys = value !== null && typeof value === "object" ? Object.keys(value).slice(0, 6).join(",") : ""
      return `${kind} | ${typeof value} ${value?.constructor?.name ?? ""} ${keys}`
    }
    default:
      return kind
  }
}

class Tracer extends Supervisor.AbstractSupervisor {
  steps = 0
  kinds = new Map()
  get value() {
    return Effect.sync(() => this.steps)
  }
  onEffect(fiber, effect) {
    this.steps++
    const kind = kindOf(effect)
    this.kinds.set(kind, (this.kinds.get(kind) ?? 0) + 1)
    if (sequence !== null && this.steps > sequence && this.steps <= sequence + 60) {
      console.log(`  #${this.steps} fiber ${fiber.id().id}: ${kind.slice(0, 200)}`)
    }
  }
}

const servers = await startServers(120)
try {
  const { runtime, batch } = await workload(dist, servers, { concurrency, checked: false })
  await runtime.runPromise(batch(1_000_000, 1000))
  const tracer = new Tracer()
  await runtime.runPromise(batch(0, count).pipe(
    Effect.supervised(tracer),
    Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
  ))
  await runtime.dispose()
  console.log(`${path.relative(path.join(here, ".."), dist) || "."}: ${(tracer.steps / count).toFixed(2)} steps a message (c = ${concurrency}, ${count} messages)`)
  for (const [kind, n] of [...tracer.kinds].sort((a, b) => b[1] - a[1])) {
    if (n / count >= 0.05) console.log(`${(n / count).toFixed(2).padStart(6)}  ${kind.slice(0, 200)}`)
  }
} finally {
  servers.stop()
}
process.exit(0)
