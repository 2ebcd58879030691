/**
 * Stalwart's three configuration layouts loading into one model: a corpus of files of every layout with their
 * documented outcome, the strategies' semantics, the same plan from a v0.16 JSON file and its TOML equivalents, the
 * `convert` round trip as a property, and `smtp-transport config`.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Layer, Option, Redacted } from "effect"
import * as fc from "effect/FastCheck"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { ExplainReport } from "../src/DeliveryReport.js"
import type { Variables } from "../src/Expression.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as Transport from "../src/Transport.js"
import { runMain } from "./utils/cli.js"
import { issues, load } from "./utils/config.js"

const CORPUS = path.join(import.meta.dirname, "fixtures", "stalwart")
const read = (name: string) => fs.readFileSync(path.join(CORPUS, name), "utf8")



describe("the corpus: Stalwart configurations of every layout, with their documented outcome", () => {
  const loads: ReadonlyArray<readonly [string, OutboundConfig.Layout, ReadonlyArray<string>]> = [
    ["v0.12-next-hop.toml", "outbound", []],
    ["v0.12-equivalent.toml", "outbound", []],
    ["v0.12-config-toml-flat.toml", "outbound", []],
    ["v0.12-expressions-escapes.toml", "outbound", []],
    ["v0.13-repeated-tables.toml", "strategies", []],
    ["v0.15-strategies.toml", "strategies", ["queue.virtual (virtual queues, v0.13+)"]],
    ["v0.16.json", "json", []]
  ]
  for (const [file, layout, notUsed] of loads) {
    it(`${file} loads as the ${layout} layout`, () => {
      const config = load(read(file), file)
      expect([config.layout, config.notUsed, config.warnings]).toEqual([layout, notUsed, []])
    })
  }

  const refused: ReadonlyArray<readonly [string, ReadonlyArray<readonly [number | null, string, string]>]> = [
    ["typo-section.toml", [[2, "queue.outbond", "no Stalwart version has this table (did you mean queue.outbound?)"]]],
    ["no-outbound.toml", [[null, "", "no outbound setting found"]]],
    ["mixed-layouts.toml", [[
      null,
      "",
      "the file mixes two layouts: queue.outbound belong to Stalwart v0.7–v0.12's layout, queue.connection to " +
      "v0.13–v0.15's strategies; use one (smtp-transport config convert writes one from the other)"
    ]]],
    ["v0.11.0-concurrency.toml", [
      // Its [[queue.throttle]] is v0.11.0's own limiter syntax: loaded, not an error
      [3, "queue.outbound.concurrency", "a setting of another Stalwart version: Stalwart v0.11.0–v0.11.1; since v0.11.2 `queue.threads.remote`"]
    ]],
    ["v0.13-bare-value.toml", [[
      4,
      "",
      "TOML syntax error: a bare word as a value (Stalwart reads \"relay.example.net\" as a string; TOML does not): " +
      "write it quoted, e.g. \"relay.example.net\", or \"'relay.example.net'\" where the key takes an expression"
    ]]],
    ["v0.13-wrong-route-keys.toml", [
      [7, "queue.route.mx.address", "address belongs to a relay route, not to this mx route"],
      [8, "queue.route.mx.ip-lookup", "wrong value"],
      [12, "queue.tls.default.mta-sts", "wrong value"]
    ]],
    ["v0.13-unknown-strategy.toml", [
      [2, "queue.strategy.connection[0].then", "no connection strategy is named \"slwo\" (did you mean \"slow\"?)"]
    ]]
  ]
  for (const [file, expected] of refused) {
    it(`${file} is refused, saying where and why`, () => {
      expect(issues(read(file), file)).toEqual(expected)
    })
  }
})

describe("the strategies layout (v0.13–v0.15)", () => {
  const config = load(read("v0.15-strategies.toml"))
  const domain = (rcpt_domain: string, more: object = {}) => ({ rcpt: `a@${rcpt_domain}`, rcpt_domain, ...more })

  it("the route selector names a relay route for one domain and the MX route for the others", () => {
    const relay = OutboundConfig.evaluateDomain(config, domain("example.net")).settings.route
    expect(relay).toMatchObject({ _tag: "relay", name: "relay", address: "relay.example.net", port: 465, implicitTls: true })
    expect(relay._tag === "relay" && Option.map(relay.auth, (a) => [a.username, String(a.secret)])).toEqual(
      Option.some(["mta", "<redacted>"])
    )
    const mx = OutboundConfig.evaluateDomain(config, domain("example.com")).settings
    expect([mx.route, mx.limits]).toEqual([{ _tag: "mx", name: "mx" }, { mx: 3, multihomed: 2 }])
  })

  it("the connection selector picks per MX host; the TLS strategy switches to invalid-tls after a TLS error", () => {
    const slow = OutboundConfig.evaluateConnection(config, domain("example.com", { mx: "slow.example.com" })).settings
    expect([slow.ehloName, Duration.toMillis(slow.timeouts.connect)]).toEqual(["slow-out.example.org", 600_000])
    const host = OutboundConfig.evaluateHost(config, domain("example.com", { mx: "mx.example.com" })).settings
    expect([host.sourceIp, host.ipStrategy, host.tls]).toEqual([
      { v4: ["192.0.2.10", "192.0.2.11"], v6: ["2001:db8::10"] },
      "ipv6_then_ipv4",
      { starttls: "optional", dane: "optional", allowInvalidCerts: false }
    ])
    const retry = OutboundConfig.evaluateHost(config, domain("x.secure", { mx: "m", retry_num: 1, last_error: "tls" }))
    expect(retry.settings.tls).toEqual({ starttls: "optional", dane: "optional", allowInvalidCerts: true })
    const strict = OutboundConfig.evaluateDomain(config, domain("x.secure"))
    expect(strict.settings.tls.mtaSts).toBe("require")
  })

  it("the EHLO name follows the source address: per-source name, else the strategy's, else [server] hostname", () => {
    const at = (local_ip: string) =>
      OutboundConfig.evaluateConnection(config, domain("example.com", { mx: "mx.example.com", remote_ip: "192.0.2.99", local_ip }))
        .settings.ehloName
    expect([at("192.0.2.11"), at("192.0.2.10"), at("0.0.0.0")]).toEqual([
      "out2.example.org",
      "mx.example.org",
      "mx.example.org"
    ])
  })

  it("a computed strategy name no strategy has: Stalwart's default strategy, with a warning", () => {
    const computed = load(`
[queue.strategy]
connection = "rcpt_domain"
[queue.connection.default]
timeout.connect = "1m"
`)
    const evaluated = OutboundConfig.evaluateConnection(computed, domain("example.com", { mx: "m" }))
    expect(Duration.toMillis(evaluated.settings.timeouts.connect)).toBe(300_000)
    expect(evaluated.warnings).toEqual([
      "queue.strategy.connection: no connection strategy is named \"example.com\"; used Stalwart's default connection " +
      "strategy instead"
    ])
  })

  it("selectors read only the variables known when they are evaluated", () => {
    expect(issues(`
[queue.strategy]
route = "mx"
connection = "remote_ip"
`)).toEqual([
      [3, "queue.strategy.route", "the variable mx is not known when queue.strategy.route is evaluated (once per destination domain)"],
      [4, "queue.strategy.connection", "the variable remote_ip is not known when queue.strategy.connection is evaluated (once per MX host)"]
    ])
  })

  it("a typo in a strategy's key, a source address that is not one, and a per-source name nobody binds", () => {
    expect(issues(`
[queue.connection.default]
timout.connect = "1m"
source-ips = ["192.0.2.1", "192.0.2"]
[queue.source-ip."192.0.2.300"]
ehlo-hostname = "x.example.org"
`)).toEqual([
      [3, "queue.connection.default.timout.connect", "unknown key (did you mean \"timeout.connect\"?)"],
      [4, "queue.connection.default.source-ips[1]", "invalid address"],
      [5, "queue.source-ip.192.0.2.300", "not an IP address"]
    ])
    expect(load("[queue.source-ip.\"192.0.2.9\"]\nehlo-hostname = \"x.example.org\"\n").warnings).toEqual([
      "queue.source-ip.192.0.2.9.ehlo-hostname: 192.0.2.9 is in no connection strategy's source-ips, so this EHLO " +
      "name is never used"
    ])
  })

  it("a TLS requirement is read, not dropped (the silent downgrade of issue 15)", () => {
    const strict = load("[queue.tls.default]\nstarttls = \"require\"\n")
    expect(OutboundConfig.evaluateHost(strict, { mx: "m" }).settings.tls.starttls).toBe("require")
  })

  it("DANE is a TLS strategy's key in the v0.13+ and v0.16 layouts, like its siblings", () => {
    const toml = load(
      "[queue.strategy]\ntls = [ { if = \"mx == 'd.example'\", then = \"'dane'\" }, { else = \"'default'\" } ]\n" +
        "[queue.tls.dane]\ndane = \"require\"\n"
    )
    expect(OutboundConfig.evaluateHost(toml, { mx: "d.example" }).settings.tls.dane).toBe("require")
    expect(OutboundConfig.evaluateHost(toml, { mx: "other.example" }).settings.tls.dane).toBe("optional")
    expect(toml.warnings).toEqual([])
    const json = load(JSON.stringify({ MtaTlsStrategy: [{ name: "default", dane: "disable" }] }), "x.json")
    expect(OutboundConfig.evaluateHost(json, { mx: "m" }).settings.tls.dane).toBe("disable")
    expect(issues("[queue.tls.default]\ndane = \"maybe\"\n").map(([, p]) => p)).toEqual(["queue.tls.default.dane"])
  })
})

describe("relay routes of the v0.13–v0.15 and v0.16 layouts", () => {
  it("LMTP, a port, credentials as a redacted secret; tls.implicit true in TOML, false in JSON", () => {
    const config = load(`
[queue.strategy]
route = "'lmtp'"
[queue.route.lmtp]
type = "relay"
address = "192.0.2.7"
port = 24
protocol = "LMTP"
auth.username = "u"
auth.secret = "p"
`)
    const route = OutboundConfig.evaluateDomain(config, { rcpt_domain: "x.test" }).settings.route
    expect(route).toMatchObject({ _tag: "relay", name: "lmtp", address: "192.0.2.7", port: 24, protocol: "lmtp", implicitTls: true })
    expect(JSON.stringify(route)).not.toContain("\"p\"")
    const json = load(JSON.stringify({
      MtaOutboundStrategy: { route: "'r'" },
      MtaRoute: [{ "@type": "Relay", name: "r", address: "192.0.2.7", authUsername: "u", authToken: "t" }]
    }), "x.json")
    expect(OutboundConfig.evaluateDomain(json, { rcpt_domain: "x.test" }).settings.route).toMatchObject({
      _tag: "relay",
      implicitTls: false,
      auth: Option.some({ username: "u", token: true })
    })
  })

  it("an address is required, credentials go together, a secret is never quoted, and a typo is named", () => {
    expect(issues(`
[queue.route.a]
type = "relay"
port = 0
auth.username = "u"
[queue.route.b]
type = "relay"
address = "192.0.2.1"
auth.username = "u"
auth.secret = 12345
tls.implict = false
`)).toEqual([
      [2, "queue.route.a", "a relay route needs an address"],
      [2, "queue.route.a", "AUTH needs a username and a secret; the secret is missing"],
      [4, "queue.route.a.port", "wrong value"],
      [10, "queue.route.b.auth.secret", "not a non-empty string"],
      [11, "queue.route.b.tls.implict", "unknown key (did you mean \"tls.implicit\"?)"]
    ])
    expect(OutboundConfig.parse("[queue.route.b]\ntype = \"relay\"\naddress = \"x\"\nauth.username = \"u\"\nauth.secret = 12345\n").toString()).not.toContain("12345")
  })
})

describe("Stalwart's own TOML", () => {
  it("flat if-block keys, as Stalwart writes its config.toml, are the if-list they stand for", () => {
    const config = load(read("v0.12-config-toml-flat.toml"))
    expect(OutboundConfig.evaluateHost(config, { retry_num: 1 }).settings.ipStrategy).toBe("ipv4_only")
    expect(OutboundConfig.evaluateHost(config, { retry_num: 0 }).settings.ipStrategy).toBe("ipv4_then_ipv6")
    expect(OutboundConfig.evaluateConnection(config, {}).settings.ehloName).toBe("mx.example.org")
  })

  it("\\. inside a \"…\" string reaches the expression as \\.", () => {
    const config = load(read("v0.12-expressions-escapes.toml"))
    const ehlo = (rcpt_domain: string) => OutboundConfig.evaluateConnection(config, { rcpt_domain }).settings.ehloName
    expect([ehlo("mail.example.net"), ehlo("mailXexampleYnet")]).toEqual(["net-out.example.org", "mx.example.org"])
  })

  it("repeated tables merge; a key set in both is an error at the repeated header", () => {
    const config = load(read("v0.13-repeated-tables.toml"))
    expect(OutboundConfig.evaluateHost(config, { mx: "m" }).settings.tls.starttls).toBe("require")
    expect(issues("[queue.strategy]\nroute = \"'mx'\"\n\n[queue.strategy]\nroute = \"'mx'\"\n")).toEqual([[
      4,
      "queue.strategy.route",
      "the key is set twice: the table [queue.strategy] is repeated (Stalwart merges repeated tables, and so does " +
      "this library) and both set it"
    ]])
  })

  it("other quirks are named with their fix: a line break in a string, an unknown escape", () => {
    expect(issues("[queue.outbound]\nhostname = \"'a\nb'\"\n")[0]![2]).toContain("a line break inside a string")
    // In a repeated table too, at the file's line.
    const repeated = issues("[queue.strategy]\nroute = \"'mx'\"\n\n[queue.strategy]\nconnection = oops\n")
    expect([repeated[0]![0], repeated[0]![2]]).toEqual([
      5,
      "TOML syntax error: a bare word as a value (Stalwart reads \"oops\" as a string; TOML does not): write it " +
      "quoted, e.g. \"oops\", or \"'oops'\" where the key takes an expression"
    ])
    expect(issues("[queue.outbound]\nhostname = \"matches('\\d+', rcpt)\"\n")[0]![2]).toContain(
      "the escape \\d in a \"…\" string (Stalwart passes it through; TOML has no such escape): write \\\\d"
    )
  })
})

describe("the default EHLO name, as Stalwart of each layout has it", () => {
  const ehlo = (text: string) => OutboundConfig.evaluateConnection(load(text), {}).settings.ehloName
  it("[server] hostname (v0.11.2+, v0.13+), [lookup.default] hostname (v0.7–v0.11.1 files only)", () => {
    expect(ehlo("[server]\nhostname = \"s.example\"\n[queue.outbound]\n")).toBe("s.example")
    expect(ehlo("[lookup.default]\nhostname = \"l.example\"\n[queue.outbound]\n")).toBe("l.example")
    expect(ehlo("[server]\nhostname = \"s.example\"\n[queue.connection.default]\ntimeout.connect = \"1m\"\n")).toBe("s.example")
    expect(ehlo("[lookup.default]\nhostname = \"l.example\"\n[queue.connection.default]\nehlo-hostname = \"c.example\"\n"))
      .toBe("c.example")
    const both = load("[server]\nhostname = \"s.example\"\n[lookup.default]\nhostname = \"l.example\"\n[queue.outbound]\n")
    expect(OutboundConfig.evaluateConnection(both, {}).settings.ehloName).toBe("s.example")
    expect(both.warnings[0]).toContain("[server] hostname and [lookup.default] hostname are both set")
  })
})

describe("the json layout (v0.16)", () => {
  it("a JSON syntax error does not quote the text around it (it may be a secret)", () => {
    const unquoted = "{\"MtaRoute\": [{\"name\": \"r\", \"@type\": \"Relay\", \"address\": \"relay.test\",\n" +
      "  \"authUsername\": \"u\", \"authSecret\": s3cret}]}"
    const result = OutboundConfig.parse(unquoted, "x.json")
    expect(Either.isLeft(result) && result.left.message).toContain("x.json:2:")
    expect(Either.isLeft(result) && result.left.message).toContain("JSON syntax error: Unexpected character")
    expect(Either.isLeft(result) && result.left.message).not.toContain("s3cret")
    expect(Either.isLeft(result) && result.left.message).not.toContain("authSecret")
  })

  it("a relay's authSecret is v0.16's SecretKeyOptional: Value and None load, a variable or a file is refused", () => {
    const relay = (secret: unknown) =>
      JSON.stringify({ MtaRoute: [{ name: "r", "@type": "Relay", address: "relay.test", authUsername: "u", authSecret: secret }] }, null, 2)
    const loaded = load(relay({ "@type": "Value", secret: "s3cret" }), "r.json")
    const route = loaded.model.routes.get("r")
    const auth = route?.type === "relay" ? Option.getOrThrow(route.relay.auth) : null
    expect(auth && [auth.username, Redacted.value(auth.secret)]).toEqual(["u", "s3cret"])
    // Written back in the same shape, and loaded again the same.
    const json = Either.getOrThrow(OutboundConfig.convert(load(relay({ "@type": "Value", secret: "s3cret" }), "r.json"), "strategies"))
    const back = Either.getOrThrow(OutboundConfig.convert(load(json, "r.toml"), "json"))
    expect(JSON.parse(back).MtaRoute[0].authSecret).toEqual({ "@type": "Value", secret: "s3cret" })
    for (
      const [secret, problem] of [
        [{ "@type": "None" }, "AUTH needs a username and a secret; the secret is missing"],
        [{ "@type": "EnvironmentVariable", variableName: "S3CRET_VAR" }, "not supported: a secret read from an environment variable"],
        [{ "@type": "File", filePath: "/s3cret" }, "not supported: a secret read from a file"],
        [{ "@type": "Value", secret: "s3cret", extra: 1 }, "wrong fields"]
      ] as const
    ) {
      const result = OutboundConfig.parse(relay(secret), "r.json")
      if (Either.isRight(result)) throw new Error("expected a ConfigError")
      expect(result.left.message).toContain(problem)
      expect(result.left.message).not.toContain("s3cret")
      expect(result.left.issues.every((i) => i.line !== null)).toBe(true)
    }
  })

  it("a JSON syntax error has its line; an unknown Mta object is an error, other objects are ignored", () => {
    const syntax = issues("{\n  \"MtaRoute\": [ }\n", "x.json")
    expect(syntax[0]![0]).toBe(2)
    expect(syntax[0]![2]).toMatch(/^JSON syntax error/)
    expect(issues("{ \"MtaRoutes\": [], \"MtaTlsStrategy\": [], \"Other\": 1 }", "x.json")).toEqual([
      [1, "MtaRoutes", "no Stalwart registry object of that name (did you mean \"MtaRoute\"?)"]
    ])
    // Every issue of a JSON file has its line.
    const text = JSON.stringify({ MtaRoute: [{ "@type": "Mx", name: "mx", maxMxHosts: 0 }], MtaTlsStrategy: [{ name: "t", startTls: "required" }] }, null, 2)
    expect(issues(text, "x.json")).toEqual([
      [6, "MtaRoute[0].maxMxHosts", "wrong value (it is not at least 1)"],
      [12, "MtaTlsStrategy[0].startTls", "wrong value"]
    ])
  })

  it("durations in milliseconds, strategies by their v0.16 names, relays not implicit TLS by default", () => {
    const config = load(JSON.stringify({
      MtaRoute: [{ "@type": "Relay", name: "r", address: "192.0.2.1" }, { "@type": "Mx", name: "mx", ipLookupStrategy: "v4Only" }],
      MtaOutboundStrategy: { route: { match: { 0: { if: "rcpt_domain == 'r.test'", then: "'r'" } }, else: "'mx'" } },
      MtaConnectionStrategy: [{ name: "default", dataTimeout: 1234 }]
    }), "x.json")
    expect(OutboundConfig.evaluateDomain(config, { rcpt_domain: "r.test" }).settings.route).toMatchObject({
      _tag: "relay",
      implicitTls: false,
      port: 25
    })
    expect(OutboundConfig.evaluateHost(config, {}).settings.ipStrategy).toBe("ipv4_only")
    expect(Duration.toMillis(OutboundConfig.evaluateConnection(config, {}).settings.timeouts.data)).toBe(1234)
  })
})

// --- the same plan -----------------------------------------------------------------------------------------------

const zones: Dns.Zones = {
  "example.com": { mx: [{ exchange: "mx.example.com", priority: 10 }, { exchange: "slow.example.com", priority: 20 }] },
  "mx.example.com": { a: ["192.0.2.1"], aaaa: ["2001:db8::1"] },
  "slow.example.com": { a: ["192.0.2.2"] },
  "x.secure": { mx: [{ exchange: "mx.x.secure", priority: 10 }] },
  "mx.x.secure": { a: ["192.0.2.3"] }
}

const planOf = (text: string, file: string, retry = 0) =>
  Effect.runPromise(
    Transport.explain({
      message: "",
      sender: "a@origin.test",
      recipients: ["b@example.com", "c@example.net", "d@x.secure"],
      attempt: { retryNum: retry, lastError: retry > 0 ? "tls" : "none" }
    }).pipe(
      Effect.provide(Layer.mergeAll(
        Layer.orDie(OutboundConfig.layerFromText(text, file)),
        Dns.layerTest(zones),
        PolicyCache.layer,
        MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" }))
      )),
      Effect.provideService(Transport.TransportOptions, { port: 25, ca: undefined, domainConcurrency: 1, mtaStsPort: 443 })
    )
  )

/** A plan without what only names the layout and its strategies. */
const settingsOnly = (plan: ExplainReport) => ({
  ...plan,
  layout: null,
  domains: plan.domains.map((d) => ({ ...d, strategies: null, hosts: d.hosts.map((h) => ({ ...h, strategies: null })) }))
})

describe("a v0.16 JSON file and its TOML equivalents give the same plan", () => {
  for (const retry of [0, 1]) {
    it(`retry_num ${retry}`, async () => {
      const json = await planOf(read("v0.16.json"), "v0.16.json", retry)
      const strategies = await planOf(read("v0.15-strategies.toml"), "v0.15-strategies.toml", retry)
      const outbound = await planOf(read("v0.12-equivalent.toml"), "v0.12-equivalent.toml", retry)
      expect([json.layout, strategies.layout, outbound.layout]).toEqual(["json", "strategies", "outbound"])
      expect({ ...strategies, layout: "json" }).toEqual(json)
      expect(settingsOnly(outbound)).toEqual(settingsOnly(json))
      // The plan says which strategies the selectors chose.
      expect(json.domains.map((d) => [d.domain, d.strategies, d.hosts.map((h) => [h.host, h.strategies])])).toEqual([
        ["example.com", { route: "mx", tls: retry > 0 ? "invalid-tls" : "default", schedule: "remote" }, [
          ["mx.example.com", { connection: "default", tls: retry > 0 ? "invalid-tls" : "default" }],
          ["slow.example.com", { connection: "slow", tls: retry > 0 ? "invalid-tls" : "default" }]
        ]],
        ["example.net", { route: "relay", tls: retry > 0 ? "invalid-tls" : "default", schedule: "remote" }, [
          ["relay.example.net", { connection: "default", tls: retry > 0 ? "invalid-tls" : "default" }]
        ]],
        // The strict strategy requires MTA-STS, which x.secure does not publish: no host is tried.
        ["x.secure", { route: "mx", tls: retry > 0 ? "invalid-tls" : "strict", schedule: "remote" }, retry > 0
          ? [["mx.x.secure", { connection: "default", tls: "invalid-tls" }]]
          : []]
      ])
      // The relay route is the domain's one host, with no MX or MTA-STS lookup; its secret is in no plan.
      expect(json.domains[1]!.route).toMatchObject({ type: "relay", name: "relay", address: "relay.example.net", port: 465 })
      expect(json.domains[1]!.mx).toEqual([])
      expect(JSON.stringify(json)).not.toContain("s3cret")
    })
  }

  it("and so do the files convert writes from each of them", async () => {
    const reference = settingsOnly(await planOf(read("v0.16.json"), "v0.16.json"))
    for (const [file, layout] of [["v0.16.json", "json"], ["v0.15-strategies.toml", "strategies"]] as const) {
      const config = load(read(file), file)
      for (const to of ["outbound", "strategies", "json"] as const) {
        if (to === layout) continue
        const text = Either.getOrThrow(OutboundConfig.convert(config, to))
        expect([file, to, settingsOnly(await planOf(text, `${file}.${to}`))]).toEqual([file, to, reference])
      }
    }
  })
})

// --- convert ----------------------------------------------------------------------------------------------------

describe("convert", () => {
  it("this library's own keys (reuse.*, limiter-wait) are carried between the three layouts", () => {
    const values = (config: OutboundConfig.Config) => [
      Duration.toMillis(config.limiterWait.evaluate({}).value),
      config.reuse.messages.evaluate({}).value,
      Duration.toMillis(config.reuse.idle.evaluate({}).value),
      Duration.toMillis(config.reuse.age.evaluate({}).value)
    ]
    const original = load(`
[queue.outbound]
hostname = "'mx.example.org'"
limiter-wait = "2m"
[queue.outbound.reuse]
messages = 7
idle = "3s"
age = "1m"
`)
    const expected = [120_000, 7, 3_000, 60_000]
    expect(values(original)).toEqual(expected)
    const strategies = Either.getOrThrow(OutboundConfig.convert(original, "strategies"))
    // The spellings: limiter-wait is a domain-stage key, so it is the MX route's (whose selector is evaluated per
    // domain); the reuse keys are the connection strategy's.
    expect(strategies).toMatch(/\[queue\.route\.mx\][^[]*limiter-wait = "2m"/)
    expect(strategies).toMatch(/\[queue\.connection\.default\][^[]*reuse\.messages = 7/)
    const json = Either.getOrThrow(OutboundConfig.convert(load(strategies, "s.toml"), "json"))
    expect(json).toContain("\"reuseMessages\": 7")
    expect(json).toContain("\"limiterWait\":")
    const back = Either.getOrThrow(OutboundConfig.convert(load(json, "s.json"), "outbound"))
    for (const text of [strategies, json, back]) expect(values(load(text, "converted"))).toEqual(expected)
  })

  it("a setting with no equivalent in the target is an error that names it", () => {
    const config = load(`
[queue.outbound]
hostname = "'mx.example.org'"
[queue.outbound.timeouts]
connect = [ { if = "retry_num > 0", then = "1m" }, { else = "5m" } ]
`)
    const result = OutboundConfig.convert(config, "strategies")
    expect(Either.isLeft(result) && result.left.issues.map((i) => [i.path, i.message.split(": found")[0]])).toEqual([[
      "queue.outbound.timeouts.connect",
      "queue.outbound.timeouts.connect: an expression: the target layout holds plain values in named strategies, " +
      "chosen by [queue.strategy] expressions; write one strategy per case and select it there"
    ]])
    const computed = load("[queue.strategy]\nconnection = \"rcpt_domain\"\n[queue.connection.a]\ntimeout.connect = \"1m\"\n")
    const toOutbound = OutboundConfig.convert(computed, "outbound")
    expect(Either.isLeft(toOutbound) && toOutbound.left.issues[0]!.message).toContain(
      "the connection selector computes a strategy name"
    )
  })

  it("the secret is in the converted file (it is configuration), never in show", () => {
    const config = load(read("v0.15-strategies.toml"))
    expect(Either.getOrThrow(OutboundConfig.convert(config, "json"))).toContain("s3cret")
    const shown = OutboundConfig.show(config, read("v0.15-strategies.toml"))
    expect(shown).not.toContain("s3cret")
    expect(shown).toContain("auth.secret = <redacted>")
  })

  it("show names a relay's token as auth.token (at its line) and shows auth.allow-plaintext", () => {
    const text = "[queue.strategy]\nroute = \"'r'\"\n[queue.route.r]\ntype = \"relay\"\naddress = \"relay.test\"\n" +
      "auth.username = \"mta\"\nauth.token = \"t0ken\"\nauth.allow-plaintext = true\n"
    const shown = OutboundConfig.show(load(text), text)
    expect(shown).not.toContain("t0ken")
    expect(shown).not.toContain("auth.secret")
    expect(shown).toMatch(/auth\.token = <redacted>\s+# test\.toml:7/)
    expect(shown).toMatch(/auth\.allow-plaintext = true\s+# test\.toml:8/)
  })

  it("show lists the outbound limiters, each with its line", () => {
    const text = "[queue.outbound]\nhostname = \"'mx.test'\"\n[queue.limiter.outbound.per-mx]\nkey = [\"mx\"]\n" +
      "concurrency = 5\nrate = \"100/1s\"\nmatch = \"rcpt_domain == 'a.test'\"\n"
    const shown = OutboundConfig.show(load(text), text)
    expect(shown).toMatch(/# outbound limiter "per-mx", checked at the host stage\s+# test\.toml:3/)
    expect(shown).toContain(`  key = ["mx"]\n  concurrency = 5\n  rate = "100/1s"\n  match = "rcpt_domain == 'a.test'"`)
    const throttle = "[queue.outbound]\nhostname = \"'mx.test'\"\n[[queue.throttle]]\nkey = \"rcpt_domain\"\nconcurrency = 2\n"
    expect(OutboundConfig.show(load(throttle), throttle)).toMatch(
      /# outbound limiter "throttle\[0\]", checked at the domain stage\s+# test\.toml:3/
    )
  })

  // Generated v0.13–v0.15 files: strategies with random values, selectors as if-lists over a few conditions.
  const conditions = ["retry_num > 0", "rcpt_domain == 'a.test'", "mx == 'mx.b.test'", "ends_with(rcpt_domain, '.c')"]
  const routeConditions = conditions.filter((c) => !c.includes("mx"))
  const duration = fc.constantFrom("1s", "30s", "2m", "5m", "10m", "1h")
  const connection = fc.record({
    "timeout.connect": duration,
    "timeout.data": duration,
    "ehlo-hostname": fc.constantFrom("a.example", "b.example"),
    "source-ips": fc.subarray(["192.0.2.1", "192.0.2.2", "2001:db8::1"])
  }, { requiredKeys: [] })
  const tls = fc.record({
    starttls: fc.constantFrom("optional", "require", "disable"),
    "mta-sts": fc.constantFrom("optional", "require", "disable"),
    "allow-invalid-certs": fc.boolean(),
    "timeout.tls": duration
  }, { requiredKeys: [] })
  const mx = fc.record({
    "limits.mx": fc.integer({ min: 1, max: 9 }),
    "ip-lookup": fc.constantFrom("ipv4_only", "ipv6_only", "ipv4_then_ipv6", "ipv6_then_ipv4")
  }, { requiredKeys: [] })
  const selector = (names: ReadonlyArray<string>, conds: ReadonlyArray<string>) =>
    fc.tuple(fc.subarray([...conds]), fc.array(fc.constantFrom(...names), { minLength: 5, maxLength: 5 }))
      .map(([ifs, picks]) => [...ifs.map((c, i) => ({ if: c, then: `'${picks[i]}'` })), { else: `'${picks[4]}'` }])
  // Named schedules: a retry list (required), notify (maybe empty), and expire or max-attempts or neither.
  const durations = (min: number) => fc.array(duration, { minLength: min, maxLength: 4 })
  // Its virtual queue (queue-name; left out: "default" is written) may have a [queue.virtual] table or not.
  const schedule = fc.tuple(
    durations(1),
    fc.option(durations(0), { nil: undefined }),
    fc.oneof(
      fc.constant({}),
      duration.map((d) => ({ expire: d })),
      fc.integer({ min: 1, max: 20 }).map((n) => ({ "max-attempts": n }))
    ),
    fc.option(fc.constantFrom("remote", "default", "bulk"), { nil: undefined })
  ).map(([retry, notify, expiry, queue]) => ({
    ...(queue === undefined ? {} : { "queue-name": queue }),
    retry,
    ...(notify === undefined ? {} : { notify }),
    ...expiry
  }))
  const virtualQueues = fc.uniqueArray(
    fc.tuple(fc.constantFrom("remote", "bulk", "other"), fc.integer({ min: 1, max: 64 })),
    { selector: ([name]) => name, maxLength: 3 }
  )
  const scheduleConditions = ["retry_num > 1", "rcpt_domain == 'a.test'", "source == 'dsn'", "last_error == 'dns'"]
  const file = fc.record({
    connections: fc.tuple(connection, connection),
    tls: fc.tuple(tls, tls),
    mx,
    relay: fc.boolean(),
    ehloBySource: fc.boolean(),
    schedules: fc.tuple(schedule, schedule),
    virtual: virtualQueues
  }).chain((f) =>
    fc.record({
      f: fc.constant(f),
      route: selector(f.relay ? ["mx", "r"] : ["mx"], routeConditions),
      connection: selector(["c0", "c1", "default"], conditions),
      // Left out, the TLS selector is Stalwart's default: invalid-tls after a TLS error.
      tlsSelector: fc.option(selector(["t0", "t1", "default", "invalid-tls"], conditions), { nil: undefined }),
      // Left out, the schedule selector is Stalwart's default: dsn and report by source, else remote.
      scheduleSelector: fc.option(selector(["s0", "s1", "remote", "dsn", "default"], scheduleConditions), { nil: undefined })
    })
  ).map(({ connection, f, route, scheduleSelector, tlsSelector }) => {
    const table = (header: string, entries: object) =>
      [`[${header}]`, ...Object.entries(entries).map(([k, v]) => `${k} = ${JSON.stringify(v)}`)].join("\n")
    const inline = (list: ReadonlyArray<object>) =>
      `[${list.map((i) => `{ ${Object.entries(i).map(([k, v]) => `${k} = ${JSON.stringify(v)}`).join(", ")} }`).join(", ")}]`
    return [
      "[queue.strategy]",
      `route = ${inline(route)}`,
      `connection = ${inline(connection)}`,
      tlsSelector === undefined ? "" : `tls = ${inline(tlsSelector)}`,
      scheduleSelector === undefined ? "" : `schedule = ${inline(scheduleSelector)}`,
      table("queue.route.mx", { type: "mx", ...f.mx }),
      f.relay ? table("queue.route.r", { type: "relay", address: "192.0.2.50", port: 2525, "tls.implicit": false }) : "",
      table("queue.connection.c0", f.connections[0]),
      table("queue.connection.c1", f.connections[1]),
      table("queue.tls.t0", f.tls[0]),
      table("queue.tls.t1", f.tls[1]),
      f.ehloBySource && (f.connections[0]["source-ips"] ?? []).includes("192.0.2.1")
        ? table("queue.source-ip.\"192.0.2.1\"", { "ehlo-hostname": "src.example" })
        : "",
      table("queue.schedule.s0", f.schedules[0]),
      table("queue.schedule.s1", f.schedules[1]),
      ...f.virtual.map(([name, threads]) => table(`queue.virtual.${name}`, { "threads-per-node": threads }))
    ].join("\n\n")
  })
  const variables = fc.record({
    rcpt_domain: fc.constantFrom("a.test", "b.test", "x.c"),
    mx: fc.constantFrom("mx.b.test", "other.test"),
    retry_num: fc.integer({ min: 0, max: 2 }),
    last_error: fc.constantFrom("none", "tls"),
    remote_ip: fc.constant("192.0.2.99"),
    local_ip: fc.constantFrom("192.0.2.1", "192.0.2.2", "0.0.0.0"),
    source: fc.constantFrom("dsn", "report", "authenticated")
  })
  const evaluate = (config: OutboundConfig.Config, vars: Variables) => ({
    // The schedule as its name and values (the name of an outbound layout's one schedule is "default").
    schedule: (({ name: _, ...values }) => values)(config.schedule(vars).settings),
    domain: OutboundConfig.evaluateDomain(config, { ...vars, mx: "" }).settings,
    host: OutboundConfig.evaluateHost(config, vars).settings,
    connection: OutboundConfig.evaluateConnection(config, vars).settings
  })

  /**
   * The virtual queue of each schedule the file defines (`default` when it names none, as convert writes it), and the
   * virtual queues the file defines with their thread counts.
   */
  const queues = (config: OutboundConfig.Config) => ({
    schedules: [...config.model.schedules.values()].filter((d) => d.origin !== null)
      .map((d) => [d.name, d.queueName?.setting.evaluate({}).value ?? "default"]),
    virtual: new Map([...(config.model.virtualQueues?.values() ?? [])].map((q) => [q.name, q.threads]))
  })
  /** What a converted file's queues must be: the same names, and every queue of the source with its count. */
  const sameQueues = (converted: OutboundConfig.Config, source: OutboundConfig.Config) => {
    const [got, want] = [queues(converted), queues(source)]
    expect(got.schedules).toEqual(want.schedules)
    for (const [name, threads] of want.virtual) expect([name, got.virtual.get(name)]).toEqual([name, threads])
  }

  it.prop(
    "converting to each layout and loading again gives the same settings",
    { text: file, samples: fc.array(variables, { minLength: 1, maxLength: 8 }) },
    ({ samples, text }) => {
      const config = load(text)
      for (const to of ["outbound", "json"] as const) {
        const written = OutboundConfig.convert(config, to)
        if (Either.isLeft(written)) throw new Error(`${to}: ${written.left.message}\n${text}`)
        const again = load(written.right, `converted.${to}`)
        expect(again.layout).toBe(to)
        for (const vars of samples) expect(evaluate(again, vars)).toEqual(evaluate(config, vars))
        // And back again from JSON to the strategies layout; the schedules' virtual queues both ways (the outbound
        // layout has none).
        if (to === "json") {
          sameQueues(again, config)
          const back = load(Either.getOrThrow(OutboundConfig.convert(again, "strategies")))
          for (const vars of samples) expect(evaluate(back, vars)).toEqual(evaluate(config, vars))
          sameQueues(back, config)
        }
      }
    },
    { fastCheck: { numRuns: 60 } }
  )
})

// --- the command ------------------------------------------------------------------------------------------------

const cli = (...args: ReadonlyArray<string>) => runMain(args)

describe("smtp-transport config", () => {
  const corpus = (name: string) => path.join(CORPUS, name)

  it.effect("check: loads, the layout and what a transport does not use; every error and 78 otherwise", () =>
    Effect.gen(function*() {
      const ok = yield* cli("config", "check", corpus("v0.12-next-hop.toml"))
      expect([ok.code, ok.stdout.split("\n").map((l) => l.replace(CORPUS, "<c>"))]).toEqual([0, [
        "<c>/v0.12-next-hop.toml: loads (layout outbound)",
        ""
      ]])
      const bad = yield* cli("config", "check", corpus("v0.13-wrong-route-keys.toml"))
      expect([bad.code, bad.stderr.split("\n").length]).toEqual([78, 5])
      expect(bad.stderr).toContain("v0.13-wrong-route-keys.toml:7:1: queue.route.mx.address")
    }))

  it.effect("show: every value with where it came from", () =>
    Effect.gen(function*() {
      const shown = yield* cli("config", "show", corpus("v0.15-strategies.toml"))
      expect(shown.code).toBe(0)
      const line = (start: string) => shown.stdout.split("\n").find((l) => l.trimStart().startsWith(start))?.replace(/\s+#/, " #")
      expect(line("timeout.data =")).toBe(`  timeout.data = "15m" # ${corpus("v0.15-strategies.toml")}:34`)
      expect(line("timeout.greeting =")).toBe("  timeout.greeting = \"5m\" # default")
      expect(line("auth.secret =")).toBe(`  auth.secret = <redacted> # ${corpus("v0.15-strategies.toml")}:29`)
      expect(shown.stdout).not.toContain("s3cret")
    }))

  it.effect("convert: the file in another layout on standard output, which loads to the same settings", () =>
    Effect.gen(function*() {
      const converted = yield* cli("config", "convert", "--to", "json", corpus("v0.15-strategies.toml"))
      expect(converted.code).toBe(0)
      const config = load(converted.stdout, "converted.json")
      expect(config.layout).toBe("json")
      const usage = yield* cli("config", "convert", "--to", "toml", corpus("v0.15-strategies.toml"))
      expect([usage.code, usage.stderr.trim()]).toEqual([
        64,
        "smtp-transport: config convert needs --to outbound|strategies|json, not \"toml\""
      ])
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "config-convert-"))
      const expression = path.join(tmp, "expr.toml")
      fs.writeFileSync(expression, "[queue.outbound]\nhostname = \"rcpt_domain\"\n")
      const refused = yield* cli("config", "convert", "--to", "strategies", expression)
      expect(refused.code).toBe(78)
      expect(refused.stderr).toContain("cannot convert to strategies")
      const limited = path.join(tmp, "limited.toml")
      fs.writeFileSync(
        limited,
        "[queue.outbound]\nhostname = \"'mx.test'\"\n[queue.limiter.outbound.per-mx]\nkey = [\"mx\"]\nconcurrency = 5\n" +
          "[queue.limiter.outbound.per-domain]\nkey = \"rcpt_domain\"\nrate = \"10/1m\"\n" +
          "match = [{ if = \"rcpt_domain == 'a.test'\", then = \"true\" }, { else = \"remote_ip == '127.0.0.1'\" }]\n"
      )
      // The limiters go along, into every layout, and load back the same.
      const shape = (c: OutboundConfig.Config) =>
        c.limiters.map((l) => [l.key, l.concurrency, l.rate && [l.rate.count, Duration.toMillis(l.rate.period)], l.stage])
      const original = load(fs.readFileSync(limited, "utf8"), "limited.toml")
      for (const to of ["strategies", "json"] as const) {
        const carried = yield* cli("config", "convert", "--to", to, limited)
        expect([carried.code, carried.stderr]).toEqual([0, ""])
        expect(shape(load(carried.stdout, `limited.${to}`))).toEqual(shape(original))
      }
      fs.rmSync(tmp, { recursive: true })
    }))
})
