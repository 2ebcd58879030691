import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Dns from "../../src/Dns.js"

/** The test layer's query log: every query that reached the zones, below any cache. */
export const queries = Effect.flatMap(Dns.TestDns, (t) => t.queries)

/** How a lookup ended: `"success"`, the `DnsError`'s reason, or the cause's tag (`Die`, `Interrupt`). */
export const reasonOf = (exit: Exit.Exit<unknown, Dns.DnsError>) =>
  Exit.match(exit, {
    onSuccess: () => "success",
    onFailure: (cause) => cause._tag === "Fail" ? cause.error.reason : cause._tag
  })
