/**
 * Local delivery, which the transport does not do: recipients whose route is `local` (Stalwart's built-in
 * `next-hop` id) are handed to this service, which the embedder provides (a mailbox store, an LMTP client of its
 * own, a queue). There is none by default: without it those recipients are reported `failed`, kind `route`.
 *
 * @since 0.3.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/**
 * What is handed over: one domain's recipients routed `local`, with the message as the transport received it.
 *
 * @since 0.3.0
 * @category models
 */
export interface LocalRequest {
  /** The route's name in the configuration (`local`). */
  readonly route: string
  readonly domain: string
  /** The envelope sender, `""` for the null sender. */
  readonly sender: string
  readonly recipients: ReadonlyArray<string>
  readonly message: Uint8Array
  readonly requireTls: boolean
}

/**
 * One recipient's outcome. A recipient the service leaves out of its answer is reported `deferred`: nothing is
 * reported delivered unless the service said so.
 *
 * @since 0.3.0
 * @category models
 */
export interface LocalOutcome {
  readonly address: string
  readonly status: "delivered" | "deferred" | "failed"
  /** Why, when not delivered; it becomes the report's error message. */
  readonly reason?: string | undefined
}

/**
 * The service could not take the message at all: every recipient is `deferred` (or `failed` when `permanent`).
 *
 * @since 0.3.0
 * @category errors
 */
export class LocalDeliveryError extends Data.TaggedError("LocalDeliveryError")<{
  readonly message: string
  readonly permanent: boolean
}> {}

/**
 * @since 0.3.0
 * @category models
 */
export declare namespace LocalDelivery {
  /**
   * @since 0.3.0
   * @category models
   */
  export interface Service {
    readonly deliver: (request: LocalRequest) => Effect.Effect<ReadonlyArray<LocalOutcome>, LocalDeliveryError>
  }
}

/**
 * Optional: `Transport.deliver` looks it up only for `local` routes and does not require it.
 *
 * @since 0.3.0
 * @category tags
 */
export class LocalDelivery extends Context.Tag("effect-smtp-transport/LocalDelivery")<
  LocalDelivery,
  LocalDelivery.Service
>() {}

/**
 * @since 0.3.0
 * @category layers
 */
export const layer = (service: LocalDelivery.Service): Layer.Layer<LocalDelivery> => Layer.succeed(LocalDelivery, service)
