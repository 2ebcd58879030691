/**
 * A finalizer added to the current `Scope` as it is, without `Effect.addFinalizer`'s FiberRefs capture.
 *
 * `Effect.addFinalizer` records the acquiring fiber's FiberRefs and, when the finalizer runs in another fiber, sets
 * them on that fiber for the finalizer's duration and patches them back afterwards. The patch back keeps the
 * acquiring fiber's entries in the closing fiber's FiberRef stacks: the closing fiber gains one stack entry per
 * foreign finalizer for the rest of its life (reported upstream with a reproduction:
 * docs/upstream/effect-addFinalizer-fiberRefs.md). When connections lived in Scopes, a connection acquired in a Happy
 * Eyeballs attempt fiber and released by the delivery's fiber made a long-lived caller retain every connection it
 * made. The transport no longer ties connections to Scopes; `Connector.own` / `Connector.scoped`, which do for their
 * callers, use this, since closing a connection needs none of the acquiring fiber's FiberRefs.
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
