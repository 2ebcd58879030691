/**
 * The live resolver on `node:dns` (c-ares): real time, as Dns's live layer may be; the test layer is the Clock-driven
 * one (see `Dns.ts` on why the budget is not an `Effect.timeoutFail` here).
 *
 * @internal
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as NodeDns from "node:dns"
import { type Answer, type Answerer, DnsError, noAnswer, type Query, type RRType } from "./model.js"

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

/** @internal */
export const answererOf = (query: Query): Answerer => <T extends RRType>(rrtype: T, name: string) =>
  Effect.async<Answer<T>, DnsError>((resume) => {
    const cancel = query(rrtype, name, (error, answer) => {
      resume(error === null ? Exit.succeed(answer as Answer<T>) : Exit.fail(error))
    })
    return Effect.sync(cancel)
  })

// How many queries a channel sends before new ones go to a fresh channel. A channel keeps its UDP socket while it
// has queries outstanding, so under steady load one socket (one source port) would serve every query for as long as
// the load lasts; rotating keeps the source port changing (the port is half of what an off-path spoofer must guess,
// the query id the other half), at the cost of one socket per this many queries.
const queriesPerChannel = 100

interface Channel {
  readonly resolver: NodeDns.Resolver
  /** The queries this channel has outstanding. */
  readonly pending: Set<Pending>
  sent: number
}

interface Pending {
  readonly rrtype: RRType
  readonly name: string
  readonly done: (error: DnsError | null, answer: Answer<RRType> | null) => void
  /** The channel the query is outstanding on; `undefined` once it is answered, timed out or cancelled. */
  channel: Channel | undefined
  deadline: ReturnType<typeof setTimeout> | undefined
}

const addresses = (records: ReadonlyArray<NodeDns.RecordWithTtl>): Answer<RRType> => {
  const out = new Array<string>(records.length)
  let ttl = Infinity
  for (let i = 0; i < records.length; i++) {
    const record = records[i]!
    out[i] = record.address
    if (record.ttl < ttl) ttl = record.ttl
  }
  return { records: out, ttl: records.length === 0 ? null : ttl }
}

/**
 * Queries share a few c-ares channels (`Resolver`s) and their sockets: a channel of its own per query cost twice the
 * CPU per query (c-ares opens and closes a socket for a channel whose queries are all done). But
 * `Resolver.cancel()` cancels every outstanding query of a channel, and an interrupted or timed-out lookup must
 * cancel its own query (no retransmission follows) and no other. So a query that is abandoned takes its channel out
 * of service: the channel's other outstanding queries are sent again on another channel (the server sees them
 * twice; their budget keeps running from their first send), then the channel is cancelled, and only answers from
 * the channel a query is outstanding on are heard.
 *
 * The budget is a native timer armed in the query's own callback (no fiber): when it fires the query is cancelled
 * as above and the lookup fails as `timeoutAnswerer` fails it. c-ares's own timeout only spaces the retransmissions
 * (`budget / tries`, doubled each round by c-ares, and checked on a timer of up to a second), so it cannot keep the
 * budget itself: a 400 ms budget with one try measured 792 ms, 5 s with two tries 8 s.
 *
 * @internal
 */
export const make = (options: LiveOptions): Query => {
  const tries = Math.max(1, Math.floor(options.tries ?? 2))
  const limit = Duration.decode(options.timeout ?? "5 seconds")
  const budget = Duration.toMillis(limit)
  const bounded = Number.isFinite(budget)
  // -1 keeps c-ares's default interval when there is no finite budget to divide.
  const perTry = bounded ? Math.max(1, Math.floor(budget / tries)) : -1
  const servers = options.servers === undefined ? undefined : [...options.servers]
  const open = (): Channel => {
    const resolver = new NodeDns.Resolver({ timeout: perTry, tries })
    if (servers !== undefined) resolver.setServers(servers)
    return { resolver, pending: new Set(), sent: 0 }
  }
  // an invalid server address fails here, at layer construction
  let current: Channel | undefined = servers === undefined ? undefined : open()

  const settle = (query: Pending, error: DnsError | null, answer: Answer<RRType> | null) => {
    query.channel = undefined
    if (query.deadline !== undefined) clearTimeout(query.deadline)
    query.done(error, answer)
  }

  const send = (query: Pending): void => {
    let channel = current
    if (channel === undefined || channel.sent >= queriesPerChannel) channel = current = open()
    channel.sent++
    channel.pending.add(query)
    query.channel = channel
    const { name, rrtype } = query
    const heard = (error: unknown): boolean => {
      if (query.channel !== channel) return false
      channel.pending.delete(query)
      if (error !== null) settle(query, fromNodeError(error, rrtype, name), null)
      return error === null
    }
    const { resolver } = channel
    switch (rrtype) {
      case "MX":
        return resolver.resolveMx(name, (error, records) => {
          if (heard(error)) settle(query, null, { records, ttl: null })
        })
      case "A":
        return resolver.resolve4(name, { ttl: true }, (error, records) => {
          if (heard(error)) settle(query, null, addresses(records))
        })
      case "AAAA":
        return resolver.resolve6(name, { ttl: true }, (error, records) => {
          if (heard(error)) settle(query, null, addresses(records))
        })
      case "TXT":
        return resolver.resolveTxt(name, (error, records) => {
          if (heard(error)) settle(query, null, { records: records.map((chunks) => chunks.join("")), ttl: null })
        })
    }
  }

  // The query's channel goes out of service: its other queries move to another channel before it is cancelled.
  const abandon = (query: Pending): void => {
    const channel = query.channel
    if (channel === undefined) return
    query.channel = undefined
    if (query.deadline !== undefined) clearTimeout(query.deadline)
    channel.pending.delete(query)
    if (current === channel) current = undefined
    const others = [...channel.pending]
    channel.pending.clear()
    for (const other of others) send(other)
    channel.resolver.cancel()
  }

  return (rrtype, name, done) => {
    const query: Pending = { rrtype, name, done, channel: undefined, deadline: undefined }
    send(query)
    if (bounded) {
      query.deadline = setTimeout(() => {
        if (query.channel === undefined) return
        abandon(query)
        done(noAnswer(rrtype, name, limit), null)
      }, budget)
    }
    return () => abandon(query)
  }
}
