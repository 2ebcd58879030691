/**
 * The policy fetcher's interface (RFC 8461 §3.3: HTTPS, no redirects), its in-memory test layer, and the checks every
 * fetcher's answer goes through. Both the Node fetcher and `MtaSts` build on this; it builds on the policy model only.
 *
 * @internal
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { MAX_POLICY_BYTES, normalizeName, parse, type Policy, policyUrl } from "../../MtaStsPolicy.js"
import * as TransportError from "../../TransportError.js"
import { readCapped } from "./body.js"

/**
 * One policy fetch: `url` is `https://<host>[:port]/.well-known/mta-sts.txt`, `ca` the extra trusted CAs (PEM) on top
 * of the system ones.
 *
 * @internal
 */
export interface FetchRequest {
  readonly domain: string
  readonly host: string
  readonly port: number
  readonly url: string
  readonly ca: ReadonlyArray<string>
}

/**
 * The raw answer; the checks on it (status, media type, size) are made by `fetchPolicy`, the same for every fetcher.
 *
 * @internal
 */
export interface FetchResponse {
  readonly status: number
  /** The Content-Type header, `null` when absent. */
  readonly contentType: string | null
  readonly body: Stream.Stream<Uint8Array, TransportError.TransportError>
}

/**
 * The HTTPS transport behind policy fetches. The response must not outlive the scope (the connection is released
 * when it closes), and a redirect must be returned as it is, never followed.
 *
 * @internal
 */
export class PolicyFetcher extends Context.Tag("effect-smtp-transport/MtaSts/PolicyFetcher")<
  PolicyFetcher,
  {
    readonly fetch: (
      request: FetchRequest
    ) => Effect.Effect<FetchResponse, TransportError.TransportError, Scope.Scope>
  }
>() {}

/**
 * What an in-memory fetcher answers.
 *
 * @internal
 */
export interface TestResponse {
  /** Default 200. */
  readonly status?: number
  /** Default `"text/plain"`; `null` sends none. */
  readonly contentType?: string | null
  readonly body?: string | Uint8Array | Stream.Stream<Uint8Array, TransportError.TransportError>
}

/**
 * An in-memory fetcher: `handler` answers each request; it may `Effect.sleep` to act slow under TestClock.
 *
 * @internal
 */
export const layerTest = (
  handler: (request: FetchRequest) => Effect.Effect<TestResponse, TransportError.TransportError>
): Layer.Layer<PolicyFetcher> =>
  Layer.succeed(
    PolicyFetcher,
    PolicyFetcher.of({
      fetch: (request) =>
        Effect.map(handler(request), (response): FetchResponse => {
          const body = response.body ?? ""
          return {
            status: response.status ?? 200,
            contentType: response.contentType === undefined ? "text/plain" : response.contentType,
            body: typeof body === "string"
              ? Stream.make(new TextEncoder().encode(body))
              : body instanceof Uint8Array
              ? Stream.make(body)
              : body
          }
        })
    })
  )

const isTextPlain = (contentType: string | null): boolean =>
  contentType !== null && contentType.split(";")[0]!.trim().toLowerCase() === "text/plain"

/**
 * Fetches and parses a domain's policy: only a 200 answer with media type `text/plain` and at most
 * `MAX_POLICY_BYTES` is read; a 3xx is a failure like any other status. Every failure is a temporary
 * `TransportError` of phase `mta-sts`: kind `policy` for an invalid body, `protocol` for HTTP-level refusals, or the
 * transport's own kind (`tls`, `dns`, `refused`, …).
 *
 * @internal
 */
export const fetchPolicy = (
  domain: string,
  options?: { readonly port?: number | undefined; readonly ca?: ReadonlyArray<string> | undefined }
): Effect.Effect<Policy, TransportError.TransportError, PolicyFetcher> =>
  Effect.scoped(Effect.gen(function*() {
    const name = normalizeName(domain)
    const port = options?.port ?? 443
    const url = policyUrl(name, port)
    const fetcher = yield* PolicyFetcher
    const response = yield* fetcher.fetch({ domain: name, host: `mta-sts.${name}`, port, url, ca: options?.ca ?? [] })
    if (response.status !== 200) {
      const redirect = response.status >= 300 && response.status < 400 ? " (redirects are not followed)" : ""
      return yield* Effect.fail(
        TransportError.make("mta-sts", "protocol", `${url} answered HTTP ${response.status}${redirect}`)
      )
    }
    if (!isTextPlain(response.contentType)) {
      return yield* Effect.fail(TransportError.make(
        "mta-sts",
        "protocol",
        `${url} answered media type ${response.contentType ?? "(none)"}, not text/plain`
      ))
    }
    const bytes = yield* readCapped(
      response.body,
      MAX_POLICY_BYTES,
      (received) =>
        TransportError.make(
          "mta-sts",
          "protocol",
          `${url} sent a body over ${MAX_POLICY_BYTES} bytes (stopped after ${received})`
        )
    )
    return yield* Either.mapLeft(
      parse(new TextDecoder().decode(bytes)),
      (error) => TransportError.make("mta-sts", "policy", `invalid policy at ${url}: ${error.message}`)
    )
  }))
