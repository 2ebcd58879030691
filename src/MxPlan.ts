/**
 * Which hosts a recipient domain's mail goes to, in which order: the MX records grouped by preference (lowest
 * first), hosts of equal preference shuffled through Effect's Random, the list cut to `limits.mx` hosts in total.
 * A null MX (RFC 7505) refuses the domain; a domain without MX records is its own host (RFC 5321 §5.1, implicit
 * MX); an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) needs no DNS at all.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import type * as Tracer from "effect/Tracer"
import { Dns, type MxRecord, toAnswerer } from "./Dns.js"
import * as dnsName from "./internal/dnsName.js"
import { withService } from "./internal/service.js"
import * as tracing from "./internal/tracing.js"
import type { Limits } from "./Settings.js"
import * as TransportError from "./TransportError.js"

/**
 * One host to try. `implicit`: the domain had no MX records and is its own host. `literal`: the name is an IP
 * address from an address-literal domain, used as it is.
 *
 * @since 0.1.0
 * @category models
 */
export interface MxHost {
  readonly name: string
  readonly preference: number
  readonly implicit: boolean
  readonly literal: boolean
}

/**
 * The plan for one domain, as data for the report: the MX records as the DNS gave them (names normalised), the hosts
 * kept in the order they will be tried, and the hosts `limits.mx` dropped. `secure`: the resolver validated the MX
 * RRset (or, for an implicit MX, the denial of one) with DNSSEC, which DANE needs (RFC 7672 §2.2.1); absent when not
 * known, which counts as insecure.
 *
 * @since 0.1.0
 * @category models
 */
export interface MxPlan {
  readonly domain: string
  readonly records: ReadonlyArray<MxRecord>
  readonly hosts: ReadonlyArray<MxHost>
  readonly dropped: ReadonlyArray<MxHost>
  readonly secure?: boolean | undefined
}

/**
 * The message of the permanent error a null MX gives.
 *
 * @since 0.1.0
 * @category constants
 */
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
  secure: boolean
): Effect.Effect<MxPlan, TransportError.TransportError> => {
  const records = answer.map((r) => ({ exchange: dnsName.normalize(r.exchange), priority: r.priority }))
  if (records.length === 0) return Effect.succeed(implicitPlan(domain, records, secure))
  if (isNullMx(records)) return dnsError(nullMxMessage, true)
  const planOf = (ordered: ReadonlyArray<MxHost>): Effect.Effect<MxPlan, TransportError.TransportError> =>
    ordered.length === 0
      ? dnsError(`${domain}: the MX records name no host`, true)
      : Effect.succeed({ domain, records, hosts: ordered.slice(0, limit), dropped: ordered.slice(limit), secure })
  const ordered = orderHosts(records)
  return Array.isArray(ordered)
    ? planOf(ordered)
    : Effect.flatMap(ordered as Effect.Effect<ReadonlyArray<MxHost>>, planOf)
}

// Without Effect.gen: a plan is on every delivery's path, and each `yield*` is a run-loop step or two.
const planOf = (rawDomain: string, mx: Limits["mx"]): Effect.Effect<MxPlan, TransportError.TransportError, Dns> => {
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
      onSuccess: (answer) => fromRecords(domain, answer.records, limit, answer.secure)
    }))
}

/**
 * Plans a domain's hosts, at most `mx` of them (the domain stage's `limits.mx`, see `Settings.Limits`). Fails (phase "dns", kind "dns") permanently on a null MX, an invalid address literal or
 * MX records that name no host; temporarily when the MX lookup fails for any reason but NXDOMAIN/NODATA, which give
 * the implicit MX instead.
 *
 * @since 0.1.0
 * @category planning
 */
export const plan: (
  domain: string,
  mx: Limits["mx"],
  options?: { readonly parent?: Tracer.AnySpan | undefined }
) => Effect.Effect<MxPlan, TransportError.TransportError, Dns> = (rawDomain, mx, options) =>
  // A leaf span (see SmtpSession's phase spans): timed, not made the parent of the lookups; under `parent` when
  // given, without making that span the current one.
  tracing.leaf("MxPlan.plan", options?.parent, undefined, () => planOf(rawDomain, mx))
