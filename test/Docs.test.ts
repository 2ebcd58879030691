import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Schema, TestClock } from "effect"
import * as fs from "node:fs"
import ts from "typescript"
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

// The public modules are the package's exports (the root and one per module; `./internal/*` is closed).
const publicModules = (): ReadonlyArray<string> => {
  const manifest = JSON.parse(fs.readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    exports: Record<string, unknown>
  }
  return Object.entries(manifest.exports)
    .filter(([, target]) => target !== null)
    .map(([specifier]) => specifier === "." ? "src/index.ts" : `src/${specifier.slice(2)}.ts`)
}

/** The names a module exports at its top level, each with the doc comment right before its declaration. */
const exportedDocs = (file: string, text: string): ReadonlyArray<{ readonly name: string; readonly doc: string }> => {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true)
  const docBefore = (node: ts.Node) =>
    (ts.getLeadingCommentRanges(text, node.getFullStart()) ?? [])
      .filter((range) => text.startsWith("/**", range.pos))
      .map((range) => text.slice(range.pos, range.end))
      .at(-1) ?? ""
  return source.statements.flatMap((statement) => {
    if (ts.isExportDeclaration(statement)) {
      // `export { a, b } from`: docgen documents each name by its own comment; `export * as M from`: by the statement's.
      return statement.exportClause !== undefined && ts.isNamedExports(statement.exportClause)
        ? statement.exportClause.elements.map((element) => ({ name: element.name.text, doc: docBefore(element) }))
        : [{ name: statement.getText(source), doc: docBefore(statement) }]
    }
    const exported = ts.canHaveModifiers(statement) &&
      (ts.getModifiers(statement) ?? []).some((modifier) => modifier.kind === ts.SyntaxKind.ExportKeyword)
    if (!exported) return []
    const name = ts.isVariableStatement(statement)
      ? statement.declarationList.declarations.map((declaration) => declaration.name.getText(source)).join(", ")
      : (statement as ts.DeclarationStatement).name?.getText(source) ?? statement.getText(source).slice(0, 60)
    return [{ name, doc: docBefore(statement) }]
  })
}

/** What lacks `@since` or `@category` among a module's exports. */
const untagged = (file: string, text: string): ReadonlyArray<string> =>
  exportedDocs(file, text).flatMap(({ doc, name }) =>
    ["@since", "@category"].filter((tag) => !new RegExp(`${tag} \\S`).test(doc)).map((tag) => `${file}: ${name} lacks ${tag}`)
  )

describe("the documentation's examples", () => {
  it("docs/testing.md's complete example is examples/testing.test.ts, which the unit project runs", () => {
    const page = fs.readFileSync(new URL("../docs/testing.md", import.meta.url), "utf8")
    const section = page.slice(page.indexOf("## A complete example"))
    const shown = /```ts\n([\s\S]*?)```/.exec(section)?.[1]
    const example = fs.readFileSync(new URL("../examples/testing.test.ts", import.meta.url), "utf8")
    const code = example.slice(example.indexOf("import "))
    // The page shows the import an application writes; the file imports the sources.
    const imports = /^\/\/ In your project: (.*)\n(.*)\n/m.exec(code)
    expect(imports?.[2]).toMatch(/from "\.\.\/src\/index\.js"$/)
    expect(shown).toBe(code.replace(imports![0], `${imports![1]}\n`))
  })
})

describe("the public modules' doc comments", () => {
  // docgen (the API reference, Docs.live.test.ts) requires `@since`; `@category` is this project's rule: it is what
  // groups a module's page.
  it("every export of a public module has @since and @category", () => {
    const modules = publicModules()
    expect(modules).toContain("src/Transport.ts")
    const read = (file: string) => fs.readFileSync(new URL(`../${file}`, import.meta.url), "utf8")
    expect(modules.flatMap((file) => untagged(file, read(file)))).toEqual([])
  })

  // The outbox's module loads its optional peers (@effect/cluster, @effect/workflow, @effect/sql): it is a subpath
  // export only, so that the root never loads them.
  const outsideIndex = ["src/Outbox.ts"]

  it("every module in src/ is exported by the package and by its index, but the outbox's by the package only", () => {
    const modules = fs.readdirSync(new URL("../src", import.meta.url))
      .filter((f) => f.endsWith(".ts") && f !== "index.ts" && f !== "bin.ts")
      .map((f) => `src/${f}`)
    const index = fs.readFileSync(new URL("../src/index.ts", import.meta.url), "utf8")
    expect(modules.filter((m) => !publicModules().includes(m))).toEqual([])
    const inIndex = (m: string) => index.includes(`from "./${m.slice(4, -3)}.js"`)
    expect(modules.filter((m) => !outsideIndex.includes(m) && !inIndex(m))).toEqual([])
    expect(outsideIndex.filter(inIndex)).toEqual([])
  })

  it("no module but the outbox's imports the outbox's packages", () => {
    const files = (dir: string): Array<string> =>
      fs.readdirSync(new URL(`../${dir}`, import.meta.url), { withFileTypes: true }).flatMap((d) =>
        d.isDirectory() ? files(`${dir}/${d.name}`) : d.name.endsWith(".ts") ? [`${dir}/${d.name}`] : []
      )
    const outboxPackages = /from "@effect\/(cluster|workflow|sql|sql-pg|sql-sqlite-node|rpc|experimental)[/"]/
    const importing = files("src").filter((f) =>
      outboxPackages.test(fs.readFileSync(new URL(`../${f}`, import.meta.url), "utf8"))
    )
    expect(importing.filter((f) => f !== "src/Outbox.ts" && !f.startsWith("src/internal/outbox/") && f !== "src/cli/outbox.ts"))
      .toEqual([])
  })

  it("the check reads every form of export", () => {
    const tags = "/**\n * @since 1.0.0\n * @category models\n */\n"
    const text = [
      `${tags}export const tagged = 1`,
      "/** @since 1.0.0 */\nexport type Untagged = string",
      "export {\n  ab,\n  /** @category x */\n  cd\n} from \"./x.js\"",
      `${tags}export * as M from "./m.js"`,
      "export * as N from \"./n.js\"",
      "/** not the export's */\nconst hidden = 1\nexport class C {}",
      "const internal = hidden"
    ].join("\n\n")
    expect(untagged("x.ts", text)).toEqual([
      "x.ts: Untagged lacks @category",
      "x.ts: ab lacks @since",
      "x.ts: ab lacks @category",
      "x.ts: cd lacks @since",
      "x.ts: export * as N from \"./n.js\" lacks @since",
      "x.ts: export * as N from \"./n.js\" lacks @category",
      "x.ts: C lacks @since",
      "x.ts: C lacks @category"
    ])
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

  it("docs/cli.md's JSON report decodes as a DeliveryReport, with no field missing or extra", () => {
    const page = fs.readFileSync(new URL("../docs/cli.md", import.meta.url), "utf8")
    const section = page.slice(page.indexOf("## The JSON report"))
    const block = /```json\n([\s\S]*?)```/.exec(section)
    expect(block, "a json block under \"The JSON report\"").not.toBeNull()
    const example = JSON.parse(block![1]!) as unknown
    // A field the report has and the example lacks fails the decoding; one the example has and the report has not,
    // the excess-property check.
    const decoded = Schema.decodeUnknownSync(DeliveryReport.DeliveryReport, { onExcessProperty: "error" })(example)
    expect(JSON.parse(JSON.stringify(decoded))).toEqual(example)
  })

  it.effect("a plan, through JSON, decodes as an ExplainReport", () =>
    Effect.gen(function*() {
      const plan = yield* Transport.explain(request)
      const decoded = yield* Schema.decodeUnknown(DeliveryReport.ExplainReport)(JSON.parse(JSON.stringify(plan)))
      expect(decoded).toEqual(plan)
    }).pipe(Effect.provide(layers)))
})
