import { defineConfig } from "vitest/config"

// Two projects: `unit` runs on in-memory layers and TestClock, no sockets, servers or external programs (`npm run
// test:unit`, seconds); `live` talks to real peers on loopback and spawns processes (the CLI, the packed library,
// Postfix, aiosmtpd). `npm test` runs both, as CI does.
const live = ["test/**/*.live.test.ts", "test/Cli.test.ts", "test/Package.test.ts"]

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    fileParallelism: true,
    pool: "forks",
    // Vitest's default is one worker fewer than the cores: one, on the 2-core machines this project runs on. The live
    // suites mostly wait on sockets and timers (the CPU is idle half the time with one worker), so four files at once
    // take the whole run from about 90 s to about 35 s, with every timing assertion still holding (checked over
    // repeated runs).
    maxWorkers: 4,
    minWorkers: 1,
    projects: [
      // examples/*.test.ts: the documentation's examples that are test suites (docs/testing.md's).
      { extends: true, test: { name: "unit", include: ["test/**/*.test.ts", "examples/**/*.test.ts"], exclude: live } },
      // The CLI and package suites run dist/: the project builds it first, and a failed build fails the run.
      { extends: true, test: { name: "live", include: live, globalSetup: ["test/utils/build.ts"] } }
    ]
  }
})
