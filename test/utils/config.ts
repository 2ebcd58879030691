/**
 * Loading a configuration text in a test: the config, or its issues as `[line, path, problem]`.
 */
import { Either } from "effect"
import * as OutboundConfig from "../../src/OutboundConfig.js"

/** The loaded configuration; a load error fails the test with its message. */
export const load = (text: string, file = "test.toml"): OutboundConfig.Config => {
  const result = OutboundConfig.parse(text, file)
  if (Either.isLeft(result)) throw new Error(result.left.message)
  return result.right
}

/** Each issue of a text that must not load: its line, its key path, and the problem without the path. */
export const issues = (text: string, file = "test.toml") => {
  const result = OutboundConfig.parse(text, file)
  if (Either.isRight(result)) throw new Error("loaded, but should not have")
  return result.left.issues.map((i) => [
    i.line,
    i.path,
    i.message.split(": found")[0]!.slice(i.path === "" ? 0 : i.path.length + 2)
  ])
}
