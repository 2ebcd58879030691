/**
 * Hostile peers on real sockets (127.0.0.1 and ::1), for what happens at the byte level: trickles, floods, garbage,
 * resets at a given byte, replies out of turn, STARTTLS with plaintext behind its 220, a TLS alert, a certificate
 * for another name; and hostile resolvers on real UDP/TCP. `Transport.deliver` runs on the live `Connector.layer`
 * with short timeouts; each case asserts the exact result and a generous wall-clock upper bound, then that the
 * connector holds no socket, the peer saw every connection close, and Node has no more active handles than before.
 */
import { afterAll, describe, expect, it, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as Connector from "../src/Connector.js"
import type { DeliveryReport, RecipientStatus } from "../src/DeliveryReport.js"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as OutboundConfig from "../src/OutboundConfig.js"
import * as PolicyCache from "../src/PolicyCache.js"
import type { Kind, Phase } from "../src/TransportError.js"
import * as Transport from "../src/Transport.js"
import { type Certificates, makeCertificates } from "./fixtures/certs.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import {
  activeResources,
  hostileDns,
  hostilePeer,
  type HostilePeer,
  leakedSince,
  type PeerConnection,
  watchProcess
} from "./fixtures/hostilePeer.js"

const watch = watchProcess()
afterAll(() => {
  expect(watch.stop()).toEqual([])
})

/** The TLS cases' PKIs, made once for them (`layer`): one for the name dialled, one for another name. */
class Pki extends Context.Tag("test/HostileLivePki")<Pki, {
  readonly certs: Certificates
  readonly otherName: Certificates
}>() {}
const PkiLive = Layer.sync(Pki, () => ({
  certs: makeCertificates({ hostnames: ["mx.hostile.test"] }),
  otherName: makeCertificates({ hostnames: ["other.test"] })
}))

// Real time. A phase under test gets a short timeout (MS); every other phase a long one, so that the honest part of
// a dialogue never times out on a loaded 2-core CI machine. Every bound below is generous.
const MS = { greeting: 500, data: 800 }
const LONG = 5_000
const SLACK = 2_500

type Timeouts = Partial<Record<"connect" | "greeting" | "ehlo" | "tls" | "mail-from" | "rcpt-to" | "data", number>>

const config = (strategy: string, short: Timeouts = {}, starttls = "optional") => `
[queue.outbound]
hostname = "'client.test'"
ip-strategy = "${strategy}"
[queue.outbound.timeouts]
${(["connect", "greeting", "ehlo", "tls", "mail-from", "rcpt-to", "data"] as const).map((k) => `${k} = "${short[k] ?? LONG}ms"`).join("\n")}
[queue.outbound.tls]
mta-sts = "disable"
starttls = "${starttls}"
`

const MESSAGE = "From: sender@origin.test\r\nSubject: hostile\r\n\r\nbody line\r\n"

const request: Transport.DeliveryRequest = {
  message: MESSAGE,
  sender: "sender@origin.test",
  recipients: ["rcpt@hostile.test"]
}

interface Live {
  /** Short timeouts for the phases under test. */
  readonly short?: Timeouts
  readonly request?: Transport.DeliveryRequest
  readonly ca?: ReadonlyArray<string>
  /** Live DNS (the given servers) instead of in-memory zones naming the peer. */
  readonly dns?: Dns.LayerOptions
  /** `tls.starttls`; `optional` (the default) goes on in plaintext after a failed handshake. */
  readonly starttls?: "optional" | "require"
}

/** The delivery, on the live connector, to the peer as the one MX of hostile.test. */
const deliverTo = (peer: { readonly host: string; readonly port: number }, live: Live = {}) =>
  Effect.gen(function*() {
    const family = peer.host.includes(":") ? "aaaa" : "a"
    const dns = live.dns === undefined
      ? Dns.layerTest({
        "hostile.test": { mx: [{ exchange: "mx.hostile.test", priority: 10 }] },
        "mx.hostile.test": { [family]: [peer.host] }
      })
      : Dns.layer(live.dns)
    const started = Date.now()
    const report = yield* Transport.deliver(live.request ?? request).pipe(
      Effect.provide(Layer.mergeAll(
        Layer.orDie(OutboundConfig.layerFromText(config(family === "a" ? "ipv4_only" : "ipv6_only", live.short, live.starttls))),
        dns,
        Connector.layer,
        PolicyCache.layer,
        MtaSts.layerTest(() => Effect.succeed({ status: 404 }))
      )),
      Effect.provideService(Transport.TransportOptions, {
        port: peer.port,
        ca: live.ca,
        domainConcurrency: 8,
        mtaStsPort: 443
      })
    )
    return { report, ms: Date.now() - started }
  })

interface Expected {
  readonly status: RecipientStatus
  readonly phase: Phase | null
  readonly kind: Kind | null
  readonly permanent: boolean | null
  /** Upper bound, wall clock. */
  readonly within: number
}

const expectOutcome = (result: { report: DeliveryReport; ms: number }, expected: Expected) => {
  const [r] = result.report.recipients
  expect({
    status: r!.status,
    phase: r!.error?.phase ?? null,
    kind: r!.error?.kind ?? null,
    permanent: r!.error?.permanent ?? null
  }).toEqual({ status: expected.status, phase: expected.phase, kind: expected.kind, permanent: expected.permanent })
  expect(result.ms).toBeLessThan(expected.within)
}

/**
 * Runs a case against a peer and checks that nothing is left: the connector's count is back to 0 as soon as
 * `deliver` returns, the peer saw every connection close, and no Node handle outlives the case.
 */
const against = <A, E>(peer: HostilePeer, body: Effect.Effect<A, E>) =>
  Effect.gen(function*() {
    const baseline = activeResources()
    const a = yield* body
    expect(yield* Connector.openConnections).toBe(0)
    yield* peer.settled
    expect(yield* leakedSince(baseline)).toEqual([])
    return a
  })

const CRLF = "\r\n"
const multi = (code: number, texts: ReadonlyArray<string>) =>
  texts.map((t, i) => `${code}${i === texts.length - 1 ? " " : "-"}${t}`).join(CRLF) + CRLF

/** Greeting and EHLO; `false` when the client went away. */
const hello = async (c: PeerConnection, ...keywords: ReadonlyArray<string>) => {
  c.write(`220 mx.hostile.test ESMTP${CRLF}`)
  if ((await c.line()) === null) return false
  c.write(multi(250, ["mx.hostile.test", ...keywords]))
  return true
}

/** Reads one command and answers it; `false` when the client went away. */
const answer = async (c: PeerConnection, reply: string) => {
  if ((await c.line()) === null) return false
  c.write(reply + CRLF)
  return true
}

/** Greeting to DATA's 354, no extensions. */
const toBody = async (c: PeerConnection) =>
  (await hello(c)) && (await answer(c, "250 ok")) && (await answer(c, "250 ok")) && (await answer(c, "354 go ahead"))

const sendsNoBody = (peer: HostilePeer) => expect(peer.connections.map((c) => c.plain.includes("body line"))).toEqual([false])

// ---------------------------------------------------------------------------------------------------------------

describe("silence and trickles on real sockets", () => {
  it.scopedLive("a silent server: greeting timeout", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(() => {})
      const result = yield* against(peer, deliverTo(peer, { short: { greeting: MS.greeting } }))
      expectOutcome(result, { status: "deferred", phase: "greeting", kind: "timeout", permanent: false, within: MS.greeting + SLACK })
      expect(result.ms).toBeGreaterThanOrEqual(MS.greeting - 20)
    }))

  it.scopedLive("a greeting at one byte every 150 ms ends at the greeting timeout, not when the line is done", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        for (const ch of "220 mx.hostile.test ESMTP\r\n") {
          if (c.isClosed()) return
          c.write(ch)
          await c.sleep(150)
        }
      })
      const result = yield* against(peer, deliverTo(peer, { short: { greeting: MS.greeting } }))
      expectOutcome(result, { status: "deferred", phase: "greeting", kind: "timeout", permanent: false, within: MS.greeting + SLACK })
      // the whole line would have taken 4 s
      expect(peer.connections[0]!.plain).toBe("")
    }))

  it.scopedLive("silence after the final dot: data timeout, never delivered", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if (await toBody(c)) await c.until(`${CRLF}.${CRLF}`)
      })
      const result = yield* against(peer, deliverTo(peer, { short: { data: MS.data } }))
      expectOutcome(result, { status: "deferred", phase: "data", kind: "timeout", permanent: false, within: MS.data + SLACK })
      expect(peer.connections[0]!.plain).toMatch(/body line\r\n\.\r\n$/)
    }))

  it.scopedLive("the end-of-data reply at one byte every 150 ms: data timeout, never delivered", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if (!(await toBody(c)) || !(await c.until(`${CRLF}.${CRLF}`))) return
        for (const ch of "250 2.0.0 queued as 1234\r\n") {
          if (c.isClosed()) return
          c.write(ch)
          await c.sleep(150)
        }
      })
      const result = yield* against(peer, deliverTo(peer, { short: { data: MS.data } }))
      expectOutcome(result, { status: "deferred", phase: "data", kind: "timeout", permanent: false, within: MS.data + SLACK })
    }))
})

describe("floods, garbage and binary on real sockets", () => {
  it.scopedLive("a 1 MiB greeting line: protocol error at the 4 KiB line limit", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer((c) => {
        c.write(`220 ${"x".repeat(1024 * 1024)}\r\n`)
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "greeting", kind: "protocol", permanent: false, within: SLACK })
      expect(result.report.recipients[0]!.error!.message).toBe("greeting: line longer than 4096 bytes")
    }))

  it.scopedLive("a never-ending multi-line EHLO reply (250- forever): protocol error at 512 lines", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        c.write(`220 mx.hostile.test ESMTP${CRLF}`)
        if ((await c.line()) === null) return
        const chunk = "250-more and more\r\n".repeat(200)
        // bounded by the client: it hangs up once it has had enough
        while (!c.isClosed()) if (!c.write(chunk)) await c.drain()
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "ehlo", kind: "protocol", permanent: false, within: SLACK })
      expect(result.report.recipients[0]!.error!.message).toBe("ehlo: reply longer than 512 lines")
    }))

  it.scopedLive("an HTTP server on port 25: protocol error, nothing sent", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer((c) => {
        c.write("HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\n\r\n<html></html>\r\n")
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "greeting", kind: "protocol", permanent: false, within: SLACK })
      expect(peer.connections[0]!.plain).toBe("")
    }))

  it.scopedLive("binary and NUL bytes: protocol error", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer((c) => {
        c.write(Buffer.from([0x32, 0x32, 0x30, 0x20, 0x00, 0xff, 0xfe, 0x00, 0x07, 0x0d, 0x0a]))
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "greeting", kind: "protocol", permanent: false, within: SLACK })
    }))
})

describe("resets and closes on real sockets: never delivered", () => {
  it.scopedLive("a reset mid-greeting (127.0.0.1)", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        c.write("220 mx.hos")
        await c.sleep(20)
        c.reset()
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "greeting", kind: "reset", permanent: false, within: SLACK })
    }))

  it.scopedLive("a reset mid-greeting (::1)", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        c.write("220 mx.hos")
        await c.sleep(20)
        c.reset()
      }, { host: "::1" })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "greeting", kind: "reset", permanent: false, within: SLACK })
      expect(result.report.attempts.map((a) => a.ip)).toEqual(["::1"])
    }))

  it.scopedLive("a close right after EHLO", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        c.write(`220 mx.hostile.test ESMTP${CRLF}`)
        if ((await c.line()) !== null) c.socket.end()
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "ehlo", kind: "reset", permanent: false, within: SLACK })
    }))

  it.scopedLive("a reset mid-RCPT", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if ((await hello(c)) && (await answer(c, "250 ok")) && (await c.line()) !== null) c.reset()
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "rcpt-to", kind: "reset", permanent: false, within: SLACK })
    }))

  it.scopedLive("a reset mid-DATA, 64 KiB into a 4 MiB body", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if ((await toBody(c)) && (await c.bytes(64 * 1024))) c.reset()
      })
      const big = `Subject: big\r\n\r\n${`${"z".repeat(1022)}\r\n`.repeat(4096)}`
      const result = yield* against(peer, deliverTo(peer, { request: { ...request, message: big } }))
      expectOutcome(result, { status: "deferred", phase: "data", kind: "reset", permanent: false, within: SLACK })
    }))

  it.scopedLive("a reset after the final dot, before the reply", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if ((await toBody(c)) && (await c.until(`${CRLF}.${CRLF}`))) c.reset()
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "data", kind: "reset", permanent: false, within: SLACK })
    }))
})

describe("replies out of turn on real sockets", () => {
  it.scopedLive("250 instead of 354: deferred, the body never sent", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if ((await hello(c)) && (await answer(c, "250 ok")) && (await answer(c, "250 ok"))) {
          await answer(c, "250 2.0.0 queued")
          await answer(c, "221 bye")
          c.socket.end()
        }
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "data", kind: "reply", permanent: false, within: SLACK })
      expect(result.report.recipients[0]!.reply).toEqual({ code: 250, enhanced: "2.0.0", text: "queued" })
      sendsNoBody(peer)
    }))

  it.scopedLive("354 and 250 in one write, before the body was sent: protocol error, the body never sent", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if ((await hello(c)) && (await answer(c, "250 ok")) && (await answer(c, "250 ok"))) {
          await answer(c, `354 go ahead${CRLF}250 2.0.0 queued`)
          await c.sleep(200)
        }
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "data", kind: "protocol", permanent: false, within: SLACK })
      sendsNoBody(peer)
    }))

  it.scopedLive("pipelining desync: replies to commands not yet sent, the body's 250 included: protocol error", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if (!(await hello(c, "PIPELINING"))) return
        // answers the whole transaction on MAIL alone
        if ((await c.line()) === null) return
        c.write(`250 ok${CRLF}250 ok${CRLF}354 go${CRLF}250 2.0.0 queued${CRLF}250 extra${CRLF}`)
        await c.sleep(200)
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "data", kind: "protocol", permanent: false, within: SLACK })
      sendsNoBody(peer)
    }))
})

// Live services (real time, `excludeTestServices`): `it.scoped` here runs on the real clock, as `it.scopedLive` does.
layer(PkiLive, { excludeTestServices: true })("STARTTLS and TLS on real sockets", (it) => {
  it.scoped("a STARTTLS 220 followed by plaintext: refused before any TLS byte, no plaintext MAIL", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        if (!(await hello(c, "STARTTLS"))) return
        await answer(c, `220 go ahead${CRLF}250-mx.hostile.test${CRLF}250 AUTH PLAIN`)
        await c.sleep(300)
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "deferred", phase: "tls", kind: "protocol", permanent: false, within: SLACK })
      // no ClientHello went out on the tainted connection, and nothing after it
      expect(peer.connections[0]!.plain).toBe("EHLO client.test\r\nSTARTTLS\r\n")
    }))

  const alert = async (c: PeerConnection) => {
    if (!(await hello(c, "STARTTLS")) || !(await answer(c, "220 go ahead")) || !(await c.bytes(1))) return
    // TLS 1.2 record: alert, fatal (2), handshake_failure (40)
    c.write(Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]))
    c.socket.end()
  }

  it.scoped("a TLS alert (handshake failure) in answer to the ClientHello under require: tls error, no plaintext retry", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(alert)
      const result = yield* against(peer, deliverTo(peer, { starttls: "require" }))
      expectOutcome(result, { status: "deferred", phase: "tls", kind: "tls", permanent: false, within: SLACK })
      expect(result.report.recipients[0]!.error!.message).toMatch(/^tls: TLS handshake failed: .*alert handshake failure/)
      expect(peer.connections).toHaveLength(1)
      expect(peer.connections[0]!.plain).not.toMatch(/MAIL FROM/)
    }))

  it.scoped("the same alert under optional (RFC 7435): plaintext on a new connection, delivered", () =>
    Effect.gen(function*() {
      let n = 0
      const peer = yield* hostilePeer(async (c) => {
        if (n++ === 0) return alert(c)
        if (!(await hello(c, "STARTTLS"))) return
        for (const reply of ["250 ok", "250 ok", "354 go"]) if (!(await answer(c, reply))) return
        if (!(await c.until(`${CRLF}.${CRLF}`))) return
        c.write(`250 2.0.0 queued${CRLF}`)
        await answer(c, "221 bye")
        c.socket.end()
      })
      const result = yield* against(peer, deliverTo(peer))
      expectOutcome(result, { status: "delivered", phase: null, kind: null, permanent: null, within: SLACK })
      expect(result.report.attempts.map((a) => [a.phase, a.outcome, a.error?.kind ?? null, a.tls])).toEqual([
        ["tls", "failed", "tls", null],
        ["quit", "completed", null, null]
      ])
      expect(peer.connections.map((c) => /MAIL FROM/.test(c.plain))).toEqual([false, true])
    }))

  it.scoped("a certificate for another name under require: tls error before any MAIL FROM; the right name is accepted", () =>
    Effect.gen(function*() {
      const { certs, otherName } = yield* Pki
      const wrong = yield* hostilePeer(async (c) => {
        if (!(await hello(c, "STARTTLS")) || (await c.line()) === null) return
        c.write(`220 go ahead${CRLF}`)
        c.startTls({ key: otherName.keyPem, cert: otherName.certPem })
        await c.line()
      })
      const refused = yield* against(wrong, deliverTo(wrong, { ca: [otherName.caPem], starttls: "require" }))
      expectOutcome(refused, { status: "deferred", phase: "tls", kind: "tls", permanent: false, within: SLACK })
      expect(refused.report.recipients[0]!.error!.message).toMatch(/Hostname\/IP does not match certificate's altnames/)
      expect(wrong.connections.map((c) => [c.secure, /MAIL FROM/.test(c.plain)])).toEqual([["", false]])

      // The control: the same dialogue with a certificate for mx.hostile.test delivers over TLS.
      const right = yield* hostilePeer(async (c) => {
        if (!(await hello(c, "STARTTLS")) || (await c.line()) === null) return
        c.write(`220 go ahead${CRLF}`)
        c.startTls({ key: certs.keyPem, cert: certs.certPem })
        if (!(await answer(c, multi(250, ["mx.hostile.test"]).trimEnd()))) return
        if (!(await answer(c, "250 ok")) || !(await answer(c, "250 ok")) || !(await answer(c, "354 go"))) return
        if (!(await c.until(`${CRLF}.${CRLF}`))) return
        c.write(`250 2.0.0 queued${CRLF}`)
        await answer(c, "221 bye")
        c.socket.end()
      })
      const delivered = yield* against(right, deliverTo(right, { ca: [certs.caPem], starttls: "require" }))
      expectOutcome(delivered, { status: "delivered", phase: null, kind: null, permanent: null, within: SLACK })
      expect(delivered.report.attempts.map((a) => [a.tls?.verified, a.outcome])).toEqual([[true, "completed"]])
      expect(right.connections[0]!.secure).toMatch(/^EHLO client\.test\r\nMAIL FROM:<sender@origin\.test>/)
    }))
})

// ---------------------------------------------------------------------------------------------------------------
// Hostile resolvers
// ---------------------------------------------------------------------------------------------------------------

describe("hostile resolvers on real UDP/TCP", () => {
  const liveDns = (server: string): Dns.LayerOptions => ({ servers: [server], timeout: "500 millis", tries: 1, cache: false })
  const nothing = { host: "127.0.0.1", port: 9 }

  it.scopedLive("a DNS server that never answers: temporary dns error at the query timeout", () =>
    Effect.gen(function*() {
      const dns = yield* DnsServer.scoped({
        zones: { "hostile.test": { mx: [{ exchange: "mx.hostile.test", priority: 10 }], delay: "1 hour" } }
      })
      const baseline = activeResources()
      const result = yield* deliverTo(nothing, { dns: liveDns(dns.server) })
      expectOutcome(result, { status: "deferred", phase: "dns", kind: "dns", permanent: false, within: 500 + SLACK })
      expect(result.ms).toBeGreaterThanOrEqual(480)
      expect(result.report.attempts).toEqual([])
      expect(yield* leakedSince(baseline)).toEqual([])
    }))

  it.scopedLive("SERVFAIL: temporary dns error", () =>
    Effect.gen(function*() {
      const dns = yield* DnsServer.scoped({ zones: { "hostile.test": { rcode: "SERVFAIL" } } })
      const result = yield* deliverTo(nothing, { dns: liveDns(dns.server) })
      expectOutcome(result, { status: "deferred", phase: "dns", kind: "dns", permanent: false, within: SLACK })
      expect(result.report.attempts).toEqual([])
      expect(dns.count("hostile.test", "MX")).toBe(1)
    }))

  it.scopedLive("an MX pointing to a name with no addresses: temporary dns error, nothing contacted", () =>
    Effect.gen(function*() {
      const dns = yield* DnsServer.scoped({
        zones: { "hostile.test": { mx: [{ exchange: "mx.hostile.test", priority: 10 }] }, "mx.hostile.test": {} }
      })
      const result = yield* deliverTo(nothing, { dns: liveDns(dns.server) })
      expectOutcome(result, { status: "deferred", phase: "dns", kind: "dns", permanent: false, within: SLACK })
      expect(result.report.attempts).toEqual([])
      expect(dns.count("mx.hostile.test", "A")).toBe(1)
    }))

  it.scopedLive("a truncated (TC) answer and TCP refused: temporary dns error", () =>
    Effect.gen(function*() {
      const dns = yield* hostileDns(() => ({ truncated: true }), { tcp: false })
      const result = yield* deliverTo(nothing, { dns: liveDns(dns.server) })
      expectOutcome(result, { status: "deferred", phase: "dns", kind: "dns", permanent: false, within: SLACK })
      expect(result.report.attempts).toEqual([])
      expect(dns.questions.map((q) => [q.name, q.type, q.transport])).toEqual([["hostile.test", 15, "udp"]])
    }))

  it.scopedLive("500 MX records, truncated over UDP and served over TCP: limits.mx hosts tried, bounded work", () =>
    Effect.gen(function*() {
      const peer = yield* hostilePeer(async (c) => {
        c.write(`421 4.3.2 busy${CRLF}`)
        await answer(c, "221 bye")
        c.socket.end()
      })
      const dns = yield* hostileDns((q) =>
        q.type === 15
          ? q.transport === "udp"
            ? { truncated: true }
            : { mx: Array.from({ length: 500 }, (_, i) => ({ exchange: `mx${i}.hostile.test`, priority: i })) }
          : q.type === 1
          ? { a: [peer.host] }
          : { rcode: 3 }
      )
      // a longer budget: the TCP retry happens within it, and must not race a loaded machine
      const result = yield* against(peer, deliverTo(peer, { dns: { ...liveDns(dns.server), timeout: "3 seconds" } }))
      expectOutcome(result, { status: "deferred", phase: "greeting", kind: "reply", permanent: false, within: 2 * SLACK })
      const plan = result.report.plan.domains[0]!
      expect([plan.mx.length, plan.hosts.map((h) => h.host), plan.dropped.length]).toEqual([
        500,
        ["mx0.hostile.test", "mx1.hostile.test", "mx2.hostile.test", "mx3.hostile.test", "mx4.hostile.test"],
        495
      ])
      expect(dns.questions.map((q) => `${q.type}/${q.transport}`)).toEqual([
        "15/udp",
        "15/tcp",
        "1/udp",
        "1/udp",
        "1/udp",
        "1/udp",
        "1/udp"
      ])
      expect(peer.connections).toHaveLength(5)
    }))
})
