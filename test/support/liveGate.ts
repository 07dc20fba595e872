/**
 * Whether a live suite can run here, and what happens when it cannot. Live suites need root and real
 * tools; on a developer's laptop they skip, but CI sets TRW_REQUIRE_INTEGRATION=1, and then a missing
 * prerequisite must fail loudly: a suite that silently skips in CI is a gap presented as a pass.
 */
import { spawnSync } from "node:child_process"
import { existsSync } from "node:fs"
import { describe, it } from "@effect/vitest"
import { assert } from "vitest"

export const integrationRequired = process.env.TRW_REQUIRE_INTEGRATION === "1"

export const isRoot = (): boolean => process.getuid?.() === 0

export const hasCommand = (cmd: string): boolean =>
  spawnSync("sh", ["-c", `command -v ${cmd}`], { stdio: "ignore" }).status === 0

/** What is missing among root, commands on PATH and files (plugins); empty when all are there. */
export const missingOf = (need: {
  readonly root?: boolean
  readonly commands?: ReadonlyArray<string>
  readonly files?: ReadonlyArray<string>
}): ReadonlyArray<string> => [
  ...(need.root === true && !isRoot() ? ["root"] : []),
  ...(need.commands ?? []).filter((c) => !hasCommand(c)),
  ...(need.files ?? []).filter((f) => !existsSync(f))
]

/**
 * Returns true when the suite titled `title` must be skipped. Under TRW_REQUIRE_INTEGRATION=1 it
 * also registers a failing test naming what is missing, so the skip cannot pass unnoticed.
 */
export const skipLive = (title: string, missing: ReadonlyArray<string>): boolean => {
  if (missing.length === 0) return false
  if (integrationRequired)
    describe(title, () => {
      it("has its prerequisites (TRW_REQUIRE_INTEGRATION=1 forbids skipping)", () => {
        assert.fail(`missing: ${missing.join(", ")}`)
      })
    })
  return true
}
