/**
 * How many cases each property test runs: `PROPERTY_RUNS` from the environment, 1,000 otherwise. `npm test` runs
 * the default, a seed of its own each run, so that the runs of many `npm test`s add up; a deep run sets the variable
 * (`PROPERTY_RUNS=100000 npm run test:unit`, docs/testing.md). A value that is not a positive integer fails the run
 * rather than running some other number.
 */
const parse = (value: string | undefined): number => {
  if (value === undefined || value === "") return 1_000
  const n = Number(value)
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`PROPERTY_RUNS must be a positive integer, not ${JSON.stringify(value)}`)
  return n
}

/** fast-check's parameters for `it.prop(..., { fastCheck: RUNS })`. */
export const RUNS = { numRuns: parse(process.env["PROPERTY_RUNS"]) }
