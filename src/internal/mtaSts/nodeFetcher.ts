import * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { LookupAddress } from "node:dns"
import type * as Https from "node:https"
import * as Tls from "node:tls"
import type { Dns, DnsError } from "../../Dns.js"
import type { FetchRequest, FetchResponse } from "./fetcher.js"
import * as TransportError from "../../TransportError.js"

type Lookup = NonNullable<Https.AgentOptions["lookup"]>
type Run = <A, E>(effect: Effect.Effect<A, E>) => { readonly addObserver: (f: (exit: Exit.Exit<A, E>) => void) => void }

class LookupError extends Error {
  constructor(readonly code: "ENOTFOUND" | "EAI_AGAIN", readonly hostname: string, message: string) {
    super(message)
  }
}

// A first, then AAAA, like the rest of the transport's defaults; one family failing is fine if the other answers.
const addresses = (
  dns: Dns.Service,
  hostname: string,
  family: 0 | 4 | 6
): Effect.Effect<ReadonlyArray<LookupAddress>, LookupError> =>
  Effect.gen(function*() {
    const none: Effect.Effect<Either.Either<ReadonlyArray<string>, DnsError>> = Effect.succeed(Either.right([]))
    const [v4, v6] = yield* Effect.all([
      family === 6 ? none : Effect.either(dns.a(hostname)),
      family === 4 ? none : Effect.either(dns.aaaa(hostname))
    ], { concurrency: 2 })
    const found: Array<LookupAddress> = [
      ...Either.getOrElse(v4, () => []).map((address) => ({ address, family: 4 })),
      ...Either.getOrElse(v6, () => []).map((address) => ({ address, family: 6 }))
    ]
    if (found.length > 0) return found
    const errors = [v4, v6].flatMap((result) => Either.isLeft(result) ? [result.left] : [])
    const temporary = errors.find((error) => error.reason === "Temporary")
    return yield* Effect.fail(
      temporary !== undefined
        ? new LookupError("EAI_AGAIN", hostname, `${hostname}: ${temporary.message}`)
        : new LookupError("ENOTFOUND", hostname, `${hostname}: no address`)
    )
  })

// node:net calls this instead of getaddrinfo. The lookups run as fibers of the fetch's scope, so a timeout that
// interrupts the fetch also stops them.
const makeLookup = (dns: Dns.Service, run: Run): Lookup => (hostname, options, callback) => {
  const family = options.family === 4 || options.family === "IPv4"
    ? 4
    : options.family === 6 || options.family === "IPv6"
    ? 6
    : 0
  run(addresses(dns, hostname, family)).addObserver((exit) => {
    if (Exit.isSuccess(exit)) {
      const first = exit.value[0]!
      if (options.all === true) callback(null, [...exit.value])
      else callback(null, first.address, first.family)
    } else {
      const failure = Cause.failureOption(exit.cause)
      callback(
        failure._tag === "Some"
          ? failure.value
          : new LookupError("EAI_AGAIN", hostname, `${hostname}: lookup interrupted`),
        ""
      )
    }
  })
}

const codeOf = (cause: unknown): string | null => {
  if (typeof cause === "object" && cause !== null && "code" in cause && typeof cause.code === "string") {
    return cause.code
  }
  return null
}

const messageOf = (cause: unknown): string => cause instanceof Error ? cause.message : String(cause)

const kindOf = (code: string | null): TransportError.Kind => {
  if (code === null) return "protocol"
  switch (code) {
    case "ECONNREFUSED":
      return "refused"
    case "ENETUNREACH":
    case "EHOSTUNREACH":
    case "EADDRNOTAVAIL":
      return "unreachable"
    case "ECONNRESET":
    case "EPIPE":
      return "reset"
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "dns"
  }
  return /CERT|SSL|TLS|SELF_SIGNED|UNABLE_TO_/.test(code) ? "tls" : "protocol"
}

const fromHttpError = (url: string) => (error: HttpClientError.HttpClientError): TransportError.TransportError => {
  const cause = "cause" in error ? error.cause : undefined
  const code = codeOf(cause)
  return TransportError.make(
    "mta-sts",
    kindOf(code),
    `fetching ${url} failed: ${cause === undefined ? error.message : messageOf(cause)}${
      code === null ? "" : ` (${code})`
    }`
  )
}

const maxContexts = 8

export const make = (dns: Dns.Service, layerCa: ReadonlyArray<string>) => {
  // Building a context from the ~150 system roots costs tens of milliseconds of CPU, so each distinct CA set is built
  // once and reused; there are only ever a handful (the layer's, plus a per-call set from the CLI or the options).
  const contexts = new Map<string, Tls.SecureContext>()
  const secureContext = (extra: ReadonlyArray<string>): Tls.SecureContext => {
    const key = extra.join("\n")
    const cached = contexts.get(key)
    if (cached !== undefined) return cached
    // `ca` replaces Node's trust store rather than adding to it, so the system roots are passed along.
    const context = Tls.createSecureContext({ ca: [...Tls.rootCertificates, ...extra] })
    if (contexts.size >= maxContexts) contexts.delete(contexts.keys().next().value!)
    contexts.set(key, context)
    return context
  }
  return (request: FetchRequest): Effect.Effect<FetchResponse, TransportError.TransportError, Scope.Scope> =>
    Effect.gen(function*() {
      const run = yield* FiberSet.makeRuntime<never>()
      const extra = [...layerCa, ...request.ca]
      const agentOptions: Https.AgentOptions = { lookup: makeLookup(dns, run), keepAlive: false }
      if (extra.length > 0) agentOptions.secureContext = secureContext(extra)
      const agent = yield* NodeHttpClient.makeAgent(agentOptions)
      const client = yield* Effect.provideService(NodeHttpClient.make, NodeHttpClient.HttpAgent, agent)
      // No followRedirects: RFC 8461 §3.3 forbids following them, and a 3xx is then reported by the caller.
      const response = yield* HttpClient.withScope(client).get(request.url).pipe(
        Effect.mapError(fromHttpError(request.url))
      )
      return {
        status: response.status,
        contentType: response.headers["content-type"] ?? null,
        body: response.stream.pipe(Stream.mapError(fromHttpError(request.url)))
      }
    })
}
