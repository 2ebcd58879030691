/**
 * The IP strategy's machinery behind `Candidates`: shared with the transport's plan cache, which keeps a host's
 * resolution for its answers' TTL.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import type { Candidate, FamilyLookup, HostResolution } from "../Candidates.js"
import { Dns } from "../Dns.js"
import type { MxHost } from "../MxPlan.js"
import * as Pull from "../Pull.js"
import type * as Settings from "../Settings.js"
import * as SourceIp from "../SourceIp.js"
import * as TransportError from "../TransportError.js"
import { withService } from "./service.js"

/** @internal */
export const families = (strategy: Settings.IpStrategy): ReadonlyArray<"A" | "AAAA"> => {
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

/** @internal */
export const lookupFamily = (dns: Dns.Service, rrtype: "A" | "AAAA", name: string): Effect.Effect<FamilyLookup> =>
  (rrtype === "A" ? dns.a(name) : dns.aaaa(name)).pipe(
    Effect.match({
      onSuccess: (addresses): FamilyLookup => ({ rrtype, addresses, error: null }),
      onFailure: (error): FamilyLookup => ({ rrtype, addresses: [], error })
    })
  )

/** @internal */
export const literalResolution = (host: MxHost, ipStrategy: Settings.IpStrategy): HostResolution => ({
  host,
  ipStrategy,
  addresses: [host.name],
  truncated: [],
  lookups: []
})

/** The host's addresses from its lookups, cut to `multihomed`; no address at all is the host's error. */
export const resolution = (
  host: MxHost,
  ipStrategy: Settings.IpStrategy,
  multihomed: number,
  lookups: ReadonlyArray<FamilyLookup>
): Either.Either<HostResolution, TransportError.TransportError> => {
  const limit = Math.max(1, Number.isNaN(multihomed) ? 1 : Math.floor(multihomed))
  const all = lookups.flatMap((l) => l.addresses)
  if (all.length === 0) return Either.left(noAddress(host, lookups))
  return Either.right({ host, ipStrategy, addresses: all.slice(0, limit), truncated: all.slice(limit), lookups })
}

/**
 * `resolveHost` as an Either handed to `k`, where its span records nothing (see internal/tracing): the lookups and
 * the outcome in as few run-loop steps as they take, one match per family and no generator. A span that records
 * keeps `resolveHost`, whose span ends with the host's failure.
 */
export const resolveSilently = <B>(
  host: MxHost,
  ipStrategy: Settings.IpStrategy,
  multihomed: number,
  k: (resolved: Either.Either<HostResolution, TransportError.TransportError>) => B
): Effect.Effect<B, never, Dns> => {
  if (host.literal) return Effect.succeed(k(Either.right(literalResolution(host, ipStrategy))))
  return withService(Dns, (dns) => {
    const rrtypes = families(ipStrategy)
    if (rrtypes.length > 1) {
      return Effect.map(
        lookupAll(dns, rrtypes, host.name),
        (lookups) => k(resolution(host, ipStrategy, multihomed, lookups))
      )
    }
    const rrtype = rrtypes[0]!
    return Effect.matchEffect(rrtype === "A" ? dns.a(host.name) : dns.aaaa(host.name), {
      onFailure: (error) =>
        Effect.succeed(k(resolution(host, ipStrategy, multihomed, [{ rrtype, addresses: [], error }]))),
      onSuccess: (addresses) =>
        Effect.succeed(k(resolution(host, ipStrategy, multihomed, [{ rrtype, addresses, error: null }])))
    })
  })
}

/**
 * The families' lookups, together. With two, the second runs in a fiber of its own while the first runs here: one
 * fork rather than a fiber per family and the machinery of a concurrent `forEach`.
 */
export const lookupAll = (
  dns: Dns.Service,
  rrtypes: ReadonlyArray<"A" | "AAAA">,
  name: string
): Effect.Effect<ReadonlyArray<FamilyLookup>> => {
  const [first, second] = rrtypes
  if (second === undefined) return Effect.map(lookupFamily(dns, first!, name), (lookup) => [lookup])
  // From the fork to the registration of its clean-up nothing can interrupt: the second lookup never outlives this.
  return Effect.uninterruptibleMask((restore) =>
    Effect.flatMap(Effect.fork(restore(lookupFamily(dns, second, name))), (fiber) =>
      Effect.onExit(
        restore(Effect.flatMap(
          lookupFamily(dns, first!, name),
          // `await` rather than `join`: nothing to merge back from a lookup's FiberRefs.
          (one) => Effect.map(Effect.flatten(Fiber.await(fiber)), (two) => [one, two])
        )),
        (exit) => Exit.isSuccess(exit) ? Effect.void : Fiber.interrupt(fiber)
      ))
  )
}

const noCandidates = (): Pull.Pull<Candidate> => Pull.fromIterable([])

/** @internal */
export const candidatesOf = (
  host: MxHost,
  sourceIp: Settings.SourceIp,
  resolution: Either.Either<HostResolution, TransportError.TransportError>
): () => Pull.Pull<Candidate> => {
  if (Either.isLeft(resolution)) return noCandidates
  const { addresses } = resolution.right
  return () =>
    Pull.make(addresses, (ip) =>
      Effect.map(
        SourceIp.pick(ip, sourceIp),
        (source): Candidate => ({ host, ip, family: SourceIp.family(ip) ?? 4, source })
      ))
}

