/**
 * Exit statuses of the `smtp-transport` command (sysexits.h), and the failure that carries one out of a command.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import type { DeliveryReport } from "../DeliveryReport.js"

/**
 * @since 0.1.0
 */
export const ExitCode = {
  /** Every recipient delivered. */
  ok: 0,
  /** EX_USAGE: the command line is wrong (unknown option, bad value, invalid address, no recipient). */
  usage: 64,
  /** EX_DATAERR: an input line is not a valid request (`batch`). */
  dataErr: 65,
  /** EX_NOINPUT: an input file (the message, the CA file) cannot be read. */
  noInput: 66,
  /** EX_UNAVAILABLE: at least one recipient failed permanently. */
  unavailable: 69,
  /** EX_SOFTWARE: a bug; the cause is printed. */
  software: 70,
  /** EX_TEMPFAIL: some recipients were deferred, none failed. */
  tempFail: 75,
  /** EX_CONFIG: the configuration file cannot be used; every problem is printed. */
  config: 78,
  /** Interrupted by SIGINT / SIGTERM (128 + SIGINT), as shells report it. */
  interrupted: 130
} as const

/**
 * A command ends with this status; `message` (if any) goes to stderr first.
 *
 * @since 0.1.0
 */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: number
  readonly message: string | null
}> {}

/**
 * @since 0.1.0
 */
export const usage = (message: string): CliExit => new CliExit({ code: ExitCode.usage, message })

/**
 * The status a delivery report gives: any failure wins over any deferral.
 *
 * @since 0.1.0
 */
export const ofReport = (report: DeliveryReport): number =>
  report.recipients.some((r) => r.status === "failed")
    ? ExitCode.unavailable
    : report.recipients.some((r) => r.status === "deferred")
    ? ExitCode.tempFail
    : ExitCode.ok
