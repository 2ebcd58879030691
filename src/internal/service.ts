/**
 * A service read in the step that uses it.
 *
 * @internal
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"

/**
 * `Effect.flatMap(tag, f)` in one run-loop step: the service taken from the fiber's context (where a tag's own
 * lookup reads it) by the step that goes on with it, where `flatMap` over the tag is three (the continuation, the
 * lookup, the hand-over). For the services read on every message's path.
 *
 * @internal
 */
export const withService = <I, S, A, E, R>(
  tag: Context.Tag<I, S>,
  f: (service: S) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R | I> =>
  Effect.withFiberRuntime((fiber) => f(Context.unsafeGet(fiber.currentContext as Context.Context<I>, tag)))
