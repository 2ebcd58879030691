/**
 * TLSA records as SMTP uses them (RFC 7672 §3.1): which are usable, and how they are written.
 *
 * @internal
 */
import type { TlsaRecord } from "../dns/model.js"

/** DANE-TA(2) and DANE-EE(3); PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP (RFC 7672 §3.1.3). @internal */
export const usages = [2, 3] as const
/** Cert(0) and SPKI(1). @internal */
export const selectors = [0, 1] as const
/** Full(0), SHA2-256(1), SHA2-512(2). @internal */
export const matchingTypes = [0, 1, 2] as const

const digestLength: Record<number, number> = { 1: 32, 2: 64 }

/**
 * A record an SMTP client can use: a DANE usage, a known selector and matching type, and association data of the
 * digest's length (RFC 7671 §5.4: a malformed record is unusable, not an error).
 *
 * @internal
 */
export const isUsable = (record: TlsaRecord): boolean =>
  (usages as ReadonlyArray<number>).includes(record.usage) &&
  (selectors as ReadonlyArray<number>).includes(record.selector) &&
  (matchingTypes as ReadonlyArray<number>).includes(record.matchingType) &&
  /^[0-9a-f]*$/.test(record.data) && record.data.length > 0 && record.data.length % 2 === 0 &&
  (record.matchingType === 0 || record.data.length === 2 * digestLength[record.matchingType]!)

/**
 * As a zone file writes it: `3 1 1 <hex>`, the data shortened to its first 16 and last 8 hex digits when longer than
 * 64 (a full certificate runs to kilobytes), so that a report stays readable and the record recognisable.
 *
 * @internal
 */
export const format = (record: TlsaRecord): string => {
  const data = record.data.length > 64 ? `${record.data.slice(0, 16)}…${record.data.slice(-8)}` : record.data
  return `${record.usage} ${record.selector} ${record.matchingType} ${data}`
}
