/**
 * The resolver cache behind `Dns.cached`, the live layer and the test layer: answers on the shared LRU, expiring on
 * Effect's Clock, and concurrent lookups of one (type, name) coalesced into one query.
 *
 * No fiber is forked for a miss: the first caller runs the query in its own fiber and completes a Deferred the
 * others wait on. When that caller is interrupted, its query is interrupted with it (the query belongs to the fiber
 * that runs it), and it hands over: it completes the Deferred with `retry`, and each waiter runs the lookup again —
 * the first of them becomes the next runner, the rest join it. A waiter that is interrupted simply stops waiting.
 * The price of the handover is that waiters of an abandoned query wait for a new one instead of the old one; the
 * gain is two fewer forked fibers per miss on the path every new domain takes (MX, then A/AAAA).
 *
 * State is plain maps touched only inside synchronous steps, which JavaScript runs without interleaving.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import * as dnsName from "../dnsName.js"
import { Lru } from "../lru.js"
import type { Answer, Answerer, CacheOptions, DnsError, RRType } from "./model.js"

type AnyAnswer = Answer<RRType>
type Outcome = Exit.Exit<AnyAnswer, DnsError>

interface Stored {
  readonly exit: Outcome
  readonly expiresAt: number
}

/** What a query's runner hands its waiters: its outcome, or `retry` when it was interrupted before one. */
const retry = Symbol("retry")
type Handed = Outcome | typeof retry

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
export const make = (answer: Answerer, options: CacheOptions = {}): Answerer => {
  const defaultTtl = millis(options.defaultTtl, defaults.defaultTtl)
  const maxTtl = millis(options.maxTtl, defaults.maxTtl)
  const negativeTtl = millis(options.negativeTtl, defaults.negativeTtl)
  const stored = new Lru<string, Stored>(Math.max(0, Math.floor(options.maxEntries ?? defaults.maxEntries)))
  const inFlight = new Map<string, Deferred.Deferred<Handed>>()

  // How long an outcome may be kept, in ms; 0 keeps it not at all.
  const lifetime = (exit: Outcome): number => {
    if (Exit.isSuccess(exit)) {
      const ttl = exit.value.ttl === null ? defaultTtl : exit.value.ttl * 1000
      return Math.min(ttl, maxTtl)
    }
    const error = Cause.failureOption(exit.cause)
    // RFC 2308: a name or type that does not exist is an answer too; a failure to get an answer is not.
    return Option.isSome(error) && error.value.reason !== "Temporary" ? Math.min(negativeTtl, maxTtl) : 0
  }

  const fromStore = (entry: Stored, now: number): Effect.Effect<AnyAnswer, DnsError> =>
    Exit.isSuccess(entry.exit)
      // The TTL handed on is what remains, so a cache stacked on this one expires no later.
      ? Effect.succeed({ records: entry.exit.value.records, ttl: Math.ceil((entry.expiresAt - now) / 1000) })
      : entry.exit

  // Runs in the runner's fiber, uninterruptibly, once its query has ended one way or the other.
  const settle = (key: string, deferred: Deferred.Deferred<Handed>, exit: Outcome, now: number): Outcome => {
    if (inFlight.get(key) === deferred) inFlight.delete(key)
    if (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)) {
      Deferred.unsafeDone(deferred, Exit.succeed(retry))
      return exit
    }
    const keep = lifetime(exit)
    if (keep > 0) stored.set(key, { exit, expiresAt: now + keep })
    Deferred.unsafeDone(deferred, Exit.succeed(exit))
    return exit
  }

  const lookup = (rrtype: RRType, name: string, key: string): Effect.Effect<AnyAnswer, DnsError> =>
    Effect.clockWith((clock) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          const now = clock.unsafeCurrentTimeMillis()
          const hit = stored.get(key)
          if (hit !== undefined) {
            if (hit.expiresAt > now) return fromStore(hit, now)
            stored.delete(key)
          }
          const running = inFlight.get(key)
          if (running !== undefined) {
            // Restored as a whole: a retry must run its query as interruptible as the caller is.
            return restore(Effect.flatMap(
              Deferred.await(running),
              (handed) => handed === retry ? lookup(rrtype, name, key) : handed
            ))
          }
          const deferred = Deferred.unsafeMake<Handed>(FiberId.none)
          inFlight.set(key, deferred)
          return Effect.matchCauseEffect(restore(answer(rrtype, name)), {
            onFailure: (cause) => settle(key, deferred, Exit.failCause(cause), clock.unsafeCurrentTimeMillis()),
            onSuccess: (value) => settle(key, deferred, Exit.succeed(value), clock.unsafeCurrentTimeMillis())
          })
        })
      )
    )

  return <T extends RRType>(rrtype: T, name: string) =>
    lookup(rrtype, name, `${rrtype} ${dnsName.normalize(name)}`) as Effect.Effect<Answer<T>, DnsError>
}
