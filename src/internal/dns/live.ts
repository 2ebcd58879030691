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
import { type Answer, type Answerer, DnsError, noAnswer, type Resolve, type RRType } from "./model.js"

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
export const answererOf = (query: Resolve): Answerer => <T extends RRType>(rrtype: T, name: string) =>
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
  /** The queries this channel has outstanding and someone still listens for. */
  readonly pending: Set<Pending>
  sent: number
  /** An interrupted query is outstanding: the channel takes no new query and is cancelled once `pending` empties. */
  retiring: boolean
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
 * CPU per query (c-ares opens and closes a socket for a channel whose queries are all done). Every query is sent on
 * one channel only, so the server sees at most `tries` packets per lookup, whatever happens to the lookups around
 * it; only answers from the channel a query is outstanding on are heard, and a query nobody listens for any more is
 * answered to no one.
 *
 * The budget is a native timer armed in the query's own callback (no fiber): when it fires the lookup fails as
 * `timeoutAnswerer` fails it and the query is no longer listened for, but its channel is left alone. c-ares's own
 * timeout only spaces the retransmissions (`budget / tries`, doubled each round by c-ares, and checked on a timer of
 * up to a second), so it cannot keep the budget itself (a 400 ms budget with one try measured 792 ms, 5 s with two
 * tries 8 s); but it does give the query up after its `tries`-th send (one doubled interval later: c-ares 1.34, 1 s
 * budget, 2 tries: sends at 0 and 1 s, gives up at 2 s), so a timed-out query sends no more than it was going to.
 *
 * An interruption (the lookup's caller went away) must stop its query, but `Resolver.cancel()` cancels every query
 * of a channel. Re-sending the others on a fresh channel first, as this did before, cost about n²/2 packets for n
 * lookups in flight when each of them was abandoned in turn. So the interrupted query's channel retires: it takes no
 * new query, and is cancelled as soon as its other queries have been answered or have timed out (at once when the
 * interrupted query was its only one). Until then the interrupted query may still be retransmitted, within its own
 * `tries`, and at the latest one budget after the newest of the channel's other queries was sent, no packet follows.
 *
 * @internal
 */
export const make = (options: LiveOptions): Resolve => {
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
    return { resolver, pending: new Set(), sent: 0, retiring: false }
  }
  // an invalid server address fails here, at layer construction
  let current: Channel | undefined = servers === undefined ? undefined : open()

  // Nobody listens for the query on its channel any more; a retiring channel is cancelled with its last query.
  const release = (query: Pending): void => {
    const channel = query.channel
    if (channel === undefined) return
    query.channel = undefined
    if (query.deadline !== undefined) clearTimeout(query.deadline)
    channel.pending.delete(query)
    if (channel.retiring && channel.pending.size === 0) channel.resolver.cancel()
  }

  const settle = (query: Pending, error: DnsError | null, answer: Answer<RRType> | null) => {
    release(query)
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

  // `Resolver.cancel()` would cancel the channel's other queries too, so the channel only retires: no new query goes
  // to it, and the last of its queries to settle cancels it (at once when the interrupted query was its only one).
  const interrupt = (query: Pending): void => {
    const channel = query.channel
    if (channel === undefined) return
    channel.retiring = true
    if (current === channel) current = undefined
    release(query)
  }

  return (rrtype, name, done) => {
    const query: Pending = { rrtype, name, done, channel: undefined, deadline: undefined }
    send(query)
    if (bounded) {
      // c-ares gives the query up by itself after its last try, so a timeout only stops listening for it
      query.deadline = setTimeout(() => {
        if (query.channel === undefined) return
        query.deadline = undefined
        settle(query, noAnswer(rrtype, name, limit), null)
      }, budget)
    }
    return () => interrupt(query)
  }
}
