/**
 * What a peer sent and nobody has read yet, with pull-based line and byte reads: the framing under every connection
 * (internal/connection/wire.ts), and the scripted test peer's view of what the client wrote.
 *
 * @internal
 */
import * as Effect from "effect/Effect"

/** @internal */
export type Take<A, E> =
  | { readonly _tag: "Value"; readonly value: A }
  | { readonly _tag: "Error"; readonly error: E }
  | { readonly _tag: "Pending" }

const pending: Take<never, never> = { _tag: "Pending" }
const LF = 0x0a
const CR = 0x0d
const EMPTY = Buffer.alloc(0)

/** @internal */
export class LineBuffer<E> {
  // Unread bytes are `buffer[start..]`: a line taken moves `start`, so no per-line copy or view is made, and a chunk
  // arriving on an empty buffer is kept as it is (the pipe must not reuse it).
  private buffer: Buffer = EMPTY
  private start = 0
  private ended: E | null = null
  // End of input whose error is built only if someone reads it: a peer's close ends every connection, and an error
  // captures a stack trace.
  private endedBy: (() => E) | null = null
  private waiter: (() => void) | null = null

  /**
   * @param maxLine longest line accepted, in bytes without its line ending
   * @param overflow the error for a longer line; it also ends the buffer, as the stream cannot be resynchronised
   */
  constructor(readonly maxLine: number, private readonly overflow: (limit: number) => E) {}

  /** Bytes received and not yet taken. */
  get size(): number {
    return this.buffer.length - this.start
  }

  get isEnded(): boolean {
    return this.ended !== null || this.endedBy !== null
  }

  /** What ended the input, once it has ended. */
  get error(): E | null {
    if (this.endedBy !== null) {
      this.ended = this.endedBy()
      this.endedBy = null
    }
    return this.ended
  }

  push(chunk: Uint8Array): void {
    if (this.isEnded || chunk.length === 0) return
    const bytes = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length)
    if (this.start >= this.buffer.length) {
      this.buffer = bytes
    } else {
      this.buffer = Buffer.concat([this.buffer.subarray(this.start), bytes])
    }
    this.start = 0
    this.wake()
  }

  /** End of input: whatever complete lines remain can still be read, then `error` is returned for ever. */
  end(error: E): void {
    if (this.isEnded) return
    this.ended = error
    this.wake()
  }

  /** `end`, the error built by `make` when (if ever) it is read. */
  endLazily(make: () => E): void {
    if (this.isEnded) return
    this.endedBy = make
    this.wake()
  }

  /** Input ended by `endLazily(make)` and its error not built yet. */
  endedLazilyBy(make: () => E): boolean {
    return this.endedBy === make
  }

  /** Ends the input and drops what was buffered: the error is returned at once. */
  abort(error: E): void {
    this.drop()
    this.end(error)
  }

  /** `abort`, the error built by `make` when (if ever) it is read. */
  abortLazily(make: () => E): void {
    this.drop()
    this.endLazily(make)
  }

  private drop(): void {
    this.buffer = EMPTY
    this.start = 0
  }

  /**
   * The next complete line without its ending (LF, or CRLF), decoded as UTF-8; `null` when there is none now, and
   * then `error` says whether input has ended (an overflow ends it).
   */
  nextLine(): string | null {
    const buffer = this.buffer
    const start = this.start
    const size = buffer.length - start
    if (size > 0) {
      const lf = buffer.indexOf(LF, start)
      // Scanned no further than a maximal line plus its CR.
      if (lf >= 0 && lf - start <= this.maxLine + 1) {
        const end = lf > start && buffer[lf - 1] === CR ? lf - 1 : lf
        if (end - start > this.maxLine) return this.overflowed()
        const line = buffer.toString("utf8", start, end)
        if (lf + 1 >= buffer.length) this.drop()
        else this.start = lf + 1
        return line
      }
      // More than a maximal line plus its CR without a LF: the line is too long, whatever comes next.
      if (size > this.maxLine + 1) return this.overflowed()
    }
    return null
  }

  /** A line without its ending (LF, or CRLF), decoded as UTF-8. */
  takeLine(): Take<string, E> {
    const line = this.nextLine()
    if (line !== null) return { _tag: "Value", value: line }
    const error = this.error
    return error === null ? pending : { _tag: "Error", error }
  }

  /** Exactly `count` bytes (a BDAT chunk). */
  takeBytes(count: number): Take<Uint8Array, E> {
    if (this.size >= count) {
      const bytes = Buffer.from(this.buffer.subarray(this.start, this.start + count))
      this.start += count
      return { _tag: "Value", value: bytes }
    }
    const error = this.error
    return error === null ? pending : { _tag: "Error", error }
  }

  /**
   * Waits until `take` yields a value or an error. One waiter at a time (the test peer's reads).
   */
  await<A>(take: (buffer: this) => Take<A, E>): Effect.Effect<A, E> {
    return Effect.async<A, E>((resume) => {
      const attempt = (): boolean => {
        const result = take(this)
        switch (result._tag) {
          case "Value":
            resume(Effect.succeed(result.value))
            return true
          case "Error":
            resume(Effect.fail(result.error))
            return true
          case "Pending":
            return false
        }
      }
      if (attempt()) return
      const waiter = () => {
        if (attempt()) this.waiter = null
      }
      this.waiter = waiter
      return Effect.sync(() => {
        if (this.waiter === waiter) this.waiter = null
      })
    })
  }

  private overflowed(): null {
    this.abort(this.overflow(this.maxLine))
    return null
  }

  private wake(): void {
    this.waiter?.()
  }
}
