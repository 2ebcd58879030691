/**
 * AUTH (RFC 4954) at a relay: the mechanism picked from the server's list, the credentials sent, the outcome as a
 * `TransportError` of phase `auth`. The secret is unwrapped only to build the bytes written: the transcript says
 * `<credentials>`, and no error or span carries it.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Redacted from "effect/Redacted"
import type { Connection, TlsInfo } from "../../Connector.js"
import type { RelayAuth } from "../../Settings.js"
import type { Capabilities } from "../../SmtpSession.js"
import type { Reply } from "../../SmtpReply.js"
import * as TransportError from "../../TransportError.js"
import * as phase from "./phase.js"

const base64 = (text: string) => Buffer.from(text, "utf8").toString("base64")

/** A line whose content must stay out of the transcript. */
const secretLine = (line: string) => Buffer.from(`${line}\r\n`, "utf8")

/** Temporary whatever the code, as Stalwart's `AuthenticationFailed`: a refused login is fixed by an operator. */
const refused = (mechanism: string, reply: Reply) =>
  new TransportError.TransportError({
    phase: "auth",
    kind: "auth",
    permanent: false,
    message: `auth: ${mechanism} refused: ${reply.code}${reply.enhanced === null ? "" : ` ${reply.enhanced}`} ${
      reply.lines.join(" ")
    }`.trimEnd(),
    reply
  })

/**
 * Why the credentials may not be sent on this connection, or `null` when they may: over TLS that verified (or that
 * `allowInvalidCerts` accepts), or anywhere with `allowPlaintext`. Temporary: a STARTTLS an attacker stripped delays
 * mail, it never bounces it, nor gives the attacker the password.
 */
export const refusal = (
  auth: RelayAuth,
  tls: TlsInfo | null,
  allowInvalidCerts: boolean
): TransportError.TransportError | null => {
  if (auth.allowPlaintext === true) return null
  if (tls === null) {
    return TransportError.make(
      "auth",
      "policy",
      "auth: the connection is not encrypted and AUTH is sent only over TLS (auth.allow-plaintext = true allows it)"
    )
  }
  if (!tls.verified && !allowInvalidCerts) {
    return TransportError.make(
      "auth",
      "policy",
      `auth: the server's certificate did not verify (${tls.reason ?? "unknown reason"}) and AUTH is sent only ` +
        "over verified TLS (tls.allow-invalid-certs = true accepts it)"
    )
  }
  return null
}

/** The mechanism for these credentials among the server's, best first; `null` when there is none. */
export const mechanism = (auth: RelayAuth, capabilities: Capabilities): "PLAIN" | "LOGIN" | "XOAUTH2" | null => {
  const offered = capabilities.auth
  if (auth.token === true) return offered.includes("XOAUTH2") ? "XOAUTH2" : null
  if (offered.includes("PLAIN")) return "PLAIN"
  if (offered.includes("LOGIN")) return "LOGIN"
  return null
}

/**
 * Authenticates; the mechanism used. Every exchange under the step's deadline (one deadline for the whole AUTH).
 */
export const authenticate = (
  connection: Connection,
  auth: RelayAuth,
  capabilities: Capabilities,
  timeoutMs: number,
  step: phase.Step
): Effect.Effect<string, TransportError.TransportError> =>
  Effect.gen(function*() {
    const chosen = mechanism(auth, capabilities)
    if (chosen === null) {
      const wanted = auth.token === true ? "XOAUTH2 (for a token)" : "PLAIN or LOGIN (for a password)"
      const offered = capabilities.auth.length === 0 ? "no AUTH" : `AUTH ${capabilities.auth.join(" ")}`
      // Temporary, unlike Stalwart's: before TLS a server may hide AUTH, and an attacker may strip it.
      return yield* TransportError.make("auth", "auth", `auth: the server offers ${offered}; needed ${wanted}`)
    }
    const send = (line: string, describe: string) =>
      phase.exchangeFirst(connection, "auth", timeoutMs, step, secretLine(line), describe)
    const secret = Redacted.value(auth.secret)
    switch (chosen) {
      case "PLAIN": {
        const reply = yield* send(`AUTH PLAIN ${base64(`\u0000${auth.username}\u0000${secret}`)}`, "AUTH PLAIN <credentials>")
        if (reply.code !== 235) return yield* refused(chosen, reply)
        return chosen
      }
      case "LOGIN": {
        const start = yield* phase.command(connection, "auth", timeoutMs, step, "AUTH LOGIN")
        if (start.code !== 334) return yield* refused(chosen, start)
        const user = yield* send(base64(auth.username), "<user name>")
        if (user.code !== 334) return yield* refused(chosen, user)
        const done = yield* send(base64(secret), "<password>")
        if (done.code !== 235) return yield* refused(chosen, done)
        return chosen
      }
      case "XOAUTH2": {
        const token = base64(`user=${auth.username}\u0001auth=Bearer ${secret}\u0001\u0001`)
        const reply = yield* send(`AUTH XOAUTH2 ${token}`, "AUTH XOAUTH2 <credentials>")
        if (reply.code === 334) {
          // The server's error details (a JSON document); an empty line asks for the final reply.
          const final = yield* phase.command(connection, "auth", timeoutMs, step, "")
          return yield* refused(chosen, final)
        }
        if (reply.code !== 235) return yield* refused(chosen, reply)
        return chosen
      }
    }
  })
