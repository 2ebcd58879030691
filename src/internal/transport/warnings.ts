/**
 * Settings that cannot work, said before the first connection: shared by `deliver` (the report's warnings) and
 * `explain` (`plan`).
 */
import * as os from "node:os"
import type { SourceIp } from "../../Settings.js"
import { notLocal } from "../connection/socketError.js"

/**
 * Many receivers refuse an EHLO name that is not a fully qualified domain name (Postfix's
 * `reject_non_fqdn_helo_hostname`); an address literal is what RFC 5321 §4.1.4 offers a host without a name.
 *
 * @internal
 */
export const ehloName = (name: string): string | null =>
  name.startsWith("[") || /^[^.]+\.[^.]/.test(name.replace(/\.$/, ""))
    ? null
    : `EHLO name ${JSON.stringify(name)} is not a fully qualified domain name: many receivers reject it ` +
      "(set queue.outbound.hostname)"

/**
 * The configured source addresses no interface of this machine carries: a connection from one fails to bind.
 * 127.0.0.0/8 is all local on Linux, whatever the interfaces list.
 *
 * @internal
 */
export const sourceIp = (source: SourceIp): ReadonlyArray<string> => {
  const all = [...source.v4, ...source.v6]
  if (all.length === 0) return []
  const assigned = new Set<string>()
  for (const list of Object.values(os.networkInterfaces())) {
    for (const entry of list ?? []) assigned.add(entry.address.replace(/%.*$/, "").toLowerCase())
  }
  return all
    .filter((ip) => !ip.startsWith("127.") && !assigned.has(ip.toLowerCase()))
    .map((ip) => `source-ip: ${notLocal(ip)}`)
}

/** @internal */
export const emptyMessage = (message: Uint8Array): string | null => {
  for (const byte of message) if (byte !== 0x20 && byte !== 0x09 && byte !== 0x0d && byte !== 0x0a) return null
  return "the message is empty"
}
