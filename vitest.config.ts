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
    projects: [
      { extends: true, test: { name: "unit", include: ["test/**/*.test.ts"], exclude: live } },
      { extends: true, test: { name: "live", include: live } }
    ]
  }
})
