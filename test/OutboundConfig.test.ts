import { FileSystem } from "@effect/platform"
import { NodeFileSystem } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Either, Option } from "effect"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as OutboundConfig from "../src/OutboundConfig.js"
import { hostnameProblem } from "../src/internal/config/convert.js"
import { looksLikeDuration, parseDuration } from "../src/internal/duration.js"
import { ENTRIES, ROUTE_KEY } from "../src/internal/config/keys.js"

type Config = OutboundConfig.Config

const ok = (text: string): Config => {
  const result = OutboundConfig.parse(text, "test.toml")
  if (Either.isLeft(result)) throw new Error(result.left.message)
  return result.right
}

const bad = (text: string): OutboundConfig.ConfigError => {
  const result = OutboundConfig.parse(text, "test.toml")
  if (Either.isRight(result)) throw new Error("the configuration loaded but should not have")
  return result.left
}

const get = <A>(setting: OutboundConfig.Setting<A>, vars: Record<string, unknown> = {}): A => {
  const evaluated = setting.evaluate(vars as never)
  expect(evaluated.warning).toBeNull()
  return evaluated.value
}

const millis = (setting: OutboundConfig.Setting<Duration.Duration>, vars: Record<string, unknown> = {}): number =>
  Duration.toMillis(get(setting, vars))

const issueAt = (error: OutboundConfig.ConfigError, at: string): OutboundConfig.ConfigIssue => {
  const found = error.issues.filter((issue) => issue.path === at)
  expect(found.map((issue) => issue.path)).toEqual([at])
  return found[0]!
}

const DURATION =
  "a duration: digits and one unit of ms, s, m, h or d (e.g. \"3m\", \"500ms\"; bare digits are milliseconds), greater than zero"
const IF_ITEM = "{ if = \"…\", then = \"…\" } or { else = \"…\" }"
const HOST = "a host name (letters, digits, hyphens and dots; at most 255 characters and 63 per label)"

describe("parseDuration", () => {
  it("accepts every unit, case-insensitively, and bare digits as milliseconds", () => {
    const cases: ReadonlyArray<readonly [string, number]> = [
      ["3m", 180_000],
      ["10s", 10_000],
      ["1h", 3_600_000],
      ["500ms", 500],
      ["2d", 172_800_000],
      ["150", 150],
      ["3M", 180_000],
      ["500MS", 500],
      ["1H", 3_600_000],
      ["2D", 172_800_000],
      ["10S", 10_000],
      [" 5m ", 300_000]
    ]
    for (const [text, ms] of cases) {
      expect([text, Either.map(parseDuration(text), Duration.toMillis)]).toEqual([text, Either.right(ms)])
    }
  })

  it("rejects each malformed form with its reason", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["1h30m", "compound durations are not allowed; use one number and one unit (e.g. \"90m\" for 1h30m)"],
      ["1.5h", "fractions are not allowed; use a smaller unit (e.g. \"1500ms\" for 1.5s)"],
      [".5s", "fractions are not allowed; use a smaller unit (e.g. \"1500ms\" for 1.5s)"],
      ["-5m", "signs are not allowed"],
      ["+5m", "signs are not allowed"],
      ["0", "it must be greater than zero"],
      ["0ms", "it must be greater than zero"],
      ["5w", "unknown unit \"w\"; the units are ms, s, m, h and d"],
      ["5min", "unknown unit \"min\"; the units are ms, s, m, h and d"],
      ["", "it is empty"],
      ["5 m", "spaces are not allowed between the number and the unit"],
      ["m", "it is not <digits><unit>"],
      ["99999999999999999d", "it is too large"]
    ]
    for (const [text, why] of cases) {
      expect([text, parseDuration(text)]).toEqual([text, Either.left(why)])
    }
  })

  it("tells duration attempts from expressions", () => {
    expect(["3m", "1h30m", "-5m", "1.5h", "0", "5w"].map(looksLikeDuration)).toEqual([true, true, true, true, true, true])
    expect(["retry_num", "5m + 1", "if_then(retry_num > 0, 1m, 5m)", "'3m'"].map(looksLikeDuration))
      .toEqual([false, false, false, false])
  })
})

describe("defaults", () => {
  // The machine's name is the default EHLO name when it is a valid host name (it is on any sane machine).
  const machine = hostnameProblem(os.hostname()) === null ? os.hostname() : "localhost"
  const check = (config: Config) => {
    expect(get(config.ehloName)).toBe(machine)
    expect(get(config.ipStrategy)).toBe("ipv4_then_ipv6")
    expect(get(config.sourceIp.v4)).toEqual([])
    expect(get(config.sourceIp.v6)).toEqual([])
    expect(get(config.limits.mx)).toBe(5)
    expect(get(config.limits.multihomed)).toBe(2)
    const t = config.timeouts
    expect([t.connect, t.greeting, t.tls, t.ehlo, t["mail-from"], t["rcpt-to"], t.data, t["mta-sts"]].map((s) => millis(s)))
      .toEqual([300_000, 300_000, 180_000, 300_000, 300_000, 300_000, 600_000, 600_000])
    expect(get(config.tls.starttls)).toBe("optional")
    expect(get(config.tls.mtaSts)).toBe("optional")
    expect(get(config.tls.allowInvalidCerts)).toBe(false)
    expect(get(config.connectionAttemptDelay)).toEqual(Option.some(Duration.millis(250)))
    expect(config.warnings).toEqual([])
  }

  it("without a file", () => {
    check(OutboundConfig.defaults)
    expect(OutboundConfig.defaults.file).toBeNull()
  })

  it("with an empty section; a file with no outbound setting is an error", () => {
    check(ok("[queue.outbound]\n"))
    for (const text of ["", "[queue]\n[server]\nhostname = 'mx.example'\n"]) {
      expect(bad(text).issues.map((i) => i.message.split(": found")[0])).toEqual(["no outbound setting found"])
    }
  })

  it("names every key and its stage, as the key table says", () => {
    // Config is generated from the table: where an entry's name puts its Setting, the Setting has the entry's key
    // (below queue.outbound) and stage.
    const at = (path: ReadonlyArray<string>) =>
      path.reduce<unknown>((node, p) => (node as Record<string, unknown>)[p], OutboundConfig.defaults) as
        OutboundConfig.Setting<unknown>
    expect(ENTRIES.length).toBeGreaterThan(0)
    for (const entry of ENTRIES) {
      expect(`${at(entry.at).key}@${at(entry.at).stage}`, entry.name).toBe(
        `queue.outbound.${entry.spec.path.join(".")}@${entry.spec.stage}`
      )
    }
    expect(at(["timeouts", "mail-from"])).toMatchObject({ key: "queue.outbound.timeouts.mail-from", stage: "connection" })
  })

  it("takes the hostname default from [lookup.default] of the same file", () => {
    const config = ok("[lookup.default]\nhostname = \"mail.example.net\"\n[queue.outbound]\n")
    expect(get(config.ehloName)).toBe("mail.example.net")
    const viaExpression = ok(
      "[lookup.default]\nhostname = \"mail.example.net\"\n[queue.outbound]\nhostname = \"'relay.' + key_get('default', 'hostname')\"\n"
    )
    expect(get(viaExpression.ehloName)).toBe("relay.mail.example.net")
  })

  it("refuses an invalid [lookup.default] hostname", () => {
    expect(issueAt(bad("[lookup.default]\nhostname = 5\n[queue.outbound]\n"), "lookup.default.hostname").found)
      .toBe("the number 5")
    const error = bad("[lookup.default]\nhostname = \"bad host\"\n[queue.outbound]\n")
    expect(error.issues).toEqual([{
      path: "lookup.default.hostname",
      found: "the string \"bad host\"",
      expected: HOST,
      message: "lookup.default.hostname: not a valid host name (it contains white space); it is the default EHLO " +
        "name: found the string \"bad host\"; expected " + HOST,
      line: 2,
      column: 1
    }])
  })
})

describe("Stalwart's documented examples", () => {
  it("ip-strategy if-list: ipv6_only on the first attempt, ipv4_only on retries", () => {
    const config = ok(`
[queue.outbound]
ip-strategy = [ {if = "retry_num == 0", then = "ipv6_only"}, {else = "ipv4_only"} ]
`)
    expect(get(config.ipStrategy, { retry_num: 0 })).toBe("ipv6_only")
    expect(get(config.ipStrategy, { retry_num: 1 })).toBe("ipv4_only")
  })

  it("ip-strategy as a bare constant or a quoted string", () => {
    expect(get(ok("[queue.outbound]\nip-strategy = \"ipv4_then_ipv6\"").ipStrategy)).toBe("ipv4_then_ipv6")
    expect(get(ok("[queue.outbound]\nip-strategy = \"ipv6_then_ipv4\"").ipStrategy)).toBe("ipv6_then_ipv4")
    expect(get(ok("[queue.outbound]\nip-strategy = \"'ipv6_only'\"").ipStrategy)).toBe("ipv6_only")
    expect(get(ok("[queue.outbound]\nip-strategy = \"'IPv4_Only'\"").ipStrategy)).toBe("ipv4_only")
  })

  it("source-ip lists as expression strings", () => {
    const config = ok(`
[queue.outbound.source-ip]
v4 = "['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4']"
v6 = "['a:b::1', 'a:b::2', 'a:b::3', 'a:b::4']"
`)
    expect(get(config.sourceIp.v4)).toEqual(["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"])
    expect(get(config.sourceIp.v6)).toEqual(["a:b::1", "a:b::2", "a:b::3", "a:b::4"])
  })

  it("source-ip lists as native TOML arrays (the older docs' form) and a single address", () => {
    const config = ok(`
[queue.outbound.source-ip]
v4 = ["192.0.2.10", "192.0.2.11"]
v6 = "'2001:db8::a'"
`)
    expect(get(config.sourceIp.v4)).toEqual(["192.0.2.10", "192.0.2.11"])
    expect(get(config.sourceIp.v6)).toEqual(["2001:db8::a"])
    expect(get(ok("[queue.outbound.source-ip]\nv4 = []\nv6 = \"''\"").sourceIp.v4)).toEqual([])
    expect(get(ok("[queue.outbound.source-ip]\nv6 = \"''\"").sourceIp.v6)).toEqual([])
  })

  it("hostname as a quoted string literal", () => {
    expect(get(ok("[queue.outbound]\nhostname = \"'mx.example.org'\"").ehloName)).toBe("mx.example.org")
  })

  it("limits 7 and 2", () => {
    const config = ok("[queue.outbound.limits]\nmx = 7\nmultihomed = 2\n")
    expect(get(config.limits.mx)).toBe(7)
    expect(get(config.limits.multihomed)).toBe(2)
    const strings = ok("[queue.outbound.limits]\nmx = \"7\"\nmultihomed = \"'3'\"\n")
    expect([get(strings.limits.mx), get(strings.limits.multihomed)]).toEqual([7, 3])
  })

  it("the eight timeouts", () => {
    const config = ok(`
[queue.outbound.timeouts]
connect = "3m"
greeting = "3m"
tls = "2m"
ehlo = "3m"
mail-from = "3m"
rcpt-to = "3m"
data = "10m"
mta-sts = "2m"
`)
    const t = config.timeouts
    expect(millis(t.connect)).toBe(180_000)
    expect(millis(t.greeting)).toBe(180_000)
    expect(millis(t.tls)).toBe(120_000)
    expect(millis(t.ehlo)).toBe(180_000)
    expect(millis(t["mail-from"])).toBe(180_000)
    expect(millis(t["rcpt-to"])).toBe(180_000)
    expect(millis(t.data)).toBe(600_000)
    expect(millis(t["mta-sts"])).toBe(120_000)
  })

  it("durations as integers (milliseconds), unit-less strings, uppercase units and string results", () => {
    const config = ok(`
[queue.outbound.timeouts]
connect = 1500
greeting = "250"
tls = "2M"
ehlo = "'45s'"
mail-from = "1m + 30s"
`)
    const t = config.timeouts
    expect([t.connect, t.greeting, t.tls, t.ehlo, t["mail-from"]].map((s) => millis(s)))
      .toEqual([1500, 250, 120_000, 45_000, 90_000])
  })

  it("a timeout given by an expression: shorter on retries", () => {
    const config = ok(`
[queue.outbound.timeouts]
connect = [ { if = "retry_num > 0", then = "30s" }, { else = "3m" } ]
data = "if_then(retry_num > 0, 1m, 10m)"
`)
    expect(millis(config.timeouts.connect, { retry_num: 0 })).toBe(180_000)
    expect(millis(config.timeouts.connect, { retry_num: 2 })).toBe(30_000)
    expect(millis(config.timeouts.data, { retry_num: 0 })).toBe(600_000)
    expect(millis(config.timeouts.data, { retry_num: 1 })).toBe(60_000)
  })

  it("starttls from Stalwart's test suite, and every TLS constant", () => {
    const config = ok(`
[queue.outbound]
hostname = "'badtls.foobar.org'"
[queue.outbound.tls]
starttls = [ { if = "retry_num > 0 && last_error == 'tls'", then = "disable"},
             { else = "optional" }]
`)
    expect(get(config.ehloName)).toBe("badtls.foobar.org")
    expect(get(config.tls.starttls, { retry_num: 0, last_error: "none" })).toBe("optional")
    expect(get(config.tls.starttls, { retry_num: 1, last_error: "tls" })).toBe("disable")
    const policy = (value: string) => get(ok(`[queue.outbound.tls]\nmta-sts = ${value}`).tls.mtaSts)
    expect(["\"optional\"", "\"require\"", "\"required\"", "\"disable\"", "\"disabled\"", "\"none\"", "\"false\"", "false"]
      .map(policy)).toEqual(["optional", "require", "require", "disable", "disable", "disable", "disable", "disable"])
  })

  it("booleans, native and as expressions", () => {
    expect(get(ok("[queue.outbound.tls]\nallow-invalid-certs = true").tls.allowInvalidCerts)).toBe(true)
    expect(get(ok("[queue.outbound.tls]\nallow-invalid-certs = \"false\"").tls.allowInvalidCerts)).toBe(false)
    const config = ok(`
[queue.outbound.tls]
allow-invalid-certs = [ { if = "retry_num > 0 && last_error == 'tls'", then = true }, { else = false } ]
`)
    expect(get(config.tls.allowInvalidCerts, { retry_num: 1, last_error: "tls" })).toBe(true)
    expect(get(config.tls.allowInvalidCerts, { retry_num: 1, last_error: "dns" })).toBe(false)
  })

  it("connection-attempt-delay: a duration, or false for one attempt at a time", () => {
    expect(get(ok("[queue.outbound]\nconnection-attempt-delay = false").connectionAttemptDelay)).toEqual(Option.none())
    expect(get(ok("[queue.outbound]\nconnection-attempt-delay = \"false\"").connectionAttemptDelay))
      .toEqual(Option.none())
    expect(get(ok("[queue.outbound]\nconnection-attempt-delay = \"100ms\"").connectionAttemptDelay))
      .toEqual(Option.some(Duration.millis(100)))
    expect(get(ok("[queue.outbound]\nconnection-attempt-delay = 300").connectionAttemptDelay))
      .toEqual(Option.some(Duration.millis(300)))
    const config = ok(`
[queue.outbound]
connection-attempt-delay = [ { if = "mx == 'legacy.example'", then = false }, { else = "250ms" } ]
`)
    expect(get(config.connectionAttemptDelay, { mx: "legacy.example" })).toEqual(Option.none())
    expect(get(config.connectionAttemptDelay, { mx: "mx.example" })).toEqual(Option.some(Duration.millis(250)))
  })

  it("matches() captures reach the then", () => {
    const config = ok(`
[queue.outbound]
hostname = [ { if = "matches('^(.+)\\\\.example\\\\.com$', rcpt_domain)", then = "'out.' + $1 + '.example.net'" },
             { else = "'mx.example.net'" } ]
`)
    expect(get(config.ehloName, { rcpt_domain: "eu.example.com" })).toBe("out.eu.example.net")
    expect(get(config.ehloName, { rcpt_domain: "other.org" })).toBe("mx.example.net")
  })

  it("stage variables: mx per host, remote_ip per connection", () => {
    const config = ok(`
[queue.outbound]
hostname = "if_then(is_ipv6_addr(remote_ip), 'v6.example.org', 'v4.example.org')"
ip-strategy = "if_then(ends_with(mx, '.v6only.example'), ipv6_only, ipv4_then_ipv6)"
[queue.outbound.limits]
mx = "if_then(rcpt_domain == 'big.example', 10, 5)"
`)
    expect(get(config.ehloName, { remote_ip: "2001:db8::1" })).toBe("v6.example.org")
    expect(get(config.ehloName, { remote_ip: "192.0.2.1" })).toBe("v4.example.org")
    expect(get(config.ipStrategy, { mx: "a.v6only.example" })).toBe("ipv6_only")
    expect(get(config.limits.mx, { rcpt_domain: "big.example" })).toBe(10)
  })
})

describe("tls.dane", () => {
  it("is a host-stage key: optional by default, require or disable, an expression on mx like its siblings", () => {
    const config = ok(`
[queue.outbound]
next-hop = [ { if = "rcpt_domain == 'local.example'", then = "'local'" }, { else = false } ]
[queue.outbound.tls]
dane = [ { if = "mx == 'strict.example'", then = "require" }, { if = "mx == 'off.example'", then = "disable" }, { else = "optional" } ]
`)
    expect(config.warnings).toEqual([])
    const domain = { rcpt: "a@b.example", rcpt_domain: "b.example", retry_num: 1 }
    const dane = (mx: string) => OutboundConfig.evaluateHost(config, { ...domain, mx }).settings.tls.dane
    expect([dane("strict.example"), dane("off.example"), dane("other.example")]).toEqual(["require", "disable", "optional"])
    expect(OutboundConfig.evaluateHost(ok("[queue.outbound]\n"), { ...domain, mx: "x.example" }).settings.tls.dane).toBe("optional")
  })

  it("a value that is no TLS policy is an error naming the key, what was found and what was expected", () => {
    const error = bad(`
[queue.outbound.tls]
dane = "sometimes"
`).message
    expect(error).toContain("queue.outbound.tls.dane")
    expect(error).toContain("sometimes")
  })
})

describe("bad input", () => {
  it("TOML syntax error, with its line and column", () => {
    const error = bad("[queue.outbound]\nhostname = \"'a'\"\nlimits.mx = \n")
    expect(error.file).toBe("test.toml")
    expect(error.issues).toEqual([{
      path: "",
      found: "the line \"limits.mx =\"",
      expected: "valid TOML",
      message: "TOML syntax error: invalid value: found the line \"limits.mx =\"; expected valid TOML",
      line: 3,
      column: 13
    }])
    expect(error.message).toBe(
      "invalid configuration test.toml: 1 issue\n" +
        "  test.toml:3:13: TOML syntax error: invalid value: found the line \"limits.mx =\"; expected valid TOML"
    )
  })

  it("unknown key: a typo is an error, with a suggestion and its position", () => {
    const error = bad("[queue.outbound.timeouts]\nconect = \"3m\"\n")
    expect(error.issues).toEqual([{
      path: "queue.outbound.timeouts.conect",
      found: "the key \"conect\"",
      expected: "one of connect, greeting, tls, ehlo, mail-from, rcpt-to, data, mta-sts",
      message: "queue.outbound.timeouts.conect: unknown key (did you mean \"connect\"?): found the key \"conect\"; " +
        "expected one of connect, greeting, tls, ehlo, mail-from, rcpt-to, data, mta-sts",
      line: 2,
      column: 1
    }])
    expect(issueAt(bad("[queue.outbound]\nip_strategy = \"ipv4_only\""), "queue.outbound.ip_strategy").message)
      .toContain("unknown key (did you mean \"ip-strategy\"?)")
    expect(issueAt(bad("[queue.outbound.timeout]\nconnect = \"3m\""), "queue.outbound.timeout").line).toBe(1)
  })

  it("a table where a value is expected and the other way round", () => {
    const error = bad("[queue.outbound]\ntimeouts = \"5m\"\nhostname = { name = \"x\" }\n")
    expect(issueAt(error, "queue.outbound.timeouts")).toMatchObject({
      found: "the string \"5m\"",
      expected: "a table with the keys connect, greeting, tls, ehlo, mail-from, rcpt-to, data, mta-sts",
      line: 2
    })
    expect(issueAt(error, "queue.outbound.hostname")).toMatchObject({
      found: "a table with the keys name",
      expected: HOST,
      line: 3
    })
    expect(issueAt(bad("[queue]\noutbound = 3"), "queue.outbound").found).toBe("the integer 3")
  })

  it("wrong value types", () => {
    const error = bad(`
[queue.outbound]
hostname = 42
ip-strategy = "'fastest'"
[queue.outbound.limits]
mx = 1.5
multihomed = "'many'"
[queue.outbound.tls]
allow-invalid-certs = "'yes'"
starttls = "'require'"
mta-sts = true
`)
    expect(error.issues.map((i) => [i.path, i.found, i.expected])).toEqual([
      ["queue.outbound.hostname", "the number 42", HOST],
      ["queue.outbound.ip-strategy", "the string \"fastest\"", "one of ipv4_only, ipv6_only, ipv6_then_ipv4, ipv4_then_ipv6"],
      ["queue.outbound.limits.mx", "the float 1.5", "a positive integer"],
      ["queue.outbound.limits.multihomed", "the string \"many\"", "a positive integer"],
      ["queue.outbound.tls.allow-invalid-certs", "the string \"yes\"", "true or false"],
      [
        "queue.outbound.tls.starttls",
        "the string \"require\"",
        "one of the bare constants optional, require (required), disable (disabled, none, false)"
      ],
      [
        "queue.outbound.tls.mta-sts",
        "the number 1",
        "one of the bare constants optional, require (required), disable (disabled, none, false)"
      ]
    ])
    expect(issueAt(error, "queue.outbound.tls.starttls").message).toBe(
      "queue.outbound.tls.starttls: wrong value (a quoted string is not a policy; write the bare constant require): " +
        "found the string \"require\"; expected one of the bare constants optional, require (required), " +
        "disable (disabled, none, false)"
    )
    expect(issueAt(error, "queue.outbound.limits.mx")).toMatchObject({ line: 6, column: 6 })
  })

  it("malformed durations", () => {
    const error = bad(`
[queue.outbound.timeouts]
connect = "1h30m"
greeting = "1.5m"
tls = "-3m"
ehlo = "0"
mail-from = "5w"
rcpt-to = 0
data = -1
mta-sts = [ { if = "retry_num > 0", then = "1m30s" }, { else = "10m" } ]
[queue.outbound]
connection-attempt-delay = "0ms"
`)
    expect(error.issues.map((i) => [i.path, i.message])).toEqual([
      [
        "queue.outbound.timeouts.connect",
        "queue.outbound.timeouts.connect: malformed duration (compound durations are not allowed; use one number and " +
        "one unit (e.g. \"90m\" for 1h30m)): found the string \"1h30m\"; expected " + DURATION
      ],
      [
        "queue.outbound.timeouts.greeting",
        "queue.outbound.timeouts.greeting: malformed duration (fractions are not allowed; use a smaller unit " +
        "(e.g. \"1500ms\" for 1.5s)): found the string \"1.5m\"; expected " + DURATION
      ],
      [
        "queue.outbound.timeouts.tls",
        "queue.outbound.timeouts.tls: malformed duration (signs are not allowed): found the string \"-3m\"; expected " +
        DURATION
      ],
      [
        "queue.outbound.timeouts.ehlo",
        "queue.outbound.timeouts.ehlo: malformed duration (it must be greater than zero): found the string \"0\"; " +
        "expected " + DURATION
      ],
      [
        "queue.outbound.timeouts.mail-from",
        "queue.outbound.timeouts.mail-from: malformed duration (unknown unit \"w\"; the units are ms, s, m, h and d): " +
        "found the string \"5w\"; expected " + DURATION
      ],
      [
        "queue.outbound.timeouts.rcpt-to",
        "queue.outbound.timeouts.rcpt-to: wrong value (a duration must be greater than zero): found the number 0; " +
        "expected " + DURATION
      ],
      [
        "queue.outbound.timeouts.data",
        "queue.outbound.timeouts.data: wrong value (a duration must be greater than zero): found the number -1; " +
        "expected " + DURATION
      ],
      [
        "queue.outbound.timeouts.mta-sts[0].then",
        "queue.outbound.timeouts.mta-sts[0].then: malformed duration (compound durations are not allowed; use one " +
        "number and one unit (e.g. \"90m\" for 1h30m)): found the string \"1m30s\"; expected " + DURATION
      ],
      [
        "queue.outbound.connection-attempt-delay",
        "queue.outbound.connection-attempt-delay: malformed duration (it must be greater than zero): found the " +
        "string \"0ms\"; expected " + DURATION + ", or false for one attempt at a time"
      ]
    ])
    expect(issueAt(error, "queue.outbound.timeouts.connect")).toMatchObject({ line: 3, column: 12 })
    expect(issueAt(error, "queue.outbound.timeouts.mta-sts[0].then")).toMatchObject({ line: 10, column: 45 })
  })

  it("invalid addresses, and an address of the other family", () => {
    const error = bad(`
[queue.outbound.source-ip]
v4 = ["10.0.0.1", "::1", "300.1.2.3"]
v6 = "['2001:db8::1', '192.0.2.1']"
`)
    expect(error.issues.map((i) => [i.path, i.found, i.expected, i.line, i.column])).toEqual([
      ["queue.outbound.source-ip.v4[1]", "the string \"::1\"", "an IPv4 address", 3, 19],
      ["queue.outbound.source-ip.v4[2]", "the string \"300.1.2.3\"", "an IPv4 address", 3, 26],
      ["queue.outbound.source-ip.v6", "the list [\"2001:db8::1\", \"192.0.2.1\"]", "a list of IPv6 addresses", 4, 7]
    ])
    expect(error.issues[0]!.message).toBe(
      "queue.outbound.source-ip.v4[1]: invalid address: it is an IPv6 address in the v4 list: found the string \"::1\"; " +
        "expected an IPv4 address"
    )
    expect(error.issues[2]!.message).toBe(
      "queue.outbound.source-ip.v6: wrong value (element 2 (\"192.0.2.1\") is an IPv4 address in the v6 list): found " +
        "the list [\"2001:db8::1\", \"192.0.2.1\"]; expected a list of IPv6 addresses"
    )
  })

  it("an invalid hostname is refused at load", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["'mx example.org'", "it contains white space"],
      ["'mx.example.org\\r\\nRSET'", "it contains CR, LF or NUL"],
      ["'mx_1.example.org'", "it contains the character \"_\""],
      ["'mx..example.org'", "it has an empty label (leading, trailing or double dot)"],
      ["'-mx.example.org'", "its label \"-mx\" starts or ends with a hyphen"],
      ["''", "it is empty"],
      [`'${"a".repeat(64)}.example'`, `its label "${"a".repeat(20)}…" is longer than 63 characters`],
      [`'${Array.from({ length: 5 }, () => "a".repeat(60)).join(".")}'`, "it is longer than 255 characters"]
    ]
    for (const [expression, why] of cases) {
      const issue = issueAt(bad(`[queue.outbound]\nhostname = "${expression}"`), "queue.outbound.hostname")
      expect([expression, issue.message.split(": found")[0]]).toEqual([
        expression,
        `queue.outbound.hostname: wrong value (${why})`
      ])
    }
  })

  it("non-positive limits", () => {
    const error = bad("[queue.outbound.limits]\nmx = 0\nmultihomed = -2\n")
    expect(error.issues.map((i) => [i.path, i.found, i.message.split(": found")[0]])).toEqual([
      ["queue.outbound.limits.mx", "the number 0", "queue.outbound.limits.mx: wrong value (it is not at least 1)"],
      [
        "queue.outbound.limits.multihomed",
        "the number -2",
        "queue.outbound.limits.multihomed: wrong value (it is not at least 1)"
      ]
    ])
  })

  it("an expression that does not parse, with the column (Stalwart's #425 mistake)", () => {
    const error = bad("[queue.outbound]\nhostname = \"mx.example.org\"\nip-strategy = \"if_then(retry_num > , ipv4_only, ipv6_only)\"\n")
    expect(issueAt(error, "queue.outbound.hostname")).toEqual({
      path: "queue.outbound.hostname",
      found: "the expression \"mx.example.org\"",
      expected: "a valid expression",
      message: "queue.outbound.hostname: the expression does not parse at column 1: unknown identifier " +
        "\"mx.example.org\": not a variable, function, constant or duration (to use it as text, quote it: " +
        "'mx.example.org'): found the expression \"mx.example.org\"; expected a valid expression",
      line: 2,
      column: 13
    })
    expect(issueAt(error, "queue.outbound.ip-strategy")).toEqual({
      path: "queue.outbound.ip-strategy",
      found: "the expression \"if_then(retry_num > , ipv4_only, ipv6_only)\"",
      expected: "a valid expression",
      message: "queue.outbound.ip-strategy: the expression does not parse at column 21: expected a value, found ',': " +
        "found the expression \"if_then(retry_num > , ipv4_only, ipv6_only)\"; expected a valid expression",
      // the string starts at file column 16; its 21st character is at 36
      line: 3,
      column: 36
    })
  })

  it("unknown function and wrong arity", () => {
    const error = bad("[queue.outbound]\nhostname = \"foo(rcpt)\"\n[queue.outbound.tls]\nallow-invalid-certs = \"starts_with(rcpt)\"\n")
    expect(issueAt(error, "queue.outbound.hostname").message.split(": found")[0])
      .toBe("queue.outbound.hostname: the expression does not parse at column 1: unknown function \"foo\"")
    expect(issueAt(error, "queue.outbound.tls.allow-invalid-certs").message.split(": found")[0]).toBe(
      "queue.outbound.tls.allow-invalid-certs: the expression does not parse at column 1: function starts_with " +
        "expects 2 arguments, found 1"
    )
  })

  it("a variable not known at the key's stage names the key and the variable", () => {
    const error = bad(`
[queue.outbound]
ip-strategy = "if_then(is_ipv6_addr(remote_ip), ipv6_only, ipv4_only)"
[queue.outbound.limits]
multihomed = [ { if = "mx == 'a.example'", then = "3" }, { else = "5" } ]
[queue.outbound.timeouts]
mta-sts = "if_then(local_ip == '10.0.0.1', 1m, 2m)"
`)
    expect(error.issues.map((i) => [i.path, i.found, i.message.split(": found")[0]])).toEqual([
      [
        "queue.outbound.ip-strategy",
        "the variable remote_ip",
        "queue.outbound.ip-strategy: the variable remote_ip is not known when queue.outbound.ip-strategy is " +
        "evaluated (once per MX host)"
      ],
      [
        "queue.outbound.limits.multihomed[0].if",
        "the variable mx",
        "queue.outbound.limits.multihomed[0].if: the variable mx is not known when queue.outbound.limits.multihomed " +
        "is evaluated (once per destination domain)"
      ],
      [
        "queue.outbound.timeouts.mta-sts",
        "the variable local_ip",
        "queue.outbound.timeouts.mta-sts: the variable local_ip is not known when queue.outbound.timeouts.mta-sts is " +
        "evaluated (once per destination domain)"
      ]
    ])
    expect(error.issues[1]!.expected).toBe(
      "only the variables known once per destination domain: sender, sender_domain, rcpt, rcpt_domain, recipients, " +
        "priority, retry_num, last_error, last_status, expires_in, queue_name"
    )
  })

  it("if-list structure errors", () => {
    const error = bad(`
[queue.outbound]
ip-strategy = [ { else = "ipv4_only" }, { if = "retry_num == 0", then = "ipv6_only" } ]
hostname = [ { if = "retry_num > 0", then = "'a.example'" }, { else = "'b.example'" }, { else = "'c.example'" } ]
[queue.outbound.tls]
starttls = [ { then = "require" }, { else = "optional" } ]
mta-sts = [ { if = "retry_num > 0", then = "require" } ]
allow-invalid-certs = [ { if = "retry_num > 0", thn = "true" }, { else = "false" } ]
[queue.outbound.limits]
mx = [ { if = "retry_num > 0", then = "3", else = "5" } ]
multihomed = [ "2", { else = "3" } ]
`)
    expect(error.issues.map((i) => [i.path, i.found, i.message.split(": found")[0]])).toEqual([
      [
        "queue.outbound.ip-strategy[1]",
        "an if after the else",
        "queue.outbound.ip-strategy[1]: else before if: the else must be the last item"
      ],
      ["queue.outbound.hostname[2]", "a second else", "queue.outbound.hostname[2]: several else"],
      ["queue.outbound.tls.starttls[0]", "then without if", "queue.outbound.tls.starttls[0]: then without if"],
      [
        "queue.outbound.tls.mta-sts",
        "an if-list of 1 item without else",
        "queue.outbound.tls.mta-sts: missing else: an if-list must end with { else = \"…\" }"
      ],
      [
        "queue.outbound.tls.allow-invalid-certs[0]",
        "if without then",
        "queue.outbound.tls.allow-invalid-certs[0]: if without then"
      ],
      [
        "queue.outbound.tls.allow-invalid-certs[0].thn",
        "the field \"thn\"",
        "queue.outbound.tls.allow-invalid-certs[0].thn: unknown field in an if-list item"
      ],
      [
        "queue.outbound.limits.mx",
        "an if-list of 1 item without else",
        "queue.outbound.limits.mx: missing else: an if-list must end with { else = \"…\" }"
      ],
      [
        "queue.outbound.limits.mx[0]",
        "else together with if/then",
        "queue.outbound.limits.mx[0]: an item holds either if and then, or else alone"
      ],
      [
        "queue.outbound.limits.multihomed[0]",
        "the string \"2\"",
        "queue.outbound.limits.multihomed[0]: an if-list item is not a table"
      ]
    ])
    expect(error.issues.every((i) => i.expected === IF_ITEM || i.expected === "if and then, or else")).toBe(true)
    expect(issueAt(error, "queue.outbound.hostname[2]")).toMatchObject({ line: 4, column: 88 })
  })

  it("a constant branch of an if-list is checked at load", () => {
    const error = bad(`
[queue.outbound]
hostname = [ { if = "retry_num > 0", then = "'mx example.org'" }, { else = "rcpt_domain" } ]
[queue.outbound.tls]
starttls = [ { if = "retry_num > 0", then = "'disable'" }, { else = "optional" } ]
`)
    expect(error.issues.map((i) => [i.path, i.found])).toEqual([
      ["queue.outbound.hostname[0].then", "the string \"mx example.org\""],
      ["queue.outbound.tls.starttls[0].then", "the string \"disable\""]
    ])
  })

  it("every error of a file at once, in file order", () => {
    const error = bad(`
[queue.outbound]
hostname = "mx.example.org"
ip-strategy = [ { else = "ipv4_only" }, { if = "retry_num == 0", then = "ipv6_only" } ]
next-hop = "'relay'"
[queue.outbound.source-ip]
v4 = "['10.0.0.1', '::1']"
[queue.outbound.limits]
mx = 0
multihomed = [ { if = "mx == 'a'", then = "3" }, { else = "5" } ]
[queue.outbound.timeouts]
conect = "3m"
data = "1h30m"
[queue.outbound.tls]
starttls = "'require'"
mta-sts = [ { if = "retry_num > 0", then = "require" } ]
allow-invalid-certs = "starts_with(rcpt)"
`)
    expect(error.issues.map((i) => `${i.line}:${i.column} ${i.path}`)).toEqual([
      "3:13 queue.outbound.hostname",
      "4:41 queue.outbound.ip-strategy[1]",
      "5:13 queue.outbound.next-hop",
      "7:7 queue.outbound.source-ip.v4",
      "9:6 queue.outbound.limits.mx",
      "10:23 queue.outbound.limits.multihomed[0].if",
      "12:1 queue.outbound.timeouts.conect",
      "13:9 queue.outbound.timeouts.data",
      "15:13 queue.outbound.tls.starttls",
      "16:1 queue.outbound.tls.mta-sts",
      "17:24 queue.outbound.tls.allow-invalid-certs"
    ])
    const lines = error.message.split("\n")
    expect(lines[0]).toBe("invalid configuration test.toml: 11 issues")
    expect(lines.slice(1).map((line) => line.split(": ")[0])).toEqual(
      error.issues.map((i) => `  test.toml:${i.line}:${i.column}`)
    )
    expect(lines[7]).toBe(
      "  test.toml:12:1: queue.outbound.timeouts.conect: unknown key (did you mean \"connect\"?): found the key " +
        "\"conect\"; expected one of connect, greeting, tls, ehlo, mail-from, rcpt-to, data, mta-sts"
    )
  })
})

describe("run-time fallback", () => {
  it("a hostname computed with a space falls back to the default with a warning", () => {
    const config = ok("[lookup.default]\nhostname = \"mx.default.example\"\n[queue.outbound]\nhostname = \"rcpt_domain\"\n")
    expect(config.ehloName.evaluate({ rcpt_domain: "ok.example" })).toEqual({ value: "ok.example", warning: null })
    expect(config.ehloName.evaluate({ rcpt_domain: "evil.example\r\nRSET" })).toEqual({
      value: "mx.default.example",
      warning: "queue.outbound.hostname: the expression \"rcpt_domain\" gave the string \"evil.example\\r\\nRSET\", " +
        "expected " + HOST + " (it contains CR, LF or NUL); used the default \"mx.default.example\" instead"
    })
    expect(config.ehloName.evaluate({ rcpt_domain: "a b" }).value).toBe("mx.default.example")
  })

  it("a source list with a bad element falls back to no source address", () => {
    const config = ok(`
[queue.outbound.source-ip]
v4 = [ { if = "mx == 'a.example'", then = "['10.0.0.1']" }, { if = "mx == 'c.example'", then = ["10.0.0.3"] },
       { else = "[mx]" } ]
`)
    expect(config.sourceIp.v4.evaluate({ mx: "a.example" })).toEqual({ value: ["10.0.0.1"], warning: null })
    expect(config.sourceIp.v4.evaluate({ mx: "c.example" })).toEqual({ value: ["10.0.0.3"], warning: null })
    expect(config.sourceIp.v4.evaluate({ mx: "b.example" })).toEqual({
      value: [],
      warning: "queue.outbound.source-ip.v4: the if-list gave the list [\"b.example\"], expected a list of IPv4 " +
        "addresses (element 1 (\"b.example\") is not an IPv4 address); used the default [] (no source address) instead"
    })
  })

  it("durations, limits and policies fall back to their defaults", () => {
    const config = ok(`
[queue.outbound]
ip-strategy = "last_error"
[queue.outbound.limits]
mx = "retry_num - 1"
[queue.outbound.timeouts]
data = "last_status"
[queue.outbound.tls]
starttls = "if_then(retry_num > 0, 'disable', optional)"
`)
    expect(config.ipStrategy.evaluate({ mx: "m", last_error: "tls" })).toEqual({
      value: "ipv4_then_ipv6",
      warning: "queue.outbound.ip-strategy: the expression \"last_error\" gave the string \"tls\", expected one of " +
        "ipv4_only, ipv6_only, ipv6_then_ipv4, ipv4_then_ipv6; used the default \"ipv4_then_ipv6\" instead"
    })
    expect(config.limits.mx.evaluate({ retry_num: 3 })).toEqual({ value: 2, warning: null })
    expect(config.limits.mx.evaluate({ retry_num: 0 }).value).toBe(5)
    expect(config.limits.mx.evaluate({ retry_num: 0 }).warning).toBe(
      "queue.outbound.limits.mx: the expression \"retry_num - 1\" gave the number -1, expected a positive integer " +
        "(it is not at least 1); used the default 5 instead"
    )
    expect(config.timeouts.data.evaluate({ last_status: "Scheduled" }).warning).toBe(
      "queue.outbound.timeouts.data: the expression \"last_status\" gave the string \"Scheduled\", expected " + DURATION +
        " (it is not <digits><unit>); used the default 10m instead"
    )
    expect(Duration.toMillis(config.timeouts.data.evaluate({ last_status: "2m" }).value)).toBe(120_000)
    expect(config.tls.starttls.evaluate({ retry_num: 0 })).toEqual({ value: "optional", warning: null })
    expect(config.tls.starttls.evaluate({ retry_num: 1 }).value).toBe("optional")
    expect(config.tls.starttls.evaluate({ retry_num: 1 }).warning).toContain("a quoted string is not a policy")
  })

  it("a constant value is the same object on every evaluation (no work per delivery)", () => {
    const config = ok("[queue.outbound]\nhostname = \"'mx.example.org'\"")
    expect(config.ehloName.evaluate({})).toBe(config.ehloName.evaluate({ rcpt: "x" }))
  })
})

describe("load, layers and the file", () => {
  const withFile = <A, E>(
    text: string,
    use: (file: string) => Effect.Effect<A, E, FileSystem.FileSystem>
  ) =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const dir = yield* fs.makeTempDirectoryScoped({ prefix: "outbound-config-" })
      const file = path.join(dir, "stalwart.toml")
      yield* fs.writeFileString(file, text)
      return yield* use(file)
    }).pipe(Effect.scoped, Effect.provide(NodeFileSystem.layer))

  it.live("loads a real file", () =>
    withFile("[queue.outbound.limits]\nmx = 7\n", (file) =>
      Effect.gen(function*() {
        const config = yield* OutboundConfig.load(file)
        expect(config.file).toBe(file)
        expect(get(config.limits.mx)).toBe(7)
      })))

  it.live("the README's complete example loads from disk and evaluates as documented", () =>
    Effect.gen(function*() {
      const file = fileURLToPath(new URL("fixtures/outbound-config-example.toml", import.meta.url))
      const config = yield* OutboundConfig.load(file)
      const first = { retry_num: 0, last_error: "none", mx: "mx1.example.net", remote_ip: "2001:db8::25" }
      const retry = { retry_num: 1, last_error: "tls", mx: "mx1.example.net", remote_ip: "192.0.2.25" }
      expect([config.file, config.warnings]).toEqual([file, []])
      expect([get(config.ehloName, first), get(config.ehloName, retry)]).toEqual(["mx6.example.org", "mx.example.org"])
      expect([get(config.ipStrategy, first), get(config.ipStrategy, retry)]).toEqual(["ipv6_then_ipv4", "ipv4_only"])
      expect(get(config.connectionAttemptDelay, first)).toEqual(Option.some(Duration.millis(250)))
      expect(get(config.sourceIp.v4)).toEqual(["192.0.2.10", "192.0.2.11"])
      expect(get(config.sourceIp.v6)).toEqual(["2001:db8::10", "2001:db8::11"])
      expect([get(config.limits.mx), get(config.limits.multihomed)]).toEqual([7, 2])
      const t = config.timeouts
      expect([millis(t.connect, first), millis(t.connect, retry)]).toEqual([180_000, 30_000])
      expect([t.greeting, t.tls, t.ehlo, t["mail-from"], t["rcpt-to"], t.data, t["mta-sts"]].map((s) => millis(s)))
        .toEqual([180_000, 120_000, 180_000, 180_000, 180_000, 600_000, 120_000])
      expect([get(config.tls.starttls, first), get(config.tls.starttls, retry)]).toEqual(["optional", "disable"])
      expect([get(config.tls.mtaSts), get(config.tls.allowInvalidCerts)]).toEqual(["optional", false])
    }).pipe(Effect.provide(NodeFileSystem.layer)))

  it.live("names the file in every issue", () =>
    withFile("[queue.outbound.timeouts]\ndata = \"1h30m\"\n", (file) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(OutboundConfig.load(file))
        expect(error._tag).toBe("ConfigError")
        expect(error.file).toBe(file)
        expect(error.message).toBe(
          `invalid configuration ${file}: 1 issue\n` +
            `  ${file}:2:9: queue.outbound.timeouts.data: malformed duration (compound durations are not allowed; use ` +
            "one number and one unit (e.g. \"90m\" for 1h30m)): found the string \"1h30m\"; expected " + DURATION
        )
      })))

  it.live("a missing file is a ConfigError", () =>
    Effect.gen(function*() {
      const file = path.join(os.tmpdir(), "outbound-config-does-not-exist", "none.toml")
      const error = yield* Effect.flip(OutboundConfig.load(file))
      expect(error.file).toBe(file)
      expect(error.issues.length).toBe(1)
      expect(error.issues[0]!.path).toBe("")
      expect(error.issues[0]!.expected).toBe("a readable UTF-8 TOML file")
      expect(error.message.startsWith(`invalid configuration ${file}: 1 issue\n  ${file}: cannot read the file (`))
        .toBe(true)
    }).pipe(Effect.provide(NodeFileSystem.layer)))

  it.live("layer(path) provides the service", () =>
    withFile("[queue.outbound]\nip-strategy = \"ipv6_only\"\n", (file) =>
      Effect.gen(function*() {
        const config = yield* OutboundConfig.OutboundConfig
        expect(get(config.ipStrategy)).toBe("ipv6_only")
      }).pipe(Effect.provide(OutboundConfig.layer(file)))))

  it.effect("layerFromText fails with the ConfigError; layerDefault gives the defaults", () =>
    Effect.gen(function*() {
      const broken = OutboundConfig.layerFromText("[queue.outbound]\nhostnam = 1", "x.toml")
      const error = yield* Effect.flip(Effect.provide(OutboundConfig.OutboundConfig, broken))
      expect([error.file, error.issues.map((i) => i.path)]).toEqual(["x.toml", ["queue.outbound.hostnam"]])
      expect(error.issues[0]!.message).toContain("did you mean \"hostname\"?")
      const text = yield* Effect.provide(
        OutboundConfig.OutboundConfig,
        OutboundConfig.layerFromText("[queue.outbound.limits]\nmultihomed = 3")
      )
      expect([text.file, get(text.limits.multihomed)]).toEqual([null, 3])
      const defaults = yield* Effect.provide(OutboundConfig.OutboundConfig, OutboundConfig.layerDefault)
      expect(defaults).toBe(OutboundConfig.defaults)
    }))
})

describe("stage evaluation", () => {
  const config = ok(`
[lookup.default]
hostname = "mx.default.example"
[queue.outbound]
hostname = [ { if = "remote_ip == '2001:db8::1'", then = "'v6.example.org'" }, { else = "rcpt_domain" } ]
ip-strategy = [ { if = "mx == 'v6.example'", then = "ipv6_only" }, { else = "ipv4_only" } ]
connection-attempt-delay = [ { if = "mx == 'slow.example'", then = false }, { else = "100ms" } ]
[queue.outbound.source-ip]
v4 = "[mx]"
[queue.outbound.limits]
mx = "retry_num - 1"
[queue.outbound.timeouts]
mail-from = [ { if = "retry_num > 0", then = "30s" }, { else = "2m" } ]
mta-sts = "1m"
[queue.outbound.tls]
starttls = [ { if = "retry_num > 0", then = "disable" }, { else = "require" } ]
allow-invalid-certs = true
`)
  const domain = { rcpt: "a@b.example", rcpt_domain: "b.example", retry_num: 1 }

  it("evaluateDomain: limits, the MTA-STS policy and its timeout, in the vocabulary", () => {
    const { settings, warnings } = OutboundConfig.evaluateDomain(config, { ...domain, retry_num: 3 })
    expect(settings).toEqual({
      route: { _tag: "mx", name: "mx" },
      limits: { mx: 2, multihomed: 2 },
      limiterWait: Duration.minutes(5),
      tls: { mtaSts: "optional" },
      timeouts: { "mta-sts": Duration.minutes(1) }
    })
    expect(warnings).toEqual([])
  })

  it("each stage's settings hold the key table's keys of that stage, in its order (the order of their warnings)", () => {
    // evaluate.ts writes each stage as an object literal: this holds it to the table (a key added to a stage, or
    // moved, fails here as well as in the type check).
    const paths = (value: unknown, prefix: string): ReadonlyArray<string> =>
      typeof value === "object" && value !== null && !Array.isArray(value) && !Duration.isDuration(value) &&
        !Option.isOption(value) && !("_tag" in value)
        ? Object.entries(value).flatMap(([key, inner]) => paths(inner, `${prefix}${key}.`))
        : [prefix.slice(0, -1)]
    const variables = { ...domain, mx: "mx.example", remote_ip: "192.0.2.1", local_ip: "0.0.0.0" }
    const table = (stage: string) => ENTRIES.filter((e) => e.spec.stage === stage).map((e) => e.name)
    expect(paths(OutboundConfig.evaluateDomain(config, variables).settings, "")).toEqual([...table("domain"), "route"])
    expect(paths(OutboundConfig.evaluateHost(config, variables).settings, "")).toEqual(table("host"))
    expect(paths(OutboundConfig.evaluateConnection(config, variables).settings, "")).toEqual(table("connection"))
    // Two keys falling back in one stage: their warnings in the table's order.
    const two = ok(`[queue.outbound]
ip-strategy = "mx"
[queue.outbound.source-ip]
v4 = "[mx]"
`)
    expect(OutboundConfig.evaluateHost(two, variables).warnings.map((w) => w.slice(0, w.indexOf(":")))).toEqual([
      "queue.outbound.ip-strategy",
      "queue.outbound.source-ip.v4"
    ])
  })

  it("evaluateDomain: a value that cannot be used falls back to the default with a warning", () => {
    const { settings, warnings } = OutboundConfig.evaluateDomain(config, { ...domain, retry_num: 0 })
    expect(settings.limits.mx).toBe(5)
    expect(warnings).toEqual([
      "queue.outbound.limits.mx: the expression \"retry_num - 1\" gave the number -1, expected a positive integer " +
      "(it is not at least 1); used the default 5 instead"
    ])
  })

  it("evaluateHost: strategy, sources, TLS and the attempt delay per MX host", () => {
    expect(OutboundConfig.evaluateHost(config, { ...domain, mx: "v6.example" })).toEqual({
      settings: {
        ipStrategy: "ipv6_only",
        sourceIp: { v4: [], v6: [] },
        tls: { starttls: "disable", dane: "optional", allowInvalidCerts: true },
        connectionAttemptDelay: Option.some(Duration.millis(100))
      },
      warnings: [
        "queue.outbound.source-ip.v4: the expression \"[mx]\" gave the list [\"v6.example\"], expected a list of IPv4 " +
        "addresses (element 1 (\"v6.example\") is not an IPv4 address); used the default [] (no source address) instead"
      ]
    })
    const slow = OutboundConfig.evaluateHost(config, { ...domain, retry_num: 0, mx: "slow.example" }).settings
    expect([slow.ipStrategy, slow.tls.starttls, slow.connectionAttemptDelay]).toEqual(["ipv4_only", "require", Option.none()])
  })

  it("evaluateConnection: the EHLO name and every session timeout, keyed by phase", () => {
    const host = { ...domain, mx: "mx.b.example" }
    const v6 = OutboundConfig.evaluateConnection(config, { ...host, remote_ip: "2001:db8::1", local_ip: "::" })
    expect(v6.warnings).toEqual([])
    expect(v6.settings.ehloName).toBe("v6.example.org")
    expect(Object.keys(v6.settings.timeouts)).toEqual(["connect", "greeting", "tls", "ehlo", "mail-from", "rcpt-to", "data"])
    expect(Duration.toMillis(v6.settings.timeouts["mail-from"])).toBe(30_000)
    expect(Duration.toMillis(v6.settings.timeouts.data)).toBe(600_000)
    const v4 = OutboundConfig.evaluateConnection(config, { ...host, retry_num: 0, remote_ip: "192.0.2.1", local_ip: "0.0.0.0" })
    expect([v4.settings.ehloName, Duration.toMillis(v4.settings.timeouts["mail-from"])]).toEqual(["b.example", 120_000])
  })

  it("every key belongs to exactly one stage's settings", () => {
    const vars = { ...domain, mx: "m.example", remote_ip: "192.0.2.1", local_ip: "0.0.0.0" }
    const leaves = (value: object, prefix = ""): Array<string> =>
      Object.entries(value).flatMap(([k, v]) =>
        typeof v === "object" && v !== null && !Array.isArray(v) && !Duration.isDuration(v) && !Option.isOption(v) &&
          !("_tag" in v)
          ? leaves(v, `${prefix}${k}.`)
          : [`${prefix}${k}`]
      )
    const evaluated = [
      ...leaves(OutboundConfig.evaluateDomain(OutboundConfig.defaults, vars).settings),
      ...leaves(OutboundConfig.evaluateHost(OutboundConfig.defaults, vars).settings),
      ...leaves(OutboundConfig.evaluateConnection(OutboundConfig.defaults, vars).settings)
    ]
    const { file: _f, layout: _l, model: _m, notUsed: _n, warnings: _w, ...settings } = OutboundConfig.defaults
    const configured = leaves(settings)
      .filter((k) => k.endsWith(".key"))
      .map((k) => k.slice(0, -".key".length))
    expect(evaluated.sort()).toEqual(configured.sort())
  })
})

describe("renderReference", () => {
  const reference = OutboundConfig.renderReference()
  const rows = reference.split("\n").filter((line) => line.startsWith("| `"))

  it("lists every key of the configuration, with its name in code, stage, default and meaning", () => {
    // The first table: the keys of [queue.outbound], one row per entry of the key table, in its order; the route
    // selector (next-hop) is in the table of strategy selectors.
    const keys = reference.split("## Strategy selectors")[0]!.split("\n").filter((row) =>
      row.startsWith("| `") && !row.startsWith("| `[queue.outbound]`")
    ).map((row) => row.split(" | ")[0]!.slice(3, -1))
    expect(keys).toEqual(ENTRIES.map((entry) => entry.spec.path.join(".")))
    expect(reference).toContain(`| route | \`queue.outbound.${ROUTE_KEY.path.join(".")}\``)
    // The same keys the loader builds: every Setting's key is in the reference.
    const settings: Array<string> = []
    const walk = (node: object) =>
      Object.values(node).forEach((v) =>
        typeof v === "object" && v !== null && !Array.isArray(v) && ("evaluate" in v ? settings.push(v.key) : walk(v))
      )
    const { file: _f, layout: _l, model: _m, notUsed: _n, route: _r, warnings: _w, ...keyed } = OutboundConfig.defaults
    walk(keyed)
    expect(settings.map((k) => k.replace("queue.outbound.", "")).sort()).toEqual([...keys].sort())
    expect(rows.find((r) => r.startsWith("| `timeouts.mail-from`"))).toBe(
      "| `timeouts.mail-from` | `[queue.connection.<name>] timeout.mail-from` | `MtaConnectionStrategy.mailFromTimeout` " +
        "| `timeouts.mail-from` | connection (+ `remote_ip`, `local_ip`) | `5m` | " +
        "a duration: digits and one unit of ms, s, m, h or d (e.g. \"3m\", \"500ms\"; bare digits are milliseconds), " +
        "greater than zero | Bounds MAIL FROM and its reply. |"
    )
    expect(rows[1]).toContain("| `ehloName` | connection")
    expect(rows[1]).toContain("`[server] hostname`")
    expect(reference).toContain("- `queue.outbound.concurrency`: Stalwart v0.11.0–v0.11.1")
    expect(reference).toContain("| route | `queue.outbound.next-hop`")
    expect(reference).toContain("| `tls.implicit` | `implicitTls` | `true` |")
    expect(reference).toContain("| `tls.dane` | `[queue.tls.<name>] dane` | `MtaTlsStrategy.dane` | `tls.dane` | host (+ `mx`) |")
    expect(reference).not.toContain("not implemented")
  })
})
