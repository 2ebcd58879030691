/**
 * The `[queue.outbound]` section of a Stalwart-style TOML file (v0.7–v0.12 layout), loaded into typed, immutable
 * settings, and evaluated per stage into the settings vocabulary of `Settings`.
 *
 * Every key may be a plain value, an expression, or an if-list; each becomes a `Setting` that is evaluated with the
 * variables of a delivery at the stage where the key is needed. Everything that can be checked at load is checked at
 * load, and loading fails with every problem found at once: unlike Stalwart, which keeps the default on a bad value
 * and logs it (stalwart#425), a misconfiguration here stops the program before a message is sent.
 *
 * The keys, their names in code, stages, converters, defaults and docs are one table (`internal/config/keys.ts`);
 * the `Config` type, the loader, the stage evaluations and {@link renderReference} are generated from it.
 *
 * @since 0.1.0
 */
import type { PlatformError } from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type { Variables } from "./Expression.js"
import type { OutboundLimiter } from "./Limiter.js"
import { ConfigError } from "./internal/config/error.js"
import type * as ConfigErrors from "./internal/config/error.js"
import type * as Keys from "./internal/config/keys.js"
import type * as Model from "./internal/config/model.js"
import * as Parse from "./internal/config/parse.js"
import * as Reference from "./internal/config/reference.js"
import * as Show from "./internal/config/show.js"
import * as Write from "./internal/config/write.js"
import { makeJsonLocator, makeLocator } from "./internal/config/locate.js"
import type { RouteSetting } from "./internal/config/relays.js"
import * as Evaluate from "./internal/settings/evaluate.js"
import type * as Settings from "./Settings.js"
import type { ConnectionSettings, DeliverySchedule, DomainSettings, HostSettings } from "./Settings.js"

export {
  /**
   * Loading failed: every problem found in the file, at once.
   *
   * @since 0.1.0
   * @category errors
   */
  ConfigError
} from "./internal/config/error.js"

/**
 * One problem in a configuration file: where it is (file, line, key), what was found and what was expected.
 *
 * @since 0.1.0
 * @category errors
 */
export type ConfigIssue = ConfigErrors.ConfigIssue

/**
 * Moved to `Settings`; re-exported here for compatibility.
 *
 * @since 0.1.0
 * @category models
 */
export type IpStrategy = Settings.IpStrategy

/**
 * Moved to `Settings`; re-exported here for compatibility.
 *
 * @since 0.1.0
 * @category models
 */
export type Stage = Settings.Stage

/**
 * Moved to `Settings`; re-exported here for compatibility.
 *
 * @since 0.1.0
 * @category models
 */
export type TlsPolicy = Settings.TlsPolicy

/**
 * A setting's value for one delivery. `warning` is set when the configured expression gave a value that could not be
 * used and the key's default was used instead; it names the key, what was found and the default.
 *
 * @since 0.1.0
 * @category models
 */
export type Evaluated<A> = Keys.Evaluated<A>

/**
 * One configured key, ready to evaluate. Constant values were converted and checked at load and cost nothing to
 * evaluate; expressions are evaluated without re-parsing.
 *
 * @since 0.1.0
 * @category models
 */
export type Setting<A> = Keys.Setting<A>

/**
 * The loaded `[queue.outbound]` section: one `Setting` per key, in the shape and with the names of the settings
 * vocabulary (`ehloName`, `ipStrategy`, `sourceIp.v4`/`.v6`, `limits.mx`/`.multihomed`, `timeouts[phase]`,
 * `tls.starttls`/`.mtaSts`/`.allowInvalidCerts`, `connectionAttemptDelay`), generated from the key table.
 *
 * @since 0.1.0
 * @category models
 */
export interface Config extends Keys.ConfigSettings {
  /**
   * The route of a domain: what the route selector names (`next-hop` with the `[remote.<id>]` tables it may name,
   * `[queue.strategy] route`, v0.16's `route`). Left: a computed name no route has, a failure of the domain's delivery.
   */
  readonly route: RouteSetting
  /** Which of Stalwart's layouts the file was written in. */
  readonly layout: Layout
  /** The strategies and their selectors, as loaded: what `smtp-transport config show` and `convert` read. */
  readonly model: Model.Model
  /** The file it was loaded from, null for text and defaults. */
  readonly file: string | null
  /** Load-time warnings, e.g. Stalwart keys this library does not implement. */
  readonly warnings: ReadonlyArray<string>
  /** The outbound limiters (`[queue.limiter.outbound.<id>]`, `[[queue.throttle]]`) that are enabled, in file order. */
  readonly limiters: ReadonlyArray<OutboundLimiter>
  /** Stalwart settings in the file that a transport does not use (`[queue.virtual]`, `[queue.quota]` …). */
  readonly notUsed: ReadonlyArray<string>
  /**
   * The delivery schedule of a recipient that is not delivered yet: its retry waits, delay-DSN points and expiry,
   * evaluated with the variables of the recipient (Stalwart's rcpt variables: `sender`, `sender_domain`, `rcpt`,
   * `rcpt_domain`, `recipients`, `priority`, `retry_num`, `last_error`, `last_status`, `expires_in`, `queue_name`,
   * and for the schedule alone `source` — `"dsn"` for a delivery status notification —, `notify_num`, `queue_age`).
   *
   * - v0.7–v0.12 (`[queue.schedule] retry, notify, expire`, each an expression): the schedule named `"default"`.
   * - v0.13–v0.15 (`[queue.strategy] schedule` naming a `[queue.schedule.<name>]`) and v0.16 (`MtaOutboundStrategy.schedule`
   *   naming an `MtaDeliverySchedule`): the schedule the expression names.
   *
   * Never fails: a computed value that cannot be used is replaced by the key's default, and a computed name that no
   * schedule has by Stalwart's fallback (`get_queue_or_default`: retry 2m … 2h, notify 1d and 3d, a five-day TTL,
   * named `"default"`); each such replacement is in `warnings`. Names written as literals are checked at load.
   */
  readonly schedule: (variables: Variables) => Evaluation<DeliverySchedule>
}

/**
 * Stalwart's configuration layouts: `outbound` (v0.7–v0.12, `[queue.outbound]`), `strategies` (v0.13–v0.15,
 * `[queue.strategy]` and named `[queue.route|connection|tls.<name>]` tables) and `json` (v0.16+ registry objects).
 *
 * @since 0.3.0
 * @category models
 */
export type Layout = Keys.Layout

/**
 * The configuration as a service.
 *
 * @since 0.1.0
 * @category tags
 */
export class OutboundConfig extends Context.Tag("effect-smtp-transport/OutboundConfig")<OutboundConfig, Config>() {}

/**
 * Parses a configuration in any of Stalwart's layouts: TOML (`[queue.outbound]` of v0.7–v0.12, or the strategies of
 * v0.13–v0.15) or JSON (v0.16's registry objects, when the text starts with `{`). A text with no outbound setting is an
 * error. Pure apart from reading the machine's host name for the EHLO default.
 *
 * @example
 * ```ts
 * import { Either } from "effect"
 * import * as OutboundConfig from "effect-smtp-transport/OutboundConfig"
 *
 * const config = OutboundConfig.parse(`
 * [queue.outbound]
 * limits.mx = "seven"
 * `, "outbound.toml")
 * // Every problem in the file, each with its file, line and key.
 * assert.ok(Either.isLeft(config))
 * const [issue] = config.left.issues
 * assert.strictEqual(issue?.path, "queue.outbound.limits.mx")
 * assert.strictEqual(issue?.line, 3)
 * ```
 *
 * @since 0.1.0
 * @category loading
 */
export const parse = (text: string, file: string | null = null): Either.Either<Config, ConfigError> =>
  Parse.parse(text, file)

/**
 * A stage's settings and the warnings met evaluating them: each names the key whose computed value could not be used
 * and the default used instead.
 *
 * @since 0.2.0
 * @category models
 */
export interface Evaluation<A> {
  readonly settings: A
  readonly warnings: ReadonlyArray<string>
}

/**
 * The domain stage's evaluation. `routeError` is set when `next-hop` computed a name that no `[remote.<id>]` table
 * has: the domain's delivery fails (kind `route`), and `settings.route` (MX delivery) is not to be used.
 *
 * @since 0.3.0
 * @category models
 */
export interface DomainEvaluation extends Evaluation<DomainSettings> {
  readonly routeError: string | null
}

/**
 * Evaluates the route (the route selector: `next-hop`, `[queue.strategy] route`, v0.16's `route`) and the keys of
 * the domain stage (`limits`, `tls.mta-sts`, `timeouts.mta-sts`) with the domain variables: the message's
 * (`sender`, `retry_num`, …) and `rcpt`, `rcpt_domain`.
 *
 * @since 0.2.0
 * @category evaluation
 */
export const evaluateDomain: (config: Config, variables: Variables) => DomainEvaluation = Evaluate.evaluateDomain

/**
 * Evaluates the keys of the host stage (`ip-strategy`, `source-ip`, `tls.starttls`, `tls.allow-invalid-certs`,
 * `connection-attempt-delay`) with the domain variables and `mx`.
 *
 * @since 0.2.0
 * @category evaluation
 */
export const evaluateHost: (config: Config, variables: Variables) => Evaluation<HostSettings> = Evaluate.evaluateHost

/**
 * Evaluates the keys of the connection stage (`hostname`, the session's `timeouts`) with the host variables and
 * `remote_ip`, `local_ip`.
 *
 * @since 0.2.0
 * @category evaluation
 */
export const evaluateConnection: (config: Config, variables: Variables) => Evaluation<ConnectionSettings> =
  Evaluate.evaluateConnection

/**
 * The reference of every key as Markdown, generated from the key table: key, name in code, stage, default, what it
 * accepts, what it means; and the Stalwart settings recognised but not used by a transport.
 *
 * @since 0.2.0
 * @category documentation
 */
export const renderReference: () => string = Reference.renderReference

/**
 * Reads and parses a TOML file; the file name is in every issue.
 *
 * @since 0.1.0
 * @category loading
 */
export const load: (path: string) => Effect.Effect<Config, ConfigError, FileSystem.FileSystem> = Effect.fn(
  "OutboundConfig.load"
)(function*(path: string) {
  const fs = yield* FileSystem.FileSystem
  const text = yield* fs.readFileString(path).pipe(
    Effect.mapError((error: PlatformError) =>
      new ConfigError({
        file: path,
        issues: [Parse.issueOf({
          path: [],
          problem: `cannot read the file (${error.message})`,
          found: "no readable file",
          expected: "a readable UTF-8 TOML file"
        }, null)]
      })
    )
  )
  return yield* Parse.parse(text, path)
})

/**
 * The configuration with every key at its default (the `hostname` default is the machine's host name).
 *
 * @since 0.1.0
 * @category loading
 */
export const defaults: Config = Either.getOrThrow(Parse.parse("", null, { allowEmpty: true }))

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (path: string): Layer.Layer<OutboundConfig, ConfigError, FileSystem.FileSystem> =>
  Layer.effect(OutboundConfig, load(path))

/**
 * @since 0.1.0
 * @category layers
 */
export const layerDefault: Layer.Layer<OutboundConfig> = Layer.succeed(OutboundConfig, defaults)

/**
 * @since 0.1.0
 * @category layers
 */
export const layerFromText = (text: string, file?: string): Layer.Layer<OutboundConfig, ConfigError> =>
  Layer.effect(OutboundConfig, Effect.suspend(() => parse(text, file ?? null)))

/**
 * Writes a loaded configuration in another of Stalwart's layouts: `outbound` (v0.7–v0.12 TOML), `strategies`
 * (v0.13–v0.15 TOML) or `json` (v0.16 registry objects). A setting with no equivalent in the target is an error that
 * names it, at its position in `text` (the file's text) when given; the text written is loaded again and gives the
 * same settings (`smtp-transport config convert`).
 *
 * @since 0.3.0
 * @category conversion
 */
export const convert = (config: Config, to: Layout, text?: string): Either.Either<string, ConfigError> => {
  const locate = text === undefined ? () => null : config.layout === "json" ? makeJsonLocator(text) : makeLocator(text)
  if (config.layout === to) {
    return Either.left(
      new ConfigError({
        file: config.file,
        issues: [Parse.issueOf({
          path: [],
          problem: `the file is already in the ${to} layout`,
          found: `the ${to} layout`,
          expected: "another layout to convert to"
        }, null)]
      })
    )
  }
  return Either.flatMap(
    Write.write(config.model, config.limiters, to, config.file, (raw) => Parse.issueOf(raw, locate(raw.path, raw.column))),
    (text) =>
      Either.match(Parse.parse(text, `${config.file ?? "<config>"} (converted to ${to})`), {
        onLeft: (error) => Either.left(error),
        onRight: () => Either.right(text)
      })
  )
}

/**
 * The effective configuration as text: the layout, the selectors, every route and strategy with every value, each
 * with where it came from (`file:line`, or `default`), in the file's own spelling; secrets are never printed. With the
 * file's text, TOML values get their line (`smtp-transport config show`).
 *
 * @since 0.3.0
 * @category documentation
 */
export const show = (config: Config, text?: string): string => {
  const locate = text === undefined ? () => null : config.layout === "json" ? makeJsonLocator(text) : makeLocator(text)
  return Show.show(config, (path) => locate(path))
}
