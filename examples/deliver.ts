/**
 * The README's "Use it as a library" example, as an application has it once the package is installed (this copy
 * imports the sources, so that the project typechecks it). test/Package.test.ts packs the library, installs it in a
 * fresh project with the README's install line, and runs this file there against servers on loopback.
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
})

program.pipe(
  Effect.provide(Layer.mergeAll(
    OutboundConfig.layer("/etc/effect-smtp-transport/outbound.toml"),
    Transport.layer({ dns: { servers: ["127.0.0.1:53"] } })
  )),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
