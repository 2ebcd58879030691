import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Schema, TestClock } from "effect"
import * as fs from "node:fs"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script } from "../src/ConnectorTest.js"
import * as DeliveryReport from "../src/DeliveryReport.js"
import * as Dns from "../src/Dns.js"
import { pages } from "../src/internal/reportSchema.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as Transport from "../src/Transport.js"

// The reference pages are generated from the code (scripts/generate-docs.mjs, `npm run docs`): a committed page
// that differs from what the code generates is stale.
const committed = (name: string) => fs.readFileSync(new URL(`../docs/reference/${name}`, import.meta.url), "utf8")

describe("generated documentation", () => {
  it("docs/reference/configuration.md is what the key table generates", () => {
    expect(committed("configuration.md")).toBe(OutboundConfig.renderReference())
  })

  it("docs/reference/*.schema.json are what the report's Schema definitions generate", () => {
    for (const [name, content] of Object.entries(pages())) expect(committed(name)).toBe(content)
  })
})

describe("the report's Schemas describe the reports", () => {
  const layers = Layer.mergeAll(
    Layer.orDie(OutboundConfig.layerFromText(`
[queue.outbound]
hostname = "'client.test'"
[queue.outbound.tls]
mta-sts = "disable"
`)),
    Dns.layerTest({
      "a.test": { mx: [{ exchange: "mx1.a.test", priority: 10 }, { exchange: "mx2.a.test", priority: 20 }] },
      "mx1.a.test": { a: ["192.0.2.1"], aaaa: ["2001:db8::1"] },
      "mx2.a.test": { a: ["192.0.2.2"] }
    }),
    ConnectorTest.layer({
      "192.0.2.1": { script: [Script.reply("421 busy"), Script.expect("QUIT"), Script.reply("221 bye")] },
      "192.0.2.2": {
        script: [
          Script.reply("220 hi"),
          Script.expect("EHLO client.test"),
          Script.reply("250 hi"),
          Script.expect(/^MAIL FROM:/),
          Script.reply("250 ok"),
          Script.expect("RCPT TO:<one@a.test>"),
          Script.reply("250 ok"),
          Script.expect("RCPT TO:<two@a.test>"),
          Script.reply("550 5.1.1 no"),
          Script.expect("DATA"),
          Script.reply("354 go"),
          Script.expectData,
          Script.reply("250 queued"),
          Script.expect("QUIT"),
          Script.reply("221 bye")
        ]
      }
    }),
    PolicyCache.layer,
    MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" }))
  )
  const request: Transport.DeliveryRequest = {
    message: "Subject: hi\r\n\r\nhello\r\n",
    sender: "s@origin.test",
    recipients: ["one@a.test", "two@a.test"]
  }

  it.effect("a delivery's report, through JSON, decodes as a DeliveryReport", () =>
    Effect.gen(function*() {
      const fiber = yield* Effect.fork(Transport.deliver(request))
      yield* TestClock.adjust(Duration.minutes(30))
      const report = yield* Fiber.join(fiber)
      // Failed and cancelled attempts, a refusal, a delivery: most of the report's variants in one.
      expect(report.recipients.map((r) => r.status)).toEqual(["delivered", "failed"])
      const decoded = yield* Schema.decodeUnknown(DeliveryReport.DeliveryReport)(JSON.parse(JSON.stringify(report)))
      expect(decoded).toEqual(report)
    }).pipe(Effect.provide(layers)))

  it.effect("a plan, through JSON, decodes as an ExplainReport", () =>
    Effect.gen(function*() {
      const plan = yield* Transport.explain(request)
      const decoded = yield* Schema.decodeUnknown(DeliveryReport.ExplainReport)(JSON.parse(JSON.stringify(plan)))
      expect(decoded).toEqual(plan)
    }).pipe(Effect.provide(layers)))
})
