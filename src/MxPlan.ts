/**
 * Which hosts a recipient domain's mail goes to, in which order: the MX records grouped by preference (lowest
 * first), hosts of equal preference shuffled through Effect's Random, the list cut to `limits.mx` hosts in total.
 * A null MX (RFC 7505) refuses the domain; a domain without MX records is its own host (RFC 5321 §5.1, implicit
 * MX); an address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) needs no DNS at all.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Tracer from "effect/Tracer"
import type { Dns, MxRecord } from "./Dns.js"
import * as internal from "./internal/mxPlan.js"
import * as tracing from "./internal/tracing.js"
import type { Limits } from "./Settings.js"
import type * as TransportError from "./TransportError.js"

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
export const nullMxMessage = internal.nullMxMessage

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
  tracing.leaf("MxPlan.plan", options?.parent, undefined, () => internal.planOf(rawDomain, mx))
