/**
 * docs/testing.md's complete example, as a test suite has it (this copy imports the sources). The unit project runs
 * it; test/Docs.test.ts checks that the page shows this file, with the package's import.
 */
import { expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, TestClock } from "effect"
// In your project: import { ConnectorTest, Dns, MtaSts, OutboundConfig, PolicyCache, Transport } from "effect-smtp-transport"
import { ConnectorTest, Dns, MtaSts, OutboundConfig, PolicyCache, Transport } from "../src/index.js"

const { Script } = ConnectorTest

// Everything a delivery needs, in memory: the configuration, DNS zones, scripted SMTP peers, MTA-STS.
const TestLayers = Layer.mergeAll(
  Layer.orDie(OutboundConfig.layerFromText(`
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "ipv6_then_ipv4"
`)),
  Dns.layerTest({
    "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }] },
    "mx1.a.test": { aaaa: ["2001:db8::1"], a: ["192.0.2.1"] }
  }),
  ConnectorTest.layer({
    "2001:db8::1": { connect: "stall" }, // the IPv6 address never answers
    "192.0.2.1": {
      script: [
        Script.reply("220 mx.test ESMTP"),
        Script.expect("EHLO client.test"), Script.reply("250 mx.test"),
        Script.expect(/^MAIL FROM:<sender@origin\.test>/), Script.reply("250 ok"),
        Script.expect(/^RCPT TO:<rcpt@a\.test>/), Script.reply("250 ok"),
        Script.expect("DATA"), Script.reply("354 go ahead"), Script.expectData, Script.reply("250 queued"),
        Script.expect("QUIT"), Script.reply("221 bye")
      ]
    }
  }),
  PolicyCache.layer,
  MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" })) // no domain publishes a policy
)

it.effect("races IPv4 in at 250 ms when IPv6 never answers", () =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(Transport.deliver({
      message: "Subject: hi\r\n\r\nhello\r\n",
      sender: "sender@origin.test",
      recipients: ["rcpt@a.test"]
    }))
    yield* TestClock.adjust(Duration.minutes(30)) // virtual time: far enough for every timeout
    const report = yield* Fiber.join(fiber)
    expect(report.recipients.map((r) => [r.address, r.status])).toEqual([["rcpt@a.test", "delivered"]])
    expect(report.attempts.map((a) => [a.ip, a.startMs, a.outcome])).toEqual([
      ["2001:db8::1", 0, "cancelled"],
      ["192.0.2.1", 250, "completed"]
    ])
  }).pipe(Effect.provide(TestLayers)))
