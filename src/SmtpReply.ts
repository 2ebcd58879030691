/**
 * SMTP replies (RFC 5321 §4.2) and their RFC 3463 enhanced status codes.
 *
 * @since 0.1.0
 */

/**
 * One complete reply: the three-digit code, the enhanced status code when the server gave one (`"5.1.1"`), and the
 * text of every line without the code and separator.
 *
 * @since 0.1.0
 */
export interface Reply {
  readonly code: number
  readonly enhanced: string | null
  readonly lines: ReadonlyArray<string>
}
