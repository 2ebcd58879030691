import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Random from "effect/Random"
import * as Stream from "effect/Stream"
import * as Pull from "../src/Pull.js"

const drain = <A, R>(pull: Pull.Pull<A, R>) =>
  Effect.gen(function*() {
    const out: Array<A> = []
    while (true) {
      const next = yield* pull.next
      if (Option.isNone(next)) return out
      out.push(next.value)
    }
  })

describe("Pull", () => {
  it.effect("make runs each element's effect only when it is pulled, and knows its end ahead", () =>
    Effect.gen(function*() {
      const ran: Array<string> = []
      const pull = Pull.make(["a", "b"], (item, index) => Effect.sync(() => (ran.push(item), `${item}${index}`)))
      expect(ran).toEqual([])
      expect(yield* pull.next).toEqual(Option.some("a0"))
      expect(ran).toEqual(["a"])
      expect(pull.isDone()).toBe(false)
      expect(yield* pull.next).toEqual(Option.some("b1"))
      expect(pull.isDone()).toBe(true)
      expect(yield* pull.next).toEqual(Option.none())
      expect(yield* pull.next).toEqual(Option.none())
      expect(ran).toEqual(["a", "b"])
    }))

  it.effect("fromIterable: an array's end is known ahead, a lazy iterable's once reached, and it is not read ahead", () =>
    Effect.gen(function*() {
      const array = Pull.fromIterable([1])
      expect(yield* array.next).toEqual(Option.some(1))
      expect(array.isDone()).toBe(true)

      const read: Array<number> = []
      function* lazy() {
        for (const n of [1, 2]) {
          read.push(n)
          yield n
        }
      }
      const pull = Pull.fromIterable(lazy())
      expect(read).toEqual([])
      expect(yield* pull.next).toEqual(Option.some(1))
      expect(read).toEqual([1])
      expect(yield* pull.next).toEqual(Option.some(2))
      expect(pull.isDone()).toBe(false)
      expect(yield* pull.next).toEqual(Option.none())
      expect(pull.isDone()).toBe(true)
    }))

  it.effect("toStream gives the same elements as the pull, and a fresh pull per run when given a function", () =>
    Effect.gen(function*() {
      const items = ["x", "y", "z"]
      const make = () => Pull.make(items, (item) => Effect.map(Random.nextIntBetween(0, 1000), (n) => `${item}${n}`))
      const pulled = yield* drain(make()).pipe(Effect.withRandom(Random.make(3)))
      const streamed = yield* Stream.runCollect(Pull.toStream(make)).pipe(Effect.withRandom(Random.make(3)))
      expect(Chunk.toReadonlyArray(streamed)).toEqual(pulled)
      expect(pulled.map((s) => s[0])).toEqual(items)
      // run again: starts over
      expect(Chunk.size(yield* Stream.runCollect(Pull.toStream(make)))).toBe(3)
      // given a pull, the Stream consumes it
      const once = Pull.fromIterable(items)
      expect(Chunk.toReadonlyArray(yield* Stream.runCollect(Pull.toStream(once)))).toEqual(items)
      expect(Chunk.toReadonlyArray(yield* Stream.runCollect(Pull.toStream(once)))).toEqual([])
    }))

  it.scoped("fromStream pulls a Stream one element at a time, across chunks", () =>
    Effect.gen(function*() {
      let pulledChunks = 0
      const stream = Stream.fromIterable([1, 2, 3, 4, 5]).pipe(
        Stream.rechunk(2),
        Stream.mapChunks((chunk) => (pulledChunks++, chunk))
      )
      const pull = yield* Pull.fromStream(stream)
      expect(yield* pull.next).toEqual(Option.some(1))
      expect(pulledChunks).toBe(1)
      expect(yield* drain(pull)).toEqual([2, 3, 4, 5])
      expect(pull.isDone()).toBe(true)
      expect(yield* pull.next).toEqual(Option.none())
    }))
})
