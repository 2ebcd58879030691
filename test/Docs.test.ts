import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as OutboundConfig from "../src/OutboundConfig.js"

// The reference pages are generated from the code (scripts/generate-docs.mjs, `npm run docs`): a committed page
// that differs from what the code generates is stale.
describe("generated documentation", () => {
  it("docs/reference/configuration.md is what the key table generates", () => {
    const committed = fs.readFileSync(new URL("../docs/reference/configuration.md", import.meta.url), "utf8")
    expect(committed).toBe(OutboundConfig.renderReference())
  })
})
