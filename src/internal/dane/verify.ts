/**
 * The server's certificate chain against usable TLSA records (RFC 7672 §3.1, RFC 7671 §5): pure, on the DER
 * certificates the handshake presented (leaf first) and a time from Effect's Clock.
 *
 * @internal
 */
import * as crypto from "node:crypto"
import type { TlsaRecord } from "../dns/model.js"
import { format, isUsable } from "./records.js"

/** @internal */
export type Verification =
  | { readonly status: "verified"; readonly record: string; readonly reason: null }
  | { readonly status: "failed"; readonly record: null; readonly reason: string }

const selected = (cert: crypto.X509Certificate, selector: number): Buffer =>
  selector === 0 ? cert.raw : cert.publicKey.export({ type: "spki", format: "der" })

const matchesData = (record: TlsaRecord, bytes: Buffer): boolean => {
  const data = Buffer.from(record.data, "hex")
  const computed = record.matchingType === 0
    ? bytes
    : crypto.createHash(record.matchingType === 1 ? "sha256" : "sha512").update(bytes).digest()
  return computed.length === data.length && crypto.timingSafeEqual(computed, data)
}

const matchesCert = (record: TlsaRecord, cert: crypto.X509Certificate): boolean =>
  matchesData(record, selected(cert, record.selector))

/** Validity dates of a certificate at `nowMs`; `null` when valid. */
const dateProblem = (cert: crypto.X509Certificate, nowMs: number): string | null => {
  if (Date.parse(cert.validFrom) > nowMs) return `the certificate of ${cert.subject.replace(/\n/g, ", ")} is not yet valid`
  if (Date.parse(cert.validTo) < nowMs) return `the certificate of ${cert.subject.replace(/\n/g, ", ")} has expired`
  return null
}

/** `chain[0]` was issued, link by link, by `chain[top]`, within their validity dates. */
const chainProblem = (chain: ReadonlyArray<crypto.X509Certificate>, top: number, nowMs: number): string | null => {
  for (let i = 0; i < top; i++) {
    const cert = chain[i]!
    const issuer = chain[i + 1]!
    if (!cert.checkIssued(issuer) || !cert.verify(issuer.publicKey)) {
      return `the chain is broken: certificate ${i} is not signed by certificate ${i + 1}`
    }
    if (!issuer.ca) return `certificate ${i + 1} signs certificate ${i} but is not a CA`
    const dated = dateProblem(cert, nowMs)
    if (dated !== null) return dated
  }
  return null
}

const nameMatches = (cert: crypto.X509Certificate, names: ReadonlyArray<string>): boolean =>
  // RFC 7672 §3.2.3: a wildcard only as the whole left-most label
  names.some((name) => cert.checkHost(name, { partialWildcards: false, multiLabelWildcards: false }) !== undefined)

/**
 * DANE-EE(3) matches the leaf certificate or its key and ignores names and dates (RFC 7672 §3.1.1); DANE-TA(2)
 * matches a certificate of the chain above the leaf (or, with a full SPKI, the key that signed the top of the chain),
 * and then the leaf must chain to it, be within its dates and carry one of `names` (RFC 7672 §3.1.2, §3.2). The first
 * record that authenticates the server is the one reported.
 *
 * @internal
 */
export const verify = (
  der: ReadonlyArray<Uint8Array>,
  records: ReadonlyArray<TlsaRecord>,
  names: ReadonlyArray<string>,
  nowMs: number
): Verification => {
  const usable = records.filter(isUsable)
  if (usable.length === 0) return { status: "failed", record: null, reason: "no usable TLSA records" }
  if (der.length === 0) return { status: "failed", record: null, reason: "the server presented no certificate" }
  let chain: Array<crypto.X509Certificate>
  try {
    chain = der.map((bytes) => new crypto.X509Certificate(Buffer.from(bytes)))
  } catch {
    return { status: "failed", record: null, reason: "the server's certificate could not be parsed" }
  }
  const leaf = chain[0]!
  const problems: Array<string> = []
  for (const record of usable.filter((r) => r.usage === 3)) {
    if (matchesCert(record, leaf)) return { status: "verified", record: format(record), reason: null }
  }
  if (usable.some((r) => r.usage === 3)) problems.push("no DANE-EE record matches the server's certificate")
  const ta = usable.filter((r) => r.usage === 2)
  if (ta.length > 0) {
    let anchored = false
    for (const record of ta) {
      for (let top = 1; top < chain.length; top++) {
        if (!matchesCert(record, chain[top]!)) continue
        anchored = true
        const problem = chainProblem(chain, top, nowMs) ?? dateProblem(leaf, nowMs) ??
          (nameMatches(leaf, names) ? null : `the certificate does not carry ${names.join(" or ")}`)
        if (problem === null) return { status: "verified", record: format(record), reason: null }
        problems.push(`DANE-TA ${format(record)}: ${problem}`)
      }
      // 2 1 0: the trust anchor's key itself, which may have signed the top of the chain without being sent
      if (record.selector === 1 && record.matchingType === 0) {
        const top = chain.length - 1
        let key: crypto.KeyObject | null = null
        try {
          key = crypto.createPublicKey({ key: Buffer.from(record.data, "hex"), format: "der", type: "spki" })
        } catch {
          key = null
        }
        if (key !== null && chain[top]!.verify(key)) {
          anchored = true
          const problem = chainProblem(chain, top, nowMs) ?? dateProblem(chain[top]!, nowMs) ??
            (nameMatches(leaf, names) ? null : `the certificate does not carry ${names.join(" or ")}`)
          if (problem === null) return { status: "verified", record: format(record), reason: null }
          problems.push(`DANE-TA ${format(record)}: ${problem}`)
        }
      }
    }
    if (!anchored) problems.push("no DANE-TA record matches a certificate of the server's chain")
  }
  return { status: "failed", record: null, reason: problems.join("; ") }
}
