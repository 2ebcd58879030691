/**
 * The live resolver: DNS messages of our own (npm `dns-packet`) over UDP, with TCP when an answer is truncated, to
 * the configured recursive resolver. Real time, as Dns's live layer may be; the test layer is the Clock-driven one
 * (see `Dns.ts` on why the budget is not an `Effect.timeoutFail` here).
 *
 * Why not `node:dns`: c-ares neither sets the DO bit nor exposes the AD bit of the answer, and DANE (RFC 7672) needs
 * to know whether the resolver validated each RRset. As Postfix does, the library trusts the AD bit of its resolver
 * (which must be a trusted, local, validating one, such as unbound on loopback) and validates nothing itself.
 *
 * @internal
 */
import * as dnsPacket from "dns-packet"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as crypto from "node:crypto"
import * as dgram from "node:dgram"
import * as NodeDns from "node:dns"
import * as net from "node:net"
import * as dnsName from "../dnsName.js"
import {
  type Answer,
  type Answerer,
  DnsError,
  type MxRecord,
  noAnswer,
  type Resolve,
  type RRType,
  type TlsaRecord
} from "./model.js"

/** @internal */
export interface LiveOptions {
  readonly servers?: ReadonlyArray<string> | undefined
  readonly timeout?: Duration.DurationInput | undefined
  readonly tries?: number | undefined
}

/** @internal */
export const answererOf = (query: Resolve): Answerer => <T extends RRType>(rrtype: T, name: string) =>
  Effect.async<Answer<T>, DnsError>((resume) => {
    const cancel = query(rrtype, name, (error, answer) => {
      resume(error === null ? Exit.succeed(answer as Answer<T>) : Exit.fail(error))
    })
    return Effect.sync(cancel)
  })

interface Server {
  readonly host: string
  readonly port: number
  readonly family: 4 | 6
}

/**
 * `"192.0.2.1"`, `"192.0.2.1:5353"`, `"2001:db8::1"`, `"[2001:db8::1]:5353"` (the forms `node:dns` takes and gives).
 *
 * @internal
 */
export const parseServer = (text: string): Server => {
  const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(text)
  const [host, port] = bracketed !== null
    ? [bracketed[1]!, bracketed[2]]
    : net.isIPv6(text)
    ? [text, undefined]
    : [text.replace(/:\d+$/, ""), /:(\d+)$/.exec(text)?.[1]]
  const family = net.isIP(host)
  const portNumber = port === undefined ? 53 : Number(port)
  if (family === 0 || !Number.isInteger(portNumber) || portNumber < 1 || portNumber > 65535) {
    throw new TypeError(`Invalid DNS server address: ${JSON.stringify(text)} (expected an IP address, optionally with a port)`)
  }
  return { host, port: portNumber, family: family as 4 | 6 }
}

// RFC 6891 §6.2.5 and the DNS flag day 2020: a UDP payload size that does not fragment.
const udpPayloadSize = 1232

// RFC 8914 extended DNS error codes that say validation failed (as opposed to 1 and 2, an algorithm the resolver
// cannot validate, which makes the zone insecure rather than bogus).
const bogusCodes = new Set([6, 7, 8, 9, 10, 11, 12])
const EDE = 15

const rcodeLabel: Record<string, string> = {
  SERVFAIL: "ESERVFAIL",
  REFUSED: "EREFUSED",
  FORMERR: "EFORMERR",
  NOTIMP: "ENOTIMP"
}

/** What `dns-packet` decodes, as far as it is read here (its typings do not cover the OPT record as decoded). */
interface Decoded {
  readonly id?: number
  readonly type?: string
  readonly flags?: number
  readonly rcode?: string
  readonly flag_tc?: boolean
  readonly questions?: ReadonlyArray<{ readonly type: string; readonly name: string }>
  readonly answers?: ReadonlyArray<{ readonly type: string; readonly ttl?: number; readonly data?: unknown }>
  readonly additionals?: ReadonlyArray<{
    readonly type: string
    readonly options?: ReadonlyArray<{ readonly code: number; readonly data?: Uint8Array }>
  }>
}

const decode = (message: Buffer): Decoded | null => {
  try {
    return dnsPacket.decode(message) as Decoded
  } catch {
    return null
  }
}

const encodeQuery = (id: number, rrtype: RRType, name: string): Buffer =>
  dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: rrtype, name, class: "IN" }],
    additionals: [{ type: "OPT", name: ".", udpPayloadSize, flags: dnsPacket.DNSSEC_OK } as dnsPacket.Answer]
  })

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex")

const recordOf = (rrtype: RRType, answer: { readonly data?: unknown }): unknown => {
  switch (rrtype) {
    case "MX": {
      const data = answer.data as { readonly preference?: number; readonly exchange: string }
      // The root name ("." on the wire) is what a null MX (RFC 7505) names; dns-packet gives it as ".".
      return { exchange: data.exchange, priority: data.preference ?? 0 } satisfies MxRecord
    }
    case "A":
    case "AAAA":
      return answer.data as string
    case "TXT": {
      const data = answer.data as ReadonlyArray<Uint8Array> | Uint8Array | string
      const chunks = Array.isArray(data) ? data : [data]
      return chunks.map((chunk) => typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8")).join("")
    }
    case "TLSA": {
      const data = answer.data as dnsPacket.TlsaData
      return {
        usage: data.usage,
        selector: data.selector,
        matchingType: data.matchingType,
        data: hex(data.certificate)
      } satisfies TlsaRecord
    }
  }
}

/** What the resolver's response says, as the Dns service says it. */
const readResponse = (
  response: Decoded,
  rrtype: RRType,
  name: string
): { readonly error: DnsError; readonly answer: null } | { readonly error: null; readonly answer: Answer<RRType> } => {
  const secure = (response.flags ?? 0) & dnsPacket.AUTHENTIC_DATA ? true : false
  const rcode = response.rcode ?? "NOERROR"
  const fail = (reason: DnsError["reason"], label: string, dnssec?: "secure" | "bogus") => ({
    error: new DnsError({
      reason,
      name,
      rrtype,
      message: `${rrtype} ${name}: ${label}`,
      ...(dnssec === undefined ? {} : { dnssec })
    }),
    answer: null
  })
  if (rcode === "NXDOMAIN") return fail("NotFound", "no such domain", secure ? "secure" : undefined)
  if (rcode !== "NOERROR") {
    const bogus = extendedError(response)
    return bogus === null
      ? fail("Temporary", rcodeLabel[rcode] ?? rcode)
      : fail("Temporary", `${rcodeLabel[rcode] ?? rcode} (DNSSEC bogus: ${bogus})`, "bogus")
  }
  const records: Array<unknown> = []
  let ttl = Infinity
  for (const answer of response.answers ?? []) {
    if (answer.type !== rrtype) continue
    records.push(recordOf(rrtype, answer))
    const recordTtl = answer.ttl
    if (recordTtl !== undefined && recordTtl < ttl) ttl = recordTtl
  }
  if (records.length === 0) return fail("NoData", "no records of that type", secure ? "secure" : undefined)
  return { error: null, answer: { records: records as Answer<RRType>["records"], ttl: Number.isFinite(ttl) ? ttl : null, secure } }
}

/** The text of an RFC 8914 extended error that says validation failed, or `null`. */
const extendedError = (response: Decoded): string | null => {
  for (const additional of response.additionals ?? []) {
    if (additional.type !== "OPT") continue
    for (const option of additional.options ?? []) {
      const data = option.data
      if (option.code !== EDE || data === undefined || data.length < 2) continue
      const infoCode = Buffer.from(data).readUInt16BE(0)
      if (!bogusCodes.has(infoCode)) continue
      const text = Buffer.from(data.subarray(2)).toString("utf8")
      return text === "" ? `extended error ${infoCode}` : text
    }
  }
  return null
}

/** The response answers our question: same id, a response, the same question (RFC 5452 §9.1). */
const matches = (response: Decoded, id: number, rrtype: RRType, name: string): boolean => {
  if (response.id !== id || response.type !== "response") return false
  const question = response.questions?.[0]
  return question !== undefined && question.type === rrtype && dnsName.normalize(question.name) === dnsName.normalize(name)
}

interface Pending {
  readonly rrtype: RRType
  readonly name: string
  readonly id: number
  readonly message: Buffer
  readonly done: (error: DnsError | null, answer: Answer<RRType> | null) => void
  settled: boolean
  /** The UDP channel of each address family the servers have, fixed when the query starts. */
  readonly channels: Map<4 | 6, Channel>
  tcp: net.Socket | undefined
  readonly timers: Set<ReturnType<typeof setTimeout>>
}

/**
 * A UDP socket shared by up to `queriesPerChannel` queries, which its answers are matched to by id; it closes when
 * its last query ends.
 */
interface Channel {
  readonly socket: dgram.Socket
  readonly pending: Map<number, Pending>
  /** Queries started on it; at `queriesPerChannel` it takes no more. */
  started: number
  closed: boolean
  /** With one server the socket is connected to it; datagrams wait here until it is. */
  waiting: Array<Buffer> | null
}

// How many queries a UDP socket serves before new queries go to a fresh one. A socket per query cost about 70 µs of
// CPU more per query (create, bind, close) than sending on a shared one; rotating keeps the source port changing
// (the port is half of what an off-path spoofer must guess, the random query id the other half, RFC 5452).
const queriesPerChannel = 100

/**
 * Queries in flight together share UDP sockets (channels), each bound to a port the OS picks, replaced after 100
 * queries and closed when its last query ends (with one server, connected to it: a send names no address, and the
 * kernel drops datagrams from anyone else); an answer is heard only on the channel its query was sent on, from a
 * server it was sent to, with its id and question. A query is sent `tries` times within the budget, `budget / tries`
 * apart, to the servers in turn; a truncated answer is asked again over TCP of the server that sent it (RFC 7766),
 * within the same budget.
 *
 * The budget is a native timer (no fiber): when it fires the lookup fails as `timeoutAnswerer` fails it. An answer,
 * a timeout or an interruption (the canceller) ends the query at once: its timers are cleared (nothing more is sent)
 * and its id is released, so a late answer finds no one; the other queries of its channel are not disturbed.
 *
 * @internal
 */
export const make = (options: LiveOptions): Resolve => {
  const tries = Math.max(1, Math.floor(options.tries ?? 2))
  const limit = Duration.decode(options.timeout ?? "5 seconds")
  const budget = Duration.toMillis(limit)
  const bounded = Number.isFinite(budget)
  const perTry = bounded ? Math.max(1, Math.floor(budget / tries)) : 5_000
  // an invalid server address fails here, at layer construction; without servers, the system's (resolv.conf)
  const servers = (options.servers ?? NodeDns.getServers()).map(parseServer)
  if (servers.length === 0) throw new TypeError("No DNS server configured")
  const families = [...new Set(servers.map((s) => s.family))]
  const current = new Map<4 | 6, Channel>()
  const single = servers.length === 1 ? servers[0]! : undefined

  const open = (family: 4 | 6): Channel => {
    // bound on the first send, to a port the OS picks
    const socket = dgram.createSocket(family === 6 ? "udp6" : "udp4")
    const channel: Channel = { socket, pending: new Map(), started: 0, closed: false, waiting: null }
    if (single !== undefined) {
      // Connected to the one server: the kernel drops datagrams from anyone else, and a send names no address.
      channel.waiting = []
      socket.connect(single.port, single.host, () => {
        const waiting = channel.waiting ?? []
        channel.waiting = null
        if (!channel.closed) for (const message of waiting) socket.send(message, ignore)
      })
    }
    socket.on("error", () => {
      // an ICMP error or a failed send: another try or the budget ends the query
    })
    socket.on("message", (message, remote) => {
      const server = servers.find((s) => s.port === remote.port && sameAddress(s.host, remote.address))
      if (server === undefined) return
      const response = decode(message)
      if (response === null || response.id === undefined) return
      const query = channel.pending.get(response.id)
      if (query !== undefined) heard(query, response, server)
    })
    return channel
  }

  const channelFor = (family: 4 | 6): Channel => {
    let channel = current.get(family)
    if (channel === undefined || channel.started >= queriesPerChannel) {
      channel = open(family)
      current.set(family, channel)
    }
    channel.started++
    return channel
  }

  const close = (family: 4 | 6, channel: Channel) => {
    if (channel.closed || channel.pending.size > 0) return
    channel.closed = true
    if (current.get(family) === channel) current.delete(family)
    channel.socket.close()
  }

  // The query no longer listens on its channels; a channel closes with its last query (an idle layer holds no
  // socket). The current one waits for the end of this turn of the event loop first: a lookup that follows at once
  // (the A after the MX) reuses it instead of opening and connecting a socket of its own.
  const release = (query: Pending) => {
    for (const [family, channel] of query.channels) {
      if (channel.pending.get(query.id) === query) channel.pending.delete(query.id)
      if (channel.pending.size > 0 || channel.closed) continue
      if (current.get(family) === channel) setImmediate(() => close(family, channel))
      else close(family, channel)
    }
    query.channels.clear()
  }

  const end = (query: Pending) => {
    query.settled = true
    for (const timer of query.timers) clearTimeout(timer)
    query.timers.clear()
    release(query)
    query.tcp?.destroy()
    query.tcp = undefined
  }

  const settle = (query: Pending, error: DnsError | null, answer: Answer<RRType> | null) => {
    if (query.settled) return
    end(query)
    query.done(error, answer)
  }

  const heard = (query: Pending, response: Decoded, server: Server) => {
    if (!matches(response, query.id, query.rrtype, query.name)) return
    if (response.flag_tc) return overTcp(query, server)
    const read = readResponse(response, query.rrtype, query.name)
    settle(query, read.error, read.answer)
  }

  const overTcp = (query: Pending, server: Server) => {
    if (query.tcp !== undefined) return
    // UDP is done with: only the TCP answer counts now
    for (const timer of query.timers) clearTimeout(timer)
    query.timers.clear()
    release(query)
    if (bounded) armDeadline(query, budget)
    const socket = net.connect({ host: server.host, port: server.port })
    query.tcp = socket
    let buffered = Buffer.alloc(0)
    socket.on("connect", () => {
      const length = Buffer.alloc(2)
      length.writeUInt16BE(query.message.length)
      socket.write(Buffer.concat([length, query.message]))
    })
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk])
      if (buffered.length < 2) return
      const size = buffered.readUInt16BE(0)
      if (buffered.length < 2 + size) return
      const response = decode(buffered.subarray(2, 2 + size))
      if (response === null || !matches(response, query.id, query.rrtype, query.name)) {
        return settle(query, temporary(query, "EBADRESP"), null)
      }
      const read = readResponse(response, query.rrtype, query.name)
      settle(query, read.error, read.answer)
    })
    socket.on("error", (error: NodeJS.ErrnoException) => settle(query, temporary(query, error.code ?? error.message), null))
    socket.on("close", () => settle(query, temporary(query, "EEOF"), null))
  }

  const armDeadline = (query: Pending, ms: number) => {
    const timer = setTimeout(() => settle(query, noAnswer(query.rrtype, query.name, limit), null), ms)
    query.timers.add(timer)
  }

  const sendUdp = (query: Pending, attempt: number) => {
    if (query.settled || query.tcp !== undefined) return
    const server = servers[attempt % servers.length]!
    const channel = query.channels.get(server.family)
    if (channel !== undefined && channel.pending.get(query.id) === query) {
      // a send that fails (no route, an ICMP error) is one try lost; the budget still ends the query
      if (single === undefined) channel.socket.send(query.message, server.port, server.host, ignore)
      else if (channel.waiting !== null) channel.waiting.push(query.message)
      else channel.socket.send(query.message, ignore)
    }
    if (attempt + 1 < tries) {
      const timer = setTimeout(() => {
        query.timers.delete(timer)
        sendUdp(query, attempt + 1)
      }, perTry)
      query.timers.add(timer)
    }
  }

  return (rrtype, name, done) => {
    const channels = new Map(families.map((family) => [family, channelFor(family)] as const))
    // an id free on every channel the query may be sent on (at most 100 queries share one)
    let id = crypto.randomInt(0, 65536)
    while ([...channels.values()].some((c) => c.pending.has(id))) id = crypto.randomInt(0, 65536)
    const query: Pending = {
      rrtype,
      name,
      id,
      message: encodeQuery(id, rrtype, name),
      done,
      settled: false,
      channels,
      tcp: undefined,
      timers: new Set()
    }
    for (const channel of channels.values()) channel.pending.set(id, query)
    sendUdp(query, 0)
    if (bounded) armDeadline(query, budget)
    return () => {
      if (!query.settled) end(query)
    }
  }
}

const ignore = () => {}

const sameAddress = (configured: string, remote: string): boolean => {
  if (configured === remote) return true
  if (!net.isIPv6(configured) || !net.isIPv6(remote)) return false
  // the same IPv6 address may be written two ways ("::1", "0:0::1")
  return new net.SocketAddress({ address: configured, family: "ipv6" }).address ===
    new net.SocketAddress({ address: remote, family: "ipv6" }).address
}

const temporary = (query: Pending, label: string): DnsError =>
  new DnsError({ reason: "Temporary", name: query.name, rrtype: query.rrtype, message: `${query.rrtype} ${query.name}: ${label}` })
