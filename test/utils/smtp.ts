/** The lines of a multiline reply (RFC 5321 §4.2.1): `code-text` on every line but the last, `code text` on it. */
export const multi = (code: number, texts: ReadonlyArray<string>) =>
  texts.map((t, i) => `${code}${i === texts.length - 1 ? " " : "-"}${t}`)
