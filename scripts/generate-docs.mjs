#!/usr/bin/env node
// Writes the reference pages generated from the code (run after `npm run build`):
//   docs/reference/configuration.md   from the configuration key table (OutboundConfig.renderReference)
// test/Docs.test.ts fails when a committed page differs from what this would write.
import fs from "node:fs"
import path from "node:path"
import { fileURLToPath } from "node:url"

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
const { renderReference } = await import(new URL("../dist/OutboundConfig.js", import.meta.url).href)
const file = path.join(root, "docs", "reference", "configuration.md")
fs.mkdirSync(path.dirname(file), { recursive: true })
fs.writeFileSync(file, renderReference())
console.log(`wrote ${path.relative(root, file)}`)
