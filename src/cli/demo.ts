/**
 * `smtp-transport demo` (what `npm start` runs): a complete delivery on loopback, inside this process. A DNS zone
 * and receiving SMTP servers are started; a message goes to three recipients through the real transport and the
 * live layers; the deferred recipient is retried as a queue would; every report is printed.
 *
 * - `mx1.example.test` has an IPv6 address that does not answer and an IPv4 address that does: Happy Eyeballs
 *   falls back to IPv4 after `connection-attempt-delay`.
 * - `bob@example.test` is greylisted: 451 on the first attempt, accepted a second later.
 * - `mx.slow.test` waits 2 seconds before its greeting, well inside `timeouts.greeting`.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import type { DeliveryReport } from "../DeliveryReport.js"
import * as OutboundConfig from "../OutboundConfig.js"
import * as Transport from "../Transport.js"
import { CliExit, ExitCode } from "./exit.js"
import * as Format from "./format.js"
import { dnsServer, type Silence, silentAddress, smtpPeer } from "./demoPeers.js"

/**
 * The configuration the demo runs with.
 *
 * @since 0.1.0
 */
export const config = `[queue.outbound]
hostname = "'demo.smtp-transport.test'"
# First attempt: IPv6 first, raced against IPv4 (RFC 8305 Happy Eyeballs). Retries: IPv4 only.
ip-strategy = [ { if = "retry_num == 0", then = "ipv6_then_ipv4" },
                { else = "ipv4_only" } ]
connection-attempt-delay = "250ms"

[queue.outbound.timeouts]
connect = "5s"
greeting = "5s"
`

const message = [
  "From: Demo <demo@sender.test>",
  "To: alice@example.test, bob@example.test, carol@slow.test",
  "Subject: Hello from effect-smtp-transport",
  "Message-ID: <demo@sender.test>",
  "",
  "This message was delivered by the smtp-transport demo, on loopback.",
  ""
].join("\r\n")

const sender = "demo@sender.test"
const recipients = ["alice@example.test", "bob@example.test", "carol@slow.test"] as const
const greylisted = "bob@example.test"

const zones = {
  "example.test": { mx: [{ exchange: "mx1.example.test", priority: 10 }] },
  "mx1.example.test": { aaaa: ["::1"], a: ["127.0.0.2"] },
  "slow.test": { mx: [{ exchange: "mx.slow.test", priority: 10 }] },
  "mx.slow.test": { a: ["127.0.0.3"] }
}

const silenceWords: { readonly [S in Silence]: string } = {
  silent: "does not answer (a listener that never accepts; its full accept queue drops every SYN)",
  refused: "refuses at once (nothing listens there: this system kept accepting, so a silent address was not possible)",
  unreachable: "is unreachable (IPv6 is not available on this system)"
}

/** The servers on one port, so that the transport's `port` option reaches all of them. */
const setUpOnce = Effect.gen(function*() {
  const mx1 = yield* smtpPeer({
    host: "127.0.0.2",
    port: 0,
    name: "mx1.example.test",
    greylist: { recipients: [greylisted], for: "1 second" }
  })
  const slow = yield* smtpPeer({ host: "127.0.0.3", port: mx1.port, name: "mx.slow.test", greetingDelay: "2 seconds" })
  const silence = yield* silentAddress("::1", mx1.port)
  const dns = yield* dnsServer(zones)
  return { port: mx1.port, mx1, slow, silence, dns: dns.server }
})

const setUp = Effect.gen(function*() {
  const attempt = Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    return yield* setUpOnce.pipe(Scope.extend(scope), Effect.tapError(() => Scope.close(scope, Exit.void)))
  })
  return yield* Effect.retry(attempt, {
    times: 4,
    // Another program took the port between two binds: try another one. A missing address will not come back.
    while: (error) => error.message.includes("EADDRINUSE")
  })
}).pipe(
  Effect.mapError((error) =>
    new CliExit({
      code: ExitCode.software,
      message: error.message.includes("EADDRNOTAVAIL")
        ? "the demo needs 127.0.0.2 and 127.0.0.3 on the loopback interface (Linux has all of 127.0.0.0/8; on " +
          "macOS: sudo ifconfig lo0 alias 127.0.0.2 up; sudo ifconfig lo0 alias 127.0.0.3 up): " + error.message
        : `cannot start the demo servers: ${error.message}`
    })
  )
)

const indent = (text: string, by = "  ") =>
  text.split("\n").map((line) => (line === "" ? line : by + line)).join("\n")

const status = (report: DeliveryReport, address: string) => report.recipients.find((r) => r.address === address)

/** What the first attempt showed, in words, from the report itself. */
const story = (report: DeliveryReport, silence: Silence): ReadonlyArray<string> => {
  const lines: Array<string> = []
  const v6 = report.attempts.find((a) => a.host === "mx1.example.test" && a.ip === "::1")
  const v4 = report.attempts.find((a) => a.host === "mx1.example.test" && a.ip === "127.0.0.2")
  if (v6 !== undefined && v4 !== undefined) {
    const after = v4.startMs - v6.startMs
    lines.push(
      silence === "silent"
        ? `mx1.example.test: [::1] did not answer; ${after} ms later Happy Eyeballs started 127.0.0.2, which won the race, and the IPv6 attempt was ${v6.outcome}.`
        : `mx1.example.test: [::1] ${v6.outcome === "failed" ? "failed at once" : v6.outcome}; 127.0.0.2 was tried ${after} ms after it and won.`
    )
  }
  const slow = report.attempts.find((a) => a.host === "mx.slow.test" && a.outcome === "completed")
  if (slow !== undefined) {
    lines.push(
      `mx.slow.test: the session took ${slow.durationMs} ms, 2 s of it waiting for the greeting (timeouts.greeting is 5s).`
    )
  }
  const bob = status(report, greylisted)
  if (bob !== undefined && bob.reply !== null) {
    lines.push(
      `${greylisted}: ${bob.status} with ${bob.reply.code} (greylisting); a queue retries it later with retry_num + 1.`
    )
  }
  return lines.map((line) => `- ${line}`)
}

const unexpected = (first: DeliveryReport, second: DeliveryReport): ReadonlyArray<string> => {
  const problems: Array<string> = []
  const expect = (report: DeliveryReport, address: string, wanted: string) => {
    const got = status(report, address)
    if (got?.status !== wanted) problems.push(`${address}: expected ${wanted}, got ${got?.status ?? "nothing"}`)
  }
  expect(first, "alice@example.test", "delivered")
  expect(first, greylisted, "deferred")
  expect(first, "carol@slow.test", "delivered")
  expect(second, greylisted, "delivered")
  return problems
}

/**
 * The demo; fails with the exit status when it does not go as it should.
 *
 * @since 0.1.0
 */
export const run: Effect.Effect<void, CliExit> = Effect.scoped(Effect.gen(function*() {
  const started = yield* Clock.currentTimeMillis
  const peers = yield* setUp
  const port = peers.port
  yield* Console.log(
    [
      "smtp-transport demo: a DNS zone and SMTP servers inside this process, on loopback only.",
      "",
      "Set-up",
      ...Format.table([
        ["DNS server", peers.dns, "example.test MX 10 mx1.example.test; slow.test MX 10 mx.slow.test"],
        ["mx1.example.test", `[::1]:${port}`, silenceWords[peers.silence]],
        ["", `127.0.0.2:${port}`, `smtp-server; greylists ${greylisted} with 451 for 1 s`],
        ["mx.slow.test", `127.0.0.3:${port}`, "smtp-server that waits 2 s before its greeting"]
      ]),
      `  (SMTP port ${port}: the transport's port option; real MX delivery uses 25)`,
      "",
      "Configuration",
      indent(config.trimEnd()),
      ""
    ].join("\n")
  )

  const configuration = yield* OutboundConfig.parse(config, "demo.toml").pipe(
    Effect.mapError((error) => new CliExit({ code: ExitCode.software, message: error.message }))
  )
  const layer = Layer.merge(
    Layer.succeed(OutboundConfig.OutboundConfig, configuration),
    Transport.layer({ dns: { servers: [peers.dns], timeout: "2 seconds" } })
  )
  const options = { ...(yield* Transport.TransportOptions), port }
  const deliver = (to: ReadonlyArray<string>, retryNum: number) =>
    Transport.deliver({ message, sender, recipients: to, attempt: { retryNum } }).pipe(
      Effect.provide(layer),
      Effect.provideService(Transport.TransportOptions, options),
      Effect.mapError((error) => new CliExit({ code: ExitCode.software, message: error.message }))
    )

  yield* Console.log(`Delivery 1 (retry_num 0): ${recipients.join(", ")}`)
  const first = yield* deliver(recipients, 0)
  const happened = story(first, peers.silence).map((line) => `  ${line}`)
  yield* Console.log([indent(Format.report(first)), "", "What happened", ...happened, ""].join("\n"))

  yield* Console.log("Waiting 1 s, as a queue would wait before retrying the deferred recipient.\n")
  yield* Effect.sleep("1 second")
  yield* Console.log(`Delivery 2 (retry_num 1, so ip-strategy is ipv4_only): ${greylisted}`)
  const second = yield* deliver([greylisted], 1)
  yield* Console.log(indent(Format.report(second)) + "\n")

  const problems = unexpected(first, second)
  const elapsed = (yield* Clock.currentTimeMillis) - started
  const received = [...peers.mx1.delivered, ...peers.slow.delivered].flatMap((d) => d.to)
  if (problems.length > 0) {
    return yield* new CliExit({
      code: ExitCode.software,
      message: ["the demo did not go as expected:", ...problems.map((p) => `  ${p}`)].join("\n")
    })
  }
  yield* Console.log(
    `Done in ${elapsed} ms: every recipient delivered (the servers received ${received.join(", ")}).\n` +
      "Next: smtp-transport send --help, smtp-transport plan --help."
  )
}))
