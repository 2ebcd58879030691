/**
 * The delivery schedule in Stalwart's three layouts (`OutboundConfig.Config.schedule`): `[queue.schedule]` of
 * v0.7–v0.12 (expressions), `[queue.strategy] schedule` with `[queue.schedule.<name>]` of v0.13–v0.15, and v0.16's
 * `MtaOutboundStrategy.schedule` with `MtaDeliverySchedule`; the defaults of each version, the errors (file, line, key,
 * found, expected), and `convert` carrying schedules between the layouts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Either } from "effect"
import type { Variables } from "../src/Expression.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import type { DeliverySchedule } from "../src/Settings.js"
import { issues, load } from "./utils/config.js"



/** A schedule as plain data: durations as strings. */
const plain = (s: DeliverySchedule) => ({
  name: s.name,
  retry: s.retry.map((d) => Duration.format(d)),
  notify: s.notify.map((d) => Duration.format(d)),
  expiry: s.expiry._tag === "Ttl" ? `ttl ${Duration.format(s.expiry.ttl)}` : `attempts ${s.expiry.maxAttempts}`
})

const scheduleOf = (config: OutboundConfig.Config, vars: Variables = {}) => {
  const { settings, warnings } = config.schedule(vars)
  return { ...plain(settings), warnings }
}

const STALWART_RETRY = ["2m", "5m", "10m", "15m", "30m", "1h", "2h"]

/** v0.16's MtaDeliveryScheduleIntervals: `{ "@type": "Custom", "intervals": { "0": { "duration": ms }, … } }`. */
const custom = (...ms: ReadonlyArray<number>) => ({
  "@type": "Custom",
  intervals: Object.fromEntries(ms.map((duration, i) => [String(i), { duration }]))
})

describe("the defaults of each version", () => {
  it("v0.7–v0.12: retry 2m … 2h, notify 1d and 3d, expire 5d", () => {
    expect(scheduleOf(load("[queue.outbound]\n"))).toEqual({
      name: "default",
      retry: STALWART_RETRY,
      notify: ["1d", "3d"],
      expiry: "ttl 5d",
      warnings: []
    })
    expect(scheduleOf(OutboundConfig.defaults).expiry).toBe("ttl 5d")
  })

  it("v0.13–v0.15: the first-boot schedules, chosen by source (dsn, report, else remote)", () => {
    const config = load("[queue.strategy]\nroute = \"'mx'\"\n")
    expect(scheduleOf(config)).toEqual({
      name: "remote",
      retry: STALWART_RETRY,
      notify: ["1d", "3d"],
      expiry: "ttl 3d",
      warnings: []
    })
    expect(scheduleOf(config, { source: "dsn" })).toEqual({
      name: "dsn",
      retry: ["15m", "30m", "1h", "2h"],
      notify: [],
      expiry: "attempts 10",
      warnings: []
    })
    expect(scheduleOf(config, { source: "report" })).toMatchObject({ name: "report", expiry: "attempts 8" })
  })

  it("v0.13–v0.15: a named schedule with neither expire nor max-attempts lives 3 days; notify left out is none", () => {
    const config = load("[queue.strategy]\nschedule = \"'slow'\"\n[queue.schedule.slow]\nqueue-name = \"remote\"\nretry = [\"1h\"]\n")
    expect(scheduleOf(config)).toEqual({ name: "slow", retry: ["1h"], notify: [], expiry: "ttl 3d", warnings: [] })
  })

  it("v0.16: an MtaDeliverySchedule's defaults (retry up to 3d, notify 1d and 3d, a 3-day TTL, 5 attempts)", () => {
    const config = load(JSON.stringify({
      MtaOutboundStrategy: { schedule: { match: { "0": { if: "retry_num > 3", then: "'capped'" } }, else: "'plain'" } },
      MtaRoute: [{ "@type": "Mx", name: "mx" }],
      MtaDeliverySchedule: [
        { name: "plain", retry: { "@type": "Default" }, queueId: "remote" },
        { name: "capped", retry: custom(60_000), notify: custom(), expiry: { "@type": "Attempts" } }
      ]
    }), "v16.json")
    expect(scheduleOf(config)).toEqual({
      name: "plain",
      retry: [...STALWART_RETRY, "1d", "3d"],
      notify: ["1d", "3d"],
      expiry: "ttl 3d",
      warnings: []
    })
    expect(scheduleOf(config, { retry_num: 4 })).toEqual({
      name: "capped",
      retry: ["1m"],
      notify: [],
      expiry: "attempts 5",
      warnings: []
    })
  })
})

describe("[queue.schedule] of v0.7–v0.12: expressions of the recipient's variables", () => {
  it("if-lists, native lists and expression lists; this library's max-attempts", () => {
    const config = load(`
[queue.outbound]
hostname = "'mx.example.org'"
[queue.schedule]
retry = [ { if = "rcpt_domain == 'slow.test'", then = "[1h, 4h]" }, { else = "[1m, 2m]" } ]
notify = ["12h", "2d"]
expire = [ { if = "source == 'dsn'", then = "1d" }, { else = "4d" } ]
max-attempts = [ { if = "last_error == 'dns'", then = "3" }, { else = "false" } ]
`)
    expect(scheduleOf(config, { rcpt_domain: "a.test" })).toEqual({
      name: "default",
      retry: ["1m", "2m"],
      notify: ["12h", "2d"],
      expiry: "ttl 4d",
      warnings: []
    })
    expect(scheduleOf(config, { rcpt_domain: "slow.test", source: "dsn" })).toMatchObject({
      retry: ["1h", "4h"],
      expiry: "ttl 1d"
    })
    expect(scheduleOf(config, { last_error: "dns" }).expiry).toBe("attempts 3")
  })

  it("a computed value that cannot be used: the key's default, and a warning naming it", () => {
    const config = load("[queue.outbound]\n[queue.schedule]\nretry = \"rcpt_domain\"\n")
    const { retry, warnings } = scheduleOf(config, { rcpt_domain: "a.test" })
    expect(retry).toEqual(STALWART_RETRY)
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toMatch(/^queue\.schedule\.retry: the expression "rcpt_domain" gave the string "a\.test".*; used the default \[2m, 5m, 10m, 15m, 30m, 1h, 2h\] instead$/)
  })

  it("errors: every one at once, each with its line, key, what was found and what was expected", () => {
    expect(issues(`[queue.outbound]
[queue.schedule]
retry = "[]"
notify = ["1d", "1h30m"]
expire = "mx == ''"
max-attempts = true
retyr = "1m"
`)).toEqual([
      [3, "queue.schedule.retry", "wrong value (at least one is needed)"],
      [4, "queue.schedule.notify[1]", "not a duration (compound durations are not allowed; use one number and one unit (e.g. \"90m\" for 1h30m))"],
      [5, "queue.schedule.expire", "the variable mx is not known when queue.schedule.expire is evaluated (for a recipient's schedule)"],
      [6, "queue.schedule.max-attempts", "true is not a number of attempts"],
      [7, "queue.schedule.retyr", "unknown key (did you mean \"retry\"?)"]
    ])
  })

  it("a named schedule next to [queue.outbound] is the other layout's", () => {
    expect(issues("[queue.outbound]\n[queue.schedule.remote]\nretry = [\"1m\"]\n").map(([, , m]) => m)).toEqual([
      "a named schedule ([queue.schedule.<name>]) belongs to Stalwart v0.13–v0.15's layout; beside [queue.outbound], " +
      "[queue.schedule] holds the one schedule's keys",
      "the file mixes two layouts: queue.outbound belong to Stalwart v0.7–v0.12's layout, queue.schedule to " +
      "v0.13–v0.15's strategies; use one (smtp-transport config convert writes one from the other)"
    ])
  })
})

describe("[queue.schedule.<name>] of v0.13–v0.15", () => {
  it("errors: retry required and non-empty, expire or max-attempts, unknown keys, unknown names", () => {
    expect(issues(`[queue.strategy]
schedule = [ { if = "retry_num > 2", then = "'nope'" }, { else = "'a'" } ]
[queue.schedule.a]
notify = []
[queue.schedule.b]
retry = []
expire = "2d"
max-attempts = 4
[queue.schedule.c]
retry = ["1m", true]
notfy = ["1d"]
`)).toEqual([
      [2, "queue.strategy.schedule[0].then", "no schedule is named \"nope\""],
      [3, "queue.schedule.a", "a schedule needs retry, at least one wait"],
      [6, "queue.schedule.b.retry", "wrong value (at least one is needed)"],
      [8, "queue.schedule.b.max-attempts", "expire and max-attempts together: a schedule expires by one of them"],
      [10, "queue.schedule.c.retry", "wrong type of value"],
      [11, "queue.schedule.c.notfy", "unknown key (did you mean \"notify\"?)"]
    ])
  })

  it("errors: a queue-name Stalwart refuses (1 to 8 bytes), so that convert never writes one", () => {
    expect(issues(`[queue.strategy]
schedule = "'a'"
[queue.schedule.a]
queue-name = "muchtoolongname"
retry = ["1m"]
[queue.schedule.b]
queue-name = ""
retry = ["1m"]
`)).toEqual([
      [4, "queue.schedule.a.queue-name", "a virtual queue's name is 1 to 8 bytes"],
      [7, "queue.schedule.b.queue-name", "a virtual queue's name is 1 to 8 bytes"]
    ])
  })

  it("a flat [queue.schedule] key next to [queue.strategy] is the other layout's", () => {
    expect(issues("[queue.strategy]\nroute = \"'mx'\"\n[queue.schedule]\nretry = \"[1m]\"\n")[0]![2]).toMatch(
      /^the file mixes two layouts/
    )
  })

  it("a computed name no schedule has: Stalwart's fallback schedule (5 days), with a warning", () => {
    const config = load("[queue.strategy]\nschedule = \"rcpt_domain\"\n")
    expect(scheduleOf(config, { rcpt_domain: "x.test" })).toEqual({
      name: "default",
      retry: STALWART_RETRY,
      notify: ["1d", "3d"],
      expiry: "ttl 5d",
      warnings: [
        "queue.strategy.schedule: no schedule is named \"x.test\"; used Stalwart's default schedule (retry 2m … 2h, " +
        "notify 1d and 3d, expire 5d) instead"
      ]
    })
  })

  it("the selector reads the schedule's variables only", () => {
    expect(issues("[queue.strategy]\nschedule = [ { if = \"mx == 'a'\", then = \"'remote'\" }, { else = \"'remote'\" } ]\n")[0]![2])
      .toMatch(/^the variable mx is not known when queue\.strategy\.schedule is evaluated/)
  })
})

describe("MtaDeliverySchedule of v0.16", () => {
  it("errors: a bad expiry, a duration of zero, an unknown field", () => {
    const text = JSON.stringify(
      {
        MtaRoute: [{ "@type": "Mx", name: "mx" }],
        MtaDeliverySchedule: [
          { name: "a", retry: custom(0), expiry: { "@type": "Forever" } },
          { name: "b", expiry: { "@type": "Ttl", expire: 1000, maxAttempts: 3 }, notfy: custom() },
          { name: "c", expiry: { "@type": "Attempts", maxAttempts: 0 } },
          { name: "d", retry: [60_000], notify: { "@type": "Custom", intervals: { "0": { duration: 1000, x: 1 } } } }
        ]
      },
      null,
      2
    )
    expect(issues(text, "v16.json").map(([, path, problem]) => [path, problem])).toEqual([
      ["MtaDeliverySchedule[0].retry", "a duration must be greater than zero"],
      ["MtaDeliverySchedule[0].expiry.@type", "unknown expiry type"],
      ["MtaDeliverySchedule[1].expiry.maxAttempts", "unknown field of a Ttl expiry"],
      ["MtaDeliverySchedule[1].notfy", "unknown field (did you mean \"notify\"?)"],
      ["MtaDeliverySchedule[2].expiry.maxAttempts", "it is not at least 1"],
      ["MtaDeliverySchedule[3].retry", "not a list of intervals"],
      ["MtaDeliverySchedule[3].notify.intervals.0", "not an interval"]
    ])
  })
})

describe("convert and show carry the schedule", () => {
  const strategies = `[queue.strategy]
schedule = [ { if = "retry_num > 1", then = "'s0'" }, { if = "source == 'dsn'", then = "'dsn'" }, { else = "'s1'" } ]
[queue.schedule.s0]
queue-name = "remote"
retry = ["1m", "5m"]
max-attempts = 4
[queue.schedule.s1]
queue-name = "remote"
retry = ["2m"]
notify = ["1d"]
expire = "2d"
`
  const samples: ReadonlyArray<Variables> = [{}, { retry_num: 2 }, { source: "dsn" }, { retry_num: 2, source: "dsn" }]
  const all = (config: OutboundConfig.Config) => samples.map((vars) => (({ name: _, ...v }) => v)(scheduleOf(config, vars)))

  it("to [queue.schedule] as if-lists over the selector's branches, to JSON as MtaDeliverySchedule objects", () => {
    const config = load(strategies)
    const outbound = Either.getOrThrow(OutboundConfig.convert(config, "outbound"))
    expect(outbound).toContain(
      "[queue.schedule]\n" +
        "retry = [{ if = \"retry_num > 1\", then = \"[1m, 5m]\" }, { if = \"source == 'dsn'\", then = \"[15m, 30m, 1h, 2h]\" }, " +
        "{ else = \"[2m]\" }]\n"
    )
    expect(outbound).toContain(
      "max-attempts = [{ if = \"retry_num > 1\", then = \"4\" }, { if = \"source == 'dsn'\", then = \"10\" }, { else = \"false\" }]"
    )
    const json = Either.getOrThrow(OutboundConfig.convert(config, "json"))
    expect(JSON.parse(json).MtaDeliverySchedule).toEqual([
      { name: "s0", queueId: 0, retry: custom(60_000, 300_000), notify: custom(), expiry: { "@type": "Attempts", maxAttempts: 4 } },
      { name: "s1", queueId: 0, retry: custom(120_000), notify: custom(86_400_000), expiry: { "@type": "Ttl", expire: 172_800_000 } }
    ])
    // queue-name "remote" as the MtaVirtualQueue the queueId refers to (threadsPerNode left to v0.16's default).
    expect(JSON.parse(json).MtaVirtualQueue).toEqual([{ id: 0, name: "remote" }])
    const back = Either.getOrThrow(OutboundConfig.convert(load(json, "c.json"), "strategies"))
    for (const [text, file] of [[outbound, "c.toml"], [json, "c.json"], [back, "back.toml"]] as const) {
      expect([file, all(load(text, file))]).toEqual([file, all(config)])
    }
  })

  it("an outbound file's schedule becomes the default schedule, written even when left at its defaults", () => {
    const written = Either.getOrThrow(OutboundConfig.convert(load("[queue.outbound]\n"), "strategies"))
    expect(written).toContain("schedule = \"'default'\"")
    // queue-name, which v0.13–v0.15 require: Stalwart's default queue, the one that needs no [queue.virtual] table.
    expect(written).toContain("[queue.schedule.default]\nqueue-name = \"default\"\nretry = [\"2m\", \"5m\", \"10m\", \"15m\", \"30m\", \"1h\", \"2h\"]\n" +
      "notify = [\"1d\", \"3d\"]\nexpire = \"5d\"")
    expect(scheduleOf(load(written))).toEqual(scheduleOf(load("[queue.outbound]\n")))
    const computed = load("[queue.outbound]\n[queue.schedule]\nexpire = [ { if = \"retry_num > 1\", then = \"1d\" }, { else = \"2d\" } ]\n")
    const refused = OutboundConfig.convert(computed, "json")
    expect(Either.isLeft(refused) && refused.left.issues.map((i) => i.path)).toEqual(["queue.schedule.expire"])
  })

  it("queue names: queue-name and [queue.virtual] to queueId and MtaVirtualQueue objects, and back", () => {
    const text = `[queue.strategy]
schedule = [ { if = "retry_num > 1", then = "'slow'" }, { else = "'fast'" } ]
[queue.schedule.fast]
queue-name = "remote"
retry = ["2m"]
[queue.schedule.slow]
queue-name = "bulk"
retry = ["1h"]
[queue.virtual.remote]
threads-per-node = 50
`
    const queues = (config: OutboundConfig.Config) => ({
      schedules: [...config.model.schedules.values()].filter((d) => d.origin !== null)
        .map((d) => [d.name, d.queueName?.setting.evaluate({}).value]),
      virtual: [...(config.model.virtualQueues?.values() ?? [])].map((q) => [q.name, q.threads])
    })
    expect(queues(load(text))).toEqual({ schedules: [["fast", "remote"], ["slow", "bulk"]], virtual: [["remote", 50]] })
    const json = Either.getOrThrow(OutboundConfig.convert(load(text), "json"))
    const document = JSON.parse(json)
    expect(document.MtaDeliverySchedule.map((d: { name: string; queueId: number }) => [d.name, d.queueId]))
      .toEqual([["fast", 0], ["slow", 1]])
    // bulk has no [queue.virtual] table: its object gets v0.16's default thread count by leaving it out.
    expect(document.MtaVirtualQueue).toEqual([{ id: 0, name: "remote", threadsPerNode: 50 }, { id: 1, name: "bulk" }])
    const back = Either.getOrThrow(OutboundConfig.convert(load(json, "c.json"), "strategies"))
    expect(back).toContain("[queue.schedule.slow]\nqueue-name = \"bulk\"\n")
    // v0.13–v0.15 require threads-per-node: the count v0.16 would have used.
    expect(back).toContain("[queue.virtual.remote]\nthreads-per-node = 50\n\n[queue.virtual.bulk]\nthreads-per-node = 25")
    expect(queues(load(back))).toEqual({
      schedules: [["fast", "remote"], ["slow", "bulk"]],
      virtual: [["remote", 50], ["bulk", 25]]
    })
  })

  it("a queueId: the file's MtaVirtualQueue, else Stalwart's first-boot queues, else a warning", () => {
    const file = (queueId: unknown, virtual?: unknown) =>
      load(JSON.stringify({
        MtaRoute: [{ "@type": "Mx", name: "mx" }],
        MtaDeliverySchedule: [{ name: "s", retry: custom(60_000), queueId }],
        ...(virtual === undefined ? {} : { MtaVirtualQueue: virtual })
      }), "v16.json")
    const queueOf = (config: OutboundConfig.Config) => config.model.schedules.get("s")!.queueName?.setting.evaluate({}).value
    expect(queueOf(file(1))).toBe("remote")
    expect(queueOf(file("7", { "7": { name: "mine", threadsPerNode: 4 } }))).toBe("mine")
    expect(queueOf(file(1, [{ id: 5, name: "mine" }]))).toBeUndefined()
    const unknown = file(9)
    expect(queueOf(unknown)).toBeUndefined()
    expect(unknown.warnings).toContainEqual(expect.stringContaining("MtaDeliverySchedule s.queueId: 9 is the id of no MtaVirtualQueue"))
    expect(Either.getOrThrow(OutboundConfig.convert(unknown, "strategies"))).toContain("queue-name = \"default\"")
    const bad = OutboundConfig.parse(`[queue.strategy]\nschedule = "'s'"\n[queue.schedule.s]\nqueue-name = "q"\nretry = ["1m"]\n` +
      `[queue.virtual.much-too-long]\nthreads-per-node = 2\n[queue.virtual.q]\nthreads = 2\n`)
    if (Either.isRight(bad)) throw new Error("expected a ConfigError")
    const issue = (path: string) => bad.left.issues.find((i) => i.path === path)?.message
    expect(bad.left.issues.map((i) => i.path).sort()).toEqual(
      ["queue.virtual.much-too-long", "queue.virtual.q", "queue.virtual.q.threads"]
    )
    expect(issue("queue.virtual.much-too-long")).toContain("a virtual queue's name is 1 to 8 bytes")
    expect(issue("queue.virtual.q.threads")).toContain("unknown key: found the key \"threads\"; expected one of threads-per-node")
    expect(issue("queue.virtual.q")).toContain("a virtual queue needs threads-per-node")
  })

  it("show: the selector and every schedule with where its values came from", () => {
    const shown = OutboundConfig.show(load(strategies), strategies)
    expect(shown).toMatch(/^schedule = \[\{ if = "retry_num > 1".*# test\.toml:2$/m)
    expect(shown).toMatch(/# schedule "s0"\n {2}queue-name = "remote" +# test\.toml:4\n {2}retry = \["1m", "5m"\] +# test\.toml:5\n {2}notify = \[\] +# default\n {2}max-attempts = 4 +# test\.toml:6/)
    expect(shown).toMatch(/# schedule "dsn" \(built in\)/)
    const outbound = "[queue.outbound]\n[queue.schedule]\nexpire = \"2d\"\n"
    expect(OutboundConfig.show(load(outbound), outbound)).toMatch(/\[queue\.schedule\].*\nretry = \[2m, 5m, 10m, 15m, 30m, 1h, 2h\] +# default\nnotify = \[1d, 3d\] +# default\nexpire = "2d" +# test\.toml:3\nmax-attempts = false +# default/)
  })
})
