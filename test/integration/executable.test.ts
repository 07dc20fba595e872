/**
 * The built executable's own start-up settings (scripts/build.ts): every run starts with a capped JS
 * heap, the environment's NODE_OPTIONS cannot change it, and `--node-options=` before the subcommand
 * raises it (README, "The agent"). Read from the heap limit the agent logs when it is ready; the agent
 * listens on a socket in a temporary directory and is stopped with SIGTERM.
 */
import { spawn } from "node:child_process"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { BINARY, ensureBuilt } from "../sim/fixture.ts"
import { removePath, tempDir } from "../sim/netns.ts"
import { missingOf, skipLive } from "../support/liveGate.ts"

const TITLE = "the built executable's heap settings"
const dir = tempDir("trw-exe-")
afterAll(() => removePath(dir))

/** Starts `tenant-routing [before...] agent`, waits for `agent ready`, stops it; the logged limit. */
const heapLimitOf = async (before: ReadonlyArray<string>, env: NodeJS.ProcessEnv): Promise<number> => {
  const socket = join(dir, `agent-${before.length}-${Object.keys(env).length}.sock`)
  const child = spawn(BINARY, [...before, "agent", "--socket", socket], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ["ignore", "ignore", "pipe"]
  })
  let stderr = ""
  child.stderr.setEncoding("utf8")
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  const ready = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent not ready: ${stderr}`)), 30_000)
    child.stderr.on("data", (d: string) => {
      stderr += d
      const line = stderr.split("\n").find((l) => l.includes('"agent ready"'))
      if (line !== undefined) {
        clearTimeout(timer)
        resolve(line)
      }
    })
    void exited.then(() => reject(new Error(`agent exited: ${stderr}`)))
  })
  child.kill("SIGTERM")
  assert.strictEqual(await exited, 0)
  const limit = /"heapLimitMiB":(\d+)/.exec(ready)?.[1]
  assert.isDefined(limit, ready)
  return Number(limit)
}

describe.skipIf(skipLive(TITLE, missingOf({ commands: ["go"] })))(TITLE, () => {
  it("the heap is capped at 128 MiB of old space; NODE_OPTIONS cannot change it, --node-options= can", async () => {
    await ensureBuilt()
    // The limit V8 reports is the old-space cap plus the young generation's (a few MiB).
    const capped = await heapLimitOf([], {})
    assert.isAtLeast(capped, 128)
    assert.isAtMost(capped, 140)
    assert.strictEqual(await heapLimitOf([], { NODE_OPTIONS: "--max-old-space-size=512" }), capped)
    const raised = await heapLimitOf(["--node-options=--max-old-space-size=300"], {})
    assert.isAtLeast(raised, 300)
    assert.isAtMost(raised, 312)
  }, 600_000)
})
