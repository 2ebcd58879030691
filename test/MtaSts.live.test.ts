/**
 * MTA-STS against real peers on loopback: an HTTPS server (node:https) with a certificate from a CA made at test
 * time, and a real DNS server (dns2) queried through the live `Dns` layer, which is the only thing that knows that
 * `mta-sts.<domain>` is 127.0.0.1.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
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

let pki: Certificates
let dnsServer: DnsServer.DnsServer
let server: https.Server
let port: number
const requests: Array<{ readonly host: string; readonly path: string }> = []
let bigClosed: Promise<{ readonly finished: boolean; readonly sent: number }>
let slowClosed: Promise<void>
let onBigClosed: (value: { readonly finished: boolean; readonly sent: number }) => void = () => undefined
let onSlowClosed: () => void = () => undefined
let slowReached = false

beforeAll(async () => {
  pki = makeCertificates({ hostnames: domains.map((domain) => `mta-sts.${domain}.test`).concat("mta-sts.noaddr.test") })
  dnsServer = await DnsServer.start({ zones })
  bigClosed = new Promise((resolve) => (onBigClosed = resolve))
  slowClosed = new Promise((resolve) => (onSlowClosed = resolve))
  server = https.createServer({ key: pki.keyPem, cert: pki.certPem }, (req, res) => {
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
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  port = (server.address() as AddressInfo).port
})

afterAll(async () => {
  server?.closeAllConnections()
  await new Promise((resolve) => server?.close(resolve))
  await dnsServer?.close()
})

const liveLayer = (options?: { readonly ca?: ReadonlyArray<string> }) =>
  Layer.mergeAll(MtaSts.layer(options), PolicyCache.layerMemory()).pipe(
    Layer.provideMerge(Dns.layer({ servers: [dnsServer.server], cache: false, timeout: "2 seconds" }))
  )

const url = (domain: string) => `https://mta-sts.${domain}:${port}/.well-known/mta-sts.txt`

describe("MtaSts over real HTTPS and DNS", () => {
  it.live("fetches and parses a policy, the host resolved through the Dns service, then serves it from the cache", () =>
    Effect.gen(function*() {
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

  it.live("trusts an extra CA given to the layer", () =>
    Effect.gen(function*() {
      const policy = yield* MtaSts.fetchPolicy("good.test", { port })
      expect(policy.mx).toStrictEqual(["mx1.good.test", "*.mx.good.test"])
    }).pipe(Effect.provide(liveLayer({ ca: [pki.caPem] }))))

  it.live("refuses a certificate from a CA it does not trust", () =>
    Effect.gen(function*() {
      const untrusted = yield* Effect.flip(MtaSts.fetchPolicy("good.test", { port }))
      expect([untrusted.phase, untrusted.kind, untrusted.permanent]).toStrictEqual(["mta-sts", "tls", false])
      expect(untrusted.message).toBe(
        `fetching ${url("good.test")} failed: unable to verify the first certificate (UNABLE_TO_VERIFY_LEAF_SIGNATURE)`
      )
      const otherCa = yield* Effect.flip(MtaSts.fetchPolicy("good.test", { port, ca: [pki.wrongCaPem] }))
      expect(otherCa.kind).toBe("tls")
      const outcome = yield* MtaSts.resolve("good.test", { mode: "optional", timeout: "5 seconds", port })
      expect([outcome.status, outcome.policy, outcome.error?.kind]).toStrictEqual(["failed", null, "tls"])
    }).pipe(Effect.provide(liveLayer())))

  it.live("does not follow a 301 redirect", () =>
    Effect.gen(function*() {
      const before = requests.length
      const error = yield* Effect.flip(
        MtaSts.resolve("redirect.test", { mode: "require", timeout: "5 seconds", port, ca: [pki.caPem] })
      )
      expect(error).toStrictEqual(TransportError.make(
        "mta-sts",
        "protocol",
        `${url("redirect.test")} answered HTTP 301 (redirects are not followed)`
      ))
      expect(requests.slice(before)).toStrictEqual([{ host: "mta-sts.redirect.test", path: "/.well-known/mta-sts.txt" }])
    }).pipe(Effect.provide(liveLayer())))

  it.live("rejects another media type", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(MtaSts.fetchPolicy("html.test", { port, ca: [pki.caPem] }))
      expect(error).toStrictEqual(
        TransportError.make("mta-sts", "protocol", `${url("html.test")} answered media type text/html, not text/plain`)
      )
    }).pipe(Effect.provide(liveLayer())))

  it.live("rejects an oversized body and closes the connection without reading the rest", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(MtaSts.fetchPolicy("big.test", { port, ca: [pki.caPem] }))
      expect([error.kind, error.permanent]).toStrictEqual(["protocol", false])
      expect(error.message).toMatch(
        new RegExp(`^${url("big.test").replace(/\./g, "\\.")} sent a body over 65536 bytes \\(stopped after \\d+\\)$`)
      )
      const received = Number(/stopped after (\d+)/.exec(error.message)![1])
      expect(received).toBeGreaterThan(65536)
      expect(received).toBeLessThan(65536 + 1024 * 1024)
      const closed = yield* Effect.promise(() => bigClosed).pipe(Effect.timeout("5 seconds"))
      expect(closed.finished).toBe(false)
      expect(closed.sent).toBeLessThan(bigLimit)
    }).pipe(Effect.provide(liveLayer())))

  it.live("times out on a server that never answers, and closes the connection", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        MtaSts.resolve("slow.test", { mode: "require", timeout: "1 second", port, ca: [pki.caPem] })
      )
      expect(error).toStrictEqual(TransportError.timeout("mta-sts", "1 second"))
      expect(error.message).toBe("mta-sts timed out after 1s")
      // The request did reach the server, so the timeout cut a real exchange short.
      expect(slowReached).toBe(true)
      yield* Effect.promise(() => slowClosed).pipe(Effect.timeout("5 seconds"))
    }).pipe(Effect.provide(liveLayer())))

  it.live("fails with kind dns when the policy host has no address", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        MtaSts.resolve("noaddr.test", { mode: "require", timeout: "5 seconds", port, ca: [pki.caPem] })
      )
      expect(error).toStrictEqual(TransportError.make(
        "mta-sts",
        "dns",
        `fetching ${url("noaddr.test")} failed: mta-sts.noaddr.test: no address (ENOTFOUND)`
      ))
    }).pipe(Effect.provide(liveLayer())))

  it.live("no TXT record under require is a permanent failure, with no HTTP request", () =>
    Effect.gen(function*() {
      const before = requests.length
      const error = yield* Effect.flip(MtaSts.resolve("none.test", { mode: "require", timeout: "5 seconds", port }))
      expect([error.kind, error.permanent]).toStrictEqual(["policy", true])
      expect(requests.length).toBe(before)
    }).pipe(Effect.provide(liveLayer())))
})
