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

/** @internal */
export class LineBuffer<E> {
  private buffer: Buffer = Buffer.alloc(0)
  private ended: E | null = null
  private waiter: (() => void) | null = null

  /**
   * @param maxLine longest line accepted, in bytes without its line ending
   * @param overflow the error for a longer line; it also ends the buffer, as the stream cannot be resynchronised
   */
  constructor(readonly maxLine: number, private readonly overflow: (limit: number) => E) {}

  /** Bytes received and not yet taken. */
  get size(): number {
    return this.buffer.length
  }

  get isEnded(): boolean {
    return this.ended !== null
  }

  /** What ended the input, once it has ended. */
  get error(): E | null {
    return this.ended
  }

  push(chunk: Uint8Array): void {
    if (this.ended !== null || chunk.length === 0) return
    this.buffer = this.buffer.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buffer, chunk])
    this.wake()
  }

  /** End of input: whatever complete lines remain can still be read, then `error` is returned for ever. */
  end(error: E): void {
    if (this.ended !== null) return
    this.ended = error
    this.wake()
  }

  /** Ends the input and drops what was buffered: the error is returned at once. */
  abort(error: E): void {
    this.buffer = Buffer.alloc(0)
    this.end(error)
  }

  /** A line without its ending (LF, or CRLF), decoded as UTF-8. */
  takeLine(): Take<string, E> {
    const scanned = Math.min(this.buffer.length, this.maxLine + 2)
    const lf = this.buffer.subarray(0, scanned).indexOf(LF)
    if (lf >= 0) {
      const end = lf > 0 && this.buffer[lf - 1] === CR ? lf - 1 : lf
      if (end > this.maxLine) return this.overflowed()
      const line = this.buffer.toString("utf8", 0, end)
      this.buffer = this.buffer.subarray(lf + 1)
      return { _tag: "Value", value: line }
    }
    // More than a maximal line plus its CR without a LF: the line is too long, whatever comes next.
    if (this.buffer.length > this.maxLine + 1) return this.overflowed()
    if (this.ended !== null) return { _tag: "Error", error: this.ended }
    return pending
  }

  /** Exactly `count` bytes (a BDAT chunk). */
  takeBytes(count: number): Take<Uint8Array, E> {
    if (this.buffer.length >= count) {
      const bytes = Buffer.from(this.buffer.subarray(0, count))
      this.buffer = this.buffer.subarray(count)
      return { _tag: "Value", value: bytes }
    }
    if (this.ended !== null) return { _tag: "Error", error: this.ended }
    return pending
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

  private overflowed(): Take<never, E> {
    const error = this.overflow(this.maxLine)
    this.abort(error)
    return { _tag: "Error", error }
  }

  private wake(): void {
    this.waiter?.()
  }
}
