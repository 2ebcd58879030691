/**
 * DNS names compare case-insensitively and a trailing dot only marks them as fully qualified (RFC 4343, RFC 1034
 * §3.1), so every key, log entry and report value uses one spelling: lowercase, no trailing dot.
 *
 * @internal
 */
export const normalize = (name: string): string => name.trim().toLowerCase().replace(/\.+$/, "")

/**
 * The root name, which an MX exchange uses to say "no mail here" (RFC 7505). Node renders it as "".
 *
 * @internal
 */
export const isRoot = (name: string): boolean => normalize(name) === ""
