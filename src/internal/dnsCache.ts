/**
 * The resolver cache behind `Dns.cached` and the live layer.
 *
 * State is two plain maps touched only inside synchronous steps, which JavaScript runs without interleaving: the
 * answers (a Map in least-recently-used order) and the queries in flight. A query runs in a fiber of the cache's own
 * scope, not of the caller that started it, so that one waiter's interruption does not fail the others; it is
 * interrupted when its last waiter leaves.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { Answer, Answerer, CacheOptions, DnsError, RRType } from "../Dns.js"
import * as dnsName from "./dnsName.js"

type AnyAnswer = Answer<RRType>

interface Stored {
  readonly exit: Exit.Exit<AnyAnswer, DnsError>
  readonly expiresAt: number
}

interface InFlight {
  readonly deferred: Deferred.Deferred<AnyAnswer, DnsError>
  waiters: number
  fiber: Fiber.RuntimeFiber<void> | undefined
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

/** @internal */
export const make = (answer: Answerer, options: CacheOptions = {}): Effect.Effect<Answerer, never, Scope.Scope> =>
  Effect.map(Effect.scope, (scope) => {
    const maxEntries = Math.max(0, Math.floor(options.maxEntries ?? defaults.maxEntries))
    const defaultTtl = millis(options.defaultTtl, defaults.defaultTtl)
    const maxTtl = millis(options.maxTtl, defaults.maxTtl)
    const negativeTtl = millis(options.negativeTtl, defaults.negativeTtl)
    const stored = new Map<string, Stored>()
    const inFlight = new Map<string, InFlight>()

    // How long an outcome may be kept, in ms; 0 keeps it not at all.
    const lifetime = (exit: Exit.Exit<AnyAnswer, DnsError>): number => {
      if (Exit.isSuccess(exit)) {
        const ttl = exit.value.ttl === null ? defaultTtl : exit.value.ttl * 1000
        return Math.min(ttl, maxTtl)
      }
      const error = Cause.failureOption(exit.cause)
      // RFC 2308: a name or type that does not exist is an answer too; a failure to get an answer is not.
      return Option.isSome(error) && error.value.reason !== "Temporary" ? Math.min(negativeTtl, maxTtl) : 0
    }

    const store = (key: string, exit: Exit.Exit<AnyAnswer, DnsError>, now: number) => {
      const keep = lifetime(exit)
      if (keep <= 0 || maxEntries === 0) return
      stored.delete(key)
      stored.set(key, { exit, expiresAt: now + keep })
      while (stored.size > maxEntries) {
        const oldest = stored.keys().next()
        if (oldest.done === true) break
        stored.delete(oldest.value)
      }
    }

    const fromStore = (entry: Stored, now: number): Effect.Effect<AnyAnswer, DnsError> =>
      Exit.isSuccess(entry.exit)
        // The TTL handed on is what remains, so a cache stacked on this one expires no later.
        ? Effect.succeed({ records: entry.exit.value.records, ttl: Math.ceil((entry.expiresAt - now) / 1000) })
        : entry.exit

    const leave = (key: string, flight: InFlight): Effect.Effect<void> =>
      Effect.suspend(() => {
        flight.waiters -= 1
        if (flight.waiters > 0 || inFlight.get(key) !== flight) return Effect.void
        inFlight.delete(key)
        return flight.fiber === undefined ? Effect.void : Fiber.interrupt(flight.fiber)
      })

    const run = (key: string, flight: InFlight, rrtype: RRType, name: string): Effect.Effect<void> =>
      answer(rrtype, name).pipe(
        Effect.exit,
        Effect.flatMap((exit) =>
          Effect.flatMap(Clock.currentTimeMillis, (now) => {
            if (inFlight.get(key) === flight) inFlight.delete(key)
            store(key, exit, now)
            return Deferred.done(flight.deferred, exit)
          })
        )
      )

    const lookup = (rrtype: RRType, name: string): Effect.Effect<AnyAnswer, DnsError> => {
      const key = `${rrtype} ${dnsName.normalize(name)}`
      return Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Clock.currentTimeMillis, (now) => {
          const hit = stored.get(key)
          if (hit !== undefined) {
            stored.delete(key)
            if (hit.expiresAt > now) {
              stored.set(key, hit) // most recently used goes last
              return fromStore(hit, now)
            }
          }
          const joined = inFlight.get(key)
          const flight: InFlight = joined ?? { deferred: Deferred.unsafeMake<AnyAnswer, DnsError>(FiberId.none), waiters: 0, fiber: undefined }
          flight.waiters += 1
          const awaited = restore(Deferred.await(flight.deferred)).pipe(Effect.onInterrupt(() => leave(key, flight)))
          if (joined !== undefined) return awaited
          inFlight.set(key, flight)
          // The fork happens inside the mask, whose uninterruptibility the child would inherit.
          return Effect.forkIn(Effect.interruptible(run(key, flight, rrtype, name)), scope).pipe(
            Effect.flatMap((fiber) => {
              flight.fiber = fiber
              return awaited
            })
          )
        })
      )
    }

    return <T extends RRType>(rrtype: T, name: string) => lookup(rrtype, name) as Effect.Effect<Answer<T>, DnsError>
  })
