/**
 * The cost of the session's phase deadlines, on scripted peers (no sockets): 10,000 sessions (connect, greeting,
 * EHLO, MAIL, RCPT, DATA, QUIT), each phase under its deadline
 *   - "timer": the connection core's one timer per connection (production's path), and
 *   - "timeoutFail": the same sessions through a Connector wrapper that drops the deadlines and wraps each
 *     connection operation in `Effect.timeoutFail` instead (what a deadline-less connector would cost).
 * Reports wall time, run-loop steps (OpSupervision) and fibers started, per session.
 *
 * Run: npx vite-node bench/sessionDeadlines.ts
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as RuntimeFlagsPatch from "effect/RuntimeFlagsPatch"
import * as Supervisor from "effect/Supervisor"
import * as Clock from "effect/Clock"
import * as Connector from "../src/Connector.js"
import * as ConnectorTest from "../src/ConnectorTest.js"
import { Script } from "../src/ConnectorTest.js"
import type { SessionPhase, Timeouts } from "../src/Settings.js"
import * as SmtpSession from "../src/SmtpSession.js"

const N = Number(process.env.N ?? 10_000)
const IP = "192.0.2.1"
const min = Duration.minutes(5)
const timeouts: Timeouts<SessionPhase> = {
  connect: min, greeting: min, ehlo: min, tls: min, "mail-from": min, "rcpt-to": min, data: Duration.minutes(10)
}
const settings: SmtpSession.SessionSettings = {
  ehloName: "client.test",
  servername: "mx.test",
  tls: { starttls: "optional", allowInvalidCerts: false, required: false },
  timeouts,
  phaseSpans: false
}
const script = [
  Script.reply("220 mx.test ESMTP"),
  Script.expect("EHLO client.test"),
  Script.reply("250-mx.test", "250 PIPELINING"),
  Script.expect("MAIL FROM:<a@x.test>"),
  Script.expect("RCPT TO:<b@y.test>"),
  Script.expect("DATA"),
  Script.reply("250 ok", "250 ok", "354 go"),
  Script.expectData,
  Script.reply("250 queued"),
  Script.expect("QUIT"),
  Script.reply("221 bye")
]
const message = new TextEncoder().encode("Subject: hi\r\n\r\n" + "x".repeat(2000) + "\r\n")

/** Deadlines dropped; each operation under `Effect.timeoutFail` for the time left until its deadline. */
const withTimeoutFail = (inner: Connector.Connector.Service): Connector.Connector.Service => {
  const bound = <A>(deadline: number, effect: Effect.Effect<A, Connector.SocketError>) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.timeoutFail(effect, {
        duration: Duration.millis(Math.max(0, deadline - now)),
        onTimeout: () => new Connector.SocketError({ kind: "timeout", message: "the deadline passed" })
      }))
  return {
    connect: (options) =>
      Effect.map(bound(options.deadline, inner.connect({ ...options, deadline: Infinity })), (c): Connector.Connection => ({
        remoteAddress: c.remoteAddress,
        remotePort: c.remotePort,
        localAddress: c.localAddress,
        exchange: (r) => bound(r.deadline, c.exchange({ ...r, deadline: Infinity })),
        startTls: (o, d) => bound(d, c.startTls(o, Infinity)),
        awaitClose: (o) => bound(o.deadline, c.awaitClose({ ...o, deadline: Infinity })),
        get isTls() {
          return c.isTls
        },
        get tls() {
          return c.tls
        },
        get buffered() {
          return c.buffered
        },
        close: c.close
      }))
  }
}

const one = Effect.scoped(Effect.gen(function*() {
  const connection = yield* SmtpSession.connectScoped({ ip: IP, port: 25 }, settings)
  const session = yield* SmtpSession.open(connection, settings)
  const result = yield* SmtpSession.transaction(session, { sender: "a@x.test", recipients: ["b@y.test"] }, message, settings)
  if (result.data?._tag !== "Right") return yield* Effect.dieMessage("not delivered")
  yield* SmtpSession.quit(session)
}))

class Counter extends Supervisor.AbstractSupervisor<void> {
  steps = 0
  fibers = 0
  get value() {
    return Effect.void
  }
  override onStart() {
    this.fibers++
  }
  override onEffect() {
    this.steps++
  }
}

const run = (mode: "timer" | "timeoutFail", count: number, supervised: boolean) => {
  const peers = { [IP]: Array.from({ length: count }, () => ({ script })) }
  const base = ConnectorTest.layer(peers)
  const layer = mode === "timer"
    ? base
    : Layer.effect(Connector.Connector, Effect.map(Connector.Connector, withTimeoutFail)).pipe(Layer.provideMerge(base))
  const counter = new Counter()
  const loop = Effect.forEach(Array.from({ length: count }), () => one, { discard: true })
  const program = supervised
    ? loop.pipe(
      Effect.supervised(counter),
      Effect.withRuntimeFlagsPatch(RuntimeFlagsPatch.enable(RuntimeFlags.OpSupervision))
    )
    : loop
  const start = performance.now()
  Effect.runSync(Effect.provide(program, layer))
  return { ms: performance.now() - start, counter }
}

for (const mode of ["timer", "timeoutFail"] as const) run(mode, 500, false) // warm up
for (const round of [1, 2]) {
  for (const mode of ["timer", "timeoutFail"] as const) {
    const wall = run(mode, N, false)
    const counted = run(mode, 1_000, true)
    console.log(
      `round ${round} ${mode.padEnd(11)} ${(wall.ms * 1000 / N).toFixed(1)} µs/session wall, ` +
        `${(counted.counter.steps / 1_000).toFixed(0)} steps/session, ${(counted.counter.fibers / 1_000).toFixed(1)} fibers started/session`
    )
  }
}
