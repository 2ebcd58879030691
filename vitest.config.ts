import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration suites bind fixed loopback addresses and ports; keep files from fighting over them.
    fileParallelism: true,
    pool: "forks"
  }
})
