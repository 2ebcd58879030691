import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Layer, Option, Redacted } from "effect"
import * as ConnectorTest from "../src/ConnectorTest.js"
import * as Dns from "../src/Dns.js"
import * as LocalDelivery from "../src/LocalDelivery.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import type { Route } from "../src/Settings.js"
import * as Transport from "../src/Transport.js"

const load = (text: string) => OutboundConfig.parse(text, "test.toml")
const ok = (text: string) => Either.getOrThrowWith(load(text), (e) => new Error(e.message))
const bad = (text: string) => Either.getOrThrowWith(Either.flip(load(text)), () => new Error("loaded"))

const domainVars = (rcptDomain: string) => ({ rcpt: `x@${rcptDomain}`, rcpt_domain: rcptDomain, retry_num: 0 })
const routeOf = (config: OutboundConfig.Config, rcptDomain = "a.test"): Route | string => {
  const evaluated = OutboundConfig.evaluateDomain(config, domainVars(rcptDomain))
  return evaluated.routeError ?? evaluated.settings.route
}

describe("next-hop and [remote.<id>] (v0.7–v0.12)", () => {
  it("a relay with Stalwart's defaults: port 25, SMTP, implicit TLS, certificates verified, no AUTH", () => {
    expect(routeOf(ok(`
[queue.outbound]
next-hop = "'smarthost'"
[remote.smarthost]
address = "smtp.provider.test"
`))).toEqual({
      _tag: "relay",
      name: "smarthost",
      address: "smtp.provider.test",
      port: 25,
      protocol: "smtp",
      implicitTls: true,
      allowInvalidCerts: false,
      auth: Option.none()
    })
  })

  it("every key; the secret redacted, strings or native values alike", () => {
    const route = routeOf(ok(`
[queue.outbound]
next-hop = "'lmtp'"
[remote.lmtp]
address = "192.0.2.7"
port = "24"
protocol = "lmtp"
tls.implicit = "false"
tls.allow-invalid-certs = true
auth.username = "mailer"
auth.secret = "hunter2"
auth.allow-plaintext = true
`))
    expect(route).toMatchObject({ address: "192.0.2.7", port: 24, protocol: "lmtp", implicitTls: false, allowInvalidCerts: true })
    const auth = typeof route === "string" || route._tag !== "relay" ? Option.none() : route.auth
    expect(Option.map(auth, (a) => [a.username, Redacted.value(a.secret), a.allowPlaintext, a.token])).toEqual(
      Option.some(["mailer", "hunter2", true, undefined])
    )
    expect(String(Option.getOrThrow(auth).secret)).toBe("<redacted>")
  })

  it("no next-hop, or false: MX; 'local' is built in", () => {
    expect(routeOf(ok("[queue.outbound]\n"))).toEqual({ _tag: "mx", name: "mx" })
    expect(routeOf(ok("[queue.outbound]\nnext-hop = false\n"))).toEqual({ _tag: "mx", name: "mx" })
    expect(routeOf(ok("[queue.outbound]\nnext-hop = \"'local'\"\n"))).toEqual({ _tag: "local", name: "local" })
  })

  it("an if-list: the route per domain; a computed name that no relay has is a route error, not MX", () => {
    const config = ok(`
[queue.outbound]
next-hop = [ { if = "rcpt_domain == 'a.test'", then = "'relay'" },
             { if = "ends_with(rcpt_domain, '.internal')", then = "'local'" },
             { if = "rcpt_domain != 'c.test'", then = "false" },
             { else = "rcpt_domain" } ]
[remote.relay]
address = "relay.test"
`)
    expect([routeOf(config, "a.test"), routeOf(config, "x.internal"), routeOf(config, "b.test")]).toMatchObject([
      { _tag: "relay", name: "relay" },
      { _tag: "local" },
      { _tag: "mx" }
    ])
    expect(routeOf(config, "c.test")).toBe(
      "queue.outbound.next-hop computed \"c.test\", which names no [remote.c.test] table; the relays are relay, and local is built in"
    )
  })

  it("load errors: an unknown constant relay (did you mean), unknown keys, a missing address, a bad port", () => {
    const error = bad(`
[queue.outbound]
next-hop = [ { if = "retry_num > 0", then = "'relya'" }, { else = "'relay'" } ]
[remote.relay]
adress = "relay.test"
port = 70000
protocol = "esmtp"
tls.implcit = false
[remote.local]
address = "127.0.0.1"
`)
    expect(error.issues.map((i) => `${i.line} ${i.path}: ${i.message.split(": ").slice(1).join(": ")}`)).toEqual([
      "3 queue.outbound.next-hop[0].then: unknown relay: \"relya\", which names no [remote.relya] table (did you mean " +
      "\"relay\"?); the relays are relay, and local is built in: found the string \"relya\"; expected the " +
      "id of a [remote.<id>] table, 'local', or false",
      "4 remote.relay: the relay has no address: found no address key; expected address = \"<host name or IP address>\"",
      "5 remote.relay.adress: unknown key (did you mean \"address\"?): found the key \"adress\"; expected one of " +
      "address, port, protocol, tls, auth",
      "6 remote.relay.port: not a port: found the integer 70000; expected an integer from 1 to 65535",
      "7 remote.relay.protocol: unknown protocol: found the string \"esmtp\"; expected smtp or lmtp",
      "8 remote.relay.tls.implcit: unknown key (did you mean \"implicit\"?): found the key \"implcit\"; expected one " +
      "of implicit, allow-invalid-certs",
      "9 remote.local: local is the built-in local route: found a [remote.local] table; expected another id for a relay"
    ])
  })

  it("credentials: both halves or none, secret or token; a bad secret is never quoted back", () => {
    const error = bad(`
[queue.outbound]
next-hop = "'a'"
[remote.a]
address = "a.test"
auth.secret = 424242
[remote.b]
address = "b.test"
auth.username = "u"
auth.secret = "s"
auth.token = "t"
`)
    expect(error.issues.map((i) => i.path)).toEqual(["remote.a.auth", "remote.a.auth.secret", "remote.b.auth.token"])
    expect(error.message).not.toContain("424242")
  })

  it("a line that does not parse is not quoted back when it holds a secret", () => {
    const error = bad("[remote.a]\naddress = \"a.test\"\nauth.username = \"u\"\nauth.secret = \"hunter2\n")
    expect(error.issues.map((i) => [i.line, i.found])).toEqual([[4, "the line of the key auth.secret (its value not shown)"]])
    expect(error.message).not.toContain("hunter2")
  })

  it("nor when the error is on a later line of a multi-line secret", () => {
    for (const quote of ["\"\"\"", "\'\'\'"]) {
      const error = bad(`[remote.a]\naddress = "a.test"\nauth.username = "u"\nauth.secret = ${quote}\nhunter\nhunter2${quote} x\n`)
      expect(error.issues.map((i) => i.found)).toEqual(["the line of the key auth.secret (its value not shown)"])
      expect(error.issues[0]!.line).toBe(6)
      expect(error.message).not.toContain("hunter2")
    }
  })

  it("nor when the secret or token is in an inline table, bare or quoted", () => {
    for (const [line, key] of [
      ["auth = { username = \"u\", secret = \"hunter2\" x }", "secret"],
      ["auth = { username = \"u\", \"token\" = \"hunter2\", port = }", "\"token\""]
    ]) {
      const error = bad(`[remote.a]\naddress = "a.test"\n${line}\n`)
      expect(error.issues.map((i) => [i.line, i.found])).toEqual([[3, `the line of the key ${key} (its value not shown)`]])
      expect(error.message).not.toContain("hunter2")
    }
  })

  it("the reference lists next-hop and the keys of [remote.<id>]", () => {
    const reference = OutboundConfig.renderReference()
    expect(reference).toContain("| route | `queue.outbound.next-hop`")
    expect(reference).toContain("| `auth.allow-plaintext` | `authAllowPlaintext` | `false` |")
  })
})

const layers = (config: string, zones: Dns.Zones = {}) =>
  Layer.mergeAll(
    Layer.orDie(OutboundConfig.layerFromText(config)),
    Dns.layerTest(zones),
    ConnectorTest.layer({}),
    PolicyCache.layer,
    MtaSts.layerTest(() => Effect.succeed({ status: 404, body: "" }))
  )

const request = (...recipients: ReadonlyArray<string>): Transport.DeliveryRequest => ({
  message: "Subject: local\r\n\r\nhello\r\n",
  sender: "a@origin.test",
  recipients
})

describe("local route", () => {
  const LOCAL = "[queue.outbound]\nnext-hop = [ { if = \"rcpt_domain == 'here.test'\", then = \"'local'\" }, { else = \"rcpt_domain\" } ]\n"

  it.effect("without a LocalDelivery service: failed, kind route, saying so; nothing connected", () =>
    Effect.gen(function*() {
      const report = yield* Transport.deliver(request("u@here.test"))
      expect(report.recipients.map((r) => [r.status, r.host, r.error?.kind, r.error?.permanent])).toEqual([
        ["failed", null, "route", true]
      ])
      expect(report.recipients[0]!.error?.message).toContain("no LocalDelivery service is provided")
      expect([report.attempts, report.plan.domains[0]!.route]).toEqual([[], { type: "local", name: "local" }])
    }).pipe(Effect.provide(layers(LOCAL))))

  it.effect("with one: the recipients, the message and the sender handed over; each reported as it answered", () =>
    Effect.gen(function*() {
      const handed: Array<LocalDelivery.LocalRequest> = []
      const service = LocalDelivery.layer({
        deliver: (req) =>
          Effect.sync(() => {
            handed.push(req)
            return [
              { address: "u@here.test", status: "delivered" },
              { address: "full@here.test", status: "deferred", reason: "mailbox full" },
              { address: "gone@here.test", status: "failed", reason: "no such user" }
            ]
          })
      })
      const report = yield* Transport.deliver(request("u@here.test", "full@here.test", "gone@here.test", "lost@here.test"))
        .pipe(Effect.provide(service))
      expect(report.recipients.map((r) => [r.address, r.status, r.error?.kind ?? null, r.error?.message ?? null])).toEqual([
        ["u@here.test", "delivered", null, null],
        ["full@here.test", "deferred", "route", "local delivery: mailbox full"],
        ["gone@here.test", "failed", "route", "local delivery: no such user"],
        // Left out of the service's answer: never reported delivered.
        ["lost@here.test", "deferred", "route", "local delivery: the LocalDelivery service gave no outcome for this recipient"]
      ])
      expect(handed.map((h) => [h.route, h.domain, h.sender, h.recipients.length, new TextDecoder().decode(h.message)])).toEqual([
        ["local", "here.test", "a@origin.test", 4, "Subject: local\r\n\r\nhello\r\n"]
      ])
    }).pipe(Effect.provide(layers(LOCAL))))

  it.effect("the service failing: every recipient deferred (or failed when permanent)", () =>
    Effect.gen(function*() {
      const service = LocalDelivery.layer({
        deliver: () => Effect.fail(new LocalDelivery.LocalDeliveryError({ message: "store offline", permanent: false }))
      })
      const report = yield* Transport.deliver(request("u@here.test")).pipe(Effect.provide(service))
      expect(report.recipients.map((r) => [r.status, r.error?.message])).toEqual([["deferred", "local delivery: store offline"]])
    }).pipe(Effect.provide(layers(LOCAL))))

  it.effect("a computed relay name that no table has: deferred, kind route; the plan's route null", () =>
    Effect.gen(function*() {
      const report = yield* Transport.deliver(request("u@else.test"))
      expect(report.recipients.map((r) => [r.status, r.error?.kind, r.error?.message])).toEqual([[
        "deferred",
        "route",
        "route: queue.outbound.next-hop computed \"else.test\", which names no [remote.else.test] table; the relays are none, " +
        "and local is built in"
      ]])
      expect([report.attempts, report.plan.domains[0]!.route]).toEqual([[], null])
    }).pipe(Effect.provide(layers(LOCAL))))

  it.effect("explain shows the route", () =>
    Effect.gen(function*() {
      const plan = yield* Transport.explain(request("u@here.test"))
      expect([plan.domains[0]!.route, plan.domains[0]!.hosts]).toEqual([{ type: "local", name: "local" }, []])
    }).pipe(Effect.provide(layers(LOCAL))))
})

describe("relay route in the plan", () => {
  it.effect("explain: the relay as the one host, resolved by the strategy; no MX or MTA-STS lookup; no secret", () =>
    Effect.gen(function*() {
      const plan = yield* Transport.explain(request("u@dest.test"))
      const domain = plan.domains[0]!
      expect(domain.route).toEqual({
        type: "relay",
        name: "smarthost",
        address: "relay.test",
        port: 587,
        protocol: "smtp",
        tls: "starttls",
        allowInvalidCerts: false,
        auth: true
      })
      expect([domain.mx, domain.mtaSts, domain.hosts.map((h) => [h.host, h.strategy, h.addresses])]).toEqual([
        [],
        null,
        [["relay.test", "ipv6_then_ipv4", ["2001:db8::25", "192.0.2.25"]]]
      ])
      expect(domain.hosts[0]!.settings?.starttls).toBe("require")
      expect(JSON.stringify(plan)).not.toContain("hunter2")
      const queries = yield* Effect.flatMap(Dns.TestDns, (t) => t.queries)
      expect(queries.map((q) => `${q.rrtype} ${q.name}`).sort()).toEqual(["A relay.test", "AAAA relay.test"])
    }).pipe(Effect.provide(layers(`
[queue.outbound]
next-hop = "'smarthost'"
ip-strategy = "ipv6_then_ipv4"
[queue.outbound.tls]
starttls = "require"
[remote.smarthost]
address = "relay.test"
port = 587
tls.implicit = false
auth.username = "u"
auth.secret = "hunter2"
`, { "relay.test": { a: ["192.0.2.25"], aaaa: ["2001:db8::25"] } }))))
})

describe("relay route: an address that does not resolve", () => {
  it.effect("deferred, kind dns, saying which relay; never a bounce for the configuration's name", () =>
    Effect.gen(function*() {
      const report = yield* Transport.deliver(request("u@dest.test"))
      expect(report.recipients.map((r) => [r.status, r.error?.kind, r.error?.permanent])).toEqual([["deferred", "dns", false]])
      expect(report.recipients[0]!.error?.message).toMatch(/^relay smarthost: the address relay\.test did not resolve \(/)
      expect(report.attempts).toEqual([])
    }).pipe(Effect.provide(layers("[queue.outbound]\nnext-hop = \"'smarthost'\"\n[remote.smarthost]\naddress = \"relay.test\"\n"))))
})
