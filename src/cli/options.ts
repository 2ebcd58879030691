/**
 * The options `send` and `plan` share, and what turns them into the services a delivery runs on: the configuration,
 * the resolver, the connector and the transport options.
 *
 * @since 0.1.0
 */
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
import type { OptionSpec, Parsed } from "./args.js"
import { CliExit, ExitCode, usage } from "./exit.js"

/**
 * The options `send` and `plan` share, in the order the help lists them.
 *
 * @since 0.1.0
 */
export const common: ReadonlyArray<OptionSpec> = [
  {
    name: "config",
    value: "file",
    description: "The TOML file with a [queue.outbound] section. Without it, every key has its default."
  },
  {
    name: "from",
    value: "address",
    description: "The envelope sender. Leave it out, or give --from \"\", for the null sender <>."
  },
  {
    name: "dns",
    value: "ip[:port]",
    repeated: true,
    description: "A DNS server to query instead of the system's: 192.0.2.53, 192.0.2.53:5353, 2001:db8::53 or " +
      "[2001:db8::53]:5353. Repeat the option for more servers."
  },
  {
    name: "port",
    value: "n",
    description: "The remote SMTP port, for every MX host. The default is 25; another port is for test set-ups."
  },
  {
    name: "retry-num",
    value: "n",
    description: "The attempt number, as expressions see it in retry_num. The default is 0, the first attempt."
  },
  {
    name: "last-error",
    value: "category",
    description: "The category of the previous attempt's failure, as expressions see it in last_error: none (the " +
      "default), dns, connection, tls and so on."
  },
  {
    name: "tls-ca",
    value: "file",
    description: "A PEM file of CA certificates to trust besides the system's, for STARTTLS and for MTA-STS policies."
  }
]

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
  readonly lastError: string
  readonly tlsCa: Option.Option<string>
  readonly json: boolean
}

/**
 * The last value given for an option, if any.
 *
 * @since 0.1.0
 */
export const value = (parsed: Parsed, name: string): Option.Option<string> => {
  const values = parsed.values.get(name)
  return values === undefined || values.length === 0 ? Option.none() : Option.some(values[values.length - 1]!)
}

/**
 * A flag's value: absent or `false` is false.
 *
 * @since 0.1.0
 */
export const flag = (parsed: Parsed, name: string): boolean => Option.getOrElse(value(parsed, name), () => "") === "true"

const integer = (name: string, text: string, check: (n: number) => boolean, expected: string) => {
  const n = /^[+-]?\d{1,15}$/.test(text.trim()) ? Number(text) : NaN
  return Number.isInteger(n) && check(n)
    ? Effect.succeed(n)
    : Effect.fail(usage(`--${name} must be ${expected}, not ${JSON.stringify(text)}`))
}

/**
 * The shared options, checked and typed; a bad value is a usage error that names the option and what it wants.
 *
 * @since 0.1.0
 */
export const readCommon = (parsed: Parsed): Effect.Effect<Common, CliExit> =>
  Effect.gen(function*() {
    const port = yield* Option.match(value(parsed, "port"), {
      onNone: () => Effect.succeed(25),
      onSome: (text) => integer("port", text, (n) => n >= 1 && n <= 65_535, "a port number from 1 to 65535")
    })
    const retryNum = yield* Option.match(value(parsed, "retry-num"), {
      onNone: () => Effect.succeed(0),
      onSome: (text) => integer("retry-num", text, (n) => n >= 0, "an integer, 0 or more")
    })
    const lastError = Option.getOrElse(value(parsed, "last-error"), () => "none")
    if (!/^[a-z][a-z0-9_-]*$/.test(lastError)) {
      return yield* usage(
        `--last-error must be a category in lower case, such as none, dns, connection or tls, not ${JSON.stringify(lastError)}`
      )
    }
    return {
      config: value(parsed, "config"),
      from: Option.getOrElse(value(parsed, "from"), () => ""),
      dns: parsed.values.get("dns") ?? [],
      port,
      retryNum,
      lastError,
      tlsCa: value(parsed, "tls-ca"),
      json: flag(parsed, "json")
    }
  })

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
    // The CAs go through Transport.layer alone, which hands them to STARTTLS and MTA-STS.
    return { config, layer, options: { ...defaults, port: options.port } }
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
 * At least one recipient, or a usage error that says so.
 *
 * @since 0.1.0
 */
export const requireRecipients = (command: string, positionals: ReadonlyArray<string>): Effect.Effect<void, CliExit> =>
  positionals.length > 0
    ? Effect.void
    : Effect.fail(
      usage(`${command} needs at least one recipient: smtp-transport ${command} [options] <recipient>... (see smtp-transport ${command} --help)`)
    )

/**
 * An invalid request is a usage error: one line per problem.
 *
 * @since 0.1.0
 */
export const invalidRequest = (error: InvalidRequest): CliExit =>
  usage(
    ["invalid request:", ...error.issues.map((i) => `  ${i.field} ${JSON.stringify(i.value)} ${i.reason}`)].join("\n")
  )
