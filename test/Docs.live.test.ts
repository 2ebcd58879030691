import { describe, expect, it } from "@effect/vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { inputsDigest, pagesDigest, recordFile, renderApiPages } from "../scripts/api-docs.mjs"

// The API reference (docs/api) is @effect/docgen's rendering of the public modules' doc comments, and docgen
// type-checks and runs every `@example` on the way. `npm run docs` records beside the pages what they were generated
// from (docs/api/.digest.json: a digest of every file docgen's output depends on, Node's version, and the pages'
// own digest). When that record matches this tree, this Node and the committed pages, they are docgen's output for
// exactly these inputs, its examples compiled and run, and docgen is not run again (it costs about 15 s of CPU, a
// quarter of the suite's critical path on two cores). Otherwise docgen runs, as `npm run docs` does (a process,
// hence the live project), and the test fails when a committed page differs, when an example no longer compiles or
// its assertions fail, or, the pages being right, when the record is stale (so that the next run need not run it).
const root = path.resolve(import.meta.dirname, "..")
const dir = path.join(root, "docs", "api")

interface DigestRecord {
  readonly node: string
  readonly inputs: string
  readonly pages: string
}

const readRecord = (): DigestRecord | null => {
  const file = path.join(dir, recordFile)
  return fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) as DigestRecord : null
}

describe("the API reference", () => {
  it("docs/api is what docgen generates from the public modules (npm run docs)", async () => {
    const committed: { [name: string]: string } = Object.fromEntries(
      fs.readdirSync(dir).filter((name) => name !== recordFile).sort()
        .map((name) => [name, fs.readFileSync(path.join(dir, name), "utf8")])
    )
    const record = readRecord()
    const inputs = inputsDigest(root)
    if (
      record !== null && record.node === process.version && record.inputs === inputs &&
      record.pages === pagesDigest(committed)
    ) return
    const pages = await renderApiPages(root)
    expect(Object.keys(pages)).toContain("Transport.md")
    expect(Object.keys(committed)).toEqual(Object.keys(pages).sort())
    for (const [name, content] of Object.entries(pages)) expect(committed[name], `docs/api/${name}`).toBe(content)
    // The pages are right but the record does not say so: `npm run docs` writes it (on another Node, docgen runs
    // every time, and the record is left alone).
    if (record === null || record.node === process.version) {
      expect(record?.inputs, `docs/api/${recordFile} is stale: run npm run docs`).toBe(inputs)
      expect(record?.pages, `docs/api/${recordFile} is stale: run npm run docs`).toBe(pagesDigest(committed))
    }
  }, 300_000) // docgen: about 15 s of CPU (tsc over the examples, tsx); far more wall time on a shared machine
})
