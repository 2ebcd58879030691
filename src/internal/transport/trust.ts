/**
 * The trusted CAs `Transport.layer({ ca })` was given, for STARTTLS as well as MTA-STS.
 */
import * as Context from "effect/Context"
import * as tls from "node:tls"

/** @internal */
export class TrustedCa extends Context.Reference<TrustedCa>()("effect-smtp-transport/TrustedCa", {
  defaultValue: (): ReadonlyArray<string> => []
}) {}

/**
 * What STARTTLS trusts: Node's roots and the extra CAs, `undefined` (Node's roots alone) without extra ones. Node's
 * `ca` replaces its roots rather than adding to them, so they are passed along.
 *
 * @internal
 */
export const startTlsCa = (
  layer: ReadonlyArray<string>,
  options: ReadonlyArray<string> | undefined
): ReadonlyArray<string> | undefined =>
  layer.length === 0 && (options === undefined || options.length === 0)
    ? undefined
    : [...tls.rootCertificates, ...layer, ...(options ?? [])]
