#!/usr/bin/env node
// Writes the reference pages generated from the code (`npm run docs`; it builds dist/ first, as this script does):
//   docs/reference/configuration.md   from the configuration key table (OutboundConfig.renderReference)
//   docs/reference/report.schema.json the JSON report's schema, from DeliveryReport's Schema definitions
//   docs/reference/plan.schema.json   the plan's (`smtp-transport plan --json`), from ExplainReport's
//   docs/api/*.md                     the API reference, by @effect/docgen from the public modules' doc comments
//                                     (scripts/api-docs.mjs; every `@example` type-checked and run), and
//   docs/api/.digest.json             what those pages were generated from (the tree's digest, Node's version)
// test/Docs.test.ts and test/Docs.live.test.ts fail when a committed page differs from what this would write.
import { execFileSync } from "node:child_process"
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"
import { inputsDigest, record, recordFile, renderApiPages } from "./api-docs.mjs"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
// The tree the pages are made from, read before anything runs; then dist/ built from it (`tsc -b`: half a second
// when it is current), whatever called this script: docgen runs the examples against dist/, and the record below
// vouches for them.
const inputs = inputsDigest(root)
const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc")
execFileSync(process.execPath, [tsc, "-b", "tsconfig.build.json"], { cwd: root, stdio: "inherit" })
const dist = (module) => import(new URL(`../dist/${module}.js`, import.meta.url).href)
const { renderReference } = await dist("OutboundConfig")
const { pages } = await dist("internal/reportSchema")

const write = (dir, entries) => {
  fs.mkdirSync(path.join(root, dir), { recursive: true })
  for (const [name, content] of entries) {
    fs.writeFileSync(path.join(root, dir, name), content)
    console.log(`wrote ${dir}/${name}`)
  }
}

write("docs/reference", [["configuration.md", renderReference()], ...Object.entries(pages())])

const api = await renderApiPages(root)
// A module that is gone takes its page with it.
for (const name of fs.existsSync(path.join(root, "docs/api")) ? fs.readdirSync(path.join(root, "docs/api")) : []) {
  if (!(name in api) && name !== recordFile) {
    fs.rmSync(path.join(root, "docs/api", name))
    console.log(`removed docs/api/${name}`)
  }
}
write("docs/api", Object.entries(api))
// Written last, after docgen succeeded (its examples compiled and ran): test/Docs.live.test.ts trusts these pages
// without running docgen again only while the tree is the one recorded here.
write("docs/api", [[recordFile, record(inputs, api)]])
