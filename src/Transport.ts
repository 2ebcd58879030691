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
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
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
import type { Variables } from "./Expression.js"
import * as HappyEyeballs from "./HappyEyeballs.js"
import * as address from "./internal/address.js"
import { explainedSettings } from "./internal/settings/explain.js"
import * as MtaSts from "./MtaSts.js"
import * as MxPlan from "./MxPlan.js"
import { evaluateConnection, evaluateDomain, evaluateHost, OutboundConfig } from "./OutboundConfig.js"
import * as PolicyCache from "./PolicyCache.js"
import type { ConnectionSettings, DomainSettings, HostSettings } from "./Settings.js"
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

// The variables of each stage: the delivery's, then the domain's, + `mx`, + the connection's addresses.
const domainVariables = (base: Variables, group: Group): Variables => ({
  ...base,
  rcpt: group.recipients[0]!,
  rcpt_domain: group.domain
})
const hostVariables = (domain: Variables, host: MxPlan.MxHost): Variables => ({ ...domain, mx: host.name })
const connectionVariables = (host: Variables, remoteIp: string, source: string | null): Variables => ({
  ...host,
  remote_ip: remoteIp,
  local_ip: source ?? unbound(remoteIp)
})

/** What the domain stage decided: the MTA-STS policy, the MX plan with the hosts a policy excludes taken out. */
interface DomainStage {
  readonly variables: Variables
  readonly settings: DomainSettings
  /** Every stage's warnings for this domain (a fallback to a default is worth telling), in evaluation order. */
  readonly warnings: Array<string>
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
    const variables = domainVariables(ctx.base, group)
    const { settings, warnings: evaluationWarnings } = evaluateDomain(ctx.config, variables)
    const warnings = [...evaluationWarnings]
    const mode = settings.tls.mtaSts
    const stage = { variables, settings, warnings, mtaSts: null, plan: null, excluded: [], error: null }
    // An address literal has no policy to publish; `disable` means not even asking.
    let mtaSts: MtaSts.Outcome | null = null
    if (!group.literal && mode !== "disable") {
      const resolved = yield* Effect.either(MtaSts.resolve(group.target, {
        mode,
        timeout: settings.timeouts["mta-sts"],
        port: ctx.options.mtaStsPort,
        ca: ctx.options.ca
      }))
      if (Either.isLeft(resolved)) return { ...stage, error: resolved.left }
      mtaSts = resolved.right
      if (mtaSts.warning !== null) warnings.push(mtaSts.warning)
    }
    // An address literal goes to MxPlan as written so that it skips DNS; a name goes in its A-label form.
    const planned = yield* Effect.either(MxPlan.plan(group.literal ? group.domain : group.target, settings.limits.mx))
    if (Either.isLeft(planned)) return { ...stage, mtaSts, error: planned.left }
    const policy = mtaSts?.policy ?? null
    const listed = (host: MxPlan.MxHost) => policy === null || MtaSts.hostAllowed(policy, host.name)
    const excluded = MtaSts.enforced(policy)
      ? planned.right.hosts.filter((h) => !listed(h)).map((h) => [h, notListed(h.name)] as const)
      : []
    if (policy !== null && policy.mode === "testing") {
      for (const host of planned.right.hosts.filter((h) => !listed(h))) {
        warnings.push(`MTA-STS (testing): ${host.name} is not listed in the policy of ${group.target}`)
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
  limits: stage.settings.limits,
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
    const { plan, warnings } = stage
    const attempts: Array<AttemptRecord> = []
    const hostPlans: Array<HostPlan> = stage.excluded.map(excludedHostPlan)
    const hostErrors: Array<TransportError> = stage.excluded.map(([, error]) => error)
    const error = stage.error ?? (plan !== null && plan.hosts.length === 0 ? hostErrors[0]! : null)
    if (plan === null || error !== null) {
      return {
        recipients: group.recipients.map((rcpt) => failedBy(rcpt, error!, null)),
        attempts,
        plan: domainPlanOf(group, stage, hostPlans, error),
        warnings
      }
    }
    const policy = stage.mtaSts?.policy ?? null
    const enforced = MtaSts.enforced(policy)

    let results: ReadonlyArray<RecipientResult> | null = null
    // Each host's settings, evaluated once when Candidates reaches the host, read again by tryHost.
    const hostSettings = new Map<MxPlan.MxHost, { readonly variables: Variables; readonly settings: HostSettings }>()
    const perHost = (host: MxPlan.MxHost) =>
      Effect.sync((): Candidates.HostSettings => {
        const variables = hostVariables(stage.variables, host)
        const evaluated = evaluateHost(config, variables)
        warnings.push(...evaluated.warnings)
        hostSettings.set(host, { variables, settings: evaluated.settings })
        const { ipStrategy, sourceIp } = evaluated.settings
        return {
          ipStrategy,
          multihomed: stage.settings.limits.multihomed,
          sourceIp
        }
      })

    const hosts = Candidates.hosts(plan, perHost)
    while (results === null) {
      const next = yield* hosts.next
      if (Option.isNone(next)) break
      const host = next.value
      hostPlans.push(hostPlan(host, policy))
      if (Either.isLeft(host.resolution)) {
        hostErrors.push(host.resolution.left)
        continue
      }
      const outcome = yield* tryHost(ctx, group, hostSettings.get(host.host)!, host, attempts, enforced, warnings)
      if (outcome._tag === "NextHost") hostErrors.push(outcome.error)
      else results = outcome.recipients
    }

    const final = results ?? allHostsFailed(group.recipients, hostErrors)
    return { recipients: final, attempts, plan: domainPlanOf(group, stage, hostPlans, null), warnings }
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
      const policy = stage.mtaSts?.policy ?? null
      const enforced = MtaSts.enforced(policy)
      for (const host of stage.plan?.hosts ?? []) {
        // The same stage evaluations as deliver's; the connection's for the host's first address, nothing bound.
        const variables = hostVariables(stage.variables, host)
        const hostEval = evaluateHost(config, variables)
        stage.warnings.push(...hostEval.warnings)
        const { ipStrategy, sourceIp } = hostEval.settings
        const resolved = yield* Effect.either(
          Candidates.resolveHost(host, ipStrategy, stage.settings.limits.multihomed)
        )
        const addresses = Either.match(resolved, { onLeft: () => [], onRight: (r) => r.addresses })
        const remote = addresses[0] ?? "0.0.0.0"
        const connection = evaluateConnection(config, connectionVariables(variables, remote, null))
        stage.warnings.push(...connection.warnings)
        hosts.push({
          host: host.name,
          preference: host.preference,
          implicit: host.implicit,
          strategy: ipStrategy,
          addresses,
          truncated: Either.match(resolved, { onLeft: () => [], onRight: (r) => r.truncated }),
          sourceIps: sourceIp,
          mtaSts: policy === null || policy.mode === "none" ? null : MtaSts.matches(policy, host.name) ? "match" : "mismatch",
          error: Either.match(resolved, { onLeft: reportError, onRight: () => null }),
          settings: explainedSettings(hostEval.settings, connection.settings, {
            allowInvalidCerts: hostEval.settings.tls.allowInvalidCerts && !enforced,
            requireTls: request.requireTls === true || enforced
          })
        })
      }
      const explained: ExplainedDomain = {
        ...domainPlanOf(group, stage, hosts, stage.error),
        hosts,
        mtaStsTimeoutMs: Duration.toMillis(stage.settings.timeouts["mta-sts"]),
        warnings: stage.warnings
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
  /** Closes the connection: the race's `release` for a success that did not win, `raceUse`'s for the winner. */
  readonly close: Effect.Effect<void>
  readonly candidate: Candidates.Candidate
  readonly settings: ConnectionSettings
}

/**
 * Connects, the connection owned by the caller: closed by `close`, or at once when the connect fails or is
 * interrupted. The connect's own Scope stands in for a `close` on the connection until the Connector offers one.
 */
const connectOwned = (options: Connector.ConnectOptions, timeout: Duration.Duration) =>
  Effect.flatMap(Scope.make(), (scope) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.matchCauseEffect(restore(Scope.extend(SmtpSession.connect(options, timeout), scope)), {
        onFailure: (cause) => Effect.zipRight(Scope.close(scope, Exit.failCause(cause)), Effect.failCause(cause)),
        onSuccess: (connection) => Effect.succeed({ connection, close: Scope.close(scope, Exit.void) })
      })
    ))

/**
 * One MX host: race its addresses, then run the session on the winner. The winner's connection is closed when the
 * session is done, whatever happens, before the next host is tried.
 */
const tryHost = (
  ctx: Run,
  group: Group,
  hostStage: { readonly variables: Variables; readonly settings: HostSettings },
  host: Candidates.HostCandidates,
  attempts: Array<AttemptRecord>,
  /** An enforced MTA-STS policy applies: verified TLS or nothing (RFC 8461 §5). */
  enforced: boolean,
  warnings: Array<string>
): Effect.Effect<HostOutcome, never, Connector.Connector> =>
  Effect.suspend(() => {
    const { config } = ctx
    const tlsPolicy = {
      starttls: hostStage.settings.tls.starttls,
      allowInvalidCerts: hostStage.settings.tls.allowInvalidCerts && !enforced
    }
    const delay = hostStage.settings.connectionAttemptDelay
    const since = (ms: number) => ms - ctx.startMs

    return HappyEyeballs.raceUse({
      candidates: host.candidates(),
      attempt: (candidate: Candidates.Candidate) => {
        const evaluated = evaluateConnection(
          config,
          connectionVariables(hostStage.variables, candidate.ip, candidate.source)
        )
        if (evaluated.warnings.length > 0) warnings.push(...evaluated.warnings)
        const settings = evaluated.settings
        return connectOwned(
          { ip: candidate.ip, port: ctx.options.port, localAddress: candidate.source ?? undefined },
          settings.timeouts.connect
        ).pipe(Effect.map(({ close, connection }): Connected => ({ connection, close, candidate, settings })))
      },
      release: (connected) => connected.close,
      delay
    }, (race) => Effect.gen(function*() {
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
      const { candidate, connection, settings: connectionSettings } = winner.value
      const { timeouts } = connectionSettings
      const settings: SmtpSession.SessionSettings = {
        hostname: connectionSettings.ehloName,
        servername: host.host.name,
        starttls: tlsPolicy.starttls,
        allowInvalidCerts: tlsPolicy.allowInvalidCerts,
        ca: ctx.options.ca,
        requireTls: ctx.requireTls || enforced,
        timeouts: {
          greeting: timeouts.greeting,
          ehlo: timeouts.ehlo,
          tls: timeouts.tls,
          mailFrom: timeouts["mail-from"],
          rcptTo: timeouts["rcpt-to"],
          data: timeouts.data
        }
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
        if (SmtpSession.canQuitAfter(error)) yield* SmtpSession.quit({ connection })
        yield* record({
          phase: error.phase,
          outcome: "failed",
          error: reportError(error),
          tls: false,
          ehlo: error.phase === "greeting" ? null : settings.hostname
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
        tls: session.tls,
        ehlo: session.ehloName
      })
      return { _tag: "Done", recipients: recipientResults(host.host.name, transaction) } as const
    }))
  })

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
  strategy: host.settings.ipStrategy,
  addresses: Either.match(host.resolution, { onLeft: () => [], onRight: (r) => r.addresses }),
  truncated: Either.match(host.resolution, { onLeft: () => [], onRight: (r) => r.truncated }),
  sourceIps: { v4: host.settings.sourceIp.v4, v6: host.settings.sourceIp.v6 },
  mtaSts: policy === null || policy.mode === "none" ? null : MtaSts.matches(policy, host.host.name) ? "match" : "mismatch",
  error: Either.match(host.resolution, { onLeft: reportError, onRight: () => null })
})

const noAddress = (host: string) => TransportError.make("connect", "unreachable", `no address of ${host} could be tried`)

// Accepted at RCPT yet no DATA: the session ended between the two; the server never took the message.
const noDataError = TransportError.make("data", "protocol", "the transaction ended before DATA")

/** `local_ip` when no source address is bound: the unspecified address of the remote's family (Stalwart: 0.0.0.0). */
const unbound = (remoteIp: string) => (remoteIp.includes(":") ? "::" : "0.0.0.0")
