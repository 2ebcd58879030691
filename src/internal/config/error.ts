/**
 * The loader's failure: every problem of a file at once, each with its key, position, what was found and what was
 * expected. Re-exported by `OutboundConfig`.
 */
import * as Data from "effect/Data"

/**
 * One problem in a configuration file.
 *
 * @internal
 */
export interface ConfigIssue {
  /** `queue.outbound.timeouts.data`, `queue.outbound.ip-strategy[1].then`; "" for a TOML syntax error. */
  readonly path: string
  readonly found: string
  readonly expected: string
  /** One sentence with the path, the problem, what was found and what was expected. */
  readonly message: string
  /** Position in the file (1-based), when known. */
  readonly line: number | null
  readonly column: number | null
}

/**
 * Loading failed. `issues` holds every problem found, `message` lists them one per line.
 *
 * @internal
 */
export class ConfigError extends Data.TaggedError("ConfigError")<{
  readonly file: string | null
  readonly issues: ReadonlyArray<ConfigIssue>
}> {
  override get message(): string {
    const name = this.file ?? "<config>"
    const count = this.issues.length
    const lines = this.issues.map((issue) => {
      const position = issue.line === null ? "" : `:${issue.line}${issue.column === null ? "" : `:${issue.column}`}`
      return `  ${name}${position}: ${issue.message}`
    })
    return [`invalid configuration ${name}: ${count} issue${count === 1 ? "" : "s"}`, ...lines].join("\n")
  }
}
