/**
 * MTA-STS against real peers on loopback: an HTTPS server (node:https) with a certificate from a CA made at test
 * time, and a real DNS server (dns2) queried through the live `Dns` layer, which is the only thing that knows that
 * `mta-sts.<domain>` is 127.0.0.1.
 */
import { expect, layer } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as https from "node:https"
import type { AddressInfo } from "node:net"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as TransportError from "../src/TransportError.js"
import * as DnsServer from "./fixtures/dnsServer.js"
import { type Certificates, makeCertificates } from "./fixtures/certs.js"

const policyBody = "version: STSv1\r\nmode: enforce\r\nmx: mx1.good.test\r\nmx: *.mx.good.test\r\nmax_age: 86400\r\n"
const bigLimit = 64 * 1024 * 1024

const domains = ["good", "redirect", "big", "slow", "html"] as const
const zones: Dns.Zones = {
  ...Object.fromEntries(domains.flatMap((domain) => [
    [`_mta-sts.${domain}.test`, { txt: ["v=spf1 -all", `v=STSv1; id=${domain}2024;`] }],
    [`mta-sts.${domain}.test`, { a: ["127.0.0.1"] }]
  ])),
  // A TXT record but no address for the policy host.
  "_mta-sts.noaddr.test": { txt: ["v=STSv1; id=1"] }
}

/**
 * What the suite shares, started once (`layer`, below) and closed after its last test: the PKI, the DNS server, the
 * HTTPS policy server on `port` with the log of its requests, and what it saw of the two connections the client must
 * cut short (the oversized body's and the silent server's).
 */
class Suite extends Context.Tag("test/MtaStsLiveSuite")<Suite, {
  readonly pki: Certificates
  readonly dnsServer: DnsServer.DnsServer
  readonly port: number
  readonly requests: ReadonlyArray<{ readonly host: string; readonly path: string }>
  readonly bigClosed: Promise<{ readonly finished: boolean; readonly sent: number }>
  readonly slowClosed: Promise<void>
  readonly slowReached: () => boolean
}>() {}

const SuiteLive = Layer.scoped(
  Suite,
  Effect.gen(function*() {
    const pki = makeCertificates({
      hostnames: domains.map((domain) => `mta-sts.${domain}.test`).concat("mta-sts.noaddr.test")
    })
    const dnsServer = yield* DnsServer.scoped({ zones })
    const requests: Array<{ readonly host: string; readonly path: string }> = []
    let onBigClosed: (value: { readonly finished: boolean; readonly sent: number }) => void = () => undefined
    let onSlowClosed: () => void = () => undefined
    const bigClosed = new Promise<{ readonly finished: boolean; readonly sent: number }>((resolve) => (onBigClosed = resolve))
    const slowClosed = new Promise<void>((resolve) => (onSlowClosed = resolve))
    let slowReached = false
    let port = 0
    const server = https.createServer({ key: pki.keyPem, cert: pki.certPem }, (req, res) => {
      const host = (req.headers.host ?? "").replace(/:\d+$/, "")
      requests.push({ host, path: req.url ?? "" })
      switch (host) {
        case "mta-sts.good.test": {
          res.writeHead(200, { "content-type": "text/plain; charset=utf-8" })
          res.end(policyBody)
          return
        }
        case "mta-sts.redirect.test": {
          res.writeHead(301, {
            location: `https://mta-sts.good.test:${port}/.well-known/mta-sts.txt`,
            "content-type": "text/plain"
          })
          res.end(policyBody)
          return
        }
        case "mta-sts.html.test": {
          res.writeHead(200, { "content-type": "text/html" })
          res.end(policyBody)
          return
        }
        case "mta-sts.big.test": {
          // Far more than socket buffers hold, so an early close by the client shows as an unfinished response.
          let sent = 0
          const chunk = Buffer.alloc(16 * 1024, "a")
          res.on("close", () => onBigClosed({ finished: res.writableFinished, sent }))
          res.writeHead(200, { "content-type": "text/plain" })
          const pump = () => {
            while (sent < bigLimit && !res.destroyed) {
              sent += chunk.length
              if (!res.write(chunk)) {
                res.once("drain", pump)
                return
              }
            }
            res.end()
          }
          pump()
          return
        }
        case "mta-sts.slow.test": {
          // Never answers; the client's timeout must close the connection.
          slowReached = true
          req.socket.once("close", () => onSlowClosed())
          return
        }
      }
      res.writeHead(404).end()
    })
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      () =>
        Effect.async<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    )
    port = (server.address() as AddressInfo).port
    return { pki, dnsServer, port, requests, bigClosed, slowClosed, slowReached: () => slowReached }
  })
)

/** The live MtaSts, PolicyCache and Dns layers, resolving through the suite's DNS server; the layer trusts the
 * suite's CA when told to. */
const liveLayer = (options?: { readonly trustSuiteCa?: boolean }) =>
  Layer.unwrapEffect(Effect.map(Suite, ({ dnsServer, pki }) => {
    const mtaSts = MtaSts.layer(options?.trustSuiteCa === true ? { ca: [pki.caPem] } : undefined)
    return Layer.mergeAll(mtaSts, PolicyCache.layerMemory()).pipe(
      Layer.provideMerge(Dns.layer({ servers: [dnsServer.server], cache: false, timeout: "2 seconds" }))
    )
  }))

const url = (port: number, domain: string) => `https://mta-sts.${domain}:${port}/.well-known/mta-sts.txt`

// Live services (real time, `excludeTestServices`): `it.effect` here runs on the real clock, as `it.live` does.
layer(SuiteLive, { excludeTestServices: true })("MtaSts over real HTTPS and DNS", (it) => {
  it.effect("fetches and parses a policy, the host resolved through the Dns service, then serves it from the cache", () =>
    Effect.gen(function*() {
      const { dnsServer, pki, port, requests } = yield* Suite
      const options: MtaSts.ResolveOptions = { mode: "require", timeout: "5 seconds", port, ca: [pki.caPem] }
      const before = requests.length
      const first = yield* MtaSts.resolve("good.test", options)
      expect(first).toStrictEqual({
        domain: "good.test",
        status: "found",
        policy: { version: "STSv1", mode: "enforce", mx: ["mx1.good.test", "*.mx.good.test"], maxAge: 86400 },
        source: "fetched",
        id: "good2024",
        warning: null,
        error: null
      })
      expect(requests.slice(before)).toStrictEqual([{ host: "mta-sts.good.test", path: "/.well-known/mta-sts.txt" }])
      expect(dnsServer.count("_mta-sts.good.test", "TXT")).toBe(1)
      expect(dnsServer.count("mta-sts.good.test", "A")).toBe(1)
      const second = yield* MtaSts.resolve("good.test", options)
      expect(second).toStrictEqual({ ...first, source: "cache" })
      expect(requests.length).toBe(before + 1)
      expect(MtaSts.hostAllowed(second.policy, "a.mx.good.test")).toBe(true)
      expect(MtaSts.hostAllowed(second.policy, "mx2.good.test")).toBe(false)
    }).pipe(Effect.provide(liveLayer())))

  it.effect("trusts an extra CA given to the layer", () =>
    Effect.gen(function*() {
      const { port } = yield* Suite
      const policy = yield* MtaSts.fetchPolicy("good.test", { port })
      expect(policy.mx).toStrictEqual(["mx1.good.test", "*.mx.good.test"])
    }).pipe(Effect.provide(liveLayer({ trustSuiteCa: true }))))

  it.effect("refuses a certificate from a CA it does not trust", () =>
    Effect.gen(function*() {
      const { pki, port } = yield* Suite
      const untrusted = yield* Effect.flip(MtaSts.fetchPolicy("good.test", { port }))
      expect([untrusted.phase, untrusted.kind, untrusted.permanent]).toStrictEqual(["mta-sts", "tls", false])
      expect(untrusted.message).toBe(
        `fetching ${url(port, "good.test")} failed: unable to verify the first certificate (UNABLE_TO_VERIFY_LEAF_SIGNATURE)`
      )
      const otherCa = yield* Effect.flip(MtaSts.fetchPolicy("good.test", { port, ca: [pki.wrongCaPem] }))
      expect(otherCa.kind).toBe("tls")
      const outcome = yield* MtaSts.resolve("good.test", { mode: "optional", timeout: "5 seconds", port })
      expect([outcome.status, outcome.policy, outcome.error?.kind]).toStrictEqual(["failed", null, "tls"])
    }).pipe(Effect.provide(liveLayer())))

  it.effect("does not follow a 301 redirect", () =>
    Effect.gen(function*() {
      const { pki, port, requests } = yield* Suite
      const before = requests.length
      const error = yield* Effect.flip(
        MtaSts.resolve("redirect.test", { mode: "require", timeout: "5 seconds", port, ca: [pki.caPem] })
      )
      expect(error).toStrictEqual(TransportError.make(
        "mta-sts",
        "protocol",
        `${url(port, "redirect.test")} answered HTTP 301 (redirects are not followed)`
      ))
      expect(requests.slice(before)).toStrictEqual([{ host: "mta-sts.redirect.test", path: "/.well-known/mta-sts.txt" }])
    }).pipe(Effect.provide(liveLayer())))

  it.effect("rejects another media type", () =>
    Effect.gen(function*() {
      const { pki, port } = yield* Suite
      const error = yield* Effect.flip(MtaSts.fetchPolicy("html.test", { port, ca: [pki.caPem] }))
      expect(error).toStrictEqual(
        TransportError.make("mta-sts", "protocol", `${url(port, "html.test")} answered media type text/html, not text/plain`)
      )
    }).pipe(Effect.provide(liveLayer())))

  it.effect("rejects an oversized body and closes the connection without reading the rest", () =>
    Effect.gen(function*() {
      const { bigClosed, pki, port } = yield* Suite
      const error = yield* Effect.flip(MtaSts.fetchPolicy("big.test", { port, ca: [pki.caPem] }))
      expect([error.kind, error.permanent]).toStrictEqual(["protocol", false])
      expect(error.message).toMatch(
        new RegExp(`^${url(port, "big.test").replace(/\./g, "\\.")} sent a body over 65536 bytes \\(stopped after \\d+\\)$`)
      )
      const received = Number(/stopped after (\d+)/.exec(error.message)![1])
      expect(received).toBeGreaterThan(65536)
      expect(received).toBeLessThan(65536 + 1024 * 1024)
      const closed = yield* Effect.promise(() => bigClosed).pipe(Effect.timeout("5 seconds"))
      expect(closed.finished).toBe(false)
      expect(closed.sent).toBeLessThan(bigLimit)
    }).pipe(Effect.provide(liveLayer())))

  it.effect("times out on a server that never answers, and closes the connection", () =>
    Effect.gen(function*() {
      const { pki, port, slowClosed, slowReached } = yield* Suite
      const error = yield* Effect.flip(
        MtaSts.resolve("slow.test", { mode: "require", timeout: "1 second", port, ca: [pki.caPem] })
      )
      expect(error).toStrictEqual(TransportError.timeout("mta-sts", "1 second"))
      expect(error.message).toBe("mta-sts timed out after 1s")
      // The request did reach the server, so the timeout cut a real exchange short.
      expect(slowReached()).toBe(true)
      yield* Effect.promise(() => slowClosed).pipe(Effect.timeout("5 seconds"))
    }).pipe(Effect.provide(liveLayer())))

  it.effect("fails with kind dns when the policy host has no address", () =>
    Effect.gen(function*() {
      const { pki, port } = yield* Suite
      const error = yield* Effect.flip(
        MtaSts.resolve("noaddr.test", { mode: "require", timeout: "5 seconds", port, ca: [pki.caPem] })
      )
      expect(error).toStrictEqual(TransportError.make(
        "mta-sts",
        "dns",
        `fetching ${url(port, "noaddr.test")} failed: mta-sts.noaddr.test: no address (ENOTFOUND)`
      ))
    }).pipe(Effect.provide(liveLayer())))

  it.effect("no TXT record under require is a permanent failure, with no HTTP request", () =>
    Effect.gen(function*() {
      const { port, requests } = yield* Suite
      const before = requests.length
      const error = yield* Effect.flip(MtaSts.resolve("none.test", { mode: "require", timeout: "5 seconds", port }))
      expect([error.kind, error.permanent]).toStrictEqual(["policy", true])
      expect(requests.length).toBe(before)
    }).pipe(Effect.provide(liveLayer())))
})
