/**
 * `smtp-transport plan`: what `send` would do, without sending; DNS is queried, no SMTP connection is made.
 *
 * @since 0.1.0
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import type { ExplainReport } from "../DeliveryReport.js"
import * as Transport from "../Transport.js"
import type { OptionSpec, Parsed } from "./args.js"
import { CliExit, ExitCode } from "./exit.js"
import * as Format from "./format.js"
import type { CommandHelp } from "./help.js"
import { common, environment, invalidRequest, readCommon, requireRecipients } from "./options.js"

/**
 * @since 0.1.0
 */
export const options: ReadonlyArray<OptionSpec> = [
  ...common,
  { name: "json", value: null, description: "Print the plan as JSON on standard output instead of the summary." }
]

/**
 * @since 0.1.0
 */
export const help: CommandHelp = {
  name: "plan",
  summary: "explain a delivery without sending anything.",
  operands: "<recipient>...",
  description: [
    "Shows what send would do with the same options: the MX records, the hosts kept and dropped by the limits, " +
    "the MTA-STS policy, and for every host its strategy, addresses, source IPs, EHLO name, STARTTLS policy and " +
    "timeouts. DNS is queried; no SMTP connection is made."
  ],
  options,
  examples: [
    [
      "smtp-transport plan --config outbound.toml --from alerts@example.org alice@example.com",
      "The plan for alice@example.com under outbound.toml."
    ],
    [
      "smtp-transport plan --retry-num=2 --dns=192.0.2.53 --json alice@example.com",
      "The plan of a third attempt, resolved by another DNS server, as JSON."
    ]
  ],
  exitStatus: [
    [0, "Every domain has a host to deliver to."],
    [75, "EX_TEMPFAIL: a domain has no host to deliver to for now (a DNS failure, say): send would defer."],
    [69, "EX_UNAVAILABLE: a domain has no host to deliver to, for good (no such domain, a null MX): send would fail."],
    [64, "EX_USAGE: the command line is wrong (unknown option, bad value, invalid address, no recipient)."],
    [66, "EX_NOINPUT: the --tls-ca file cannot be read."],
    [78, "EX_CONFIG: the configuration file cannot be used; every problem is printed."],
    [70, "EX_SOFTWARE: a bug; the cause is printed."]
  ]
}

/**
 * The status a plan gives, as `send` would end: a domain without a host that has an address and may be tried is
 * undeliverable; permanently (69) when every error met on the way is permanent, for now (75) otherwise. Any
 * permanent domain wins, as a failure wins over a deferral in a delivery.
 *
 * @since 0.1.0
 */
export const ofPlan = (report: ExplainReport): { readonly code: number; readonly message: string | null } => {
  const permanent: Array<string> = []
  const temporary: Array<string> = []
  for (const domain of report.domains) {
    const deliverable = domain.hosts.some((h) => h.addresses.length > 0 && h.settings !== null)
    if (deliverable) continue
    const errors = [domain.error, ...domain.hosts.map((h) => h.error)].filter((e) => e !== null)
    // Hosts an enforced MTA-STS policy excludes are no permanent failure: the policy may change (RFC 8461 §5.1).
    const excluded = domain.hosts.some((h) => h.settings === null)
    ;(!excluded && errors.every((e) => e.permanent) ? permanent : temporary).push(domain.domain)
  }
  const say = (domains: ReadonlyArray<string>, outcome: string) =>
    `no host to deliver to for ${domains.join(", ")}: send would ${outcome}`
  const message = [
    permanent.length > 0 ? say(permanent, "fail") : null,
    temporary.length > 0 ? say(temporary, "defer") : null
  ].filter((m) => m !== null).join("; ")
  return permanent.length > 0
    ? { code: ExitCode.unavailable, message }
    : temporary.length > 0
    ? { code: ExitCode.tempFail, message }
    : { code: ExitCode.ok, message: null }
}

/**
 * Runs `plan` with its parsed command line.
 *
 * @since 0.1.0
 */
export const run = (parsed: Parsed): Effect.Effect<void, CliExit, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const opts = yield* readCommon(parsed)
    const recipients = parsed.positionals
    yield* requireRecipients("plan", recipients)
    const env = yield* environment(opts)
    const plan = yield* Transport.explain({
      message: "",
      sender: opts.from,
      recipients,
      attempt: { retryNum: opts.retryNum, lastError: opts.lastError }
    }).pipe(
      Effect.mapError(invalidRequest),
      Effect.provide(env.layer),
      Effect.provideService(Transport.TransportOptions, env.options)
    )
    yield* Console.log(
      opts.json ? JSON.stringify(plan, null, 2) : Format.explain(plan, { ...opts, recipients })
    )
    const outcome = ofPlan(plan)
    if (outcome.code !== ExitCode.ok) return yield* new CliExit(outcome)
  })
