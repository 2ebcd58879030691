// nodemailer's SMTP transport with a pool (`pool: true`, `maxMessages: 100`, `maxConnections` = the concurrency
// spread over the domains): its own answer to many messages to the same server. Each domain's MX and address are
// resolved once and kept (nodemailer does not look up MX records); one pooled transport per address.
import dns from "node:dns"
import nodemailer from "nodemailer"
import { EHLO_NAME, MESSAGE, reuseDomainOf, reuseRecipientOf, SENDER } from "./common.mjs"
import { resolverPool } from "./rawClient.mjs"

/** @param {{ dns: string, port: number, domains: number, concurrency: number }} opts */
export const create = async (opts) => {
  const resolvers = resolverPool(dns.promises.Resolver, opts.dns)
  let turn = 0
  const addresses = new Map()
  const transports = new Map()
  const addressOf = (domain) => {
    let p = addresses.get(domain)
    if (p === undefined) {
      const resolver = resolvers[turn++ % resolvers.length]
      p = resolver.resolveMx(domain).then((mxs) => {
        let best = mxs[0]
        for (const mx of mxs) if (mx.priority < best.priority) best = mx
        return resolver.resolve4(best.exchange).then((ips) => ips[0])
      })
      addresses.set(domain, p)
    }
    return p
  }
  const transportFor = (ip) => {
    let t = transports.get(ip)
    if (t === undefined) {
      t = nodemailer.createTransport({
        host: ip,
        port: opts.port,
        secure: false,
        ignoreTLS: true,
        pool: true,
        maxConnections: Math.max(1, opts.concurrency),
        maxMessages: 100,
        name: EHLO_NAME,
        connectionTimeout: 30_000,
        greetingTimeout: 30_000,
        socketTimeout: 30_000,
        logger: false
      })
      transports.set(ip, t)
    }
    return t
  }
  const deliver = async (i) => {
    const ip = await addressOf(reuseDomainOf(i, opts.domains))
    const rcpt = reuseRecipientOf(i, opts.domains)
    const info = await transportFor(ip).sendMail({ envelope: { from: SENDER, to: [rcpt] }, raw: MESSAGE })
    if (!info.accepted || info.accepted.length !== 1) throw new Error(`not accepted: ${JSON.stringify(info.rejected)}`)
  }
  return {
    deliver,
    close: async () => {
      for (const t of transports.values()) t.close()
    }
  }
}
