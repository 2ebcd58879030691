import { describe, expect, it } from "@effect/vitest"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { renderApiPages } from "../scripts/api-docs.mjs"

// The API reference (docs/api) is @effect/docgen's rendering of the public modules' doc comments, and docgen
// type-checks and runs every `@example` on the way: this runs it as `npm run docs` does (a process, hence the live
// project) and fails when a committed page differs, or when an example no longer compiles or its assertions fail.
const root = path.resolve(import.meta.dirname, "..")
const dir = path.join(root, "docs", "api")

/**
 * Everything docgen's output and its examples' outcome depend on: every file under src/ (docgen parses the public
 * modules, and the examples import the package, built from src/ into dist/ with tsconfig.build.json, internals
 * included), the configuration it reads (docgen.json, tsconfig.json, package.json), the installed tools and
 * libraries (package-lock.json, as `npm ci` installs it), the script that runs it and Node's version.
 */
const inputsDigest = (): string => {
  const hash = crypto.createHash("sha256")
  const add = (name: string, content: string | Buffer) => hash.update(`${name}\0${content.length}\0`).update(content)
  const walk = (rel: string): ReadonlyArray<string> =>
    fs.readdirSync(path.join(root, rel), { withFileTypes: true })
      .flatMap((e) => e.isDirectory() ? walk(path.join(rel, e.name)) : [path.join(rel, e.name)])
  for (const file of [...walk("src")].sort()) add(file, fs.readFileSync(path.join(root, file)))
  const config = ["docgen.json", "tsconfig.json", "tsconfig.build.json", "package.json", "package-lock.json"]
  for (const file of [...config, "scripts/api-docs.mjs"]) add(file, fs.readFileSync(path.join(root, file)))
  add("node", process.version)
  return hash.digest("hex")
}

/**
 * docgen's pages for the tree as it is, from a cache in node_modules/.cache when docgen already ran on the same
 * inputs (docgen is about 15 s of CPU, examples included; the pages and the examples' outcome are a function of the
 * inputs above). A fresh clone, as CI has, or any change to those inputs runs docgen again; only a successful run is
 * kept.
 */
const renderCached = async (): Promise<Record<string, string>> => {
  const cache = path.join(root, "node_modules", ".cache", "effect-smtp-transport", "api-docs")
  const entry = path.join(cache, `${inputsDigest()}.json`)
  if (fs.existsSync(entry)) return JSON.parse(fs.readFileSync(entry, "utf8")) as Record<string, string>
  const pages = await renderApiPages(root)
  fs.rmSync(cache, { recursive: true, force: true })
  fs.mkdirSync(cache, { recursive: true })
  fs.writeFileSync(`${entry}.tmp`, JSON.stringify(pages))
  fs.renameSync(`${entry}.tmp`, entry)
  return pages
}

describe("the API reference", () => {
  it("docs/api is what docgen generates from the public modules (npm run docs)", async () => {
    const pages = await renderCached()
    expect(Object.keys(pages)).toContain("Transport.md")
    const committed = Object.fromEntries(
      fs.readdirSync(dir).sort().map((name) => [name, fs.readFileSync(path.join(dir, name), "utf8")])
    )
    expect(Object.keys(committed)).toEqual(Object.keys(pages).sort())
    for (const [name, content] of Object.entries(pages)) expect(committed[name], `docs/api/${name}`).toBe(content)
  }, 300_000) // about 15 s of CPU (docgen, tsc over the examples, tsx); far more wall time on a shared machine
})
