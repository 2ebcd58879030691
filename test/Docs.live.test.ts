import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { renderApiPages } from "../scripts/api-docs.mjs"

// The API reference (docs/api) is @effect/docgen's rendering of the public modules' doc comments, and docgen
// type-checks and runs every `@example` on the way: this runs it as `npm run docs` does (a process, hence the live
// project) and fails when a committed page differs, or when an example no longer compiles or its assertions fail.
const root = path.resolve(import.meta.dirname, "..")
const dir = path.join(root, "docs", "api")

describe("the API reference", () => {
  it("docs/api is what docgen generates from the public modules (npm run docs)", async () => {
    const pages = await renderApiPages(root)
    expect(Object.keys(pages)).toContain("Transport.md")
    const committed = Object.fromEntries(
      fs.readdirSync(dir).sort().map((name) => [name, fs.readFileSync(path.join(dir, name), "utf8")])
    )
    expect(Object.keys(committed)).toEqual(Object.keys(pages).sort())
    for (const [name, content] of Object.entries(pages)) expect(committed[name], `docs/api/${name}`).toBe(content)
  }, 300_000) // about 20 s of CPU (docgen, tsc over the examples, tsx); far more wall time on a shared machine
})
