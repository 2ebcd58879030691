/**
 * DANE for SMTP (RFC 7672): when TLSA records authenticate an MX host, and whether the certificate chain a server
 * presents matches them.
 *
 * The library validates no DNSSEC itself. As Postfix does, it trusts the AD bit of the resolver `Dns.layer` queries,
 * which must therefore be a trusted validating resolver on a trusted path: a local unbound (or similar) on loopback.
 * A resolver that does not validate sets no AD bit, and then DANE never applies (every lookup is insecure).
 *
 * The decision for a host (`lookupHost`), per RFC 7672 §2.2: the MX RRset (or, with no MX, its authenticated
 * denial) and the host's address RRsets must be secure, then `_<port>._tcp.<host>` TLSA decides. Secure usable
 * records (DANE-EE(3) or DANE-TA(2), selectors 0/1, matching types 0/1/2) make STARTTLS mandatory and authenticate the
 * server by them; a secure RRset of unusable records makes STARTTLS mandatory without authentication; an insecure
 * lookup anywhere means no DANE (other policies apply); a bogus or failed lookup defers the host, never a fallback to
 * plaintext. `tls.dane = require` defers a host without usable records.
 *
 * @since 0.3.0
 */
import type * as Effect from "effect/Effect"
import * as lookup from "./internal/dane/lookup.js"
import * as records from "./internal/dane/records.js"
import * as verification from "./internal/dane/verify.js"
import type * as Model from "./internal/dns/model.js"
import type { Dns } from "./internal/dns/model.js"

/**
 * A TLSA record: usage, selector, matching type, association data in lowercase hex.
 *
 * @since 0.3.0
 * @category models
 */
export type TlsaRecord = Model.TlsaRecord

/**
 * What the TLSA lookup of a host found: `usable`, `unusable`, `none`, `insecure` or `failed` (see the module).
 *
 * @since 0.3.0
 * @category models
 */
export type LookupStatus = lookup.LookupStatus

/**
 * The decision for one host: its status, the TLSA RRset (name, records, whether it validated), the reason in words,
 * the records and names to authenticate the server with (when DANE applies), whether STARTTLS is mandatory, and the
 * error that defers the host (a failed lookup, or `tls.dane = require` without usable records).
 *
 * @since 0.3.0
 * @category models
 */
export type HostDane = lookup.HostDane

/**
 * What `lookupHost` needs: `domain` the MX lookup's name and `mxSecure` whether its MX RRset (or the denial behind an
 * implicit MX) was validated; `host` the MX host, `implicit` whether it is the domain itself, `families` the address
 * types the IP strategy looks up, `port` the port the connection goes to; `policy` is `tls.dane`.
 *
 * @since 0.3.0
 * @category models
 */
export type LookupOptions = lookup.LookupOptions

/**
 * The outcome of matching a server's chain: `verified` with the record that matched (as `format` writes it), or
 * `failed` with the reason.
 *
 * @since 0.3.0
 * @category models
 */
export type Verification = verification.Verification

/**
 * RFC 7672 §2.2's decision for one MX host. `domain`: the name whose MX RRset was looked up, `mxSecure` whether it
 * validated (`MxPlan.secure`); `implicit`: the host is the domain itself (no MX records); `families`: the address
 * types the IP strategy uses (`Candidates.families`); `port`: the port the connection goes to (the TLSA name is
 * `_<port>._tcp.<host>`). `policy` is `tls.dane`; `disable` is the caller's to honour (it makes no lookup at all).
 *
 * @since 0.3.0
 * @category lookups
 */
export const lookupHost: (options: LookupOptions) => Effect.Effect<HostDane, never, Dns> = lookup.lookupHost

/**
 * Whether an SMTP client can use a record (RFC 7672 §3.1.3: DANE-TA(2) and DANE-EE(3) only; a known selector and
 * matching type; a digest of the right length).
 *
 * @since 0.3.0
 * @category predicates
 */
export const isUsable: (record: TlsaRecord) => boolean = records.isUsable

/**
 * A record as a zone file writes it, `3 1 1 <hex>`, long data shortened to its first 16 and last 8 hex digits.
 *
 * @since 0.3.0
 * @category formatting
 */
export const format: (record: TlsaRecord) => string = records.format

/**
 * Matches a certificate chain (DER, leaf first, as the handshake presented it) against TLSA records at `nowMs`:
 * DANE-EE(3) matches the leaf certificate or its key, names and dates ignored (RFC 7672 §3.1.1); DANE-TA(2) matches
 * a certificate above the leaf (or, as `2 1 0`, the key that signed the top of the chain), to which the leaf must
 * chain within its dates and which must carry one of `names` (§3.1.2, §3.2).
 *
 * @since 0.3.0
 * @category verification
 */
export const verify: (
  chain: ReadonlyArray<Uint8Array>,
  records: ReadonlyArray<TlsaRecord>,
  names: ReadonlyArray<string>,
  nowMs: number
) => Verification = verification.verify
