import { describe, expect, it } from "@effect/vitest"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as TestClock from "effect/TestClock"
import * as Dns from "../src/Dns.js"
import * as MtaSts from "../src/MtaSts.js"
import * as MtaStsPolicy from "../src/MtaStsPolicy.js"
import * as PolicyCache from "../src/PolicyCache.js"
import * as TransportError from "../src/TransportError.js"

// -----------------------------------------------------------------------------
// Parser
// -----------------------------------------------------------------------------

const rfcExample = [
  "version: STSv1",
  "mode: enforce",
  "mx: mail.example.com",
  "mx: *.example.net",
  "mx: backupmx.example.com",
  "max_age: 604800"
].join("\r\n") + "\r\n"

const parseError = (text: string): string => {
  const result = MtaSts.parse(text)
  if (Either.isRight(result)) throw new Error(`expected a parse error for ${JSON.stringify(text)}`)
  return result.left.message
}

describe("MtaSts.parse", () => {
  it("parses the RFC 8461 §3.2 example (CRLF)", () => {
    expect(MtaSts.parse(rfcExample)).toStrictEqual(Either.right({
      version: "STSv1",
      mode: "enforce",
      mx: ["mail.example.com", "*.example.net", "backupmx.example.com"],
      maxAge: 604800
    }))
  })

  it("accepts LF line endings, no final newline, trailing spaces and blank lines", () => {
    const text = "version: STSv1  \nmode:testing\n\nmx:\tmx1.example.org\nmax_age: 86400"
    expect(MtaSts.parse(text)).toStrictEqual(Either.right({
      version: "STSv1",
      mode: "testing",
      mx: ["mx1.example.org"],
      maxAge: 86400
    }))
  })

  it("skips a leading byte-order mark", () => {
    expect(Either.map(MtaSts.parse("\uFEFF" + rfcExample), (p) => p.mode)).toStrictEqual(Either.right("enforce"))
  })

  it("accepts mode none without mx (the RFC 8461 §8.3 removal policy)", () => {
    expect(MtaSts.parse("version: STSv1\nmode: none\nmax_age: 86400\n")).toStrictEqual(
      Either.right({ version: "STSv1", mode: "none", mx: [], maxAge: 86400 })
    )
  })

  it("ignores unknown keys and keeps the first of a repeated non-mx key", () => {
    const text = "version: STSv1\nmode: testing\nmode: enforce\nfuture_key: some value\nmx: A.Example.COM.\n" +
      "max_age: 10\nmax_age: 20\nmx: b.example.com\n"
    expect(MtaSts.parse(text)).toStrictEqual(Either.right({
      version: "STSv1",
      mode: "testing",
      mx: ["a.example.com", "b.example.com"],
      maxAge: 10
    }))
  })

  it("accepts max_age 0 and the RFC maximum 31557600", () => {
    const withAge = (age: string) => `version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: ${age}\n`
    expect(Either.map(MtaSts.parse(withAge("0")), (p) => p.maxAge)).toStrictEqual(Either.right(0))
    expect(Either.map(MtaSts.parse(withAge("31557600")), (p) => p.maxAge)).toStrictEqual(Either.right(31557600))
  })

  it("rejects malformed policies", () => {
    expect(parseError("mode: enforce\nmx: mx.example.com\nmax_age: 86400\n")).toBe("missing version")
    expect(parseError("version: STSv1\nmx: mx.example.com\nmax_age: 86400\n")).toBe("missing mode")
    expect(parseError("version: STSv1\nmode: enforce\nmx: mx.example.com\n")).toBe("missing max_age")
    expect(parseError("version: STSv2\nmode: enforce\nmx: mx.example.com\nmax_age: 1\n")).toBe(
      "unsupported version \"STSv2\" (expected STSv1)"
    )
    expect(parseError("version: STSv1\nmode: report\nmx: mx.example.com\nmax_age: 1\n")).toBe(
      "invalid mode \"report\" (expected enforce, testing or none)"
    )
    // The ABNF's values are case-sensitive (%s).
    expect(parseError("version: STSv1\nmode: Enforce\nmx: mx.example.com\nmax_age: 1\n")).toBe(
      "invalid mode \"Enforce\" (expected enforce, testing or none)"
    )
    expect(parseError("version: STSv1\nmode: enforce\nmax_age: 86400\n")).toBe("mode enforce without any mx pattern")
    expect(parseError("version: STSv1\nmode: testing\nmax_age: 86400\n")).toBe("mode testing without any mx pattern")
    expect(parseError("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 31557601\n")).toBe(
      "invalid max_age \"31557601\" (0 to 31557600 seconds)"
    )
    expect(parseError("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: -1\n")).toBe(
      "invalid max_age \"-1\" (0 to 31557600 seconds)"
    )
    expect(parseError("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 1d\n")).toBe(
      "invalid max_age \"1d\" (0 to 31557600 seconds)"
    )
    expect(parseError("version: STSv1\nmode enforce\nmx: mx.example.com\nmax_age: 1\n")).toBe(
      "line 2 is not a \"key: value\" field"
    )
    expect(parseError("version: STSv1\rmode: enforce\rmx: mx.example.com\rmax_age: 1\r")).toBe(
      "line 1 contains a control character"
    )
    expect(parseError("<html>\n<body>not a policy</body>\n")).toBe("line 1 is not a \"key: value\" field")
    for (const pattern of ["*", "*.", "a.*.example.com", "mx..example.com", "-mx.example.com", "mx_1.example.com"]) {
      expect(parseError(`version: STSv1\nmode: enforce\nmx: ${pattern}\nmax_age: 1\n`)).toBe(
        `invalid mx pattern "${pattern}"`
      )
    }
  })

  it("gives the line of a bad field", () => {
    const result = MtaSts.parse("version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: x\n")
    expect(Either.isLeft(result) && result.left.line).toBe(4)
  })

  it("rejects a body over 64 KiB, accepts one of exactly 64 KiB", () => {
    const head = "version: STSv1\nmode: enforce\nmx: mx.example.com\nmax_age: 86400\npadding: "
    const exact = head + "a".repeat(MtaSts.MAX_POLICY_BYTES - head.length)
    expect(exact.length).toBe(65536)
    expect(Either.isRight(MtaSts.parse(exact))).toBe(true)
    expect(parseError(exact + "a")).toBe("policy larger than 65536 bytes")
  })
})

describe("MtaSts TXT record", () => {
  it("parses the RFC 8461 §3.1 example", () => {
    expect(MtaSts.parseRecord("v=STSv1; id=20160831085700Z;")).toStrictEqual(Either.right({ id: "20160831085700Z" }))
  })

  it("accepts no trailing semicolon, tabs, extension fields; the first id counts", () => {
    expect(MtaSts.parseRecord("v=STSv1;id=abc")).toStrictEqual(Either.right({ id: "abc" }))
    expect(MtaSts.parseRecord("v=STSv1 ;\tid=X1 ; ext.name-1=va:lue ;")).toStrictEqual(Either.right({ id: "X1" }))
    expect(MtaSts.parseRecord("v=STSv1; id=first; id=second")).toStrictEqual(Either.right({ id: "first" }))
    expect(MtaSts.parseRecord(`v=STSv1; id=${"a".repeat(32)}`)).toStrictEqual(Either.right({ id: "a".repeat(32) }))
  })

  it("rejects malformed records", () => {
    const invalid = (text: string) => Either.isLeft(MtaSts.parseRecord(text))
    expect(invalid("v=STSv1")).toBe(true)
    expect(invalid("v=STSv1;")).toBe(true)
    expect(invalid(`v=STSv1; id=${"a".repeat(33)}`)).toBe(true)
    expect(invalid("v=STSv1; id=2016-08-31")).toBe(true)
    expect(invalid("v=STSv1; id=")).toBe(true)
    expect(invalid("v=STSv1; ; id=1")).toBe(true)
    expect(invalid("v=STSv1; id=1; junk")).toBe(true)
    expect(invalid("v=STSv1; id=1; x=a=b")).toBe(true)
    expect(invalid("id=1; v=STSv1")).toBe(true)
    expect(invalid("v=stsv1; id=1")).toBe(true)
  })

  it("selects exactly one v=STSv1 record among the TXT records", () => {
    expect(MtaSts.selectRecord(["v=spf1 -all", "v=STSv1; id=7;"])).toStrictEqual(Either.right({ id: "7" }))
    const error = (records: ReadonlyArray<string>) => Either.getLeft(MtaSts.selectRecord(records)).pipe(
      Option.map((e) => e.message),
      Option.getOrNull
    )
    expect(error(["v=STSv1; id=1", "v=STSv1; id=2"])).toBe("2 TXT records start with v=STSv1 (exactly one allowed)")
    expect(error(["v=spf1 -all"])).toBe("no TXT record starts with v=STSv1")
    expect(error(["v=STSv10; id=1"])).toBe("no TXT record starts with v=STSv1")
    expect(error([])).toBe("no TXT record starts with v=STSv1")
    expect(error(["v=STSv1; id=bad-id"])).toBe("invalid id \"bad-id\" in TXT record \"v=STSv1; id=bad-id\"")
  })
})

describe("MtaSts matching", () => {
  const policy = (mode: MtaSts.Mode, mx: ReadonlyArray<string>): MtaSts.Policy => ({
    version: "STSv1",
    mode,
    mx,
    maxAge: 86400
  })

  it("a wildcard matches exactly one extra label", () => {
    expect(MtaSts.matchesPattern("*.example.com", "mx.example.com")).toBe(true)
    expect(MtaSts.matchesPattern("*.example.com", "MX.Example.COM.")).toBe(true)
    expect(MtaSts.matchesPattern("*.example.com", "example.com")).toBe(false)
    expect(MtaSts.matchesPattern("*.example.com", "a.b.example.com")).toBe(false)
    expect(MtaSts.matchesPattern("*.example.com", "mxexample.com")).toBe(false)
    expect(MtaSts.matchesPattern("*.example.com", ".example.com")).toBe(false)
  })

  it("an exact pattern matches the name only, ignoring case and a trailing dot", () => {
    expect(MtaSts.matchesPattern("mail.example.com", "Mail.Example.Com.")).toBe(true)
    expect(MtaSts.matchesPattern("mail.example.com.", "mail.example.com")).toBe(true)
    expect(MtaSts.matchesPattern("mail.example.com", "x.mail.example.com")).toBe(false)
    expect(MtaSts.matchesPattern("mail.example.com", "example.com")).toBe(false)
  })

  it("compares internationalised names as A-labels", () => {
    const parsed = MtaSts.parse("version: STSv1\nmode: enforce\nmx: *.bücher.example\nmax_age: 1\n")
    expect(Either.map(parsed, (p) => p.mx)).toStrictEqual(Either.right(["*.xn--bcher-kva.example"]))
    expect(Either.map(parsed, (p) => MtaSts.matches(p, "mx.BÜCHER.example"))).toStrictEqual(Either.right(true))
  })

  it("matches against any of the patterns of the RFC example", () => {
    const parsed = Either.getOrThrow(MtaSts.parse(rfcExample))
    expect(MtaSts.matches(parsed, "mail.example.com")).toBe(true)
    expect(MtaSts.matches(parsed, "mx1.example.net")).toBe(true)
    expect(MtaSts.matches(parsed, "backupmx.example.com")).toBe(true)
    expect(MtaSts.matches(parsed, "example.net")).toBe(false)
    expect(MtaSts.matches(parsed, "evil.example.com")).toBe(false)
  })

  it("hostAllowed and enforced follow the mode", () => {
    expect(MtaSts.hostAllowed(null, "anything.example")).toBe(true)
    expect(MtaSts.hostAllowed(policy("none", []), "anything.example")).toBe(true)
    expect(MtaSts.hostAllowed(policy("testing", ["mx.example.com"]), "other.example.com")).toBe(false)
    expect(MtaSts.hostAllowed(policy("enforce", ["mx.example.com"]), "other.example.com")).toBe(false)
    expect(MtaSts.hostAllowed(policy("enforce", ["mx.example.com"]), "mx.example.com")).toBe(true)
    expect(MtaSts.enforced(null)).toBe(false)
    expect(MtaSts.enforced(policy("testing", ["mx.example.com"]))).toBe(false)
    expect(MtaSts.enforced(policy("none", []))).toBe(false)
    expect(MtaSts.enforced(policy("enforce", ["mx.example.com"]))).toBe(true)
  })
})

// -----------------------------------------------------------------------------
// Fetch checks (in-memory fetcher)
// -----------------------------------------------------------------------------

const goodPolicy = (maxAge: number, mode: MtaSts.Mode = "enforce") =>
  `version: STSv1\nmode: ${mode}\nmx: mx.example.com\nmax_age: ${maxAge}\n`

const fetchWith = (response: MtaSts.TestResponse) =>
  MtaSts.fetchPolicy("example.com").pipe(
    Effect.provide(MtaSts.layerTest(() => Effect.succeed(response))),
    Effect.flip
  )

describe("MtaSts.fetchPolicy", () => {
  it.effect("accepts text/plain with parameters and any case", () =>
    Effect.gen(function*() {
      for (const contentType of ["text/plain", "text/plain; charset=utf-8", "TEXT/Plain ;charset=US-ASCII"]) {
        const policy = yield* MtaSts.fetchPolicy("example.com").pipe(
          Effect.provide(MtaSts.layerTest(() => Effect.succeed({ contentType, body: goodPolicy(60) })))
        )
        expect(policy).toStrictEqual({ version: "STSv1", mode: "enforce", mx: ["mx.example.com"], maxAge: 60 })
      }
    }))

  it.effect("does not follow a redirect", () =>
    Effect.gen(function*() {
      const error = yield* fetchWith({ status: 301, body: "" })
      expect(error).toStrictEqual(TransportError.make(
        "mta-sts",
        "protocol",
        "https://mta-sts.example.com/.well-known/mta-sts.txt answered HTTP 301 (redirects are not followed)"
      ))
    }))

  it.effect("rejects another status, another media type, a missing media type and an invalid policy", () =>
    Effect.gen(function*() {
      const url = "https://mta-sts.example.com/.well-known/mta-sts.txt"
      expect((yield* fetchWith({ status: 404, body: goodPolicy(60) })).message).toBe(`${url} answered HTTP 404`)
      expect(yield* fetchWith({ contentType: "text/html", body: goodPolicy(60) })).toStrictEqual(
        TransportError.make("mta-sts", "protocol", `${url} answered media type text/html, not text/plain`)
      )
      expect((yield* fetchWith({ contentType: null, body: goodPolicy(60) })).message).toBe(
        `${url} answered media type (none), not text/plain`
      )
      expect(yield* fetchWith({ body: "version: STSv1\nmode: enforce\nmax_age: 60\n" })).toStrictEqual(
        TransportError.make("mta-sts", "policy", `invalid policy at ${url}: mode enforce without any mx pattern`)
      )
    }))

  it.effect("stops reading an oversized body at the first chunk past 64 KiB", () =>
    Effect.gen(function*() {
      let pulled = 0
      const chunk = new Uint8Array(16_384).fill(0x61)
      const body = Stream.repeatEffect(Effect.sync(() => {
        pulled++
        return chunk
      })).pipe(Stream.take(100))
      const error = yield* fetchWith({ body })
      expect(error).toStrictEqual(TransportError.make(
        "mta-sts",
        "protocol",
        "https://mta-sts.example.com/.well-known/mta-sts.txt sent a body over 65536 bytes (stopped after 81920)"
      ))
      expect(pulled).toBe(5)
    }))

  it.effect("passes the normalised domain, port and extra CAs to the fetcher", () =>
    Effect.gen(function*() {
      const seen: Array<MtaSts.FetchRequest> = []
      yield* MtaSts.fetchPolicy("Example.COM.", { port: 8443, ca: ["PEM"] }).pipe(
        Effect.provide(MtaSts.layerTest((request) => {
          seen.push(request)
          return Effect.succeed({ body: goodPolicy(60) })
        }))
      )
      expect(seen).toStrictEqual([{
        domain: "example.com",
        host: "mta-sts.example.com",
        port: 8443,
        url: "https://mta-sts.example.com:8443/.well-known/mta-sts.txt",
        ca: ["PEM"]
      }])
    }))
})

// -----------------------------------------------------------------------------
// resolve: cache, timeout, modes (TestClock)
// -----------------------------------------------------------------------------

type Txt = ReadonlyArray<string> | "NXDOMAIN" | "NODATA" | "SERVFAIL"

/** A mutable world: the TXT answer and the policy server can change between lookups. */
const makeWorld = (initial: { txt: Txt; policy: MtaSts.TestResponse }) => {
  const state = {
    txt: initial.txt,
    txtDelay: Duration.zero as Duration.DurationInput,
    policy: initial.policy,
    fetchDelay: Duration.zero as Duration.DurationInput,
    txtQueries: [] as Array<string>,
    fetches: [] as Array<string>
  }
  const dns = Layer.succeed(Dns.Dns, {
    mx: () => Effect.die("unused"),
    a: () => Effect.die("unused"),
    aaaa: () => Effect.die("unused"),
    txt: (name) =>
      Effect.suspend(() => {
        state.txtQueries.push(name)
        const answer = state.txt
        const fail = (reason: Dns.DnsError["reason"]) =>
          Effect.fail(new Dns.DnsError({ reason, name, rrtype: "TXT", message: `TXT ${name}: ${reason}` }))
        const result = answer === "NXDOMAIN"
          ? fail("NotFound")
          : answer === "NODATA"
          ? fail("NoData")
          : answer === "SERVFAIL"
          ? fail("Temporary")
          : Effect.succeed(answer)
        return Effect.zipRight(Effect.sleep(state.txtDelay), result)
      })
  })
  const fetcher = MtaSts.layerTest((request) =>
    Effect.suspend(() => {
      state.fetches.push(request.url)
      return Effect.as(Effect.sleep(state.fetchDelay), state.policy)
    })
  )
  const layer = Layer.mergeAll(dns, fetcher, PolicyCache.layerMemory())
  return { state, layer }
}

const enforcePolicy = (maxAge: number): MtaSts.Policy => ({
  version: "STSv1",
  mode: "enforce",
  mx: ["mx.example.com"],
  maxAge
})

const optional: MtaSts.ResolveOptions = { mode: "optional", timeout: "5 seconds" }
const required: MtaSts.ResolveOptions = { mode: "require", timeout: "5 seconds" }

describe("MtaSts.resolve", () => {
  it.effect("a policy server slower than the timeout fails at exactly the timeout, tagged mta-sts", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    world.state.fetchDelay = "10 seconds"
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(MtaSts.resolve("example.com", required))
      yield* TestClock.adjust("4999 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("1 millis")
      const exit = yield* Fiber.await(fiber)
      expect(exit).toStrictEqual(Exit.fail(new TransportError.TransportError({
        phase: "mta-sts",
        kind: "timeout",
        permanent: false,
        message: "mta-sts timed out after 5s",
        reply: null
      })))
      expect(world.state.fetches).toStrictEqual(["https://mta-sts.example.com/.well-known/mta-sts.txt"])
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("the timeout covers the TXT lookup and the fetch together", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    world.state.txtDelay = "3 seconds"
    world.state.fetchDelay = "3 seconds"
    return Effect.gen(function*() {
      const fiber = yield* Effect.fork(MtaSts.resolve("example.com", optional))
      yield* TestClock.adjust("4999 millis")
      expect(Option.isNone(yield* Fiber.poll(fiber))).toBe(true)
      yield* TestClock.adjust("1 millis")
      const outcome = yield* Fiber.join(fiber)
      expect(outcome).toStrictEqual({
        domain: "example.com",
        status: "failed",
        policy: null,
        source: null,
        id: null,
        warning: "MTA-STS lookup for example.com failed, delivering without a policy: mta-sts timed out after 5s",
        error: TransportError.timeout("mta-sts", "5 seconds")
      })
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("fetches, then uses the cache while the id is unchanged and max_age has not passed", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      const first = yield* MtaSts.resolve("example.com", required)
      expect(first).toStrictEqual({
        domain: "example.com",
        status: "found",
        policy: enforcePolicy(3600),
        source: "fetched",
        id: "1",
        warning: null,
        error: null
      })
      yield* TestClock.adjust("3599 seconds")
      const second = yield* MtaSts.resolve("example.com", required)
      expect(second).toStrictEqual({ ...first, source: "cache" })
      expect(world.state.fetches.length).toBe(1)
      expect(world.state.txtQueries).toStrictEqual(["_mta-sts.example.com", "_mta-sts.example.com"])
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("refetches when the TXT id changes", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      yield* MtaSts.resolve("example.com", required)
      world.state.txt = ["v=STSv1; id=2"]
      world.state.policy = { body: goodPolicy(7200, "testing") }
      yield* TestClock.adjust("1 minute")
      const outcome = yield* MtaSts.resolve("example.com", required)
      expect(outcome.source).toBe("fetched")
      expect(outcome.id).toBe("2")
      expect(outcome.policy).toStrictEqual({ ...enforcePolicy(7200), mode: "testing" })
      expect(world.state.fetches.length).toBe(2)
      // The new entry is what is cached now.
      expect((yield* MtaSts.resolve("example.com", required)).source).toBe("cache")
      expect(world.state.fetches.length).toBe(2)
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("refetches once max_age has passed, even with the same id", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      yield* MtaSts.resolve("example.com", required)
      yield* TestClock.adjust("3600 seconds")
      const outcome = yield* MtaSts.resolve("example.com", required)
      expect(outcome.source).toBe("fetched")
      expect(world.state.fetches.length).toBe(2)
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("max_age 0 is never served from the cache", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(0) } })
    return Effect.gen(function*() {
      yield* MtaSts.resolve("example.com", required)
      expect((yield* MtaSts.resolve("example.com", required)).source).toBe("fetched")
      expect(world.state.fetches.length).toBe(2)
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("keeps using an expired policy when the refetch fails, even under require", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      yield* MtaSts.resolve("example.com", required)
      world.state.policy = { status: 503, body: "" }
      yield* TestClock.adjust("2 hours")
      const outcome = yield* MtaSts.resolve("example.com", required)
      const error = TransportError.make(
        "mta-sts",
        "protocol",
        "https://mta-sts.example.com/.well-known/mta-sts.txt answered HTTP 503"
      )
      expect(outcome).toStrictEqual({
        domain: "example.com",
        status: "found",
        policy: enforcePolicy(3600),
        source: "stale-cache",
        id: "1",
        warning: `MTA-STS refresh for example.com failed (${error.message}); using the cached policy (id 1, past its max_age)`,
        error
      })
      expect(world.state.fetches.length).toBe(2)
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("keeps using an expired policy when the refresh times out or the TXT lookup fails", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(60) } })
    return Effect.gen(function*() {
      yield* MtaSts.resolve("example.com", required)
      yield* TestClock.adjust("2 minutes")
      world.state.fetchDelay = "1 hour"
      const fiber = yield* Effect.fork(MtaSts.resolve("example.com", required))
      yield* TestClock.adjust("5 seconds")
      const timedOut = yield* Fiber.join(fiber)
      expect([timedOut.source, timedOut.error]).toStrictEqual([
        "stale-cache",
        TransportError.timeout("mta-sts", "5 seconds")
      ])
      world.state.txt = "SERVFAIL"
      const dnsFailed = yield* MtaSts.resolve("example.com", required)
      expect([dnsFailed.source, dnsFailed.policy, dnsFailed.error?.kind]).toStrictEqual([
        "stale-cache",
        enforcePolicy(60),
        "dns"
      ])
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("a failed refetch for a new id keeps the cached policy while it is within max_age", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      yield* MtaSts.resolve("example.com", required)
      world.state.txt = ["v=STSv1; id=2"]
      world.state.policy = { status: 500 }
      const outcome = yield* MtaSts.resolve("example.com", required)
      expect([outcome.source, outcome.id, outcome.policy]).toStrictEqual(["cache", "1", enforcePolicy(3600)])
      expect(outcome.warning).toBe(
        "MTA-STS refresh for example.com failed (https://mta-sts.example.com/.well-known/mta-sts.txt answered " +
          "HTTP 500); using the cached policy (id 1)"
      )
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("a vanished TXT record keeps a policy within max_age, not an expired one", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      yield* MtaSts.resolve("example.com", required)
      world.state.txt = "NXDOMAIN"
      const kept = yield* MtaSts.resolve("example.com", required)
      expect([kept.status, kept.source, kept.warning]).toStrictEqual([
        "found",
        "cache",
        "MTA-STS for example.com: no TXT record at _mta-sts.example.com; using the cached policy (id 1) until it expires"
      ])
      yield* TestClock.adjust("1 hour")
      expect(yield* MtaSts.resolve("example.com", optional)).toStrictEqual({
        domain: "example.com",
        status: "none",
        policy: null,
        source: null,
        id: null,
        warning: null,
        error: null
      })
      expect(world.state.fetches.length).toBe(1)
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("require: no policy published is a permanent failure, with no fetch", () => {
    const world = makeWorld({ txt: "NXDOMAIN", policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      const nx = yield* Effect.flip(MtaSts.resolve("example.com", required))
      expect(nx).toStrictEqual(TransportError.make(
        "mta-sts",
        "policy",
        "MTA-STS is required but example.com publishes no valid policy (no TXT record at _mta-sts.example.com)",
        true
      ))
      world.state.txt = "NODATA"
      expect((yield* Effect.flip(MtaSts.resolve("example.com", required))).permanent).toBe(true)
      world.state.txt = ["v=STSv1; id=1", "v=STSv1; id=2"]
      const several = yield* Effect.flip(MtaSts.resolve("example.com", required))
      expect([several.kind, several.permanent, several.message]).toStrictEqual([
        "policy",
        true,
        "MTA-STS is required but example.com publishes no valid policy (_mta-sts.example.com: 2 TXT records " +
          "start with v=STSv1 (exactly one allowed))"
      ])
      world.state.txt = ["v=STSv1; id=not valid"]
      expect((yield* Effect.flip(MtaSts.resolve("example.com", required))).permanent).toBe(true)
      expect(world.state.fetches).toStrictEqual([])
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("require: a failed lookup or fetch is a temporary failure", () => {
    const world = makeWorld({ txt: "SERVFAIL", policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      const dns = yield* Effect.flip(MtaSts.resolve("example.com", required))
      expect(dns).toStrictEqual(TransportError.make(
        "mta-sts",
        "dns",
        "TXT lookup of _mta-sts.example.com failed: TXT _mta-sts.example.com: Temporary"
      ))
      world.state.txt = ["v=STSv1; id=1"]
      world.state.policy = { status: 404 }
      const notFound = yield* Effect.flip(MtaSts.resolve("example.com", required))
      expect([notFound.kind, notFound.permanent]).toStrictEqual(["protocol", false])
      world.state.policy = { body: "version: STSv1\nmode: sometimes\nmx: mx.example.com\nmax_age: 1\n" }
      const invalid = yield* Effect.flip(MtaSts.resolve("example.com", required))
      expect([invalid.kind, invalid.permanent]).toStrictEqual(["policy", false])
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("optional: no policy is not a warning; a broken one is", () => {
    const world = makeWorld({ txt: "NXDOMAIN", policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      expect(yield* MtaSts.resolve("example.com", optional)).toStrictEqual({
        domain: "example.com",
        status: "none",
        policy: null,
        source: null,
        id: null,
        warning: null,
        error: null
      })
      world.state.txt = ["v=spf1 -all"]
      expect(yield* MtaSts.resolve("example.com", optional)).toStrictEqual({
        domain: "example.com",
        status: "none",
        policy: null,
        source: null,
        id: null,
        warning: null,
        error: null
      })
      world.state.txt = ["v=STSv1; id=1", "v=STSv1; id=2"]
      const invalid = yield* MtaSts.resolve("example.com", optional)
      expect([invalid.status, invalid.policy, invalid.warning]).toStrictEqual([
        "invalid",
        null,
        "MTA-STS for example.com ignored: _mta-sts.example.com: 2 TXT records start with v=STSv1 (exactly one allowed)"
      ])
      world.state.txt = ["v=STSv1; id=1"]
      world.state.policy = { status: 302 }
      const failed = yield* MtaSts.resolve("example.com", optional)
      expect([failed.status, failed.policy, failed.error?.kind]).toStrictEqual(["failed", null, "protocol"])
      expect(failed.warning).toBe(
        "MTA-STS lookup for example.com failed, delivering without a policy: " +
          "https://mta-sts.example.com/.well-known/mta-sts.txt answered HTTP 302 (redirects are not followed)"
      )
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("disable: nothing is looked up", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      expect(yield* MtaSts.resolve("Example.com", { mode: "disable", timeout: "5 seconds" })).toStrictEqual({
        domain: "example.com",
        status: "disabled",
        policy: null,
        source: null,
        id: null,
        warning: null,
        error: null
      })
      expect(world.state.txtQueries).toStrictEqual([])
      expect(world.state.fetches).toStrictEqual([])
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("normalises the domain for the TXT name, the URL and the cache key", () => {
    const world = makeWorld({ txt: ["v=STSv1; id=1"], policy: { body: goodPolicy(3600) } })
    return Effect.gen(function*() {
      yield* MtaSts.resolve("Example.COM.", { ...required, port: 8443 })
      expect((yield* MtaSts.resolve("example.com", required)).source).toBe("cache")
      expect(world.state.txtQueries).toStrictEqual(["_mta-sts.example.com", "_mta-sts.example.com"])
      expect(world.state.fetches).toStrictEqual(["https://mta-sts.example.com:8443/.well-known/mta-sts.txt"])
    }).pipe(Effect.provide(world.layer))
  })

  it.effect("works with the Dns test layer", () =>
    Effect.gen(function*() {
      const outcome = yield* MtaSts.resolve("example.org", optional)
      expect([outcome.status, outcome.id, outcome.source]).toStrictEqual(["found", "20160831085700Z", "fetched"])
    }).pipe(Effect.provide(Layer.mergeAll(
      Dns.layerTest({ "_mta-sts.example.org": { txt: ["v=spf1 -all", "v=STSv1; id=20160831085700Z;"] } }),
      MtaSts.layerTest(() => Effect.succeed({ body: goodPolicy(60) })),
      PolicyCache.layer
    ))))
})

describe("PolicyCache", () => {
  it.effect("the memory store evicts the least recently used domain", () =>
    Effect.gen(function*() {
      const cache = yield* PolicyCache.makeMemory({ capacity: 2 })
      const entry = (id: string): PolicyCache.Entry => ({ id, policy: enforcePolicy(60), fetchedAt: 0 })
      yield* cache.set("a.example", entry("a"))
      yield* cache.set("b.example", entry("b"))
      expect(yield* cache.get("a.example")).toStrictEqual(Option.some(entry("a")))
      yield* cache.set("c.example", entry("c"))
      expect(yield* cache.get("b.example")).toStrictEqual(Option.none())
      expect(yield* cache.get("a.example")).toStrictEqual(Option.some(entry("a")))
      expect(yield* cache.get("c.example")).toStrictEqual(Option.some(entry("c")))
      yield* cache.set("a.example", entry("a2"))
      expect(yield* cache.get("a.example")).toStrictEqual(Option.some(entry("a2")))
    }))
})

describe("MtaStsPolicy (the pure model MtaSts re-exports)", () => {
  it("is the same model: MtaSts's names are MtaStsPolicy's", () => {
    expect(MtaSts.parse).toBe(MtaStsPolicy.parse)
    expect(MtaSts.hostAllowed).toBe(MtaStsPolicy.hostAllowed)
    expect(MtaSts.PolicyError).toBe(MtaStsPolicy.PolicyError)
  })

  it("isStsRecord tells an MTA-STS TXT record from the others at the name", () => {
    expect(MtaStsPolicy.isStsRecord("v=STSv1; id=1")).toBe(true)
    expect(MtaStsPolicy.isStsRecord("v=STSv1")).toBe(true)
    expect(MtaStsPolicy.isStsRecord("v=STSv1 \t;id=1")).toBe(true)
    expect(MtaStsPolicy.isStsRecord("v=STSv10; id=1")).toBe(false)
    expect(MtaStsPolicy.isStsRecord("v=spf1 -all")).toBe(false)
  })

  it("an mx pattern's domain is at most 253 characters and a valid host name", () => {
    const long = `${"a".repeat(60)}.`.repeat(4) + "a".repeat(9) // 253 characters
    const policy = (mx: string) => MtaStsPolicy.parse(`version: STSv1\nmode: enforce\nmx: ${mx}\nmax_age: 60\n`)
    expect(Either.isRight(policy(long))).toBe(true)
    expect(Either.isLeft(policy(long + "a"))).toBe(true)
    expect(Either.isLeft(policy("mx_1.example.org"))).toBe(true)
    expect(Either.isLeft(policy("*.-bad.example.org"))).toBe(true)
  })
})
