#!/usr/bin/env node
// Writes the reference pages generated from the code (run after `npm run build`, or through `npm run docs`):
//   docs/reference/configuration.md   from the configuration key table (OutboundConfig.renderReference)
//   docs/reference/report.schema.json the JSON report's schema, from DeliveryReport's Schema definitions
//   docs/reference/plan.schema.json   the plan's (`smtp-transport plan --json`), from ExplainReport's
// test/Docs.test.ts fails when a committed page differs from what this would write.
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const dist = (module) => import(new URL(`../dist/${module}.js`, import.meta.url).href)
const { renderReference } = await dist("OutboundConfig")
const { pages } = await dist("internal/reportSchema")
const dir = path.join(root, "docs", "reference")
fs.mkdirSync(dir, { recursive: true })
for (const [name, content] of [["configuration.md", renderReference()], ...Object.entries(pages())]) {
  fs.writeFileSync(path.join(dir, name), content)
  console.log(`wrote docs/reference/${name}`)
}
