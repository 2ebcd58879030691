/**
 * When DANE applies to an MX host (RFC 7672 §2.2): the decision table over the DNSSEC status the `Dns` service
 * reports. The MX RRset's status comes from the plan (no second MX query); the address lookups go through the
 * service's TTL-aware `answer`, so the ones the race already made are cache hits.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import type { TlsPolicy } from "../../Settings.js"
import * as TransportError from "../../TransportError.js"
import { type Answer, Dns, type DnsError, type RRType, type TlsaRecord, toAnswerer } from "../dns/model.js"
import { withService } from "../service.js"
import { format, isUsable } from "./records.js"

/**
 * What the TLSA lookup found, for the plan: `usable` (DANE authenticates the host), `unusable` (a secure RRset with
 * no usable record: STARTTLS without authentication), `none` (no TLSA records, or an authenticated denial),
 * `insecure` (a lookup on the way was not validated: no DANE, other policies apply), `failed` (a lookup failed or
 * was bogus: the host is deferred).
 *
 * @internal
 */
export type LookupStatus = "usable" | "unusable" | "none" | "insecure" | "failed"

/** @internal */
export interface HostDane {
  readonly status: LookupStatus
  /** The TLSA RRset's owner name, `_<port>._tcp.<host>`. */
  readonly name: string
  /** Whether the TLSA answer was validated (`false` when there was none or it was not). */
  readonly secure: boolean
  readonly records: ReadonlyArray<TlsaRecord>
  /** Why DANE does or does not apply, in words. */
  readonly reason: string
  /** The usable records and the names a DANE-TA chain may carry, when DANE authenticates the host. */
  readonly authenticate: { readonly records: ReadonlyArray<TlsaRecord>; readonly names: ReadonlyArray<string> } | null
  /** STARTTLS is mandatory (usable or unusable records). */
  readonly requireTls: boolean
  /** The host must not be tried: a failed lookup, or `tls.dane = require` without usable records. */
  readonly error: TransportError.TransportError | null
}

type Looked<T extends RRType> = { readonly _tag: "Answer"; readonly answer: Answer<T> } | {
  readonly _tag: "Error"
  readonly error: DnsError
}

const look = <T extends RRType>(
  answerer: ReturnType<typeof toAnswerer>,
  rrtype: T,
  name: string
): Effect.Effect<Looked<T>> =>
  Effect.match(answerer(rrtype, name), {
    onFailure: (error): Looked<T> => ({ _tag: "Error", error }),
    onSuccess: (answer): Looked<T> => ({ _tag: "Answer", answer })
  })

const daneError = (message: string) => TransportError.make("dane", "dane", `dane: ${message}`)

/** @internal */
export interface LookupOptions {
  readonly policy: TlsPolicy
  readonly domain: string
  readonly mxSecure: boolean
  readonly host: string
  readonly implicit: boolean
  readonly families: ReadonlyArray<"A" | "AAAA">
  readonly port: number
}

/**
 * The decision for one host: `domain` is the MX lookup's name and `mxSecure` whether its MX RRset (or, for an implicit
 * MX, its denial) was validated; `host` the MX host, `families` the address types the IP strategy looks up, `port`
 * the port the connection goes to.
 *
 * @internal
 */
export const lookupHost = (options: LookupOptions): Effect.Effect<HostDane, never, Dns> => {
  const known = withoutLookup(options)
  if (known !== undefined) return Effect.succeed(known)
  return withService(Dns, (dns) => lookupWith(toAnswerer(dns), options))
}

/**
 * The decision when it needs no lookup (an MX RRset that is not secure), else `undefined`: for a caller that goes on
 * in the same step. @internal
 */
export const withoutLookup = (options: LookupOptions): HostDane | undefined => {
  const { domain } = options
  // 1. The MX RRset (or, for an implicit MX, the authenticated denial of one) must be secure (§2.2.1). A bogus one
  // never gets here: the plan's MX lookup failed (temporarily). Decided without a lookup: no step of its own.
  if (options.mxSecure) return undefined
  return resultOf(options)(
    "insecure",
    options.implicit ? `${domain} has no MX records signed as absent` : `the MX records of ${domain} are not signed`
  )
}

/** The decision's record for `options`' host. */
const resultOf = (options: LookupOptions) => {
  const { policy } = options
  const name = tlsaName(options)
  return (
    status: LookupStatus,
    reason: string,
    fields: Partial<Pick<HostDane, "secure" | "records" | "authenticate" | "requireTls" | "error">> = {}
  ): HostDane => {
    const base: HostDane = {
      status,
      name,
      secure: fields.secure ?? false,
      records: fields.records ?? [],
      reason,
      authenticate: fields.authenticate ?? null,
      requireTls: fields.requireTls ?? false,
      error: fields.error ?? null
    }
    // `require`: only an authenticated host may be tried (a temporary failure, as a missing STARTTLS is)
    if (policy === "require" && base.authenticate === null && base.error === null) {
      return { ...base, error: daneError(`${reason}, and tls.dane = require`) }
    }
    return base
  }
}

const tlsaName = (options: LookupOptions) => `_${options.port}._tcp.${options.host}`

/** Steps 2 and 3, for a host whose MX RRset is secure. */
const lookupWith = (answerer: ReturnType<typeof toAnswerer>, options: LookupOptions): Effect.Effect<HostDane> =>
  Effect.gen(function*() {
    const { domain, host } = options
    const name = tlsaName(options)
    const result = resultOf(options)

    // 2. The host's address RRsets must be secure (§2.2.2): a bogus one defers the host, an insecure one means no DANE.
    // Only the families the IP strategy uses, which the race has looked up (cache hits).
    const addresses = yield* Effect.forEach(options.families, (family) => look(answerer, family, host), {
      concurrency: "unbounded"
    })
    const bogus = addresses.find((a) => a._tag === "Error" && a.error.dnssec === "bogus")
    if (bogus !== undefined && bogus._tag === "Error") {
      return result("failed", `the address lookup of ${host} failed DNSSEC validation`, {
        error: daneError(`the address records of ${host} are bogus (${bogus.error.message})`)
      })
    }
    const answered = addresses.flatMap((a) => a._tag === "Answer" ? [a.answer] : [])
    if (answered.length === 0) return result("none", `${host} has no address records`)
    if (answered.some((a) => !a.secure)) return result("insecure", `the address records of ${host} are not signed`)

    // 3. The TLSA RRset (§2.2.3): a failure defers the host, never a fallback to plaintext.
    const tlsa = yield* look(answerer, "TLSA", name)
    if (tlsa._tag === "Error") {
      const { error } = tlsa
      if (error.reason === "Temporary") {
        return result("failed", `the TLSA lookup of ${name} failed`, {
          error: daneError(
            error.dnssec === "bogus"
              ? `the TLSA records of ${name} are bogus (${error.message})`
              : `the TLSA lookup of ${name} failed (${error.message})`
          )
        })
      }
      return error.dnssec === "secure"
        ? result("none", `${host} has no TLSA records (authenticated denial)`)
        : result("insecure", `${host} has no TLSA records, and their absence is not signed`)
    }
    const { records, secure } = tlsa.answer
    if (!secure) return result("insecure", `the TLSA records of ${name} are not signed`, { records })
    const usable = records.filter(isUsable)
    if (usable.length === 0) {
      // RFC 7672 §2.2: unusable records still say the server does TLS; it is not authenticated.
      return result("unusable", `${name} has no usable TLSA records (${records.map(format).join(", ")}): STARTTLS required, not authenticated`, {
        secure,
        records,
        requireTls: true
      })
    }
    return result("usable", `${usable.length} usable TLSA record${usable.length === 1 ? "" : "s"} at ${name}`, {
      secure,
      records,
      requireTls: true,
      // RFC 7672 §3.2.3: the TLSA base domain (the MX host, no CNAME followed here) and the next-hop domain
      authenticate: { records: usable, names: host === domain ? [host] : [host, domain] }
    })
  })
