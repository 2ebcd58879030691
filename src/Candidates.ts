/**
 * The IP strategy: each MX host's addresses, in the order the strategy gives them and cut to `limits.multihomed`,
 * and the whole plan as a lazy pull of hosts, each with a pull of connection candidates
 * `{ host, ip, family, source }` (see `Pull` for why a pull rather than a Stream, and `Pull.toStream` for a Stream).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import { Dns, type DnsError } from "./Dns.js"
import { withService } from "./internal/service.js"
import * as tracing from "./internal/tracing.js"
import type { MxHost, MxPlan } from "./MxPlan.js"
import * as Pull from "./Pull.js"
import type * as Settings from "./Settings.js"
import * as SourceIp from "./SourceIp.js"
import * as TransportError from "./TransportError.js"

/**
 * What this stage reads of a host's settings: its `ipStrategy` and `sourceIp`, and the domain's
 * `limits.multihomed`. A wider value (the whole `Settings.HostSettings` plus `multihomed`) is handed back as it was
 * given, in {@link HostCandidates}.
 *
 * @since 0.1.0
 * @category models
 */
export interface HostSettings extends Pick<Settings.HostSettings, "ipStrategy" | "sourceIp"> {
  readonly multihomed: number
}

/**
 * One connection to attempt. `source` is the local address to bind, `null` to let the OS pick.
 *
 * @since 0.1.0
 * @category models
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
 * @category models
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
 * @category models
 */
export interface HostResolution {
  readonly host: MxHost
  readonly ipStrategy: Settings.IpStrategy
  readonly addresses: ReadonlyArray<string>
  readonly truncated: ReadonlyArray<string>
  readonly lookups: ReadonlyArray<FamilyLookup>
}

/**
 * One host of the plan, resolved when the pull reached it.
 *
 * @since 0.1.0
 * @category models
 */
export interface HostCandidates<S extends HostSettings = HostSettings> {
  readonly host: MxHost
  readonly settings: S
  readonly resolution: Either.Either<HostResolution, TransportError.TransportError>
  /**
   * A fresh pull over the addresses in strategy order at each call; the source address is picked anew each time
   * one is pulled. Empty on error.
   */
  readonly candidates: () => Pull.Pull<Candidate>
}

/**
 * The families a strategy queries, preferred first.
 *
 * @since 0.1.0
 * @category utils
 */
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
 * @category resolving
 */
export const resolveHost: (
  host: MxHost,
  ipStrategy: Settings.IpStrategy,
  multihomed: number,
  options?: { readonly parent?: Tracer.AnySpan | undefined }
) => Effect.Effect<HostResolution, TransportError.TransportError, Dns> = (host, ipStrategy, multihomed, options) =>
  Effect.gen(function*() {
    if (host.literal) return literalResolution(host, ipStrategy)
    const dns = yield* Dns
    const lookups = yield* lookupAll(dns, families(ipStrategy), host.name)
    const resolved = resolution(host, ipStrategy, multihomed, lookups)
    return Either.isLeft(resolved) ? yield* resolved.left : resolved.right
  }).pipe((effect) =>
    // A leaf span (see SmtpSession's phase spans): timed, not made the parent of the lookups; under `parent` when
    // given, without making that span the current one.
    tracing.leaf("Candidates.resolveHost", options?.parent, undefined, () => effect)
  )

const literalResolution = (host: MxHost, ipStrategy: Settings.IpStrategy): HostResolution => ({
  host,
  ipStrategy,
  addresses: [host.name],
  truncated: [],
  lookups: []
})

/** The host's addresses from its lookups, cut to `multihomed`; no address at all is the host's error. */
const resolution = (
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
const resolveSilently = <B>(
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
const lookupAll = (
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

const candidatesOf = (
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

/**
 * The plan as a pull of hosts, lazily: a host's settings are evaluated and its addresses looked up only when it is
 * pulled, so a later host costs nothing while an earlier one is being tried. A host that fails to resolve is still
 * handed out (with its error and no candidates) so the caller records it and moves on.
 *
 * @since 0.1.0
 * @category resolving
 */
export const hosts = <S extends HostSettings, R = never>(
  plan: MxPlan,
  settingsOf: (host: MxHost) => Effect.Effect<S, never, R>,
  /** The parent of the lookups' spans; the current span when absent. */
  options?: { readonly parent?: Tracer.AnySpan | undefined }
): Pull.Pull<HostCandidates<S>, Dns | R> => {
  // `Pull.make` over the hosts, with the host's entry built in the lookup's own match where its span records
  // nothing (no `either`, no `map`, no `Option.some` step of their own).
  const silent = options?.parent !== undefined && !tracing.records(options.parent)
  let at = 0
  return {
    next: Effect.suspend(() => {
      if (at >= plan.hosts.length) return Effect.succeedNone
      const host = plan.hosts[at++]!
      return Effect.flatMap(settingsOf(host), (settings) => {
        const entry = (
          resolution: Either.Either<HostResolution, TransportError.TransportError>
        ): Option.Option<HostCandidates<S>> =>
          Option.some({ host, settings, resolution, candidates: candidatesOf(host, settings.sourceIp, resolution) })
        return silent
          ? resolveSilently(host, settings.ipStrategy, settings.multihomed, entry)
          : Effect.map(Effect.either(resolveHost(host, settings.ipStrategy, settings.multihomed, options)), entry)
      })
    }),
    isDone: () => at >= plan.hosts.length
  }
}
