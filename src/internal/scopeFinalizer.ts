/**
 * A finalizer added to the current `Scope` as it is, without `Effect.addFinalizer`'s FiberRefs capture.
 *
 * `Effect.addFinalizer` records the acquiring fiber's FiberRefs and, when the finalizer runs in another fiber, sets
 * them on that fiber for the finalizer's duration and patches them back afterwards. The patch back keeps the
 * acquiring fiber's entries in the closing fiber's FiberRef stacks: the closing fiber gains one stack entry per
 * foreign finalizer for the rest of its life. A connection is acquired in a Happy Eyeballs attempt fiber and released
 * by the delivery's fiber, so a long-lived fiber that delivers again and again (an application's queue worker, a
 * concurrent `Effect.forEach` worker) grew by about 12 KB per delivery: every entry held the span current at the
 * connect, whose exit held the connection, its socket and buffers. Over a 60,000-delivery run that was hundreds of
 * MB of heap and a rate that halved as garbage collection slowed. Our finalizers close sockets and timers: they
 * need none of the acquiring fiber's FiberRefs. (Test: Transport › a long-lived caller. Reported upstream with a
 * reproduction: docs/upstream/effect-addFinalizer-fiberRefs.md.)
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"

export const add = (
  finalizer: (exit: Exit.Exit<unknown, unknown>) => Effect.Effect<unknown>
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.flatMap(Effect.scope, (scope) => Scope.addFinalizerExit(scope, finalizer))
