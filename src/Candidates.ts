/**
 * The IP strategy: each MX host's addresses, in the order the strategy gives them and cut to `limits.multihomed`,
 * and the whole plan as a lazy pull of hosts, each with a pull of connection candidates
 * `{ host, ip, family, source }` (see `Pull` for why a pull rather than a Stream, and `Pull.toStream` for a Stream).
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as Tracer from "effect/Tracer"
import { Dns, type DnsError } from "./Dns.js"
import * as internal from "./internal/candidates.js"
import * as tracing from "./internal/tracing.js"
import type { MxHost, MxPlan } from "./MxPlan.js"
import type * as Pull from "./Pull.js"
import type * as Settings from "./Settings.js"
import type * as TransportError from "./TransportError.js"

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
export const families: (strategy: Settings.IpStrategy) => ReadonlyArray<"A" | "AAAA"> = internal.families

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
    if (host.literal) return internal.literalResolution(host, ipStrategy)
    const dns = yield* Dns
    const lookups = yield* internal.lookupAll(dns, families(ipStrategy), host.name)
    const resolved = internal.resolution(host, ipStrategy, multihomed, lookups)
    return Either.isLeft(resolved) ? yield* resolved.left : resolved.right
  }).pipe((effect) =>
    // A leaf span (see SmtpSession's phase spans): timed, not made the parent of the lookups; under `parent` when
    // given, without making that span the current one.
    tracing.leaf("Candidates.resolveHost", options?.parent, undefined, () => effect)
  )

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
          Option.some({ host, settings, resolution, candidates: internal.candidatesOf(host, settings.sourceIp, resolution) })
        return silent
          ? internal.resolveSilently(host, settings.ipStrategy, settings.multihomed, entry)
          : Effect.map(Effect.either(resolveHost(host, settings.ipStrategy, settings.multihomed, options)), entry)
      })
    }),
    isDone: () => at >= plan.hosts.length
  }
}
