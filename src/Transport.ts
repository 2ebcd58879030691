/**
 * The library's entry point: deliver one message to its recipients and say, per recipient, what happened, with a
 * trace of every connection attempt. This module is the orchestration only; each stage lives in
 * `internal/transport/` (request, domain, host, report, explain), in pipeline order.
 *
 * The pipeline is a program over services — `OutboundConfig`, `Dns`, `Connector`, plus Effect's `Clock` and
 * `Random` — so that a test can run it on in-memory layers and virtual time, and a user can embed it in any Effect
 * application.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import { identity } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Stream from "effect/Stream"
import type * as Tracer from "effect/Tracer"
import * as ConnectionPool from "./ConnectionPool.js"
import * as Connector from "./Connector.js"
import type { AttemptRecord, DeliveryReport, ExplainReport, RecipientResult } from "./DeliveryReport.js"
import * as Dns from "./Dns.js"
import { mapUnordered } from "./internal/mapUnordered.js"
import * as tracing from "./internal/tracing.js"
import { deliverDomain, type DomainRun, limitMessage } from "./internal/transport/deliver.js"
import { explainDomain, limitersAt } from "./internal/transport/explain.js"
import type { Delivery } from "./internal/transport/host.js"
import type { Plans } from "./internal/transport/plans.js"
import * as request_ from "./internal/transport/request.js"
import { startTlsCa, TrustedCa } from "./internal/transport/trust.js"
import * as warnings from "./internal/transport/warnings.js"
import * as Limiter from "./Limiter.js"
import * as MtaSts from "./MtaSts.js"
import { OutboundConfig } from "./OutboundConfig.js"
import * as PlanCache from "./PlanCache.js"
import * as PolicyCache from "./PolicyCache.js"

/**
 * What expressions may read about the delivery attempt, as a queue would know it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Attempt {
  /** Failed attempts so far (`retry_num`). */
  readonly retryNum?: number
  /** Category of the previous attempt's error (`last_error`): `none`, `dns`, `connection`, `tls`, … */
  readonly lastError?: string
  readonly lastStatus?: string
  readonly priority?: number
  /** Seconds until the message expires (`expires_in`). */
  readonly expiresIn?: number
  readonly queueName?: string
}

/**
 * @since 0.1.0
 * @category models
 */
export interface DeliveryRequest {
  /** The RFC 5322 message; line endings are normalised to CRLF on the wire. */
  readonly message: Uint8Array | string
  /** The envelope sender; `""` is the null reverse-path `<>`. */
  readonly sender: string
  readonly recipients: ReadonlyArray<string>
  readonly attempt?: Attempt | undefined
  /** RFC 8689 REQUIRETLS: the message must never travel in plaintext. */
  readonly requireTls?: boolean | undefined
}

/**
 * Process-wide transport options, with defaults; override with `Effect.provideService(TransportOptions, …)` or
 * `Layer.succeed(TransportOptions, …)`.
 *
 * @since 0.1.0
 * @category options
 */
export class TransportOptions extends Context.Reference<TransportOptions>()("effect-smtp-transport/TransportOptions", {
  defaultValue: (): TransportOptions.Service => ({
    port: 25,
    ca: undefined,
    domainConcurrency: 8,
    mtaStsPort: 443,
    phaseSpans: false
  })
}) {}

/**
 * @since 0.1.0
 * @category options
 */
export declare namespace TransportOptions {
  /**
   * @since 0.1.0
   * @category options
   */
  export interface Service {
    /** Remote SMTP port: 25 for MX delivery; another one for test set-ups. */
    readonly port: number
    /**
     * Extra trusted CA certificates (PEM) for STARTTLS and MTA-STS, added to Node's roots: the same as
     * `Transport.layer({ ca })` (the documented way), for set-ups that assemble their own layers.
     */
    readonly ca: ReadonlyArray<string> | undefined
    /** How many recipient domains are delivered at once. */
    readonly domainConcurrency: number
    /** HTTPS port of MTA-STS policy hosts: 443 (RFC 8461 §3.3); another one for test set-ups. */
    readonly mtaStsPort: number
    /**
     * A span per SMTP phase (`smtp.greeting`, `smtp.ehlo`, …) under each attempt's `smtp.attempt` span. Off: the
     * phases are events of the attempt's span, which costs less (docs/performance.md has the figures). Optional so
     * that options written before it existed still type-check.
     */
    readonly phaseSpans?: boolean | undefined
  }
}

/**
 * The request cannot be sent as it is: an address that would put a space, a line break or NUL on the wire, an
 * over-long part, no recipients. Raised before any connection is made.
 *
 * @since 0.1.0
 * @category errors
 */
export const InvalidRequest: typeof request_.InvalidRequest = request_.InvalidRequest

/**
 * @since 0.1.0
 * @category errors
 */
export type InvalidRequest = request_.InvalidRequest

/** The configuration's warnings, the message's, then the stages', each once. */
const messageWarnings = (
  config: ReadonlyArray<string>,
  message: Uint8Array,
  stages: ReadonlyArray<string>
): ReadonlyArray<string> => {
  const empty = warnings.emptyMessage(message)
  if (config.length === 0 && empty === null && stages.length === 0) return []
  return Array.from(new Set([...config, ...(empty === null ? [] : [empty]), ...stages]))
}

/** The results are the request's recipients, in its order. */
const inRequestOrder = (results: ReadonlyArray<RecipientResult>, recipients: ReadonlyArray<string>): boolean => {
  if (results.length !== recipients.length) return false
  for (let i = 0; i < results.length; i++) if (results[i]!.address !== recipients[i]) return false
  return true
}

/** The attempts in start order (a stable sort), without a copy when they are in that order already. */
const sortedByStart = (attempts: ReadonlyArray<AttemptRecord>): ReadonlyArray<AttemptRecord> => {
  for (let i = 1; i < attempts.length; i++) {
    if (attempts[i]!.startMs < attempts[i - 1]!.startMs) return [...attempts].sort((a, b) => a.startMs - b.startMs)
  }
  return attempts
}

/**
 * The layer's plan cache, used where the delivery's spans record nothing (a trace keeps every lookup's span); `null`
 * without one.
 */
const planCacheOf = (context: Context.Context<never>, span: Tracer.AnySpan, clock: Clock.Clock): Plans | null => {
  if (tracing.records(span)) return null
  const cache = Context.getOption(context, PlanCache.PlanCache)
  return Option.isSome(cache) ? { cache: cache.value, clock } : null
}

/** Connection ids of a delivery without a pool: its own count. */
const ownIds = (): Effect.Effect<string> => {
  let n = 0
  return Effect.sync(() => `c${++n}`)
}

// Spans without the stack capture `Effect.fn` and `withSpan` do by default: an Error and its stack per call, up to
// half the cost of the span, for a source location the span's name already gives.
const spanOptions = { captureStackTrace: false } as const

/**
 * Delivers a message: groups the recipients by domain, delivers every domain independently (concurrently, bounded
 * by `TransportOptions.domainConcurrency`), and reports per recipient.
 *
 * With a {@link ConnectionPool.ConnectionPool} in the context (`Transport.layer` provides one), a host's idle
 * connection is used before a new one is opened, and a connection still in step after its transaction goes back to
 * the pool: concurrent deliveries on one layer share it. Without one, every connection carries one transaction.
 *
 * The configured outbound limiters (`[queue.limiter.outbound.<id>]`, `[[queue.throttle]]`) count in the
 * {@link Limiter.Limiter} of the context (`Transport.layer` provides one, shared by every delivery on the layer);
 * without one, each delivery counts on its own.
 *
 * An application provides `Transport.layer()` and an `OutboundConfig` layer (see the README); here every service is
 * an in-memory test layer, so the example runs as it is.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { ConnectorTest, Dns, MtaSts, OutboundConfig, PolicyCache, Transport } from "effect-smtp-transport"
 *
 * const { Script } = ConnectorTest
 * const services = Layer.mergeAll(
 *   Layer.orDie(OutboundConfig.layerFromText(`
 * [queue.outbound]
 * hostname = "'client.test'"
 * `)),
 *   Dns.layerTest({
 *     "example.net": { mx: [{ exchange: "mx.example.net", priority: 10 }] },
 *     "mx.example.net": { a: ["192.0.2.1"] }
 *   }),
 *   ConnectorTest.layer({
 *     "192.0.2.1": {
 *       script: [
 *         Script.reply("220 mx.example.net ESMTP"),
 *         Script.expect("EHLO client.test"), Script.reply("250 mx.example.net"),
 *         Script.expect("MAIL FROM:<me@example.org>"), Script.reply("250 ok"),
 *         Script.expect("RCPT TO:<you@example.net>"), Script.reply("250 ok"),
 *         Script.expect("DATA"), Script.reply("354 go ahead"), Script.expectData, Script.reply("250 queued as 42"),
 *         Script.expect("QUIT"), Script.reply("221 bye")
 *       ]
 *     }
 *   }),
 *   PolicyCache.layer,
 *   MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" })) // no MTA-STS policy anywhere
 * )
 *
 * const report = await Effect.runPromise(
 *   Transport.deliver({
 *     message: "Subject: hello\r\n\r\nHi!\r\n",
 *     sender: "me@example.org",
 *     recipients: ["you@example.net"]
 *   }).pipe(Effect.provide(services))
 * )
 * const [you] = report.recipients
 * assert.strictEqual(you?.status, "delivered")
 * assert.strictEqual(you?.reply?.text, "queued as 42")
 * assert.deepStrictEqual(report.attempts.map((a) => [a.host, a.ip, a.outcome]), [
 *   ["mx.example.net", "192.0.2.1", "completed"]
 * ])
 * ```
 *
 * @since 0.1.0
 * @category delivery
 */
export const deliver = (
  request: DeliveryRequest
): Effect.Effect<
  DeliveryReport,
  InvalidRequest,
  OutboundConfig | Dns.Dns | Connector.Connector | MtaSts.PolicyFetcher | PolicyCache.PolicyCache
> =>
  // The spans are made with explicit parents and passed down (internal/tracing): the current span is not switched.
  // Not an Effect.gen: the request checked, the services and the Clock read and the domain's delivery started in
  // the step that reads the fiber (under the built-in tracer, the span's own step).
  tracing.withinFiber("Transport.deliver", undefined, undefined, (span, fiber) => {
    const validated = request_.check(request)
    if (Either.isLeft(validated)) return Effect.fail(validated.left)
    const { groups, message, sender, variables } = validated.right
    const context = fiber.currentContext as Context.Context<OutboundConfig>
    // the Clock `Clock.currentTimeMillis` would read: TestClock under test
    const clock = Context.get(fiber.currentDefaultServices, Clock.Clock)
    const config = Context.get(context, OutboundConfig)
    const options = Context.get(context, TransportOptions)
    const pool = Context.getOption(context, ConnectionPool.ConnectionPool)
    const run = (limiter: Limiter.Limiter.Service | null) => {
      const delivery: Delivery = {
        span,
        config,
        options,
        startMs: clock.unsafeCurrentTimeMillis(),
        clock,
        message,
        sender: sender?.address ?? "",
        requireTls: request.requireTls === true,
        ca: startTlsCa(Context.get(context, TrustedCa), options.ca),
        pool: Option.getOrNull(pool),
        connectionId: Option.isSome(pool) ? pool.value.connectionId : ownIds(),
        limiter,
        plans: planCacheOf(context, span, clock)
      }
      const domain = <A>(group: request_.Group, then: (run: DomainRun) => A) =>
        tracing.within(
          "Transport.deliverDomain",
          span,
          () => ({ domain: group.domain }),
          (domainSpan) => deliverDomain(delivery, variables, group, domainSpan, then)
        )
      const report = (runs: ReadonlyArray<DomainRun>): DeliveryReport => {
        // One domain (the usual case): its recipients are the request's, in its order (grouping kept it), and its
        // attempts are in start order already; no map to put them back in order, no sort.
        const one = runs.length === 1 ? runs[0]! : null
        let recipients: ReadonlyArray<RecipientResult>
        if (one !== null && inRequestOrder(one.recipients, request.recipients)) recipients = one.recipients
        else {
          const byAddress = new Map(runs.flatMap((run) => run.recipients.map((r) => [r.address, r] as const)))
          recipients = request.recipients.map((rcpt) => byAddress.get(rcpt)!)
        }
        return {
          recipients,
          attempts: one !== null
            ? sortedByStart(one.attempts)
            : runs.flatMap((run) => run.attempts).sort((a, b) => a.startMs - b.startMs),
          plan: { layout: config.layout, domains: runs.map((run) => run.plan) },
          warnings: messageWarnings(
            config.warnings,
            message,
            one !== null ? one.warnings : runs.flatMap((run) => run.warnings)
          )
        }
      }
      // One domain (the usual case) needs no concurrent forEach, which would fork a fiber for it.
      const all = () =>
        groups.length === 1
          ? domain(groups[0]!, (run): ReadonlyArray<DomainRun> => [run])
          : Effect.forEach(groups, (group) => domain(group, identity), { concurrency: options.domainConcurrency })
      // Limiters keyed on the sender (or on nothing) count the message once, around all its domains.
      if (limiter !== null) return Effect.map(limitMessage(delivery, variables, groups, all), report)
      // The report built in the step that ends the domain's delivery.
      return groups.length === 1 ? domain(groups[0]!, (run) => report([run])) : Effect.map(all(), report)
    }
    if (config.limiters.length === 0) return run(null)
    const shared = Context.getOption(context, Limiter.Limiter)
    return Option.isSome(shared) ? run(shared.value) : Effect.flatMap(Limiter.make, run)
  })

/**
 * A request of {@link deliverAll}, with the caller's id for it.
 *
 * @since 0.3.0
 * @category models
 */
export interface Identified<Id> {
  readonly id: Id
  readonly request: DeliveryRequest
}

/**
 * What {@link deliverAll} says of one request: its report, or why it could not be sent.
 *
 * @since 0.3.0
 * @category models
 */
export interface Outcome<Id> {
  readonly id: Id
  readonly report: Either.Either<DeliveryReport, InvalidRequest>
}

/**
 * Delivers a stream of messages, at most `concurrency` (default 100) at once, and emits each one's outcome as it
 * completes (completion order, not input order). Every delivery runs {@link deliver} in the same context, so they
 * share its connection pool: consecutive messages to a destination go over the same connections. The input is
 * pulled only as deliveries finish, so a long stream is never held in memory. If the input fails, no delivery starts
 * after it, and every delivery under way finishes and is emitted before the stream fails with the input's error: a
 * message sent is always reported. Closing the output early (`Stream.take`, an interruption) interrupts the
 * deliveries under way, as interrupting {@link deliver} does. `concurrency` must be a positive integer.
 *
 * @since 0.3.0
 * @category delivery
 */
export const deliverAll = <Id, E, R>(
  requests: Stream.Stream<Identified<Id>, E, R>,
  options: { readonly concurrency?: number | undefined } = {}
): Stream.Stream<
  Outcome<Id>,
  E,
  R | OutboundConfig | Dns.Dns | Connector.Connector | MtaSts.PolicyFetcher | PolicyCache.PolicyCache
> =>
  mapUnordered(
    requests,
    ({ id, request }) => Effect.map(Effect.either(deliver(request)), (report): Outcome<Id> => ({ id, report })),
    options.concurrency ?? 100
  )

/**
 * Explains what {@link deliver} would do, without connecting anywhere: per domain the MTA-STS policy, the MX
 * records, the hosts kept by `limits.mx`, and for every kept host (all of them, not only those a delivery would
 * reach) the strategy, the addresses after `limits.multihomed`, the source lists, and every setting as evaluated —
 * by the same stage evaluations a delivery runs.
 *
 * @since 0.1.0
 * @category delivery
 */
export const explain = (
  request: DeliveryRequest
): Effect.Effect<ExplainReport, InvalidRequest, OutboundConfig | Dns.Dns | MtaSts.PolicyFetcher | PolicyCache.PolicyCache> =>
  Effect.gen(function*() {
    const { groups, variables } = yield* request_.validate(request)
    const config = yield* OutboundConfig
    const options = yield* TransportOptions
    const domains = yield* Effect.forEach(
      groups,
      (group) => explainDomain(config, options, variables, group, request.requireTls === true),
      { concurrency: options.domainConcurrency }
    )
    const report: ExplainReport = {
      layout: config.layout,
      limiters: limitersAt(config, "message", variables),
      domains,
      warnings: Array.from(new Set([...config.warnings, ...domains.flatMap((d) => d.warnings)]))
    }
    return report
  }).pipe(Effect.withSpan("Transport.explain", spanOptions))

/**
 * The live services a delivery needs besides its `OutboundConfig`: DNS (`Dns.layer`, with its cache; point it at a
 * trusted validating resolver for DANE), sockets through `node:net`/`node:tls`, MTA-STS policies fetched over HTTPS
 * and cached in memory, and the connection pool, the outbound limiters' counts and the plan cache (each domain's MX
 * plan and each host's addresses, for their DNS answers' TTL as the resolver cache hands it on, capped by its
 * `maxTtl`; nothing kept with `dns: { cache: false }`) that deliveries on this layer share (the idle connections
 * closed with QUIT when the layer's scope closes).
 *
 * `ca`: extra trusted CA certificates (PEM), added to Node's roots, for STARTTLS and for MTA-STS policy fetches
 * alike. This is the way to trust a private CA.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: { readonly dns?: Dns.LayerOptions | undefined; readonly ca?: ReadonlyArray<string> | undefined } = {}
): Layer.Layer<
  | Dns.Dns
  | Connector.Connector
  | MtaSts.PolicyFetcher
  | PolicyCache.PolicyCache
  | ConnectionPool.ConnectionPool
  | Limiter.Limiter
  | PlanCache.PlanCache
> =>
  Layer.mergeAll(
    Connector.layer,
    ConnectionPool.layer,
    // Behind the resolver cache, and kept no longer than it keeps an answer; with that cache turned off, every
    // delivery is to look its domain up, so nothing is kept (a cache of capacity 0).
    options.dns?.cache === false ? Layer.sync(PlanCache.PlanCache, () => PlanCache.make(0)) : PlanCache.layer,
    Limiter.layer,
    PolicyCache.layer,
    MtaSts.layer({ ca: options.ca }),
    Layer.succeed(TrustedCa, options.ca ?? [])
  ).pipe(Layer.provideMerge(Dns.layer(options.dns)))
