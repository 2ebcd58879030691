// nodemailer's SMTP transport without a pool: one connection per message. nodemailer does not look up MX records,
// so the MX and its address are resolved first (node:dns promises Resolver) and the address is handed to a
// transport. Transports are kept per address (a fair use: the transport object is reusable; without `pool` each
// sendMail still opens and QUITs its own connection).
import dns from "node:dns"
import nodemailer from "nodemailer"
import { resolverPool } from "./rawClient.mjs"
import { domainOf, EHLO_NAME, MESSAGE, recipientOf, SENDER } from "./common.mjs"

export const create = async (opts) => {
  const resolvers = resolverPool(dns.promises.Resolver, opts.dns) // see rawClient.mjs: one socket drops bursts
  let turn = 0
  const transports = new Map()
  const transportFor = (ip) => {
    let t = transports.get(ip)
    if (t === undefined) {
      t = nodemailer.createTransport({
        host: ip,
        port: opts.port,
        secure: false,
        ignoreTLS: true,
        pool: false,
        name: EHLO_NAME,
        connectionTimeout: 30_000,
        greetingTimeout: 30_000,
        socketTimeout: 30_000,
        logger: false,
        ...(opts.sourceIps?.length ? { localAddress: opts.sourceIps[0] } : {})
      })
      transports.set(ip, t)
    }
    return t
  }
  const deliver = async (i) => {
    const resolver = resolvers[turn++ % resolvers.length]
    const mxs = await resolver.resolveMx(domainOf(i, opts.prefix))
    let best = mxs[0]
    for (const mx of mxs) if (mx.priority < best.priority) best = mx
    const [ip] = await resolver.resolve4(best.exchange)
    const rcpt = recipientOf(i, opts.prefix)
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
