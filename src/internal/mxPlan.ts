/**
 * The planning behind `MxPlan.plan`, with a way for the transport's plan cache to learn which plans it may keep.
 *
 * @internal
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import { Dns, type MxRecord, toAnswerer } from "../Dns.js"
import type { MxHost, MxPlan } from "../MxPlan.js"
import type { Limits } from "../Settings.js"
import * as TransportError from "../TransportError.js"
import * as dnsName from "./dnsName.js"
import { withService } from "./service.js"

/** @internal */
export const nullMxMessage = "domain does not accept mail (null MX, RFC 7505)"

const dnsError = (message: string, permanent: boolean) => TransportError.make("dns", "dns", message, permanent)

/**
 * Hosts in try order: groups by ascending preference, each group shuffled. A name listed twice is kept once, at its
 * best preference; root exchanges (".") outside a null MX name no host and are skipped.
 */
// The hosts themselves when no group has anything to shuffle (the usual case: no run-loop step), else the shuffle.
const orderHosts = (
  records: ReadonlyArray<MxRecord>
): ReadonlyArray<MxHost> | Effect.Effect<ReadonlyArray<MxHost>> => {
  const best = new Map<string, number>()
  for (const record of records) {
    if (dnsName.isRoot(record.exchange)) continue
    const seen = best.get(record.exchange)
    if (seen === undefined || record.priority < seen) best.set(record.exchange, record.priority)
  }
  const groups = new Map<number, Array<string>>()
  for (const [name, preference] of best) {
    const group = groups.get(preference)
    if (group === undefined) groups.set(preference, [name])
    else group.push(name)
  }
  const preferences = [...groups.keys()].sort((a, b) => a - b)
  const hostsOf = (preference: number, names: Iterable<string>) =>
    Array.from(names, (name): MxHost => ({ name, preference, implicit: false, literal: false }))
  // A group of one has nothing to shuffle, and shuffling it would draw no random number either.
  if (preferences.every((preference) => groups.get(preference)!.length === 1)) {
    return preferences.flatMap((preference) => hostsOf(preference, groups.get(preference)!))
  }
  return Effect.map(
    Effect.forEach(preferences, (preference) =>
      Effect.map(Random.shuffle(groups.get(preference)!), (names) => hostsOf(preference, Chunk.toReadonlyArray(names)))
    ),
    (ordered) => ordered.flat()
  )
}

const isNullMx = (records: ReadonlyArray<MxRecord>): boolean => {
  const first = records.filter((r) => r.priority === 0)
  return first.length > 0 && first.every((r) => dnsName.isRoot(r.exchange))
}

const implicitPlan = (domain: string, records: ReadonlyArray<MxRecord>, secure: boolean): MxPlan => ({
  domain,
  records,
  secure,
  hosts: [{ name: domain, preference: 0, implicit: true, literal: false }],
  dropped: []
})

const fromRecords = (
  domain: string,
  answer: ReadonlyArray<MxRecord>,
  limit: number,
  secure: boolean,
  fixed: ((plan: MxPlan) => void) | undefined
): Effect.Effect<MxPlan, TransportError.TransportError> => {
  const records = answer.map((r) => ({ exchange: dnsName.normalize(r.exchange), priority: r.priority }))
  if (records.length === 0) return Effect.succeed(implicitPlan(domain, records, secure))
  if (isNullMx(records)) return dnsError(nullMxMessage, true)
  const planOf = (ordered: ReadonlyArray<MxHost>): Effect.Effect<MxPlan, TransportError.TransportError> =>
    ordered.length === 0
      ? dnsError(`${domain}: the MX records name no host`, true)
      : Effect.succeed({ domain, records, hosts: ordered.slice(0, limit), dropped: ordered.slice(limit), secure })
  const ordered = orderHosts(records)
  if (!Array.isArray(ordered)) return Effect.flatMap(ordered as Effect.Effect<ReadonlyArray<MxHost>>, planOf)
  if (fixed === undefined || ordered.length === 0) return planOf(ordered)
  const plan: MxPlan = { domain, records, hosts: ordered.slice(0, limit), dropped: ordered.slice(limit), secure }
  fixed(plan)
  return Effect.succeed(plan)
}

/**
 * `MxPlan.plan` without its span. `fixed`, when given, is told of a plan made from an MX answer with no host to
 * shuffle (nothing drawn from Random: the same answer always gives the same plan), with the answer's TTL in seconds
 * (`null`: not known), before the plan is returned: what a plan cache may keep.
 *
 * @internal
 */
// Without Effect.gen: a plan is on every delivery's path, and each `yield*` is a run-loop step or two.
export const planOf = (
  rawDomain: string,
  mx: Limits["mx"],
  fixed?: (plan: MxPlan, ttl: number | null) => void
): Effect.Effect<MxPlan, TransportError.TransportError, Dns> => {
  const domain = dnsName.normalize(rawDomain)
  // Stalwart never stops at 0 (it compares after pushing); a limit below 1 would plan no host, so 1 is the floor.
  const limit = Math.max(1, Number.isNaN(mx) ? 1 : Math.floor(mx))
  if (domain === "") return dnsError("empty recipient domain", true)
  const literal = dnsName.addressLiteral(domain)
  if (literal === null) return dnsError(`${domain}: not a usable address literal`, true)
  if (literal !== undefined) {
    const host: MxHost = { name: literal, preference: 0, implicit: false, literal: true }
    return Effect.succeed({ domain, records: [], hosts: [host], dropped: [] })
  }
  // The TTL-aware lookup, for the answer's DNSSEC status (the same query and cache entry as `mx`).
  return withService(Dns, (dns) =>
    Effect.matchEffect(toAnswerer(dns)("MX", domain), {
      onFailure: (error) =>
        error.reason === "Temporary"
          ? dnsError(`MX lookup for ${domain} failed: ${error.message}`, false)
          : Effect.succeed(implicitPlan(domain, [], error.dnssec === "secure")),
      onSuccess: (answer) =>
        fromRecords(
          domain,
          answer.records,
          limit,
          answer.secure,
          fixed === undefined ? undefined : (plan) => fixed(plan, answer.ttl)
        )
    }))
}

