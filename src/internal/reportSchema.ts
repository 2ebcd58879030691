/**
 * The JSON Schemas of the report and of the plan, generated from their `Schema` definitions: the pages
 * `docs/reference/*.schema.json` (scripts/generate-docs.mjs writes them, test/Docs.test.ts checks them).
 *
 * @internal
 */
import * as JSONSchema from "effect/JSONSchema"
import type * as Schema from "effect/Schema"
import { DeliveryReport, ExplainReport } from "../DeliveryReport.js"

const render = <A, I>(schema: Schema.Schema<A, I>) => `${JSON.stringify(JSONSchema.make(schema), null, 2)}\n`

/** File name under `docs/reference/` → content. @internal */
export const pages = (): Readonly<Record<string, string>> => ({
  "report.schema.json": render(DeliveryReport),
  "plan.schema.json": render(ExplainReport)
})
