/**
 * The live resolver on `node:dns` (c-ares): real time, as Dns's live layer may be; the test layer is the Clock-driven
 * one (see `Dns.ts` on why the budget is not an `Effect.timeoutFail` here).
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { promises as NodeDns } from "node:dns"
import { type Answer, type Answerer, DnsError, noAnswer, type RRType } from "./model.js"

/** @internal */
export interface LiveOptions {
  readonly servers?: ReadonlyArray<string> | undefined
  readonly timeout?: Duration.DurationInput | undefined
  readonly tries?: number | undefined
}

const temporaryCodes = new Set([
  "ESERVFAIL",
  "EREFUSED",
  "ETIMEOUT",
  "ECONNREFUSED",
  "EBADRESP",
  "EFORMERR",
  "ENOTIMP",
  "EEOF",
  "EFILE",
  "ENOMEM",
  "EDESTRUCTION",
  "ECANCELLED"
])

const codeOf = (error: unknown): string =>
  typeof error === "object" && error !== null && "code" in error ? String(error.code) : "UNKNOWN"

const fromNodeError = (error: unknown, rrtype: RRType, name: string): DnsError => {
  const code = codeOf(error)
  const detail = error instanceof Error ? error.message : String(error)
  // A malformed name can never resolve, so it is as final as NXDOMAIN.
  const reason = code === "ENOTFOUND" || code === "EBADNAME"
    ? "NotFound"
    : code === "ENODATA"
    ? "NoData"
    : "Temporary"
  const label = code === "EBADNAME"
    ? "malformed name"
    : reason === "NotFound"
    ? "no such domain"
    : reason === "NoData"
    ? "no records of that type"
    : temporaryCodes.has(code)
    ? code
    : detail
  return new DnsError({ reason, name, rrtype, message: `${rrtype} ${name}: ${label}` })
}

const minTtl = (records: ReadonlyArray<{ readonly ttl: number }>): number | null =>
  records.length === 0 ? null : Math.min(...records.map((r) => r.ttl))

const query = async (
  resolver: NodeDns.Resolver,
  rrtype: RRType,
  name: string
): Promise<Answer<RRType>> => {
  switch (rrtype) {
    case "MX": {
      const records = await resolver.resolveMx(name)
      return { records: records.map((r) => ({ exchange: r.exchange, priority: r.priority })), ttl: null }
    }
    case "A":
    case "AAAA": {
      const records = rrtype === "A"
        ? await resolver.resolve4(name, { ttl: true })
        : await resolver.resolve6(name, { ttl: true })
      return { records: records.map((r) => r.address), ttl: minTtl(records) }
    }
    case "TXT": {
      const records = await resolver.resolveTxt(name)
      return { records: records.map((chunks) => chunks.join("")), ttl: null }
    }
  }
}

// Enough idle resolvers for the queries a busy transport has in flight (up to two per delivery under way): each is
// a c-ares channel with its own socket, and making one per query cost more than the query.
const maxIdleResolvers = 256

/**
 * Each query borrows a c-ares channel of its own from a pool: `Resolver.cancel()` cancels every outstanding query of
 * a channel, so interrupting one lookup must not share it with another.
 *
 * The budget is a native timer armed in the query's own callback (no fiber): when it fires the query is cancelled
 * and the lookup fails as `timeoutAnswerer` fails it. c-ares's own timeout only spaces the retransmissions (`budget /
 * tries`, doubled each round by c-ares, and checked on a timer of up to a second), so it cannot keep the budget
 * itself: a 400 ms budget with one try measured 792 ms, 5 s with two tries 8 s.
 *
 * @internal
 */
export const make = (options: LiveOptions): Answerer => {
  const tries = Math.max(1, Math.floor(options.tries ?? 2))
  const limit = Duration.decode(options.timeout ?? "5 seconds")
  const budget = Duration.toMillis(limit)
  const bounded = Number.isFinite(budget)
  // -1 keeps c-ares's default interval when there is no finite budget to divide.
  const perTry = bounded ? Math.max(1, Math.floor(budget / tries)) : -1
  const servers = options.servers === undefined ? undefined : [...options.servers]
  const idle: Array<NodeDns.Resolver> = []
  const acquire = (): NodeDns.Resolver => {
    const reused = idle.pop()
    if (reused !== undefined) return reused
    const resolver = new NodeDns.Resolver({ timeout: perTry, tries })
    if (servers !== undefined) resolver.setServers(servers)
    return resolver
  }
  const release = (resolver: NodeDns.Resolver) => {
    if (idle.length < maxIdleResolvers) idle.push(resolver)
  }
  if (servers !== undefined) release(acquire()) // an invalid server address fails here, at layer construction
  return <T extends RRType>(rrtype: T, name: string) =>
    Effect.async<Answer<T>, DnsError>((resume) => {
      const resolver = acquire()
      // Answered, timed out or interrupted: whatever comes later is the cancelled query's, and only frees its
      // resolver.
      let settled = false
      const settle = (): boolean => {
        if (settled) return false
        settled = true
        if (deadline !== undefined) clearTimeout(deadline)
        return true
      }
      const deadline = bounded
        ? setTimeout(() => {
          if (!settle()) return
          resolver.cancel()
          resume(Effect.fail(noAnswer(rrtype, name, limit)))
        }, budget)
        : undefined
      query(resolver, rrtype, name).then(
        (answer) => {
          release(resolver)
          if (settle()) resume(Effect.succeed(answer as Answer<T>))
        },
        (error: unknown) => {
          release(resolver)
          if (settle()) resume(Effect.fail(fromNodeError(error, rrtype, name)))
        }
      )
      return Effect.sync(() => {
        if (settle()) resolver.cancel()
      })
    })
}
