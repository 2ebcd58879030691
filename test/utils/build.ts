import { execFileSync } from "node:child_process"
import * as path from "node:path"

/**
 * Global setup of the live project (vitest.config.ts): `npm run build`, once, before any live suite. The CLI suite
 * runs the built executable and the package suite packs the built library, so a dist/ that is stale, or that tsc
 * emitted from code with type errors (it emits anyway), would have them test something other than the source: a
 * build that fails fails the run, with tsc's output. The build is `tsc -b` (dist/.tsbuildinfo): half a second when
 * nothing changed, and it reports the errors of the last build again until they are fixed; one build for the
 * project keeps two suites from writing dist/ at once.
 */
export default function setup() {
  try {
    execFileSync("npm", ["run", "-s", "build"], { cwd: path.resolve(import.meta.dirname, "..", ".."), stdio: "pipe" })
  } catch (error) {
    const { stderr, stdout } = error as { readonly stdout?: Buffer; readonly stderr?: Buffer }
    throw new Error(`npm run build failed; the live suites run dist/:\n${String(stdout ?? "")}${String(stderr ?? "")}`)
  }
}
