/**
 * Debug logging at the cost of one check when Debug is off (the default minimum level is Info): the messages, which
 * format replies and commands, are built only when they will be logged.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as LogLevel from "effect/LogLevel"

/**
 * Runs `log()` only when the fiber's minimum log level lets Debug through.
 *
 * @internal
 */
export const whenDebug = (log: () => Effect.Effect<void>): Effect.Effect<void> =>
  Effect.asVoid(Effect.whenLogLevel(Effect.suspend(log), "Debug"))

/**
 * `Effect.logDebug(message())`, with `message` called only when Debug is enabled.
 *
 * @internal
 */
export const debug = (message: () => string): Effect.Effect<void> => whenDebug(() => Effect.logDebug(message()))

/**
 * `Effect.annotateLogs(key, value)` when Debug is enabled, the effect as it is otherwise: for code that logs only at
 * Debug, where an annotation nobody will see would still cost a FiberRef set and restore (about 30 run-loop steps).
 *
 * @internal
 */
export const annotateWhenDebug = (key: string, value: unknown) =>
<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) =>
    LogLevel.lessThan(LogLevel.Debug, fiber.getFiberRef(FiberRef.currentMinimumLogLevel))
      ? effect
      : Effect.annotateLogs(effect, key, value)
  )
