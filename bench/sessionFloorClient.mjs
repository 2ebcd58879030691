// The floor under the library's reuse figure: the library's own SMTP session (SmtpSession.connect, open,
// transaction, quit on Connector.layer) with nothing around it. Sessions wait in a plain list per address, carry up
// to 100 messages each (as Transport.layer's pool and the raw reuse client), and the batch is an Effect.forEach at
// the fan-out level, as the library's client runs it. What it leaves out is exactly what Transport.deliver adds on a
// warm connection: the request's check, the settings stages, the plan (from its cache), the pool, the spans and the
// report. Each domain's MX and address are resolved once and kept, as the raw reuse client does.
import dns from "node:dns"
import { Duration, Effect, ManagedRuntime } from "effect"
import { MESSAGE, reuseDomainOf, reuseRecipientOf, SENDER } from "./common.mjs"
import { resolverPool } from "./rawClient.mjs"

const dist = process.env.BENCH_DIST
  ? new URL(`file://${process.env.BENCH_DIST.replace(/\/?$/, "/")}`)
  : new URL("../dist/", import.meta.url)
const load = (name) => import(new URL(`${name}.js`, dist).href)

/**
 * @param {{ dns: string, port: number, domains: number, messagesPerConnection?: number }} opts
 *   `messagesPerConnection`: 100 (the pool's default) unless given, to see what reconnecting costs.
 */
export const create = async (opts) => {
  const messagesPerConnection = opts.messagesPerConnection ?? 100
  const [SmtpSession, Connector, Settings] = await Promise.all(["SmtpSession", "Connector", "Settings"].map(load))
  const timeouts = Object.fromEntries([...Settings.sessionPhases, "mta-sts"].map((p) => [p, Duration.seconds(30)]))
  // What the library's client configures (bench/libraryClient.mjs): STARTTLS off, 30 s per phase, no phase spans.
  const settings = {
    ehloName: "client.bench.test",
    timeouts,
    servername: "mx",
    tls: { starttls: "disable", allowInvalidCerts: false, required: false },
    phaseSpans: false
  }
  const runtime = ManagedRuntime.make(Connector.layer)

  const resolvers = resolverPool(dns.promises.Resolver, opts.dns)
  let turn = 0
  const addresses = new Map() // domain → ip, once resolved
  const resolve = (domain) =>
    Effect.promise(async () => {
      const resolver = resolvers[turn++ % resolvers.length]
      const mxs = await resolver.resolveMx(domain)
      let best = mxs[0]
      for (const mx of mxs) if (mx.priority < best.priority) best = mx
      const [ip] = await resolver.resolve4(best.exchange)
      addresses.set(domain, ip)
      return ip
    })

  const idle = new Map() // ip → [{ session, messages }]
  const take = (ip) =>
    Effect.suspend(() => {
      const list = idle.get(ip)
      if (list !== undefined && list.length > 0) return Effect.succeed(list.pop())
      return Effect.flatMap(
        SmtpSession.connect({ ip, port: opts.port }, settings),
        (connection) => Effect.map(SmtpSession.open(connection, settings), (session) => ({ session, messages: 0 }))
      )
    })
  const give = (ip, entry, result) => {
    entry.messages++
    // On the message's own fiber, once a hundred messages: a round trip more for that one message.
    if (!result.canQuit) return entry.session.connection.close
    if (entry.messages >= messagesPerConnection) return SmtpSession.quit(entry.session)
    let list = idle.get(ip)
    if (list === undefined) idle.set(ip, (list = []))
    list.push(entry)
    return Effect.void
  }
  const one = (i) => {
    const domain = reuseDomainOf(i, opts.domains)
    const known = addresses.get(domain)
    const envelope = { sender: SENDER, recipients: [reuseRecipientOf(i, opts.domains)] }
    return Effect.flatMap(known === undefined ? resolve(domain) : Effect.succeed(known), (ip) =>
      Effect.flatMap(take(ip), (entry) =>
        Effect.flatMap(SmtpSession.transaction(entry.session, envelope, MESSAGE, settings), (result) =>
          Effect.as(
            give(ip, entry, result),
            result.data?._tag === "Right" && result.data.right.code < 300
              ? null
              : `not delivered: ${result.phase} ${JSON.stringify(result.data ?? result.mailFrom)}`
          ))))
  }
  const deliverOne = (i) => Effect.catchAll(one(i), (e) => Effect.succeed(`${e.kind ?? "error"}: ${e.message}`))

  return {
    warnings: [],
    /** `count` deliveries at `concurrency`; `record(startedAt, error | null)` after each; none starts after `deadline`. */
    runBatch: ({ start, count, concurrency, deadline, record }) =>
      runtime.runPromise(Effect.forEach(
        Array.from({ length: count }, (_, k) => start + k),
        (i) =>
          Effect.suspend(() => {
            if (performance.now() > deadline) return Effect.void
            const t = performance.now()
            return Effect.map(deliverOne(i), (failure) => record(t, failure === null ? null : new Error(failure)))
          }),
        { concurrency, discard: true }
      )),
    close: async () => {
      const quits = [...idle.values()].flat().map((entry) => SmtpSession.quit(entry.session))
      idle.clear()
      await runtime.runPromise(Effect.all(quits, { concurrency: "unbounded", discard: true }))
      await runtime.dispose()
    }
  }
}
