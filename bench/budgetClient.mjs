// One budget measurement in its own process (so CPU time and allocation are this program's alone):
//   node bench/budgetClient.mjs '<json options>'   →   one JSON line on stdout
// Options: stage ("dns" | "session" | "deliver" | "raw"), dns ("127.0.0.1:PORT"), port (the sink's), count,
// concurrency, warmup, phaseSpans (deliver only), supervised (count run-loop steps and forks instead of timing).
//
// The stages split a delivery the way the pipeline does:
//   dns      the resolution a delivery does: an MX lookup of the domain, an A lookup of its host (Dns service, live
//            layer, no cache hits: every domain is new);
//   session  one connection and its SMTP dialogue to the sink's address, no DNS (Connector + SmtpSession);
//   deliver  Transport.deliver: both of the above, plus the plan, the race, the settings and the report;
//   raw      the hand-written node:net client of the fan-out benchmark, the baseline.
// What a run measures: CPU µs per delivery (process.cpuUsage), bytes allocated per delivery (V8's GC statistics:
// what each collection found in use before it ran, minus what the previous one left), or, supervised, run-loop steps
// and fibers started per delivery (an effect/Supervisor with runtime-flag OpSupervision: public API; the counting
// itself slows the run, which is why it is a run of its own).
import { Effect, Layer, ManagedRuntime, RuntimeFlags, RuntimeFlagsPatch, Supervisor } from "effect"
import v8 from "node:v8"
import { domainOf, MESSAGE, recipientOf, SENDER } from "./common.mjs"
import { configText } from "./libraryClient.mjs"

const opts = JSON.parse(process.argv[2] ?? "{}")
const dist = new URL("../dist/", import.meta.url)
const load = (name) => import(new URL(`${name}.js`, dist).href)

class Counter extends Supervisor.AbstractSupervisor {
  steps = 0
  fibers = 0
  get value() {
    return Effect.sync(() => ({ steps: this.steps, fibers: this.fibers }))
  }
  onStart() {
    this.fibers++
  }
  onEffect() {
    this.steps++
  }
}

const measureAllocation = () => {
  const profiler = new v8.GCProfiler()
  const start = v8.getHeapStatistics().used_heap_size
  profiler.start()
  return () => {
    const end = v8.getHeapStatistics().used_heap_size
    const { statistics } = profiler.stop()
    let allocated = 0
    let previous = start
    for (const gc of statistics) {
      allocated += Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - previous)
      previous = gc.afterGC.heapStatistics.usedHeapSize
    }
    return allocated + Math.max(0, end - previous)
  }
}

/** The stage's one delivery, as an Effect over the runtime's services, and the runtime. */
const makeStage = async () => {
  const [Transport, OutboundConfig, Dns, SmtpSession] = await Promise.all(
    ["Transport", "OutboundConfig", "Dns", "SmtpSession"].map(load)
  )
  const config = OutboundConfig.layerFromText(configText(opts), "bench.toml")
  const layer = Layer.mergeAll(config, Transport.layer({ dns: { servers: [opts.dns] } }))
  const runtime = ManagedRuntime.make(layer)
  const options = {
    ...(await runtime.runPromise(Transport.TransportOptions)),
    port: opts.port,
    ...(opts.phaseSpans ? { phaseSpans: true } : {})
  }
  switch (opts.stage) {
    case "dns":
      return {
        runtime,
        one: (i) =>
          Effect.flatMap(Dns.Dns, (dns) =>
            Effect.flatMap(dns.mx(domainOf(i)), (records) => dns.a(records[0].exchange))
          ).pipe(Effect.orDie)
      }
    case "session": {
      const loaded = await runtime.runPromise(OutboundConfig.OutboundConfig)
      const connection = OutboundConfig.evaluateConnection(loaded, {}).settings
      const settings = {
        ...connection,
        servername: "mx.bench.test",
        tls: { starttls: "disable", allowInvalidCerts: false, required: false },
        phaseSpans: false
      }
      // What Transport's host stage does with a winner, without the race, the plan or the report.
      return {
        runtime,
        one: (i) =>
          Effect.acquireUseRelease(
            SmtpSession.connect({ ip: "127.0.0.1", port: opts.port }, settings),
            (connection) =>
              Effect.gen(function*() {
                const session = yield* SmtpSession.open(connection, settings)
                const result = yield* SmtpSession.transaction(
                  session,
                  { sender: SENDER, recipients: [recipientOf(i)] },
                  MESSAGE,
                  settings
                )
                if (result.data?._tag !== "Right") return yield* Effect.dieMessage("not delivered")
                yield* SmtpSession.quit(session)
              }),
            (connection) => connection.close
          ).pipe(Effect.orDie)
      }
    }
    case "deliver":
      return {
        runtime,
        one: (i) =>
          Effect.provideService(
            Transport.deliver({ message: MESSAGE, sender: SENDER, recipients: [recipientOf(i)] }),
            Transport.TransportOptions,
            options
          ).pipe(Effect.flatMap((report) =>
            report.recipients[0].status === "delivered"
              ? Effect.void
              : Effect.dieMessage(JSON.stringify(report.recipients[0]))
          ), Effect.orDie)
      }
  }
  throw new Error(`unknown stage ${opts.stage}`)
}

const runRaw = async () => {
  const raw = await import("./rawClient.mjs")
  const client = await raw.create({ dns: opts.dns, port: opts.port })
  // `concurrency` deliveries in flight, as the library's Effect.forEach keeps them.
  const batch = (start, count) =>
    new Promise((resolve, reject) => {
      let next = 0
      let done = 0
      const launch = () => {
        if (next >= count) return
        const i = start + next++
        client.deliver(i).then(() => {
          if (++done === count) resolve()
          else launch()
        }, reject)
      }
      for (let k = 0; k < Math.min(opts.concurrency, count); k++) launch()
    })
  await batch(1_000_000, opts.warmup)
  const allocation = measureAllocation()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await batch(0, opts.count)
  const cpu = process.cpuUsage(cpu0)
  const wallMs = performance.now() - t0
  const allocated = allocation()
  await client.close?.()
  return { cpu, wallMs, allocated }
}

const main = async () => {
  if (opts.stage === "raw") {
    const { allocated, cpu, wallMs } = await runRaw()
    return {
      stage: "raw",
      count: opts.count,
      cpuUsPerDelivery: (cpu.user + cpu.system) / opts.count,
      allocatedBytesPerDelivery: allocated / opts.count,
      rate: opts.count / (wallMs / 1000)
    }
  }
  const { one, runtime } = await makeStage()
  if (process.env.BUDGET_DEBUG) console.error("stage made")
  const batch = (start, count) =>
    Effect.forEach(Array.from({ length: count }, (_, k) => start + k), one, {
      concurrency: opts.concurrency,
      discard: true
    })
  await runtime.runPromise(batch(1_000_000, opts.warmup))
  if (process.env.BUDGET_DEBUG) console.error("warm")
  if (opts.supervised) {
    const counter = new Counter()
    await runtime.runPromise(
      batch(0, opts.count).pipe(
        Effect.supervised(counter),
        Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
      )
    )
    await runtime.dispose()
    return {
      stage: opts.stage,
      phaseSpans: opts.phaseSpans === true,
      count: opts.count,
      stepsPerDelivery: counter.steps / opts.count,
      // forEach's workers are fibers of the batch, not of the deliveries.
      fibersPerDelivery: Math.max(0, counter.fibers - Math.min(opts.concurrency, opts.count)) / opts.count
    }
  }
  const allocation = measureAllocation()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  await runtime.runPromise(batch(0, opts.count))
  const cpu = process.cpuUsage(cpu0)
  const wallMs = performance.now() - t0
  const allocated = allocation()
  await runtime.dispose()
  return {
    stage: opts.stage,
    phaseSpans: opts.phaseSpans === true,
    count: opts.count,
    cpuUsPerDelivery: (cpu.user + cpu.system) / opts.count,
    allocatedBytesPerDelivery: allocated / opts.count,
    rate: opts.count / (wallMs / 1000)
  }
}

const timer = setTimeout(() => {
  console.error("budgetClient: over its time limit")
  process.exit(2)
}, opts.timeLimitMs ?? 120_000)
main().then((result) => {
  clearTimeout(timer)
  process.stdout.write(JSON.stringify(result) + "\n")
  process.exit(0)
}, (error) => {
  console.error(error)
  process.exit(1)
})
