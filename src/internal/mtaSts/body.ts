import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"

/**
 * Collects a body of at most `limit` bytes. Pulling stops at the first chunk that crosses the limit, so a hostile
 * server cannot make us buffer more than one chunk past it; the caller's scope then closes the connection.
 */
export const readCapped = <E, E2>(
  body: Stream.Stream<Uint8Array, E>,
  limit: number,
  onTooLarge: (received: number) => E2
): Effect.Effect<Uint8Array, E | E2> =>
  Stream.runFoldWhile(
    body,
    { chunks: [] as Array<Uint8Array>, size: 0 },
    (state) => state.size <= limit,
    (state, chunk) => {
      state.chunks.push(chunk)
      return { chunks: state.chunks, size: state.size + chunk.length }
    }
  ).pipe(
    Effect.flatMap((state): Effect.Effect<Uint8Array, E2> => {
      if (state.size > limit) return Effect.fail(onTooLarge(state.size))
      const out = new Uint8Array(state.size)
      let offset = 0
      for (const chunk of state.chunks) {
        out.set(chunk, offset)
        offset += chunk.length
      }
      return Effect.succeed(out)
    })
  )
