// The library under test: Transport.deliver on the live layers (OutboundConfig from text, Transport.layer with DNS at the
// bench's DNS server), TransportOptions.port = the sink's port. A batch is one Effect.forEach with
// `concurrency` = the fan-out level, as an application embedding the library would run it; as `library-stream`,
// Transport.deliverAll over a stream of the requests at that concurrency.
import { Effect, Layer, ManagedRuntime, Option, Stream } from "effect"
import { MESSAGE, recipientOf, reuseRecipientOf, SENDER } from "./common.mjs"

// BENCH_DIST points at another build of the library (a directory inside this checkout, so that "effect" resolves).
const dist = process.env.BENCH_DIST
  ? new URL(`file://${process.env.BENCH_DIST.replace(/\/?$/, "/")}`)
  : new URL("../dist/", import.meta.url)
const load = (name) => import(new URL(`${name}.js`, dist).href)

/** The `[queue.outbound]` text for a run; every knob the bench varies is an option. */
export const configText = (opts = {}) => {
  const lines = [
    "[queue.outbound]",
    `hostname = "'client.bench.test'"`,
    `ip-strategy = "${opts.ipStrategy ?? "ipv4_only"}"`
  ]
  // The fan-out figure sends each message to its own domain: nothing to reuse, and an idle connection kept 5 s per
  // delivery would only hold sockets. One transaction per connection there, as before reuse existed; the reuse figure
  // (opts.domains) keeps the defaults (100 messages per connection, 5 s idle).
  if (!opts.domains) lines.push(`reuse.messages = 1`)
  if (opts.attemptDelay !== undefined) {
    lines.push(`connection-attempt-delay = "${opts.attemptDelay === false ? "false" : opts.attemptDelay}"`)
  }
  lines.push(
    "[queue.outbound.tls]",
    `starttls = "disable"`,
    `mta-sts = "disable"`,
    "[queue.outbound.timeouts]",
    `connect = "${opts.connectTimeout ?? "30s"}"`,
    `greeting = "30s"`,
    `ehlo = "30s"`,
    `mail-from = "30s"`,
    `rcpt-to = "30s"`,
    `data = "30s"`
  )
  if (opts.sourceIps?.length) {
    lines.push("[queue.outbound.source-ip]", `v4 = "[${opts.sourceIps.map((ip) => `'${ip}'`).join(", ")}]"`)
  }
  return lines.join("\n") + "\n"
}

const describe = (report) => {
  const bad = report.recipients.find((r) => r.status !== "delivered")
  if (bad === undefined) return null
  const e = bad.error
  return e ? `${bad.status}: ${e.phase}/${e.kind}: ${e.message}` : `${bad.status}: ${bad.reply?.code} ${bad.reply?.text}`
}

/**
 * @param {{ dns: string, port: number, sourceIps?: string[], prefix?: string, ipStrategy?: string,
 *   attemptDelay?: string | false, connectTimeout?: string }} opts
 */
export const create = async (opts) => {
  const [Transport, OutboundConfig] = await Promise.all(["Transport", "OutboundConfig"].map(load))
  const layer = Layer.mergeAll(
    OutboundConfig.layerFromText(configText(opts), "bench.toml"),
    Transport.layer({ dns: { servers: [opts.dns] } })
  )
  const runtime = ManagedRuntime.make(layer)
  const config = await runtime.runPromise(OutboundConfig.OutboundConfig)
  const warnings = config.warnings
  const options = { port: opts.port, ca: undefined, domainConcurrency: 8, mtaStsPort: 443 }
  const one = (i) =>
    Transport.deliver({
      message: MESSAGE,
      sender: SENDER,
      // the reuse figure: a few domains, so that Transport.layer's pool carries consecutive messages
      recipients: [opts.domains ? reuseRecipientOf(i, opts.domains) : recipientOf(i, opts.prefix)]
    }).pipe(
      Effect.map(describe),
      Effect.catchAll((e) => Effect.succeed(`InvalidRequest: ${e.message}`))
    )
  return {
    warnings,
    /** One delivery (the Happy Eyeballs figure); rejects with the report's first failure. */
    deliver: (i) =>
      runtime.runPromise(Effect.provideService(one(i), Transport.TransportOptions, options)).then((failure) => {
        if (failure !== null) throw new Error(failure)
      }),
    /** `count` deliveries at `concurrency`; `record(startedAt, error | null)` after each; none starts after `deadline`. */
    runBatch: ({ start, count, concurrency, deadline, record }) => {
      if (opts.impl === "library-stream") {
        // The stream entry point: Transport.deliverAll over an input of one element a chunk, each request made (and
        // its start time taken) when deliverAll pulls it.
        const started = new Map()
        const requests = Stream.unfold(start, (i) =>
          i < start + count && performance.now() <= deadline ? Option.some([i, i + 1]) : Option.none()).pipe(
          Stream.map((i) => {
            started.set(i, performance.now())
            return {
              id: i,
              request: { message: MESSAGE, sender: SENDER, recipients: [opts.domains ? reuseRecipientOf(i, opts.domains) : recipientOf(i, opts.prefix)] }
            }
          })
        )
        const all = Stream.runForEach(Transport.deliverAll(requests, { concurrency }), ({ id, report }) =>
          Effect.sync(() => {
            const failure = report._tag === "Left" ? `InvalidRequest: ${report.left.message}` : describe(report.right)
            const t = started.get(id)
            started.delete(id)
            record(t, failure === null ? null : new Error(failure))
          }))
        return runtime.runPromise(Effect.provideService(all, Transport.TransportOptions, options))
      }
      const indices = Array.from({ length: count }, (_, k) => start + k)
      const batch = Effect.forEach(
        indices,
        (i) =>
          Effect.suspend(() => {
            if (performance.now() > deadline) return Effect.void
            const t = performance.now()
            return Effect.map(one(i), (failure) => record(t, failure === null ? null : new Error(failure)))
          }),
        { concurrency, discard: true }
      )
      return runtime.runPromise(Effect.provideService(batch, Transport.TransportOptions, options))
    },
    close: () => runtime.dispose()
  }
}
