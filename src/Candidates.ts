/**
 * The IP strategy: each MX host's addresses, in the order the strategy gives them and cut to `limits.multihomed`,
 * and the whole plan as a lazy Stream of hosts, each with a Stream of connection candidates
 * `{ host, ip, family, source }`.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Fiber from "effect/Fiber"
import * as Stream from "effect/Stream"
import { Dns, type DnsError } from "./Dns.js"
import * as lazyStream from "./internal/lazyStream.js"
import type { MxHost, MxPlan } from "./MxPlan.js"
import type { IpStrategy } from "./OutboundConfig.js"
import * as SourceIp from "./SourceIp.js"
import * as TransportError from "./TransportError.js"

/**
 * The host-stage settings, evaluated for one MX host (`ip-strategy`, `limits.multihomed`, `source-ip.v4/v6`).
 *
 * @since 0.1.0
 */
export interface HostSettings {
  readonly strategy: IpStrategy
  readonly multihomed: number
  readonly sourceV4: ReadonlyArray<string>
  readonly sourceV6: ReadonlyArray<string>
}

/**
 * One connection to attempt. `source` is the local address to bind, `null` to let the OS pick.
 *
 * @since 0.1.0
 */
export interface Candidate {
  readonly host: MxHost
  readonly ip: string
  readonly family: 4 | 6
  readonly source: string | null
}

/**
 * One address lookup and its outcome; an error is kept even when the other family made it irrelevant.
 *
 * @since 0.1.0
 */
export interface FamilyLookup {
  readonly rrtype: "A" | "AAAA"
  readonly addresses: ReadonlyArray<string>
  readonly error: DnsError | null
}

/**
 * What the strategy made of a host, as data for the report: the addresses kept in try order, the ones
 * `limits.multihomed` cut, and each lookup made (none for a literal).
 *
 * @since 0.1.0
 */
export interface HostResolution {
  readonly host: MxHost
  readonly strategy: IpStrategy
  readonly addresses: ReadonlyArray<string>
  readonly truncated: ReadonlyArray<string>
  readonly lookups: ReadonlyArray<FamilyLookup>
}

/**
 * One host of the plan, resolved when the Stream reached it.
 *
 * @since 0.1.0
 */
export interface HostCandidates {
  readonly host: MxHost
  readonly settings: HostSettings
  readonly resolution: Either.Either<HostResolution, TransportError.TransportError>
  /** The addresses in strategy order; the source address is picked anew each time one is pulled. Empty on error. */
  readonly candidates: Stream.Stream<Candidate>
}

/**
 * The families a strategy queries, preferred first.
 *
 * @since 0.1.0
 */
export const families = (strategy: IpStrategy): ReadonlyArray<"A" | "AAAA"> => {
  switch (strategy) {
    case "ipv4_only":
      return ["A"]
    case "ipv6_only":
      return ["AAAA"]
    case "ipv4_then_ipv6":
      return ["A", "AAAA"]
    case "ipv6_then_ipv4":
      return ["AAAA", "A"]
  }
}

const dnsFailure = (message: string, permanent: boolean) => TransportError.make("dns", "dns", message, permanent)

/**
 * The strategy's verdict when no family gave an address. A temporary failure anywhere may clear up, so it wins;
 * NXDOMAIN is final (for an explicit MX host, and for the implicit one where it also means the domain has neither
 * MX nor address); NODATA on every family, or an empty answer, is temporary, as the domain's DNS may be mid-change.
 */
const noAddress = (host: MxHost, lookups: ReadonlyArray<FamilyLookup>): TransportError.TransportError => {
  const errors = lookups.flatMap((l) => (l.error === null ? [] : [l.error]))
  const detail = errors.map((e) => e.message).join("; ")
  if (errors.some((e) => e.reason === "Temporary")) {
    return dnsFailure(`address lookup for ${host.name} failed: ${detail}`, false)
  }
  if (errors.some((e) => e.reason === "NotFound")) {
    return host.implicit
      ? dnsFailure(`${host.name}: no MX and no address (${detail})`, true)
      : dnsFailure(`MX host ${host.name} does not exist (${detail})`, true)
  }
  return dnsFailure(`no IP addresses found for ${host.name}${detail === "" ? "" : ` (${detail})`}`, false)
}

const lookupFamily = (dns: Dns.Service, rrtype: "A" | "AAAA", name: string): Effect.Effect<FamilyLookup> =>
  (rrtype === "A" ? dns.a(name) : dns.aaaa(name)).pipe(
    Effect.match({
      onSuccess: (addresses): FamilyLookup => ({ rrtype, addresses, error: null }),
      onFailure: (error): FamilyLookup => ({ rrtype, addresses: [], error })
    })
  )

/**
 * A host's addresses under a strategy: the families it needs, queried together, concatenated in the strategy's
 * order, then cut to `multihomed` (so `ipv4_then_ipv6` reaches IPv6 only when there are fewer A records than the
 * limit). A family's error is ignored while the other yields addresses. A literal host is its own address, whatever
 * the strategy: the sender named that address.
 *
 * @since 0.1.0
 */
export const resolveHost: (
  host: MxHost,
  strategy: IpStrategy,
  multihomed: number
) => Effect.Effect<HostResolution, TransportError.TransportError, Dns> = (host, strategy, multihomed) =>
  Effect.gen(function*() {
    if (host.literal) return { host, strategy, addresses: [host.name], truncated: [], lookups: [] }
    const limit = Math.max(1, Number.isNaN(multihomed) ? 1 : Math.floor(multihomed))
    const dns = yield* Dns
    const lookups = yield* lookupAll(dns, families(strategy), host.name)
    const all = lookups.flatMap((l) => l.addresses)
    if (all.length === 0) return yield* noAddress(host, lookups)
    return { host, strategy, addresses: all.slice(0, limit), truncated: all.slice(limit), lookups }
  }).pipe((effect) =>
    // A leaf span (see SmtpSession's phase spans): timed, not made the parent of the lookups.
    Effect.useSpan("Candidates.resolveHost", { captureStackTrace: false }, () => effect)
  )

/**
 * The families' lookups, together. With two, the second runs in a fiber of its own while the first runs here: one
 * fork rather than a fiber per family and the machinery of a concurrent `forEach`.
 */
const lookupAll = (
  dns: Dns.Service,
  rrtypes: ReadonlyArray<"A" | "AAAA">,
  name: string
): Effect.Effect<ReadonlyArray<FamilyLookup>> => {
  const [first, second] = rrtypes
  if (second === undefined) return Effect.map(lookupFamily(dns, first!, name), (lookup) => [lookup])
  return Effect.flatMap(Effect.fork(lookupFamily(dns, second, name)), (fiber) =>
    Effect.onInterrupt(
      Effect.flatMap(
        lookupFamily(dns, first!, name),
        // `await` rather than `join`: nothing to merge back from a lookup's FiberRefs.
        (one) => Effect.map(Effect.flatten(Fiber.await(fiber)), (two) => [one, two])
      ),
      () => Fiber.interrupt(fiber)
    ))
}

const candidateStream = (
  host: MxHost,
  settings: HostSettings,
  resolution: Either.Either<HostResolution, TransportError.TransportError>
): Stream.Stream<Candidate> => {
  if (Either.isLeft(resolution)) return Stream.empty
  const lists = { v4: settings.sourceV4, v6: settings.sourceV6 }
  return lazyStream.make(resolution.right.addresses, (ip) =>
    Effect.map(
      SourceIp.pick(ip, lists),
      (source): Candidate => ({ host, ip, family: SourceIp.family(ip) ?? 4, source })
    ))
}

/**
 * The plan as a Stream of hosts, lazily: a host's settings are evaluated and its addresses looked up only when the
 * Stream is pulled for it, so a later host costs nothing while an earlier one is being tried. A host that fails to
 * resolve is still emitted (with its error and no candidates) so the caller records it and moves on.
 *
 * @since 0.1.0
 */
export const hosts = (
  plan: MxPlan,
  perHost: (host: MxHost) => Effect.Effect<HostSettings>
): Stream.Stream<HostCandidates, never, Dns> =>
  lazyStream.make(plan.hosts, (host) =>
    Effect.flatMap(perHost(host), (settings) =>
      Effect.map(
        Effect.either(resolveHost(host, settings.strategy, settings.multihomed)),
        (resolution): HostCandidates => ({
          host,
          settings,
          resolution,
          candidates: candidateStream(host, settings, resolution)
        })
      )))
