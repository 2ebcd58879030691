// The API reference: @effect/docgen (configured by docgen.json) renders one page per public module from its doc
// comments, after type-checking and running every `@example` against the source. `npm run docs` writes the pages to
// docs/api/ (scripts/generate-docs.mjs), and records in docs/api/.digest.json what they were made from (`record`);
// test/Docs.live.test.ts renders them again, and fails when they differ, unless that record shows the committed pages
// are docgen's for this very tree (then docgen has nothing new to say, and CI does not pay its 15 s of CPU).
//
// docgen runs in a scratch copy of the project root (links to src/ and node_modules/, copies of the configuration),
// not in the root itself: it writes its output, a Jekyll site scaffold and the examples it compiles under its
// `outDir`, and deletes `.ts.md` files there first, so two runs (the test and `npm run docs`) must not share one.
//
// The examples are compiled and run against the built package (dist/: its `.d.ts` and its JavaScript), as an
// application compiles and runs them, not against src/: docgen rewrites an example's `effect-smtp-transport/X` to
// `../../src/X` relative to `<outDir>/examples/`, so here `outDir` is one level deeper (`out/docgen`) and
// `out/src` links to dist/. Against src/, tsc type-checked the whole library again for five examples (8 of docgen's
// 19 s of CPU); against the declarations it checks the examples alone (3 s, most of it reading effect's
// declarations). dist/ must be built from the same tree: `npm run docs` and the live test project build it first.
// docgen still parses src/ itself (srcDir): the pages come from the doc comments and the source's types.
import { execFile } from "node:child_process"
import crypto from "node:crypto"
import fs from "node:fs"
import os from "node:os"
import path from "node:path"
import { promisify } from "node:util"

const run = promisify(execFile)

// docgen's pages open with a Jekyll front matter for its site theme (title, nav order), which its formatter mangles
// into a horizontal rule and a heading; the pages here are read on their own, so it is replaced by a title line.
const frontMatter = /^(?:---|\*\*\*)\n\ntitle: [^\n]*\nnav_order: \d+\nparent: Modules\n---\n/

const overview = (page) => {
  const match = /^## \S+ overview\n\n([\s\S]*?)\n\n/m.exec(page)
  return match === null ? "" : match[1].split("\n").join(" ")
}

/**
 * Runs docgen over the public modules of the project at `root` and returns the pages of docs/api, by file name:
 * `<Module>.md` for each module and `README.md`, the index.
 */
export const renderApiPages = async (root) => {
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), "docgen-"))
  try {
    for (const name of ["src", "node_modules", "tsconfig.json"]) {
      fs.symlinkSync(path.join(root, name), path.join(scratch, name))
    }
    if (!fs.existsSync(path.join(root, "dist", "index.d.ts"))) {
      throw new Error("dist/ is not built: the examples are compiled against it (npm run build)")
    }
    fs.mkdirSync(path.join(scratch, "out"))
    fs.symlinkSync(path.join(root, "dist"), path.join(scratch, "out", "src"))
    fs.copyFileSync(path.join(root, "package.json"), path.join(scratch, "package.json"))
    const config = { ...JSON.parse(fs.readFileSync(path.join(root, "docgen.json"), "utf8")), outDir: "out/docgen" }
    fs.writeFileSync(path.join(scratch, "docgen.json"), JSON.stringify(config, null, 2))
    const bin = path.join(root, "node_modules", ".bin")
    try {
      // docgen type-checks the examples with `tsc` and runs them with `tsx`, both found on PATH.
      await run(process.execPath, [path.join(root, "node_modules", "@effect", "docgen", "bin.cjs")], {
        cwd: scratch,
        env: { ...process.env, PATH: `${bin}${path.delimiter}${process.env.PATH ?? ""}` },
        maxBuffer: 16 * 1024 * 1024
      })
    } catch (error) {
      throw new Error(`docgen failed:\n${error.stdout ?? ""}${error.stderr ?? ""}`)
    }
    const modules = path.join(scratch, config.outDir, "modules")
    const pages = {}
    const index = []
    const files = fs.readdirSync(modules).filter((name) => name.endsWith(".ts.md")).sort()
    // The package's root module first, then the modules in alphabetical order.
    for (const file of [...files.filter((f) => f === "index.ts.md"), ...files.filter((f) => f !== "index.ts.md")]) {
      const module = file.slice(0, -".ts.md".length)
      const specifier = module === "index" ? "effect-smtp-transport" : `effect-smtp-transport/${module}`
      const page = fs.readFileSync(path.join(modules, file), "utf8")
      if (!frontMatter.test(page)) throw new Error(`docgen's page ${file} does not open with the expected front matter`)
      pages[`${module}.md`] = page.replace(frontMatter, `# \`${specifier}\`\n\n[API reference](README.md)\n`)
      index.push(`- [\`${specifier}\`](${module}.md): ${overview(page)}`)
    }
    pages["README.md"] = [
      "# API reference",
      "",
      "Generated from the doc comments of the public modules by `@effect/docgen` (`npm run docs`; do not edit).",
      "Every `@example` is type-checked and run when these pages are generated.",
      "",
      ...index,
      ""
    ].join("\n")
    return pages
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true })
  }
}

/** Where `npm run docs` records what docs/api was generated from (a dotfile: not a page). */
export const recordFile = ".digest.json"

// Names with `/` whatever the platform's separator, so that a digest made on one system matches on another.
const walk = (root, rel) =>
  fs.readdirSync(path.join(root, rel), { withFileTypes: true })
    .flatMap((e) => e.isDirectory() ? walk(root, `${rel}/${e.name}`) : [`${rel}/${e.name}`])

/**
 * A digest of everything docgen's output and its examples' outcome depend on: every file under src/ (docgen parses
 * the public modules, and the examples import the package, built from src/ into dist/ with tsconfig.build.json,
 * internals included), the configuration it reads (docgen.json, tsconfig.json, package.json), the installed tools
 * and libraries (package-lock.json, as `npm ci` installs it) and this script. Node's version is recorded beside it.
 */
export const inputsDigest = (root) => {
  const hash = crypto.createHash("sha256")
  // Each file's name and byte length before its bytes: no two trees hash the same bytes.
  const add = (name, content) => hash.update(`${name}\0${content.length}\0`).update(content)
  for (const file of walk(root, "src").sort()) add(file, fs.readFileSync(path.join(root, file)))
  const config = ["docgen.json", "tsconfig.json", "tsconfig.build.json", "package.json", "package-lock.json"]
  for (const file of [...config, "scripts/api-docs.mjs"]) add(file, fs.readFileSync(path.join(root, file)))
  return hash.digest("hex")
}

/** A digest of a set of pages, by file name. */
export const pagesDigest = (pages) => {
  const hash = crypto.createHash("sha256")
  for (const name of Object.keys(pages).sort()) {
    hash.update(`${name}\0${Buffer.byteLength(pages[name])}\0`).update(pages[name])
  }
  return hash.digest("hex")
}

/**
 * What `npm run docs` writes beside the pages it wrote: the tree they came from (`inputs`, taken before the build and
 * docgen ran, so that an edit saved meanwhile is not vouched for), Node's version, the pages.
 */
export const record = (inputs, pages) =>
  JSON.stringify({ node: process.version, inputs, pages: pagesDigest(pages) }, null, 2) + "\n"
