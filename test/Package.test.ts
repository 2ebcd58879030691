import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as DnsServer from "./fixtures/dnsServer.js"
import { startSmtpServer, type TestSmtpServer } from "./fixtures/smtpServer.js"

/**
 * The library as its users get it: `npm pack`, then the README's install line in a fresh project, then the README's
 * "Use it as a library" example (examples/deliver.ts) compiled against the installed package's types and run against
 * a DNS server and an SMTP server on loopback. npm reads its cache first (`--prefer-offline`) and goes to the registry
 * only for what the cache lacks.
 */

const root = path.resolve(import.meta.dirname, "..")
const tsc = path.join(root, "node_modules", "typescript", "bin", "tsc")

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** A command run to its end, bounded: killed after `timeoutMs`. Never throws. */
const run = (
  command: string,
  args: ReadonlyArray<string>,
  cwd: string,
  options: { readonly timeoutMs?: number; readonly env?: NodeJS.ProcessEnv } = {}
): Promise<Run> =>
  new Promise((resolve) => {
    execFile(
      command,
      args,
      { cwd, timeout: options.timeoutMs ?? 30_000, env: { ...process.env, ...options.env }, maxBuffer: 16 << 20 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : null
        resolve({ code, stdout, stderr })
      }
    )
  })

const runEffect = (...params: Parameters<typeof run>) => Effect.promise(() => run(...params))

// dist/, as `npm pack` ships it, is built by the live project's global setup (test/utils/build.ts).

const readme = fs.readFileSync(path.join(root, "README.md"), "utf8")
const example = fs.readFileSync(path.join(root, "examples", "deliver.ts"), "utf8")

/** The README's install line: the one command a user runs. */
const installLine = (): ReadonlyArray<string> => {
  const lines = readme.split("\n").filter((l) => /^npm install effect-smtp-transport( |$)/.test(l.trim()))
  expect(lines, "exactly one install line in the README").toHaveLength(1)
  return lines[0]!.trim().split(/\s+/)
}

/** `text` with `from` replaced, which must occur exactly once (so that a changed example fails here, loudly). */
const replaceOnce = (text: string, from: string, to: string) => {
  expect(text.split(from).length - 1, `${JSON.stringify(from)} occurs once in examples/deliver.ts`).toBe(1)
  return text.replace(from, to)
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "smtp-transport-package-"))
const project = path.join(tmp, "app")
let install: Run

beforeAll(async () => {
  const packed = await run("npm", ["pack", "--ignore-scripts", "--pack-destination", tmp, "--json"], root)
  if (packed.code !== 0) throw new Error(`npm pack failed:\n${packed.stderr}`)
  const tarball = path.join(tmp, (JSON.parse(packed.stdout) as Array<{ filename: string }>)[0]!.filename)
  fs.mkdirSync(project)
  fs.writeFileSync(
    path.join(project, "package.json"),
    JSON.stringify({ name: "app", version: "1.0.0", private: true, type: "module" }, null, 2)
  )
  const [npm, ...args] = installLine().map((word) => (word === "effect-smtp-transport" ? tarball : word))
  install = await run(npm!, [...args, "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"], project, {
    timeoutMs: 150_000
  })
}, 180_000)

afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }))

// The three cases read the installed project and start processes of their own; they run at once, since each spends
// its time waiting on those processes.
describe.concurrent("the packed library in a fresh project", () => {
  it.live("the README's install line installs it with one copy of effect and every peer satisfied", () =>
    Effect.gen(function*() {
      expect(install.code, install.stderr).toBe(0)
      // One npm process for both checks: `npm ls --all --parseable` lists the path of every installed package and
      // exits non-zero when a dependency or peer is missing or outside its range (npm's ELSPROBLEMS), as `npm ls`
      // does.
      const tree = yield* runEffect("npm", ["ls", "--all", "--parseable"], project)
      expect(tree.code, tree.stdout + tree.stderr).toBe(0)
      // Every path at which effect is installed: one, at the top, shared by the library and the application.
      const paths = [...new Set(tree.stdout.split("\n").filter((l) => l.endsWith(`${path.sep}node_modules${path.sep}effect`)))]
      expect(paths).toEqual([path.join(fs.realpathSync(project), "node_modules", "effect")])
      const installed = JSON.parse(
        fs.readFileSync(path.join(project, "node_modules", "effect-smtp-transport", "package.json"), "utf8")
      ) as { peerDependencies: Record<string, string>; dependencies: Record<string, string> }
      expect(Object.keys(installed.peerDependencies).sort()).toEqual([
        "@effect/cluster",
        "@effect/experimental",
        "@effect/platform",
        "@effect/platform-node",
        "@effect/rpc",
        "@effect/sql",
        "@effect/sql-pg",
        "@effect/sql-sqlite-node",
        "@effect/workflow",
        "effect"
      ])
      // The outbox's packages are optional peers: an application that does not use the outbox installs none of the
      // drivers, and the library's other modules (the example below imports the root) never load them.
      const optional = Object.keys((installed as { peerDependenciesMeta?: Record<string, unknown> }).peerDependenciesMeta ?? {})
      expect(optional.sort()).toEqual([
        "@effect/cluster",
        "@effect/experimental",
        "@effect/rpc",
        "@effect/sql",
        "@effect/sql-pg",
        "@effect/sql-sqlite-node",
        "@effect/workflow"
      ])
      expect(Object.keys(installed.dependencies)).toEqual(["dns-packet", "jsonc-parser", "smol-toml"])
      // The demo's servers, and nodemailer through smtp-server, stay out of an application.
      for (const absent of ["smtp-server", "dns2", "nodemailer", "@effect/cli", "@effect/sql-pg", "@effect/sql-sqlite-node"]) {
        expect(fs.existsSync(path.join(project, "node_modules", absent)), absent).toBe(false)
      }
    }), 60_000)

  it.scopedLive("the README's library example compiles against the installed types and delivers on loopback", () =>
    Effect.gen(function*() {
      expect(install.code, install.stderr).toBe(0)
      // The README shows the example as an application has it.
      const code = example.slice(example.indexOf("import "))
      const asInstalled = replaceOnce(code, `"../src/index.js"`, `"effect-smtp-transport"`)
        .replace(/^\/\/ In your project:.*\n/m, "")
      expect(readme).toContain(asInstalled.trim())
      // Everything it imports is a package the install line named, not one that came along.
      const app = JSON.parse(fs.readFileSync(path.join(project, "package.json"), "utf8")) as {
        dependencies: Record<string, string>
      }
      const imported = [...asInstalled.matchAll(/^import .* from "([^"]+)"$/gm)].map((m) => m[1]!)
      const packageOf = (specifier: string) => specifier.split("/").slice(0, specifier.startsWith("@") ? 2 : 1).join("/")
      expect(imported.length).toBeGreaterThan(0)
      for (const specifier of imported) expect(Object.keys(app.dependencies)).toContain(packageOf(specifier))

      const smtp: TestSmtpServer = yield* startSmtpServer({ host: "127.0.0.1", port: 0 })
      const dns = yield* DnsServer.scoped({
        zones: {
          "example.net": { mx: [{ exchange: "mx.example.net", priority: 10 }] },
          "mx.example.net": { a: ["127.0.0.1"] }
        }
      })
      const config = path.join(project, "outbound.toml")
      fs.writeFileSync(config, `[queue.outbound]\nhostname = "'app.example.org'"\n`)
      // Only what a loopback set-up needs: this configuration file, this DNS server, this port.
      let program = replaceOnce(asInstalled, `"/etc/effect-smtp-transport/outbound.toml"`, JSON.stringify(config))
      program = replaceOnce(program, `["127.0.0.1:53"]`, JSON.stringify([dns.server]))
      program = replaceOnce(
        program,
        "program.pipe(",
        `Effect.flatMap(Transport.TransportOptions, (options) =>\n  Effect.provideService(program, Transport.TransportOptions, { ...options, port: ${smtp.port} })\n).pipe(`
      )
      fs.writeFileSync(path.join(project, "deliver.ts"), program)
      fs.writeFileSync(
        path.join(project, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "ES2022",
            module: "NodeNext",
            moduleResolution: "NodeNext",
            strict: true,
            skipLibCheck: true,
            types: [],
            outDir: "out"
          },
          files: ["deliver.ts"]
        })
      )
      const compiled = yield* runEffect(process.execPath, [tsc, "-p", "."], project, { timeoutMs: 60_000 })
      expect(compiled.code, compiled.stdout + compiled.stderr).toBe(0)

      const delivered = yield* runEffect(process.execPath, [path.join("out", "deliver.js")], project)
      expect(delivered.code, delivered.stderr).toBe(0)
      expect(delivered.stdout.trim()).toBe("you@example.net: delivered 250")
      expect(delivered.stderr).not.toContain("Executing an Effect versioned")
      const sessions = yield* smtp.sessions
      const transactions = sessions.flatMap((s) => s.transactions)
      expect(transactions.map((t) => [t.mailFrom?.address, t.rcptTo.map((r) => r.address)])).toEqual([
        ["me@example.org", ["you@example.net"]]
      ])
      expect(Buffer.from(transactions[0]!.message).toString()).toContain("Subject: hello\r\n\r\nHi!\r\n")
      expect(sessions[0]!.clientHostname).toBe("app.example.org")
    }), 90_000)

  // Two starts of the installed executable (each about a second of CPU): both read the installed package.json, one
  // for its version, the other for the versions it tells to install. Its help and other commands are the same code
  // as the checkout's, which the CLI suite runs.
  it.live("the installed executable runs; its demo says what to install, with exit 69", () =>
    Effect.gen(function*() {
      expect(install.code, install.stderr).toBe(0)
      const bin = path.join(project, "node_modules", ".bin", "smtp-transport")
      const [version, demo] = yield* Effect.all([
        runEffect(bin, ["--version"], project),
        runEffect(bin, ["demo"], project)
      ], { concurrency: "unbounded" })
      const { version: packed } = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as {
        version: string
      }
      expect(version.code, version.stderr).toBe(0)
      expect(version.stdout).toBe(`smtp-transport ${packed}\n`)
      expect(demo.code).toBe(69)
      expect(demo.stdout).toBe("")
      const devDependencies = (JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8")) as {
        devDependencies: Record<string, string>
      }).devDependencies
      expect(demo.stderr).toMatch(/^smtp-transport: the demo needs smtp-server and dns2/)
      expect(demo.stderr).toContain(
        `npm install smtp-server@${devDependencies["smtp-server"]} dns2@${devDependencies["dns2"]}`
      )
    }), 60_000)
})

