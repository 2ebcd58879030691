/**
 * The readable forms of the reports: a summary per recipient, the plan that was followed, and the connection
 * attempts as a compact timeline. Plain text without colours, so that it reads the same in a terminal, a pipe and
 * a CI log. (`--json` prints the report itself.)
 *
 * @since 0.1.0
 */
import type {
  AttemptRecord,
  DeliveryReport,
  DomainPlan,
  ExplainedDomain,
  ExplainedHost,
  ExplainedLimiter,
  ExplainReport,
  MtaStsPlan,
  RecipientResult,
  RoutePlan,
  ReportError
} from "../DeliveryReport.js"

type Align = "left" | "right"

/**
 * Columns padded to their widest cell; trailing spaces trimmed.
 *
 * @since 0.1.0
 */
export const table = (
  rows: ReadonlyArray<ReadonlyArray<string>>,
  align: ReadonlyArray<Align> = [],
  indent = "  "
): ReadonlyArray<string> => {
  const widths: Array<number> = []
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)))
  return rows.map((row) =>
    (indent + row.map((cell, i) => (align[i] === "right" ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)))
      .join("  ")).trimEnd()
  )
}

/**
 * `250ms`, `1s`, `1.5s`, `5m`, `1h30m`: exact, shortest first.
 *
 * @since 0.1.0
 */
export const duration = (ms: number): string => {
  if (!Number.isFinite(ms)) return "never"
  const units: ReadonlyArray<readonly [string, number]> = [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1000]]
  for (const [unit, size] of units) if (ms >= size && ms % size === 0) return `${ms / size}${unit}`
  if (ms >= 1000) return `${ms / 1000}s`
  return `${ms}ms`
}

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, " / ")

const errorText = (error: ReportError) => oneLine(error.message)

const recipientDetail = (r: RecipientResult): string => {
  if (r.reply !== null) {
    const code = `${r.reply.code}${r.reply.enhanced === null ? "" : ` ${r.reply.enhanced}`}`
    return oneLine(`${code} ${r.reply.text}`.trim())
  }
  // The messages name their phase ("greeting timed out after 1s"); the timeline has the rest.
  return r.error === null ? "" : errorText(r.error)
}

const counts = (recipients: ReadonlyArray<RecipientResult>): string => {
  const by = (s: RecipientResult["status"]) => recipients.filter((r) => r.status === s).length
  const parts = [["delivered", by("delivered")], ["deferred", by("deferred")], ["failed", by("failed")]] as const
  const listed = parts.filter(([, n]) => n > 0).map(([s, n]) => `${n} ${s}`)
  const total = recipients.length
  return `${total} recipient${total === 1 ? "" : "s"}: ${listed.join(", ")}`
}

/**
 * The route in words; the credentials never, only whether AUTH is used.
 *
 * @since 0.3.0
 */
export const routeText = (route: RoutePlan | null): string => {
  if (route === null) return "undecided"
  switch (route.type) {
    case "mx":
      return `${route.name} (MX hosts)`
    case "local":
      return `${route.name} (handed to LocalDelivery)`
    case "relay":
      return `${route.name}: relay ${route.address} port ${route.port}, ${route.protocol.toUpperCase()}, ${
        route.tls === "implicit" ? "implicit TLS" : "STARTTLS"
      }${route.allowInvalidCerts ? " (any certificate)" : ""}, ${route.auth ? "AUTH" : "no AUTH"}`
  }
}

const planLines = (domain: DomainPlan): ReadonlyArray<string> => {
  if (domain.route !== null && domain.route.type !== "mx") {
    const lines = [`  ${domain.domain}  route ${routeText(domain.route)}${
      domain.error === null ? "" : `  (${errorText(domain.error)})`
    }`]
    if (domain.route.type === "relay") {
      lines.push(...table(
        domain.hosts.map((h) => [h.host, h.strategy ?? "-", h.error === null ? h.addresses.join(", ") : errorText(h.error)]),
        [],
        "    "
      ))
    }
    return lines
  }
  const mx = domain.mx.length === 0
    ? domain.hosts.some((h) => h.implicit) ? "no MX: the domain is its own host" : "no MX records"
    : `MX ${domain.mx.map((r) => `${r.priority} ${r.exchange}`).join(", ")}`
  const lines = [`  ${domain.domain}  ${mx}${domain.error === null ? "" : `  (${errorText(domain.error)})`}`]
  if (domain.mtaSts !== null && domain.mtaSts.status !== "none") lines.push(`    MTA-STS: ${mtaSts(domain.mtaSts)}`)
  if (domain.dropped.length > 0) lines.push(`    dropped by limits.mx = ${domain.limits.mx}: ${domain.dropped.join(", ")}`)
  lines.push(
    ...table(
      domain.hosts.map((h) => [
        h.host,
        h.strategy ?? "-",
        h.error === null ? h.addresses.join(", ") : errorText(h.error),
        h.truncated.length === 0 ? "" : `(cut by limits.multihomed: ${h.truncated.join(", ")})`
      ]),
      [],
      "    "
    )
  )
  // DANE only where it applies or failed: an unsigned domain (most of them) says nothing
  for (const h of domain.hosts) {
    if (h.dane === null || h.dane.status === "insecure") continue
    const records = h.dane.records.length === 0 ? "" : `: ${h.dane.records.join(", ")}`
    lines.push(`    DANE ${h.host}: ${h.dane.status}, ${h.dane.reason}${records}`)
  }
  return lines
}

/** `no` for plaintext; else the version, and whether the certificate verified (why not, when it did not). */
const tlsText = (tls: AttemptRecord["tls"]): string =>
  tls === null
    ? "no"
    : tls.dane !== null && (tls.dane.status === "verified" || tls.dane.status === "failed")
    ? `${tls.version ?? "TLS"} DANE ${tls.dane.status === "verified" ? `verified (${tls.dane.record})` : "failed"}`
    : `${tls.version ?? "TLS"} ${tls.verified ? "verified" : `unverified (${tls.reason ?? "unknown"})`}`

/** What a host's TLS settings amount to: opportunistic (RFC 7435), or a certificate that must verify. */
const tlsPolicyText = (s: NonNullable<ExplainedHost["settings"]>): string => {
  const head = `starttls ${s.starttls}${s.requireTls ? " (TLS required)" : ""}`
  if (s.starttls === "require" || s.requireTls) {
    return `${head}: ${s.allowInvalidCerts ? "any certificate (allow-invalid-certs)" : "verified certificate"}`
  }
  return s.starttls === "disable" ? `${head}: plaintext` : `${head}: opportunistic, any certificate (RFC 7435)`
}

/**
 * The attempts as a timeline: start (ms since the delivery began), duration, host, address, source, last phase,
 * outcome, TLS, error.
 *
 * @since 0.1.0
 */
export const timeline = (attempts: ReadonlyArray<AttemptRecord>): ReadonlyArray<string> => {
  if (attempts.length === 0) return ["  (no connection attempt)"]
  const header = ["t+ms", "ms", "host", "ip", "source", "phase", "outcome", "tls", "error"]
  const rows = attempts.map((a) => [
    String(a.startMs),
    String(a.durationMs),
    a.host,
    a.ip,
    a.source ?? "-",
    a.phase,
    a.outcome,
    tlsText(a.tls),
    a.error === null ? "" : errorText(a.error)
  ])
  return table([header, ...rows], ["right", "right"])
}

/**
 * The readable form of a delivery report.
 *
 * @since 0.1.0
 */
export const report = (report: DeliveryReport): string => {
  const lines: Array<string> = [counts(report.recipients), "", "Recipients"]
  lines.push(
    ...table(report.recipients.map((r) => [r.status, r.address, r.host ?? "-", recipientDetail(r)]))
  )
  lines.push("", "Plan")
  for (const domain of report.plan.domains) lines.push(...planLines(domain))
  lines.push("", "Attempts")
  lines.push(...timeline(report.attempts))
  if (report.warnings.length > 0) {
    lines.push("", "Warnings", ...report.warnings.map((w) => `  ${w}`))
  }
  return lines.join("\n")
}

/** Every timeout the report carries, in its order, by its phase's name: `mailFrom` reads `mail-from`. */
const timeoutsText = (t: NonNullable<ExplainedHost["settings"]>["timeouts"]) =>
  Object.entries(t).map(([field, ms]) => `${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} ${duration(ms)}`)
    .join(", ")

const list = (items: ReadonlyArray<string>, empty: string) => (items.length === 0 ? empty : items.join(", "))

/**
 * A domain's MTA-STS outcome in one line.
 *
 * @since 0.1.0
 */
export const mtaSts = (plan: MtaStsPlan | null): string => {
  if (plan === null) return "not consulted (tls.mta-sts = disable, or an address literal)"
  switch (plan.status) {
    case "found": {
      const policy = plan.policy!
      return `policy ${policy.mode}, mx ${list(policy.mx, "none")} (${plan.source ?? "fetched"}${
        plan.id === null ? "" : `, id ${plan.id}`
      })`
    }
    case "none":
      return "no policy published"
    case "disabled":
      return "disabled"
    default:
      return `${plan.status}${plan.error === null ? "" : `: ${errorText(plan.error)}`}`
  }
}

/** `per-mx (host stage; mx=mx.example.net): concurrency 2, rate 100/1s` */
const limiterText = (l: ExplainedLimiter): string => {
  const key = Object.entries(l.key).map(([k, v]) => `${k}=${v === "" ? "\"\"" : v}`).join(", ")
  const limits = [
    ...(l.concurrency === null ? [] : [`concurrency ${l.concurrency}`]),
    ...(l.rate === null ? [] : [`rate ${l.rate.count}/${duration(l.rate.periodMs)}`])
  ].join(", ")
  return `${l.id} (${l.stage} stage${key === "" ? "" : `; ${key}`}): ${limits}`
}

const hostLines = (h: ExplainedHost): ReadonlyArray<string> => {
  const kind = h.implicit ? "implicit MX" : `preference ${h.preference}`
  const listed = h.mtaSts === null ? "" : `, ${h.mtaSts === "match" ? "listed in" : "not listed in"} the MTA-STS policy`
  const strategies = h.strategies === null ? "" : `; connection strategy ${h.strategies.connection}, TLS strategy ${h.strategies.tls}`
  const lines = [`  host ${h.host} (${kind}${listed}${strategies})`]
  if (h.error !== null && h.settings === null) {
    lines.push(`    not contacted: ${errorText(h.error)}`)
    return lines
  }
  lines.push(
    `    strategy ${h.strategy ?? "-"}; addresses ${h.error === null ? list(h.addresses, "none") : `none (${errorText(h.error)})`}`
  )
  if (h.truncated.length > 0) lines.push(`    cut by limits.multihomed: ${h.truncated.join(", ")}`)
  lines.push(`    source IPs: v4 ${list(h.sourceIps.v4, "(OS picks)")}; v6 ${list(h.sourceIps.v6, "(OS picks)")}`)
  if (h.settings !== null) {
    const s = h.settings
    const delay = s.connectionAttemptDelayMs === null
      ? "one address at a time"
      : `addresses raced ${duration(s.connectionAttemptDelayMs)} apart`
    lines.push(
      `    EHLO ${s.ehlo}; ${tlsPolicyText(s)}; ${delay}`,
      `    timeouts: ${timeoutsText(s.timeouts)}`
    )
  }
  for (const l of h.limiters) lines.push(`    limiter ${limiterText(l)}`)
  return lines
}

const domainLines = (d: ExplainedDomain): ReadonlyArray<string> => {
  const lines = [
    `${d.domain}  (${d.recipients.join(", ")})`,
    `  route: ${routeText(d.route)}`,
    `  strategies: route ${d.strategies.route}, TLS ${d.strategies.tls}, schedule ${d.strategies.schedule}`,
    `  limits: mx ${d.limits.mx}, multihomed ${d.limits.multihomed}`,
    `  MTA-STS: ${mtaSts(d.mtaSts)}; timeout ${duration(d.mtaStsTimeoutMs)}`
  ]
  for (const l of d.limiters) lines.push(`  limiter ${limiterText(l)}`)
  if (d.limiters.length > 0 || d.hosts.some((h) => h.limiters.length > 0)) {
    lines.push(`  limiter-wait: ${duration(d.limiterWaitMs)} (then deferred)`)
  }
  if (d.error !== null) {
    lines.push(`  no delivery possible: ${errorText(d.error)}`)
  }
  if (d.mx.length > 0 || d.hosts.length > 0) {
    lines.push(
      `  MX records: ${d.mx.length === 0 ? "none (the domain is its own host)" : d.mx.map((r) => `${r.priority} ${r.exchange}`).join(", ")}`,
      `  hosts kept: ${list(d.hosts.map((h) => h.host), "none")}`
    )
  }
  if (d.dropped.length > 0) lines.push(`  dropped by limits.mx: ${d.dropped.join(", ")}`)
  for (const h of d.hosts) lines.push(...hostLines(h))
  return lines
}

/**
 * The readable form of a plan.
 *
 * @since 0.1.0
 */
export const explain = (
  report: ExplainReport,
  request: { readonly from: string; readonly recipients: ReadonlyArray<string>; readonly retryNum: number }
): string => {
  const sender = request.from === "" ? "<>" : request.from
  const n = request.recipients.length
  const lines: Array<string> = [
    `Plan for ${n} recipient${n === 1 ? "" : "s"} from ${sender}, retry_num ${request.retryNum} (nothing is sent)`,
    `Configuration layout: ${report.layout}`
  ]
  if (report.limiters.length > 0) {
    // Counted once for the message, however many domains: said once, before them.
    const waits = report.domains.map((d) => d.limiterWaitMs)
    lines.push("", "Message limiters (one count for the whole message, before any domain):")
    for (const l of report.limiters) lines.push(`  limiter ${limiterText(l)}`)
    lines.push(`  limiter-wait: ${duration(Math.min(...waits))} (the shortest of its domains'; then every recipient deferred)`)
  }
  for (const d of report.domains) lines.push("", ...domainLines(d))
  if (report.warnings.length > 0) lines.push("", "Warnings", ...report.warnings.map((w) => `  ${w}`))
  return lines.join("\n")
}
