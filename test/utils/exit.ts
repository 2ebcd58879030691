import * as Exit from "effect/Exit"

/** The error of an exit that failed with one (`undefined` for a success, a defect or an interruption). */
export const failure = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) && exit.cause._tag === "Fail" ? exit.cause.error : undefined
