/**
 * The options `send` and `plan` share, and what turns them into the services a delivery runs on: the configuration,
 * the resolver, the connector and the transport options.
 *
 * @since 0.1.0
 */
import * as Options from "@effect/cli/Options"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { isIP } from "node:net"
import type * as Connector from "../Connector.js"
import type * as Dns from "../Dns.js"
import * as address from "../internal/address.js"
import * as OutboundConfig from "../OutboundConfig.js"
import type * as MtaSts from "../MtaSts.js"
import type * as PolicyCache from "../PolicyCache.js"
import * as Transport from "../Transport.js"
import { InvalidRequest, TransportOptions } from "../Transport.js"
import { CliExit, ExitCode, usage } from "./exit.js"

const port = (name: string, fallback: number, description: string) =>
  Options.integer(name).pipe(
    Options.filterMap(
      (n) => (n >= 1 && n <= 65_535 ? Option.some(n) : Option.none()),
      `--${name} must be a port number from 1 to 65535`
    ),
    Options.withDefault(fallback),
    Options.withDescription(description)
  )

/**
 * @since 0.1.0
 */
export const common = {
  config: Options.text("config").pipe(
    Options.withPseudoName("file"),
    Options.optional,
    Options.withDescription("TOML file with a [queue.outbound] section (default: every key at its default)")
  ),
  from: Options.text("from").pipe(
    Options.withPseudoName("address"),
    Options.withDefault(""),
    Options.withDescription("envelope sender; empty or absent: the null sender <>")
  ),
  dns: Options.text("dns").pipe(
    Options.withPseudoName("ip[:port]"),
    Options.repeated,
    Options.withDescription("DNS server to query instead of the system's; repeat for more ([v6]:port for IPv6 with a port)")
  ),
  port: port("port", 25, "remote SMTP port (25; another one for test set-ups)"),
  retryNum: Options.integer("retry-num").pipe(
    Options.filterMap((n) => (n >= 0 ? Option.some(n) : Option.none()), "--retry-num must be 0 or more"),
    Options.withDefault(0),
    Options.withDescription("the attempt number expressions see as retry_num")
  ),
  tlsCa: Options.text("tls-ca").pipe(
    Options.withPseudoName("file"),
    Options.optional,
    Options.withDescription("extra trusted CA certificates (PEM) for STARTTLS and MTA-STS")
  ),
  json: Options.boolean("json").pipe(Options.withDescription("print the report as JSON on stdout"))
} as const

/**
 * The parsed shared options.
 *
 * @since 0.1.0
 */
export interface Common {
  readonly config: Option.Option<string>
  readonly from: string
  readonly dns: ReadonlyArray<string>
  readonly port: number
  readonly retryNum: number
  readonly tlsCa: Option.Option<string>
  readonly json: boolean
}

/**
 * A `--dns` value as node's resolver takes it: `192.0.2.1`, `192.0.2.1:5353`, `2001:db8::1`, `[2001:db8::1]:5353`.
 * Checked here because the resolver throws on a malformed server instead of failing.
 *
 * @since 0.1.0
 */
export const parseDnsServer = (text: string): string | null => {
  if (isIP(text) !== 0) return text
  const bracketed = /^\[([^\]]+)\]:(\d{1,5})$/.exec(text)
  const plain = /^([^:]+):(\d{1,5})$/.exec(text)
  const [, host, portText] = bracketed ?? plain ?? []
  if (host === undefined || portText === undefined) return null
  const n = Number(portText)
  if (n < 1 || n > 65_535) return null
  if (bracketed !== null ? isIP(host) !== 6 : isIP(host) !== 4) return null
  return text
}

/**
 * Everything a command needs to run the transport.
 *
 * @since 0.1.0
 */
export interface Environment {
  readonly config: OutboundConfig.Config
  readonly layer: Layer.Layer<
    OutboundConfig.OutboundConfig | Dns.Dns | Connector.Connector | MtaSts.PolicyFetcher | PolicyCache.PolicyCache
  >
  readonly options: TransportOptions.Service
}

const readCa = (file: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(file).pipe(
      Effect.mapError((error) =>
        new CliExit({ code: ExitCode.noInput, message: `cannot read the CA file ${file}: ${error.message}` })
      )
    )
    if (!text.includes("-----BEGIN CERTIFICATE-----")) {
      return yield* usage(`--tls-ca ${file}: no PEM certificate in the file`)
    }
    return text
  })

/**
 * Checks the options, loads the configuration and the CA file; fails with the exit status to use.
 *
 * @since 0.1.0
 */
export const environment = (options: Common): Effect.Effect<Environment, CliExit, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const servers: Array<string> = []
    for (const raw of options.dns) {
      const server = parseDnsServer(raw)
      if (server === null) {
        return yield* usage(`--dns ${JSON.stringify(raw)}: expected an IP address with an optional port (ip, ip:port, [ipv6]:port)`)
      }
      servers.push(server)
    }
    const config = yield* Option.match(options.config, {
      onNone: () => Effect.succeed(OutboundConfig.defaults),
      onSome: (file) =>
        OutboundConfig.load(file).pipe(
          Effect.mapError((error) => new CliExit({ code: ExitCode.config, message: error.message }))
        )
    })
    const ca = yield* Option.match(options.tlsCa, {
      onNone: () => Effect.succeed(undefined),
      onSome: (file) => Effect.map(readCa(file), (pem) => [pem])
    })
    const defaults = yield* TransportOptions
    const layer = Layer.merge(
      Layer.succeed(OutboundConfig.OutboundConfig, config),
      Transport.layer({ dns: servers.length === 0 ? {} : { servers }, ca })
    )
    return { config, layer, options: { ...defaults, port: options.port, ca } }
  })

/**
 * The addresses checked before anything is read or sent, with the rules the transport applies, so that a typo is a
 * usage error at once rather than after the message was read from stdin.
 *
 * @since 0.1.0
 */
export const checkAddresses = (sender: string, recipients: ReadonlyArray<string>): Effect.Effect<void, InvalidRequest> => {
  const issues: Array<{ field: string; value: string; reason: string }> = []
  if (sender !== "") {
    const parsed = address.parse(sender)
    if (typeof parsed === "string") issues.push({ field: "sender", value: sender, reason: parsed })
  }
  recipients.forEach((rcpt, i) => {
    const parsed = address.parse(rcpt)
    if (typeof parsed === "string") issues.push({ field: `recipients[${i}]`, value: rcpt, reason: parsed })
  })
  return issues.length === 0 ? Effect.void : Effect.fail(new InvalidRequest({ issues }))
}

/**
 * An invalid request is a usage error: one line per problem.
 *
 * @since 0.1.0
 */
export const invalidRequest = (error: InvalidRequest): CliExit =>
  usage(
    ["invalid request:", ...error.issues.map((i) => `  ${i.field} ${JSON.stringify(i.value)} ${i.reason}`)].join("\n")
  )
