import { it } from "@effect/vitest"
import { Effect } from "effect"
import { expect } from "vitest"
it.effect("smoke", () => Effect.sync(() => expect(1).toBe(1)))
