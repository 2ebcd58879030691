/**
 * A `Connector` whose peers are scripts, for tests on virtual time. Built on the live connector's core
 * (`Connector.fromIo`): framing, reply limits, the STARTTLS check and the deadlines are production's code; only
 * the bytes come from a script, run on Effect's Clock.
 *
 * @since 0.2.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import type { StartTlsOptions } from "./Connector.js"
import * as Connector from "./Connector.js"
import * as scripted from "./internal/connection/scripted.js"

/**
 * One step of a scripted peer. Steps run in order; when the script ends the peer closes the connection.
 *
 * @since 0.1.0
 * @category models
 */
export type Step =
  /** Wait for the client's next line (without CRLF) and check it; a mismatch is recorded and resets the connection. */
  | { readonly _tag: "Expect"; readonly match: string | RegExp }
  /** Wait for a dot-terminated DATA body and record it as sent (still dot-stuffed, terminator included). */
  | { readonly _tag: "ExpectData" }
  /** Wait for `count` raw bytes (a BDAT chunk) and record them. */
  | { readonly _tag: "ExpectBytes"; readonly count: number }
  /** Send bytes to the client. */
  | { readonly _tag: "Send"; readonly data: Uint8Array }
  /** Pause on Effect's Clock. */
  | { readonly _tag: "Delay"; readonly duration: Duration.Duration }
  /** Do nothing more, ever, and keep the connection open. */
  | { readonly _tag: "Stall" }
  /** Close the connection (the client reads end of input). */
  | { readonly _tag: "Close" }
  /** Reset the connection: what the client has not read is dropped, reads and writes fail with `reset`. */
  | { readonly _tag: "Reset" }
  /**
   * Answer the client's `startTls`: complete the handshake, or fail it. With `unverified` the certificate does not
   * verify, for that reason: the handshake fails when the client rejects such certificates, as Node's does, and
   * completes with `verified: false` otherwise.
   */
  | { readonly _tag: "Handshake"; readonly ok: boolean; readonly unverified?: string | undefined }

const encoder = new TextEncoder()

/**
 * Constructors for script steps.
 *
 * @since 0.1.0
 * @category constructors
 */
export const Script = {
  expect: (match: string | RegExp): Step => ({ _tag: "Expect", match }),
  expectData: { _tag: "ExpectData" } as Step,
  expectBytes: (count: number): Step => ({ _tag: "ExpectBytes", count }),
  /** Reply lines, each sent with CRLF, in one segment. */
  reply: (...lines: ReadonlyArray<string>): Step => ({
    _tag: "Send",
    data: encoder.encode(lines.map((l) => `${l}\r\n`).join(""))
  }),
  raw: (data: string | Uint8Array): Step => ({
    _tag: "Send",
    data: typeof data === "string" ? encoder.encode(data) : data
  }),
  delay: (duration: Duration.DurationInput): Step => ({ _tag: "Delay", duration: Duration.decode(duration) }),
  stall: { _tag: "Stall" } as Step,
  close: { _tag: "Close" } as Step,
  reset: { _tag: "Reset" } as Step,
  handshake: { _tag: "Handshake", ok: true } as Step,
  handshakeFails: { _tag: "Handshake", ok: false } as Step,
  /** A certificate that does not verify (`self-signed`, `name-mismatch`, …). */
  handshakeUnverified: (reason: string): Step => ({ _tag: "Handshake", ok: true, unverified: reason })
} as const

/**
 * How a scripted peer answers the connect: `accept` runs the script; the others fail the connect with that kind,
 * except `stall`, which never answers. `delay` (Effect's Clock) comes before the outcome.
 *
 * @since 0.1.0
 * @category models
 */
export interface TestPeer {
  readonly connect?: "accept" | "refuse" | "unreachable" | "bind" | "local-address" | "reset" | "stall" | undefined
  readonly delay?: Duration.DurationInput | undefined
  readonly script?: ReadonlyArray<Step> | undefined
}

/**
 * Peers by IP address. An array gives one peer per successive connection to that address, and refuses once it
 * runs out; an address with no peer is unreachable.
 *
 * @since 0.1.0
 * @category models
 */
export type TestPeers = { readonly [ip: string]: TestPeer | ReadonlyArray<TestPeer> }

/**
 * What the test connector saw of one connect attempt.
 *
 * @since 0.1.0
 * @category models
 */
export interface TestConnectionRecord {
  readonly ip: string
  readonly port: number
  readonly localAddress: string | null
  readonly outcome: "accept" | "refuse" | "unreachable" | "bind" | "local-address" | "reset" | "stall"
  /** Everything the client wrote, decoded as UTF-8. */
  readonly written: string
  /** Each write of the client on its own (a pipelined group is one write). */
  readonly writes: ReadonlyArray<string>
  /** The client lines the script consumed with `Expect`, in order. */
  readonly commands: ReadonlyArray<string>
  /** Bodies consumed by `ExpectData` / `ExpectBytes`, as they came over the wire. */
  readonly data: ReadonlyArray<Uint8Array>
  /** Every TLS handshake started (an upgrade the connection refuses, CVE-2011-0411, never reaches the peer). */
  readonly startTls: ReadonlyArray<StartTlsOptions>
  /** Script steps that did not match what the client did. */
  readonly mismatches: ReadonlyArray<string>
  /** The connection was closed (or the connect failed, timed out or was interrupted, which releases it). */
  readonly closed: boolean
}

/**
 * The test connector's log, provided by {@link layer} next to the `Connector`.
 *
 * @since 0.1.0
 * @category tags
 */
export class ConnectorTest extends Context.Tag("effect-smtp-transport/ConnectorTest")<ConnectorTest, {
  readonly connections: Effect.Effect<ReadonlyArray<TestConnectionRecord>>
}>() {}

const isPeerList = (entry: TestPeer | ReadonlyArray<TestPeer>): entry is ReadonlyArray<TestPeer> =>
  Array.isArray(entry)

/**
 * A `Connector` over scripted peers, and the {@link ConnectorTest} log of what each connection saw.
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (peers: TestPeers): Layer.Layer<Connector.Connector | ConnectorTest> =>
  Layer.effectContext(Effect.sync(() => {
    // Appended to in place: copying the log on every connect made a long-lived layer quadratic.
    const records: Array<scripted.MutableRecord> = []
    const counts = new Map<string, number>()

    const connector = Connector.fromIo((options, events, scope) => {
      let record: scripted.MutableRecord | null = null
      // `open` runs interruptibly: an interruption after the record exists and before the pipe reaches the core drops
      // the pipe, which then is never destroyed. The core closes the connection's Scope however the connect ends, so
      // the record is released there too, by a finalizer added before the record exists (`closed` then says the
      // connection's resources are gone, as after `destroy`).
      const release = Scope.addFinalizer(
        scope,
        Effect.sync(() => {
          if (record !== null) record.closed = true
        })
      )
      return Effect.zipRight(release, Effect.suspend(() => {
        const n = counts.get(options.ip) ?? 0
        counts.set(options.ip, n + 1)
        const entry = peers[options.ip]
        const peer: TestPeer = entry === undefined
          ? { connect: "unreachable" }
          : isPeerList(entry)
          ? entry[n] ?? { connect: "refuse" }
          : entry
        const opened: scripted.MutableRecord = {
          ip: options.ip,
          port: options.port,
          localAddress: options.localAddress ?? null,
          outcome: peer.connect ?? "accept",
          written: "",
          writes: [],
          commands: [],
          data: [],
          startTls: [],
          mismatches: [],
          closed: false
        }
        record = opened
        records.push(opened)
        return scripted.open(options, events, scope, peer, opened)
      }))
    })

    const snapshot = Effect.sync(() =>
      records.map((r): TestConnectionRecord => ({
        ...r,
        writes: [...r.writes],
        commands: [...r.commands],
        data: [...r.data],
        startTls: [...r.startTls],
        mismatches: [...r.mismatches]
      }))
    )

    return Context.make(Connector.Connector, connector).pipe(
      Context.add(ConnectorTest, { connections: snapshot })
    )
  }))
