/**
 * The local address a connection binds before it connects: a uniform pick, through Effect's Random, from the
 * configured `source-ip` list of the remote address's family. A fresh pick for every connection attempt.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import { isIP } from "node:net"
import type * as Settings from "./Settings.js"

/**
 * The address family of an IP address, `null` for anything else. An IPv4-mapped IPv6 address (`::ffff:192.0.2.1`)
 * is IPv6 here, as it is to the socket that connects to it.
 *
 * @since 0.1.0
 * @category utils
 */
export const family = (ip: string): 4 | 6 | null => {
  const f = isIP(ip)
  return f === 4 ? 4 : f === 6 ? 6 : null
}

/**
 * A source address for a connection to `remoteIp`, or `null` (no bind: the OS picks) when the list of that family
 * is empty. There is no fallback to the other family's list: a socket cannot bind an address of another family.
 *
 * @since 0.1.0
 * @category utils
 */
export const pick = (remoteIp: string, lists: Settings.SourceIp): Effect.Effect<string | null> => {
  const f = family(remoteIp)
  const list = f === 4 ? lists.v4 : f === 6 ? lists.v6 : []
  if (list.length === 0) return Effect.succeed(null)
  if (list.length === 1) return Effect.succeed(list[0]!)
  return Effect.map(Random.nextIntBetween(0, list.length), (i) => list[i]!)
}
