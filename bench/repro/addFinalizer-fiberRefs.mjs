// Minimal reproduction for Effect (3.22.4): a finalizer added with `Effect.addFinalizer` in one fiber and run by
// another leaves entries on the running fiber's FiberRef stacks, one set per finalizer, for the rest of its life.
// Run from the repository root: node --expose-gc bench/repro/addFinalizer-fiberRefs.mjs
// See docs/upstream/effect-addFinalizer-fiberRefs.md.
import { Effect, Exit, Fiber, Scope } from "effect"

// A resource acquired in a child fiber (as a Happy Eyeballs attempt acquires a socket) whose scope is closed by the
// parent (the delivery that used the connection).
const once = (add) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Fiber.join(yield* Effect.fork(Scope.extend(add, scope)))
    yield* Scope.close(scope, Exit.void)
  })

const viaEffect = Effect.addFinalizer(() => Effect.void)
const viaScope = Effect.flatMap(Effect.scope, (scope) => Scope.addFinalizerExit(scope, () => Effect.void))

const measure = async (label, add, n) => {
  globalThis.gc?.()
  const before = process.memoryUsage().heapUsed
  const refs = await Effect.runPromise(Effect.zipRight(Effect.repeatN(once(add), n - 1), Effect.getFiberRefs))
  globalThis.gc?.()
  const grown = Math.round((process.memoryUsage().heapUsed - before) / 1024)
  // Diagnostic only: `locals` is not public API; it shows where the memory goes.
  const deepest = Math.max(...[...refs.locals.values()].map((stack) => stack.length))
  console.log(`${label.padEnd(26)} n=${String(n).padStart(6)}  deepest FiberRef stack ${deepest}  heap +${grown} KB`)
}

for (const n of [100, 2_000, 10_000]) await measure("Effect.addFinalizer", viaEffect, n)
for (const n of [100, 2_000, 10_000]) await measure("Scope.addFinalizerExit", viaScope, n)
