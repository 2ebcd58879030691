/**
 * The resolver cache behind `Dns.cached`, the live layer and the test layer: answers on the shared LRU, expiring on
 * Effect's Clock, and concurrent lookups of one (type, name) coalesced into one query.
 *
 * No fiber is forked for a miss: the first caller runs the query in its own fiber, the others wait for its outcome.
 * When that caller is interrupted, its query is interrupted with it (the query belongs to the fiber that runs it),
 * and it hands over: it tells the waiters to `retry`, and each runs the lookup again — the first of them becomes the
 * next runner, the rest join it. A waiter that is interrupted simply stops waiting. The price of the handover is
 * that waiters of an abandoned query wait for a new one instead of the old one; the gain is two fewer forked fibers
 * per miss on the path every new domain takes (MX, then A/AAAA).
 *
 * Two ways to run a miss. Over any `Answerer` (the test layer, `Dns.cached`), the query runs in an interruption
 * region whose exit handler stores the outcome or hands over. Over a callback-style `Resolve` (the live layer), a miss
 * is one `Effect.async` whose callback stores the outcome and whose canceller cancels the query and hands over: the
 * query's own interruption region is the cache's, and a lookup costs about half the run-loop steps. The waiters'
 * Deferred is made only when a second caller arrives, and the service's `mx`/`a`/`aaaa`/`txt` get their records
 * straight from the cache rather than through a `map` of the answer.
 *
 * State is plain maps touched only inside synchronous steps, which JavaScript runs without interleaving.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as dnsName from "../dnsName.js"
import { Lru } from "../lru.js"
import type { Answer, Answerer, CacheOptions, Dns, DnsError, Resolve, RRType } from "./model.js"

type AnyAnswer = Answer<RRType>
type Outcome = Exit.Exit<AnyAnswer, DnsError>

/** An answer or a negative answer (NXDOMAIN, NODATA), until `expiresAt`. */
interface Stored {
  readonly answer: AnyAnswer | null
  readonly error: DnsError | null
  readonly expiresAt: number
}

/** What a query's runner hands its waiters: its outcome, or `retry` when it was interrupted before one. */
const retry = Symbol("retry")
type Handed = Outcome | typeof retry

/** A query under way; `waiters` exists once a second caller waits for it. */
interface Flight {
  waiters: Deferred.Deferred<Handed> | undefined
}

/** @internal */
export const defaults = {
  maxEntries: 10_000,
  defaultTtl: Duration.minutes(5),
  maxTtl: Duration.hours(1),
  negativeTtl: Duration.minutes(1)
} as const

const millis = (input: Duration.DurationInput | undefined, fallback: Duration.Duration): number =>
  Duration.toMillis(input === undefined ? fallback : Duration.decode(input))

/** What a lookup yields: the answer with its TTL (`answer`), or its records alone (`mx`, `a`, `aaaa`, `txt`). */
type Shape = "answer" | "records"

const shaped = (answer: AnyAnswer, shape: Shape): Exit.Exit<unknown, never> =>
  Exit.succeed(shape === "records" ? answer.records : answer)

const isResolve = (source: Answerer | { readonly query: Resolve }): source is { readonly query: Resolve } =>
  typeof source !== "function"

/**
 * The cache over an `Answerer` (each miss runs its Effect) or over a callback-style `Resolve` (each miss is one
 * `Effect.async`), as the four lookups and the TTL-aware `answer`.
 *
 * @internal
 */
export const make = (source: Answerer | { readonly query: Resolve }, options: CacheOptions = {}): Dns.Service => {
  const defaultTtl = millis(options.defaultTtl, defaults.defaultTtl)
  const maxTtl = millis(options.maxTtl, defaults.maxTtl)
  const negativeTtl = millis(options.negativeTtl, defaults.negativeTtl)
  const stored = new Lru<string, Stored>(Math.max(0, Math.floor(options.maxEntries ?? defaults.maxEntries)))
  const inFlight = new Map<string, Flight>()

  // Stores what may be kept (RFC 2308: a name or type that does not exist is an answer too; a failure to get an
  // answer is not) and ends the flight. Returns the answer to hand on: its TTL capped at `maxTtl`, as a hit would
  // hand it on, so that a cache stacked on this one (the transport's plan cache) keeps it no longer than this one.
  const store = (key: string, flight: Flight, error: DnsError | null, answer: AnyAnswer | null, now: number) => {
    if (inFlight.get(key) === flight) inFlight.delete(key)
    if (answer !== null) {
      const ttl = answer.ttl === null ? defaultTtl : answer.ttl * 1000
      const keep = Math.min(ttl, maxTtl)
      if (keep > 0) stored.set(key, { answer, error: null, expiresAt: now + keep })
      return answer.ttl !== null && answer.ttl * 1000 > keep
        ? { records: answer.records, ttl: Math.floor(keep / 1000), secure: answer.secure }
        : answer
    } else if (error !== null && error.reason !== "Temporary") {
      const keep = Math.min(negativeTtl, maxTtl)
      if (keep > 0) stored.set(key, { answer: null, error, expiresAt: now + keep })
    }
    return answer
  }

  const hand = (flight: Flight, handed: Handed) => {
    if (flight.waiters !== undefined) Deferred.unsafeDone(flight.waiters, Exit.succeed(handed))
  }

  const fromStore = (entry: Stored, now: number, shape: Shape): Exit.Exit<unknown, DnsError> =>
    entry.answer === null
      ? Exit.fail(entry.error!)
      : shape === "records"
      ? Exit.succeed(entry.answer.records)
      // The TTL handed on is what remains, so a cache stacked on this one expires no later.
      : Exit.succeed({
        records: entry.answer.records,
        ttl: Math.ceil((entry.expiresAt - now) / 1000),
        secure: entry.answer.secure
      })

  // Hit, or join the query under way; `undefined` for a miss.
  const cachedOrJoined = (
    rrtype: RRType,
    name: string,
    key: string,
    shape: Shape,
    now: number
  ): Effect.Effect<unknown, DnsError> | undefined => {
    const hit = stored.get(key)
    if (hit !== undefined) {
      if (hit.expiresAt > now) return fromStore(hit, now, shape)
      stored.delete(key)
    }
    const flight = inFlight.get(key)
    if (flight === undefined) return undefined
    if (flight.waiters === undefined) flight.waiters = Deferred.unsafeMake<Handed>(FiberId.none)
    return Effect.flatMap(
      Deferred.await(flight.waiters),
      (handed) =>
        handed === retry
          ? lookup(rrtype, name, key, shape)
          : Exit.isSuccess(handed)
          ? shaped(handed.value, shape)
          : handed
    )
  }

  const viaAnswerer = (answer: Answerer) =>
  (rrtype: RRType, name: string, key: string, shape: Shape): Effect.Effect<unknown, DnsError> =>
    Effect.clockWith((clock) =>
      Effect.uninterruptibleMask((restore) => {
        const now = clock.unsafeCurrentTimeMillis()
        const joined = cachedOrJoined(rrtype, name, key, shape, now)
        // Restored as a whole: a retry must run its query as interruptible as the caller is.
        if (joined !== undefined) return restore(joined)
        const flight: Flight = { waiters: undefined }
        inFlight.set(key, flight)
        // Runs in the runner's fiber, uninterruptibly, once its query has ended one way or the other.
        return Effect.matchCauseEffect(restore(answer(rrtype, name)), {
          onFailure: (cause) => {
            const exit = Exit.failCause(cause)
            if (Cause.isInterruptedOnly(cause)) {
              if (inFlight.get(key) === flight) inFlight.delete(key)
              hand(flight, retry)
              return exit
            }
            const error = Cause.failureOption(cause)
            store(key, flight, Option.getOrNull(error), null, clock.unsafeCurrentTimeMillis())
            hand(flight, exit)
            return exit
          },
          onSuccess: (value) => {
            const handed = store(key, flight, null, value, clock.unsafeCurrentTimeMillis())!
            hand(flight, Exit.succeed(handed))
            return shaped(handed, shape)
          }
        })
      })
    )

  const viaResolve = (query: Resolve) => {
    // The query's callback stores its outcome; the exit handler acts only when the caller is interrupted before
    // one: it cancels the query and hands over. An interruption region of our own rather than `Effect.async`'s
    // canceller, which wraps the async in an `onInterrupt` region: 9 run-loop steps against 11.
    const miss = (rrtype: RRType, name: string, key: string, shape: Shape, clock: Clock.Clock) =>
      Effect.uninterruptibleMask((restore) => {
        // Another fiber may have started this query since the cache was checked (the run loop may yield between
        // two steps): join it.
        if (inFlight.has(key)) return restore(lookup(rrtype, name, key, shape))
        const flight: Flight = { waiters: undefined }
        inFlight.set(key, flight)
        let cancel: (() => void) | undefined
        let running = true
        return Effect.matchCauseEffect(
          restore(Effect.async<unknown, DnsError>((resume) => {
            cancel = query(rrtype, name, (error, answer) => {
              running = false
              const handed = store(key, flight, error, answer, clock.unsafeCurrentTimeMillis())
              if (flight.waiters !== undefined) hand(flight, error === null ? Exit.succeed(handed!) : Exit.fail(error))
              resume(error === null ? shaped(handed!, shape) : Exit.fail(error))
            })
          })),
          {
            onFailure: (cause) => {
              if (running) {
                running = false
                cancel?.()
                if (inFlight.get(key) === flight) inFlight.delete(key)
                hand(flight, retry)
              }
              return Exit.failCause(cause)
            },
            onSuccess: Exit.succeed
          }
        )
      })
    return (rrtype: RRType, name: string, key: string, shape: Shape): Effect.Effect<unknown, DnsError> =>
      Effect.clockWith((clock) =>
        cachedOrJoined(rrtype, name, key, shape, clock.unsafeCurrentTimeMillis()) ??
          miss(rrtype, name, key, shape, clock)
      )
  }

  const lookup = isResolve(source) ? viaResolve(source.query) : viaAnswerer(source)
  const keyOf = (rrtype: RRType, name: string) => `${rrtype} ${dnsName.normalize(name)}`
  const records = <T extends RRType>(rrtype: T) => (name: string) =>
    lookup(rrtype, name, keyOf(rrtype, name), "records") as Effect.Effect<Answer<T>["records"], DnsError>
  return {
    mx: records("MX"),
    a: records("A"),
    aaaa: records("AAAA"),
    txt: records("TXT"),
    answer: <T extends RRType>(rrtype: T, name: string) =>
      lookup(rrtype, name, keyOf(rrtype, name), "answer") as Effect.Effect<Answer<T>, DnsError>
  }
}
