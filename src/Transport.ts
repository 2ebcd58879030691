/**
 * The library's entry point: deliver one message to its recipients and say, per recipient, what happened, with a
 * trace of every connection attempt.
 *
 * The pipeline is a program over services — `OutboundConfig`, `Dns`, `Connector`, plus Effect's `Clock` and
 * `Random` — so that a test can run it on in-memory layers and virtual time, and a user can embed it in any Effect
 * application.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Candidates from "./Candidates.js"
import * as Connector from "./Connector.js"
import * as Dns from "./Dns.js"
import type {
  AttemptRecord,
  DeliveryReport,
  DomainPlan,
  ExplainedDomain,
  ExplainedHost,
  ExplainReport,
  HostPlan,
  MtaStsPlan,
  RecipientResult,
  ReportError,
  ReportReply
} from "./DeliveryReport.js"
import type { Value, Variables } from "./Expression.js"
import * as HappyEyeballs from "./HappyEyeballs.js"
import * as address from "./internal/address.js"
import * as lazyStream from "./internal/lazyStream.js"
import * as MtaSts from "./MtaSts.js"
import * as MxPlan from "./MxPlan.js"
import { OutboundConfig, type Setting } from "./OutboundConfig.js"
import * as PolicyCache from "./PolicyCache.js"
import * as SmtpSession from "./SmtpSession.js"
import type { Reply } from "./SmtpReply.js"
import * as TransportError from "./TransportError.js"
type TransportError = TransportError.TransportError

/**
 * What expressions may read about the delivery attempt, as a queue would know it.
 *
 * @since 0.1.0
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
 */
export class TransportOptions extends Context.Reference<TransportOptions>()("effect-smtp-transport/TransportOptions", {
  defaultValue: (): TransportOptions.Service => ({ port: 25, ca: undefined, domainConcurrency: 8, mtaStsPort: 443 })
}) {}

/**
 * @since 0.1.0
 */
export declare namespace TransportOptions {
  /**
   * @since 0.1.0
   */
  export interface Service {
    /** Remote SMTP port: 25 for MX delivery; another one for test set-ups. */
    readonly port: number
    /** Extra trusted CA certificates (PEM) for STARTTLS and MTA-STS, added to the system's. */
    readonly ca: ReadonlyArray<string> | undefined
    /** How many recipient domains are delivered at once. */
    readonly domainConcurrency: number
    /** HTTPS port of MTA-STS policy hosts: 443 (RFC 8461 §3.3); another one for test set-ups. */
    readonly mtaStsPort: number
  }
}

/**
 * The request cannot be sent as it is: an address that would put a space, a line break or NUL on the wire, an
 * over-long part, no recipients. Raised before any connection is made.
 *
 * @since 0.1.0
 */
export class InvalidRequest extends Data.TaggedError("InvalidRequest")<{
  readonly issues: ReadonlyArray<{ readonly field: string; readonly value: string; readonly reason: string }>
}> {
  override get message(): string {
    return this.issues.map((i) => `${i.field} ${JSON.stringify(i.value)} ${i.reason}`).join("; ")
  }
}

// Spans without the stack capture `Effect.fn` and `withSpan` do by default: an Error and its stack per call, up to
// half the cost of the span, for a source location the span's name already gives.
const spanOptions = { captureStackTrace: false } as const

/**
 * Delivers a message: groups the recipients by domain, delivers every domain independently (concurrently, bounded
 * by `TransportOptions.domainConcurrency`), and reports per recipient.
 *
 * @since 0.1.0
 */
export const deliver = (request: DeliveryRequest) =>
  Effect.gen(function*() {
    const { groups, message, sender } = yield* validate(request)
    const config = yield* OutboundConfig
    const options = yield* TransportOptions
    const startMs = yield* Effect.clockWith((clock) => clock.currentTimeMillis)
    const base = baseVariables(request, sender)
    const ctx: Run = { config, options, startMs, base, message, sender, requireTls: request.requireTls === true }
    // One domain (the usual case) needs no concurrent forEach, which would fork a fiber for it.
    const runs = groups.length === 1
      ? [yield* deliverDomain(ctx, groups[0]!)]
      : yield* Effect.forEach(groups, (group) => deliverDomain(ctx, group), { concurrency: options.domainConcurrency })
    const byAddress = new Map(runs.flatMap((run) => run.recipients.map((r) => [r.address, r] as const)))
    const warnings = Array.from(new Set([...config.warnings, ...runs.flatMap((run) => run.warnings)]))
    const report: DeliveryReport = {
      recipients: request.recipients.map((rcpt) => byAddress.get(rcpt)!),
      attempts: runs.flatMap((run) => run.attempts).sort((a, b) => a.startMs - b.startMs),
      plan: { domains: runs.map((run) => run.plan) },
      warnings
    }
    return report
  }).pipe(Effect.withSpan("Transport.deliver", spanOptions))

/**
 * The live services a delivery needs besides its `OutboundConfig`: DNS through `node:dns` (with its cache),
 * sockets through `node:net`/`node:tls`, MTA-STS policies fetched over HTTPS and cached in memory.
 *
 * @since 0.1.0
 */
export const layer = (
  options: { readonly dns?: Dns.LayerOptions | undefined; readonly ca?: ReadonlyArray<string> | undefined } = {}
): Layer.Layer<Dns.Dns | Connector.Connector | MtaSts.PolicyFetcher | PolicyCache.PolicyCache> =>
  Layer.mergeAll(Connector.layer, PolicyCache.layer, MtaSts.layer({ ca: options.ca })).pipe(
    Layer.provideMerge(Dns.layer(options.dns))
  )

interface Group {
  readonly domain: string
  readonly target: string
  readonly literal: boolean
  readonly recipients: ReadonlyArray<string>
}

const validate = (request: DeliveryRequest) =>
  Effect.suspend(() => {
    const issues: Array<{ field: string; value: string; reason: string }> = []
    let sender: address.Address | null = null
    if (request.sender !== "") {
      const parsed = address.parse(request.sender)
      if (typeof parsed === "string") issues.push({ field: "sender", value: request.sender, reason: parsed })
      else sender = parsed
    }
    if (request.recipients.length === 0) issues.push({ field: "recipients", value: "", reason: "is empty" })
    const groups = new Map<string, { domain: string; target: string; literal: boolean; recipients: Array<string> }>()
    const seen = new Set<string>()
    request.recipients.forEach((rcpt, i) => {
      const parsed = address.parse(rcpt)
      if (typeof parsed === "string") return issues.push({ field: `recipients[${i}]`, value: rcpt, reason: parsed })
      if (seen.has(rcpt)) return issues.push({ field: `recipients[${i}]`, value: rcpt, reason: "is listed twice" })
      seen.add(rcpt)
      const group = groups.get(parsed.domain)
      if (group === undefined) {
        groups.set(parsed.domain, { domain: parsed.domain, target: parsed.target, literal: parsed.literal, recipients: [rcpt] })
      } else group.recipients.push(rcpt)
    })
    if (issues.length > 0) return Effect.fail(new InvalidRequest({ issues }))
    const message = typeof request.message === "string" ? new TextEncoder().encode(request.message) : request.message
    return Effect.succeed({ groups: Array.from(groups.values()) as ReadonlyArray<Group>, message, sender })
  })

const baseVariables = (request: DeliveryRequest, sender: address.Address | null): Variables => {
  const attempt = request.attempt ?? {}
  return {
    sender: request.sender,
    sender_domain: sender?.domain ?? "",
    recipients: request.recipients,
    priority: attempt.priority ?? 0,
    retry_num: attempt.retryNum ?? 0,
    last_error: attempt.lastError ?? "none",
    last_status: attempt.lastStatus ?? "Scheduled",
    expires_in: attempt.expiresIn ?? 0,
    queue_name: attempt.queueName ?? "default"
  }
}

interface Run {
  readonly config: OutboundConfig["Type"]
  readonly options: TransportOptions.Service
  readonly startMs: number
  readonly base: Variables
  readonly message: Uint8Array
  readonly sender: address.Address | null
  readonly requireTls: boolean
}

interface DomainRun {
  readonly recipients: ReadonlyArray<RecipientResult>
  readonly attempts: ReadonlyArray<AttemptRecord>
  readonly plan: DomainPlan
  readonly warnings: ReadonlyArray<string>
}

/** Keys evaluated at one stage, warnings collected on the way (a fallback to a default is worth telling). */
class Evaluator {
  readonly warnings: Array<string> = []
  constructor(readonly variables: Variables) {}
  get<A>(setting: Setting<A>): A {
    const evaluated = setting.evaluate(this.variables)
    if (evaluated.warning !== null) this.warnings.push(evaluated.warning)
    return evaluated.value
  }
  with(extra: Record<string, Value>): Evaluator {
    const child = new Evaluator({ ...this.variables, ...extra })
    ;(child as { warnings: Array<string> }).warnings = this.warnings
    return child
  }
}

/** What the domain stage decided: the MTA-STS policy, the MX plan with the hosts a policy excludes taken out. */
interface DomainStage {
  readonly domainEval: Evaluator
  readonly limits: { readonly mx: number; readonly multihomed: number }
  readonly mtaSts: MtaSts.Outcome | null
  readonly plan: MxPlan.MxPlan | null
  /** Hosts an enforced MTA-STS policy does not list: never contacted, a permanent policy error each. */
  readonly excluded: ReadonlyArray<readonly [MxPlan.MxHost, TransportError]>
  readonly error: TransportError | null
}

const domainStage = (
  ctx: Pick<Run, "config" | "options" | "base">,
  group: Group
): Effect.Effect<DomainStage, never, Dns.Dns | MtaSts.PolicyFetcher | PolicyCache.PolicyCache> =>
  Effect.gen(function*() {
    const { config } = ctx
    const domainEval = new Evaluator({ ...ctx.base, rcpt: group.recipients[0]!, rcpt_domain: group.domain })
    const limits = { mx: domainEval.get(config.limits.mx), multihomed: domainEval.get(config.limits.multihomed) }
    const mode = domainEval.get(config.tls.mtaSts)
    const stage = { domainEval, limits, mtaSts: null, plan: null, excluded: [], error: null }
    // An address literal has no policy to publish; `disable` means not even asking.
    let mtaSts: MtaSts.Outcome | null = null
    if (!group.literal && mode !== "disable") {
      const resolved = yield* Effect.either(MtaSts.resolve(group.target, {
        mode,
        timeout: domainEval.get(config.timeouts.mtaSts),
        port: ctx.options.mtaStsPort,
        ca: ctx.options.ca
      }))
      if (Either.isLeft(resolved)) return { ...stage, error: resolved.left }
      mtaSts = resolved.right
      if (mtaSts.warning !== null) domainEval.warnings.push(mtaSts.warning)
    }
    // An address literal goes to MxPlan as written so that it skips DNS; a name goes in its A-label form.
    const planned = yield* Effect.either(MxPlan.plan(group.literal ? group.domain : group.target, limits.mx))
    if (Either.isLeft(planned)) return { ...stage, mtaSts, error: planned.left }
    const policy = mtaSts?.policy ?? null
    const listed = (host: MxPlan.MxHost) => policy === null || MtaSts.hostAllowed(policy, host.name)
    const excluded = MtaSts.enforced(policy)
      ? planned.right.hosts.filter((h) => !listed(h)).map((h) => [h, notListed(h.name)] as const)
      : []
    if (policy !== null && policy.mode === "testing") {
      for (const host of planned.right.hosts.filter((h) => !listed(h))) {
        domainEval.warnings.push(`MTA-STS (testing): ${host.name} is not listed in the policy of ${group.target}`)
      }
    }
    const plan = { ...planned.right, hosts: planned.right.hosts.filter((h) => !MtaSts.enforced(policy) || listed(h)) }
    return { ...stage, mtaSts, plan, excluded }
  })

const notListed = (host: string) =>
  TransportError.make("mta-sts", "policy", `${host} is not listed in the domain's enforced MTA-STS policy`, true)

const domainPlanOf = (
  group: Group,
  stage: DomainStage,
  hosts: ReadonlyArray<HostPlan>,
  error: TransportError | null
): DomainPlan => ({
  domain: group.domain,
  recipients: group.recipients,
  mx: stage.plan?.records.map((r) => ({ exchange: r.exchange, priority: r.priority })) ?? [],
  hosts,
  dropped: stage.plan?.dropped.map((h) => h.name) ?? [],
  limits: stage.limits,
  mtaSts: stage.mtaSts === null ? null : mtaStsPlan(stage.mtaSts),
  error: error === null ? null : reportError(error)
})

const mtaStsPlan = (outcome: MtaSts.Outcome): MtaStsPlan => ({
  status: outcome.status,
  source: outcome.source,
  id: outcome.id,
  policy: outcome.policy === null
    ? null
    : { mode: outcome.policy.mode, mx: outcome.policy.mx, maxAge: outcome.policy.maxAge },
  error: outcome.error === null ? null : reportError(outcome.error)
})

const excludedHostPlan = ([host, error]: readonly [MxPlan.MxHost, TransportError]): HostPlan => ({
  host: host.name,
  preference: host.preference,
  implicit: host.implicit,
  strategy: null,
  addresses: [],
  truncated: [],
  sourceIps: { v4: [], v6: [] },
  mtaSts: "mismatch",
  error: reportError(error)
})

const deliverDomain = (
  ctx: Run,
  group: Group
): Effect.Effect<DomainRun, never, Dns.Dns | Connector.Connector | MtaSts.PolicyFetcher | PolicyCache.PolicyCache> =>
  Effect.gen(function*() {
    const { config } = ctx
    const stage = yield* domainStage(ctx, group)
    const { domainEval, limits, plan } = stage
    const attempts: Array<AttemptRecord> = []
    const hostPlans: Array<HostPlan> = stage.excluded.map(excludedHostPlan)
    const hostErrors: Array<TransportError> = stage.excluded.map(([, error]) => error)
    const error = stage.error ?? (plan !== null && plan.hosts.length === 0 ? hostErrors[0]! : null)
    if (plan === null || error !== null) {
      return {
        recipients: group.recipients.map((rcpt) => failedBy(rcpt, error!, null)),
        attempts,
        plan: domainPlanOf(group, stage, hostPlans, error),
        warnings: domainEval.warnings
      }
    }
    const policy = stage.mtaSts?.policy ?? null
    const enforced = MtaSts.enforced(policy)

    let results: ReadonlyArray<RecipientResult> | null = null
    const perHost = (host: MxPlan.MxHost) =>
      Effect.sync((): Candidates.HostSettings => {
        const hostEval = domainEval.with({ mx: host.name })
        return {
          strategy: hostEval.get(config.ipStrategy),
          multihomed: limits.multihomed,
          sourceV4: hostEval.get(config.sourceIp.v4),
          sourceV6: hostEval.get(config.sourceIp.v6)
        }
      })

    yield* lazyStream.forEachWhile(Candidates.hosts(plan, perHost), (host) =>
      Effect.gen(function*() {
        hostPlans.push(hostPlan(host, policy))
        if (Either.isLeft(host.resolution)) {
          hostErrors.push(host.resolution.left)
          return true
        }
        const outcome = yield* tryHost(ctx, group, domainEval.with({ mx: host.host.name }), host, attempts, enforced)
        if (outcome._tag === "NextHost") {
          hostErrors.push(outcome.error)
          return true
        }
        results = outcome.recipients
        return false
      }))

    const final = results ?? allHostsFailed(group.recipients, hostErrors)
    return { recipients: final, attempts, plan: domainPlanOf(group, stage, hostPlans, null), warnings: domainEval.warnings }
  }).pipe(
    Effect.withSpan("Transport.deliverDomain", { ...spanOptions, attributes: { domain: group.domain } })
  )

/**
 * Explains what {@link deliver} would do, without connecting anywhere: per domain the MTA-STS policy, the MX
 * records, the hosts kept by `limits.mx`, and for every kept host (all of them, not only those a delivery would
 * reach) the strategy, the addresses after `limits.multihomed`, the source lists, and every setting as evaluated.
 * Connection-stage settings (EHLO name, timeouts) are evaluated for the host's first address with no source bound.
 *
 * @since 0.1.0
 */
export const explain = Effect.fn("Transport.explain")(function*(request: DeliveryRequest) {
  const { groups, sender } = yield* validate(request)
  const config = yield* OutboundConfig
  const options = yield* TransportOptions
  const base = baseVariables(request, sender)
  const domains = yield* Effect.forEach(groups, (group) =>
    Effect.gen(function*() {
      const stage = yield* domainStage({ config, options, base }, group)
      const hosts: Array<ExplainedHost> = stage.excluded.map((excluded) => ({
        ...excludedHostPlan(excluded),
        settings: null
      }))
      for (const host of stage.plan?.hosts ?? []) {
        const hostEval = stage.domainEval.with({ mx: host.name })
        const strategy = hostEval.get(config.ipStrategy)
        const sourceIps = { v4: hostEval.get(config.sourceIp.v4), v6: hostEval.get(config.sourceIp.v6) }
        const resolved = yield* Effect.either(Candidates.resolveHost(host, strategy, stage.limits.multihomed))
        const addresses = Either.match(resolved, { onLeft: () => [], onRight: (r) => r.addresses })
        const remote = addresses[0] ?? "0.0.0.0"
        const connEval = hostEval.with({ remote_ip: remote, local_ip: unbound(remote) })
        const policy = stage.mtaSts?.policy ?? null
        const ms = (setting: Setting<Duration.Duration>) => Duration.toMillis(connEval.get(setting))
        hosts.push({
          host: host.name,
          preference: host.preference,
          implicit: host.implicit,
          strategy,
          addresses,
          truncated: Either.match(resolved, { onLeft: () => [], onRight: (r) => r.truncated }),
          sourceIps,
          mtaSts: policy === null || policy.mode === "none" ? null : MtaSts.matches(policy, host.name) ? "match" : "mismatch",
          error: Either.match(resolved, { onLeft: reportError, onRight: () => null }),
          settings: {
            ehlo: connEval.get(config.hostname),
            starttls: hostEval.get(config.tls.starttls),
            allowInvalidCerts: hostEval.get(config.tls.allowInvalidCerts) && !MtaSts.enforced(policy),
            requireTls: request.requireTls === true || MtaSts.enforced(policy),
            connectionAttemptDelayMs: Option.getOrNull(Option.map(hostEval.get(config.connectionAttemptDelay), Duration.toMillis)),
            timeouts: {
              connect: ms(config.timeouts.connect),
              greeting: ms(config.timeouts.greeting),
              tls: ms(config.timeouts.tls),
              ehlo: ms(config.timeouts.ehlo),
              mailFrom: ms(config.timeouts.mailFrom),
              rcptTo: ms(config.timeouts.rcptTo),
              data: ms(config.timeouts.data)
            }
          }
        })
      }
      const explained: ExplainedDomain = {
        ...domainPlanOf(group, stage, hosts, stage.error),
        hosts,
        mtaStsTimeoutMs: Duration.toMillis(stage.domainEval.get(config.timeouts.mtaSts)),
        warnings: stage.domainEval.warnings
      }
      return explained
    }), { concurrency: options.domainConcurrency })
  const report: ExplainReport = {
    domains,
    warnings: Array.from(new Set([...config.warnings, ...domains.flatMap((d) => d.warnings)]))
  }
  return report
})

type HostOutcome =
  | { readonly _tag: "NextHost"; readonly error: TransportError }
  | { readonly _tag: "Done"; readonly recipients: ReadonlyArray<RecipientResult> }

interface Connected {
  readonly connection: SmtpSession.Connected
  readonly candidate: Candidates.Candidate
  readonly evaluator: Evaluator
}

/**
 * One MX host: race its addresses, then run the session on the winner. The connection lives in this function's
 * scope, so whatever happens it is closed before the next host is tried.
 */
const tryHost = (
  ctx: Run,
  group: Group,
  hostEval: Evaluator,
  host: Candidates.HostCandidates,
  attempts: Array<AttemptRecord>,
  /** An enforced MTA-STS policy applies: verified TLS or nothing (RFC 8461 §5). */
  enforced: boolean
): Effect.Effect<HostOutcome, never, Connector.Connector> =>
  Effect.scoped(Effect.gen(function*() {
    const { config } = ctx
    const tlsPolicy = {
      starttls: hostEval.get(config.tls.starttls),
      allowInvalidCerts: hostEval.get(config.tls.allowInvalidCerts) && !enforced
    }
    const delay = hostEval.get(config.connectionAttemptDelay)
    const since = (ms: number) => ms - ctx.startMs

    const race = yield* HappyEyeballs.race({
      candidates: host.candidates,
      attempt: (candidate: Candidates.Candidate) => {
        const evaluator = hostEval.with({ remote_ip: candidate.ip, local_ip: candidate.source ?? unbound(candidate.ip) })
        const timeout = evaluator.get(config.timeouts.connect)
        return SmtpSession.connectScoped(
          { ip: candidate.ip, port: ctx.options.port, localAddress: candidate.source ?? undefined },
          { timeouts: { connect: timeout }, servername: host.host.name, phaseSpans: true }
        ).pipe(Effect.map((connection): Connected => ({ connection, candidate, evaluator })))
      },
      delay
    })
    for (const loser of race.losers) {
      attempts.push({
        domain: group.domain,
        host: host.host.name,
        ip: loser.candidate.ip,
        source: loser.candidate.source,
        ehlo: null,
        tls: false,
        startMs: since(loser.startMs),
        durationMs: loser.endMs - loser.startMs,
        phase: "connect",
        outcome: loser._tag === "Failed" ? "failed" : "cancelled",
        error: loser._tag === "Failed" ? reportError(loser.error) : null
      })
    }
    if (Option.isNone(race.winner)) {
      const failures = race.losers.flatMap((l) => l._tag === "Failed" ? [l] : []).sort((a, b) => a.endMs - b.endMs)
      const last = failures[failures.length - 1]
      return { _tag: "NextHost", error: last?.error ?? noAddress(host.host.name) } as const
    }
    const winner = race.winner.value
    const { candidate, connection, evaluator } = winner.value
    const settings: SmtpSession.SessionSettings = {
      ehloName: evaluator.get(config.hostname),
      servername: host.host.name,
      tls: {
        starttls: tlsPolicy.starttls,
        allowInvalidCerts: tlsPolicy.allowInvalidCerts,
        ca: ctx.options.ca,
        required: ctx.requireTls || enforced
      },
      timeouts: {
        connect: evaluator.get(config.timeouts.connect),
        greeting: evaluator.get(config.timeouts.greeting),
        ehlo: evaluator.get(config.timeouts.ehlo),
        tls: evaluator.get(config.timeouts.tls),
        "mail-from": evaluator.get(config.timeouts.mailFrom),
        "rcpt-to": evaluator.get(config.timeouts.rcptTo),
        data: evaluator.get(config.timeouts.data)
      },
      // One span per phase, as before; the transport's rewrite moves to one span per attempt with phase events.
      phaseSpans: true
    }
    const record = (
      fields: Pick<AttemptRecord, "phase" | "outcome" | "error" | "tls" | "ehlo">
    ) =>
      Effect.map(Effect.clockWith((clock) => clock.currentTimeMillis), (now) => {
        attempts.push({
          domain: group.domain,
          host: host.host.name,
          ip: candidate.ip,
          source: candidate.source,
          startMs: since(winner.startMs),
          durationMs: now - winner.startMs,
          ...fields
        })
      })

    const opened = yield* Effect.either(SmtpSession.open(connection, settings))
    if (Either.isLeft(opened)) {
      const error = opened.left
      // A refusal in words (421 greeting, EHLO 550) leaves the dialogue in step: say goodbye (RFC 5321 §3.1);
      // after a timeout or a reset just close.
      if (SmtpSession.canQuitAfter(error)) yield* SmtpSession.quit({ connection, settings })
      yield* record({
        phase: error.phase,
        outcome: "failed",
        error: reportError(error),
        tls: false,
        ehlo: error.phase === "greeting" ? null : settings.ehloName
      })
      return { _tag: "NextHost", error } as const
    }
    const session = opened.right
    const envelope: SmtpSession.Envelope = {
      sender: ctx.sender?.address ?? "",
      recipients: group.recipients,
      requireTls: ctx.requireTls
    }
    const transaction = yield* SmtpSession.transaction(session, envelope, ctx.message, settings)
    const transportError = firstTransportError(transaction)
    if (transaction.canQuit) yield* SmtpSession.quit(session)
    yield* record({
      phase: transportError === null ? "quit" : transaction.phase,
      outcome: transportError === null ? "completed" : "failed",
      error: transportError === null ? null : reportError(transportError),
      tls: session.tls !== null,
      ehlo: session.ehloName
    })
    return { _tag: "Done", recipients: recipientResults(host.host.name, transaction) } as const
  }))

/**
 * A timeout, reset or protocol error inside the transaction makes the attempt `failed`; replies and policy
 * refusals (SMTPUTF8 or REQUIRETLS not offered, message over SIZE) are answers, and the attempt `completed`.
 */
const firstTransportError = (t: SmtpSession.TransactionResult): TransportError | null => {
  const errors = [
    Either.isLeft(t.mailFrom) ? t.mailFrom.left : null,
    ...t.recipients.map((r) => r.error),
    t.data !== null && Either.isLeft(t.data) ? t.data.left : null
  ]
  return errors.find((e): e is TransportError => e !== null && !SmtpSession.canQuitAfter(e)) ?? null
}

/**
 * Per recipient, from what the server said. A recipient is `delivered` only when it was accepted at RCPT and the
 * server answered the end of data with 2xx; a rejected RCPT keeps its own reply whatever happens to DATA.
 */
const recipientResults = (host: string, t: SmtpSession.TransactionResult): ReadonlyArray<RecipientResult> =>
  t.recipients.map((r): RecipientResult => {
    if (!r.accepted) {
      // The recipient's own reason first: its reply, or the refusal that kept it from being sent.
      if (r.error !== null) return failedBy(r.address, r.error, host)
      if (Either.isLeft(t.mailFrom)) return failedBy(r.address, t.mailFrom.left, host)
      return {
        address: r.address,
        status: r.reply !== null && r.reply.code >= 500 ? "failed" : "deferred",
        host,
        reply: r.reply === null ? null : reportReply(r.reply),
        error: null
      }
    }
    if (t.data === null) {
      return failedBy(r.address, noDataError, host)
    }
    if (Either.isLeft(t.data)) return failedBy(r.address, t.data.left, host)
    const reply = t.data.right
    if (reply.code >= 200 && reply.code < 300) {
      return { address: r.address, status: "delivered", host, reply: reportReply(reply), error: null }
    }
    return { address: r.address, status: reply.code >= 500 ? "failed" : "deferred", host, reply: reportReply(reply), error: null }
  })

/**
 * Every host failed before a transaction started. Unlike Stalwart ("last error wins"), the recipients fail
 * permanently only when every host failed permanently: one unreachable host among permanent refusals is a reason to
 * try again later, not to bounce.
 */
const allHostsFailed = (recipients: ReadonlyArray<string>, errors: ReadonlyArray<TransportError>) => {
  const last = errors[errors.length - 1]!
  const permanent = errors.every((e) => e.permanent)
  return recipients.map((rcpt): RecipientResult => ({
    ...failedBy(rcpt, last, null),
    status: permanent ? "failed" : "deferred"
  }))
}

const failedBy = (address: string, error: TransportError, host: string | null): RecipientResult => ({
  address,
  status: error.permanent ? "failed" : "deferred",
  host,
  reply: error.reply === null ? null : reportReply(error.reply),
  error: reportError(error)
})

const reportReply = (reply: Reply): ReportReply => ({
  code: reply.code,
  enhanced: reply.enhanced,
  text: reply.lines.join("\n")
})

const reportError = (error: TransportError): ReportError => ({
  phase: error.phase,
  kind: error.kind,
  message: error.message,
  permanent: error.permanent,
  code: error.reply?.code ?? null,
  enhanced: error.reply?.enhanced ?? null
})

const hostPlan = (host: Candidates.HostCandidates, policy: MtaSts.Policy | null): HostPlan => ({
  host: host.host.name,
  preference: host.host.preference,
  implicit: host.host.implicit,
  strategy: host.settings.strategy,
  addresses: Either.match(host.resolution, { onLeft: () => [], onRight: (r) => r.addresses }),
  truncated: Either.match(host.resolution, { onLeft: () => [], onRight: (r) => r.truncated }),
  sourceIps: { v4: host.settings.sourceV4, v6: host.settings.sourceV6 },
  mtaSts: policy === null || policy.mode === "none" ? null : MtaSts.matches(policy, host.host.name) ? "match" : "mismatch",
  error: Either.match(host.resolution, { onLeft: reportError, onRight: () => null })
})

const noAddress = (host: string) => TransportError.make("connect", "unreachable", `no address of ${host} could be tried`)

// Accepted at RCPT yet no DATA: the session ended between the two; the server never took the message.
const noDataError = TransportError.make("data", "protocol", "the transaction ended before DATA")

/** `local_ip` when no source address is bound: the unspecified address of the remote's family (Stalwart: 0.0.0.0). */
const unbound = (remoteIp: string) => (remoteIp.includes(":") ? "::" : "0.0.0.0")
