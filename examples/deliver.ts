/**
 * Embedding the transport in an Effect program: load the configuration, deliver, read the report.
 * Run after `npm run build` with: node --experimental-strip-types examples/deliver.ts (Node ≥ 22.6), or compile it.
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
// In your project: import { OutboundConfig, Transport } from "effect-smtp-transport"
import { OutboundConfig, Transport } from "../src/index.js"

const program = Effect.gen(function*() {
  const report = yield* Transport.deliver({
    message: "From: me@example.org\r\nTo: you@example.net\r\nSubject: hello\r\n\r\nHi!\r\n",
    sender: "me@example.org",
    recipients: ["you@example.net"],
    attempt: { retryNum: 0 }
  })
  for (const r of report.recipients) {
    yield* Console.log(`${r.address}: ${r.status} ${r.reply?.code ?? ""} ${r.error?.message ?? ""}`)
  }
  for (const a of report.attempts) {
    yield* Console.log(`  ${a.host} ${a.ip} from ${a.source ?? "-"}: ${a.outcome} at ${a.phase}`)
  }
})

program.pipe(
  Effect.provide(Layer.mergeAll(
    OutboundConfig.layer("/etc/effect-smtp-transport/outbound.toml"),
    Transport.layer({ dns: { servers: ["127.0.0.1:53"] } })
  )),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
