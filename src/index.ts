/**
 * effect-smtp-transport: the outbound transport of a mail server, as an Effect library.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 * @category modules
 */
export * as Candidates from "./Candidates.js"
/**
 * @since 0.3.0
 * @category modules
 */
export * as ConnectionPool from "./ConnectionPool.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as Connector from "./Connector.js"
/**
 * @since 0.2.0
 * @category modules
 */
export * as ConnectorTest from "./ConnectorTest.js"
/**
 * @since 0.3.0
 * @category modules
 */
export * as Dane from "./Dane.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as DeliveryReport from "./DeliveryReport.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as Dns from "./Dns.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as Expression from "./Expression.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as HappyEyeballs from "./HappyEyeballs.js"
/**
 * @since 0.3.0
 * @category modules
 */
export * as Limiter from "./Limiter.js"
/**
 * @since 0.3.0
 * @category modules
 */
export * as LocalDelivery from "./LocalDelivery.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as MtaSts from "./MtaSts.js"
/**
 * @since 0.2.0
 * @category modules
 */
export * as MtaStsPolicy from "./MtaStsPolicy.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as MxPlan from "./MxPlan.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as OutboundConfig from "./OutboundConfig.js"
/**
 * @since 0.3.0
 * @category modules
 */
export * as PlanCache from "./PlanCache.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as PolicyCache from "./PolicyCache.js"
/**
 * @since 0.2.0
 * @category modules
 */
export * as Pull from "./Pull.js"
/**
 * @since 0.2.0
 * @category modules
 */
export * as Settings from "./Settings.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as SmtpReply from "./SmtpReply.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as SmtpSession from "./SmtpSession.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as SourceIp from "./SourceIp.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as Transport from "./Transport.js"
/**
 * @since 0.1.0
 * @category modules
 */
export * as TransportError from "./TransportError.js"
