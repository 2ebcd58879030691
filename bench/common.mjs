// Shared by the bench processes: the workload's message and names, and small helpers. No I/O at import time.

/** The zone every bench domain lives in; bench/dns.mjs answers for it. */
export const ZONE = "bench.test"
export const SENDER = "bench@sender.bench.test"
export const EHLO_NAME = "client.bench.test"

/** Delivery `i` goes to its own domain, whose MX is its own host: two uncacheable lookups per delivery. */
export const domainOf = (i, prefix = "d") => `${prefix}${i}.${ZONE}`
export const recipientOf = (i, prefix = "d") => `rcpt@${domainOf(i, prefix)}`

/** Happy Eyeballs domains use the prefix "he" (he0, he1, …): their MX host has AAAA ::1 and A 127.0.0.1. */
export const HE_PREFIX = "he"

/**
 * A 2 KiB (2,048 bytes exactly) RFC 5322 message with CRLF line ends, no line starting with "." (no dot-stuffing
 * needed by any client), lines under 78 characters.
 */
export const MESSAGE = (() => {
  const head = [
    "From: Bench <bench@sender.bench.test>",
    "To: Receiver <rcpt@bench.test>",
    "Subject: fan-out benchmark message",
    "Date: Sun, 29 Nov 2026 10:00:00 +0000",
    "Message-ID: <bench-0000000000@sender.bench.test>",
    "MIME-Version: 1.0",
    "Content-Type: text/plain; charset=us-ascii",
    "",
    ""
  ].join("\r\n")
  const line = "The quick brown fox jumps over the lazy dog while the queue drains fast\r\n"
  let body = ""
  for (let i = 0; i < 64 && head.length + body.length + line.length <= 2048; i++) body += line
  const rest = 2048 - head.length - body.length - 2
  body += "x".repeat(rest) + "\r\n"
  const text = head + body
  if (text.length !== 2048) throw new Error(`message is ${text.length} bytes`)
  return Buffer.from(text, "latin1")
})()

/** Nearest-rank percentile of an unsorted numeric array (sorted copy). */
export const percentile = (values, p) => {
  if (values.length === 0) return null
  const sorted = Float64Array.from(values).sort()
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank]
}

/** The conventional median (the mean of the two middle values for an even count). */
export const median = (values) => {
  if (values.length === 0) return null
  const sorted = Float64Array.from(values).sort()
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

/** `--key=value` / `--flag` arguments into an object (strings; "true" for bare flags). */
export const parseArgs = (argv) => {
  const out = {}
  for (const arg of argv) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(arg)
    if (m) out[m[1]] = m[2] ?? "true"
  }
  return out
}

/** Exit when the parent goes away (IPC disconnect) or after `lifetimeMs`, whichever is first. */
export const boundLifetime = (lifetimeMs, onExit = () => {}) => {
  const stop = () => {
    try { onExit() } catch { /* exiting anyway */ }
    process.exit(0)
  }
  setTimeout(stop, lifetimeMs)
  if (process.send) process.on("disconnect", stop)
  process.on("SIGTERM", stop)
}

/**
 * The reuse workload: delivery `i` goes to one of `domains` domains (`r0` … `r<domains-1>`), each with its own MX
 * host on the one sink, and a recipient of its own, so that consecutive messages to a domain can share connections.
 */
export const REUSE_PREFIX = "r"
export const reuseDomainOf = (i, domains) => domainOf(i % domains, REUSE_PREFIX)
export const reuseRecipientOf = (i, domains) => `rcpt${i}@${reuseDomainOf(i, domains)}`
