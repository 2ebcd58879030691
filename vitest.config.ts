import { defineConfig } from "vitest/config"
import { BaseSequencer, type TestSpecification } from "vitest/node"

// Two projects: `unit` runs on in-memory layers and TestClock, no sockets, servers or external programs (`npm run
// test:unit`, seconds); `live` talks to real peers on loopback and spawns processes (the CLI, the packed library,
// Postfix, aiosmtpd). `npm test` runs both, as CI does.
const live = ["test/**/*.live.test.ts", "test/Cli.test.ts", "test/Package.test.ts"]

/**
 * Vitest's order (the files that took longest last time first), with the long files at the very front whatever the
 * last run says (a fresh clone, as CI's, has no last run): the outbox's cluster suite (three runner processes on
 * PostgreSQL, kills and a restart: 30–55 s), the package suite, the outbox's CLI and events suites and the DNS suite
 * (real query timeouts, about 10 s) mostly wait; started last, any of them would end the run alone. The docgen check
 * takes milliseconds when docs/api's record matches the tree and about 15 s of CPU when not (test/Docs.live.test.ts).
 */
const LONG = ["OutboxCluster.live", "Package", "Outbox.live", "Cli", "Dns.live", "OutboxEvents.live", "Docs.live"].map((
  name
) =>
  `/test/${name}.test.ts`
)

class LongFirst extends BaseSequencer {
  override async sort(files: Array<TestSpecification>): Promise<Array<TestSpecification>> {
    const sorted = await super.sort(files)
    const rank = (spec: TestSpecification) => {
      const i = LONG.findIndex((suffix) => spec.moduleId.endsWith(suffix))
      return i === -1 ? LONG.length : i
    }
    // Array.prototype.sort is stable: the other files keep vitest's order.
    return sorted.sort((a, b) => rank(a) - rank(b))
  }
}

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    fileParallelism: true,
    sequence: { sequencer: LongFirst },
    // Each project has its own pool, so that each can have its own isolation and size (a pool's options are global).
    poolOptions: {
      // unit: CPU-bound, one worker. Most of a unit file's time, in a fresh worker, was importing effect and the
      // modules under test (about 2 s a file); the unit suites keep no global state (no mocks, no fake timers, no
      // process-wide settings: each builds its layers), so the worker is not isolated and imports once. One worker,
      // not one per core: the live pool's four processes run beside it, and a second worker cost its own import of
      // everything (the unit project alone: 15 s of CPU with one, 17–22 s with two, interleaved runs) for a wall
      // time that does not end the run (about 18 s against the live files' 45+). Minimum = maximum: with isolation
      // off and a minimum below the maximum, runs here ended in tinypool's "Terminating worker thread" with files
      // never reported (an idle worker is removed between two files).
      threads: { isolate: false, maxThreads: 1, minThreads: 1 },
      // live: the suites mostly wait on sockets, timers and child processes (the CPU is idle much of the time with
      // one worker), so four files run at once, beside the unit pool, in four processes that each run one file after
      // another without isolation: a fresh process per file cost each file its own start and its own import of
      // effect and the library, 13 s of CPU over the live files (55 s isolated, 42 s not, same files, same load).
      // Sharing a process one file at a time keeps the suites' counts sound: every suite closes what it opens (its
      // servers and layers are scoped), so when a file starts, the process holds nothing of the file before it. The
      // connector's open connections (Connector.openConnections, a count for the process) are then the file's own;
      // a connection an earlier file leaked stays counted and fails the next file's check (still a failure, named
      // one file late). The suites that count Node's active resources (Hostile.live, Leaks.live) compare with a
      // baseline taken in the file itself. Minimum = maximum, as for the threads (an idle process removed between
      // two files ended runs in "Terminating worker").
      forks: { isolate: false, maxForks: 4, minForks: 4 }
    },
    projects: [
      // examples/*.test.ts: the documentation's examples that are test suites (docs/testing.md's).
      {
        extends: true,
        test: { name: "unit", pool: "threads", include: ["test/**/*.test.ts", "examples/**/*.test.ts"], exclude: live }
      },
      // The CLI and package suites run dist/: the project builds it first, and a failed build fails the run.
      { extends: true, test: { name: "live", pool: "forks", include: live, globalSetup: ["test/utils/build.ts"] } }
    ]
  }
})
