/**
 * NodeLockSocket on the real kernel: mutual exclusion between fibers and processes, release on
 * failure, interruption and SIGKILL. Each test uses its own random abstract socket name, so nothing
 * here can meet the lock of a real plugin on this host.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber } from "effect"
import * as NodeLockSocket from "../src/interpreters/live/NodeLockSocket.ts"

const freshName = () => `trw-test-lock-${randomBytes(6).toString("hex")}`

/** A separate node process that binds `name` and says "held"; resolves once it holds it. */
const holder = (name: string): Promise<ChildProcess> =>
  new Promise((resolve, reject) => {
    const script = `const s = require("net").createServer();
s.listen({ path: "\\0" + process.argv[1] }, () => {
  console.log("held");
  setTimeout(() => process.exit(0), 10_000); // never outlives a failed test by long
});`
    const child = spawn(process.execPath, ["-e", script, name], { stdio: ["ignore", "pipe", "inherit"] })
    child.stdout?.once("data", () => resolve(child))
    child.once("error", reject)
    child.once("exit", (code) => reject(new Error(`holder exited early with ${code}`)))
  })

describe("NodeLockSocket", () => {
  it.live("concurrent withLock sections never overlap", () =>
    Effect.gen(function* () {
      const lock = NodeLockSocket.make({ name: freshName() })
      let inside = 0
      let most = 0
      const section = (i: number) =>
        lock.withLock(
          Effect.gen(function* () {
            inside++
            most = Math.max(most, inside)
            yield* Effect.sleep(`${5 + (i % 3) * 5} millis`)
            inside--
            return i
          })
        )
      const results = yield* Effect.all(
        Array.from({ length: 8 }, (_, i) => section(i)),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(results, [0, 1, 2, 3, 4, 5, 6, 7])
      assert.strictEqual(most, 1)
    })
  )

  it.live("a failing or interrupted section releases the lock", () =>
    Effect.gen(function* () {
      const lock = NodeLockSocket.make({ name: freshName(), timeout: "500 millis" })
      const failed = yield* Effect.exit(lock.withLock(Effect.fail("boom")))
      assert.isTrue(Exit.isFailure(failed))
      const timedOut = yield* Effect.exit(lock.withLock(Effect.never).pipe(Effect.timeout("30 millis")))
      assert.isTrue(Exit.isFailure(timedOut))
      assert.strictEqual(yield* lock.withLock(Effect.succeed("free")), "free")
    })
  )

  it.live("a waiter can be interrupted, and the lock stays usable", () =>
    Effect.gen(function* () {
      const lock = NodeLockSocket.make({ name: freshName() })
      let release!: () => void
      const held = new Promise<void>((r) => {
        release = r
      })
      const first = yield* Effect.forkChild(lock.withLock(Effect.promise(() => held)))
      yield* Effect.sleep("20 millis")
      const waiter = yield* Effect.exit(lock.withLock(Effect.void).pipe(Effect.timeout("100 millis")))
      assert.isTrue(Exit.isFailure(waiter))
      release()
      yield* Fiber.join(first)
      assert.strictEqual(yield* lock.withLock(Effect.succeed(1)), 1)
    })
  )

  it.live("another process's lock is waited for, and given up on after the timeout", () =>
    Effect.gen(function* () {
      const name = freshName()
      const first = yield* Effect.promise(() => holder(name))
      const waiter = yield* Effect.forkChild(NodeLockSocket.make({ name }).withLock(Effect.succeed("got it")))
      yield* Effect.sleep("100 millis")
      assert.isUndefined(waiter.pollUnsafe(), "the lock is not taken while another process holds it")
      const exited = new Promise((r) => first.once("exit", r))
      first.kill("SIGTERM")
      yield* Effect.promise(() => exited)
      assert.strictEqual(yield* Fiber.join(waiter), "got it")

      const child = yield* Effect.promise(() => holder(name))
      const refused = yield* Effect.flip(
        NodeLockSocket.make({ name, timeout: "150 millis" }).withLock(Effect.void)
      )
      assert.strictEqual(refused._tag, "TryAgainLater", "a busy node is code 11, not a netfilter failure")
      assert.strictEqual(refused.code, 11)
      assert.include(refused.msg, "still held")
      child.kill("SIGKILL")
    })
  )

  it.live("a holder killed with SIGKILL releases the lock", () =>
    Effect.gen(function* () {
      const name = freshName()
      const child = yield* Effect.promise(() => holder(name))
      const lock = NodeLockSocket.make({ name, timeout: "100 millis" })
      assert.isTrue(Exit.isFailure(yield* Effect.exit(lock.withLock(Effect.void))))
      const exited = new Promise((r) => child.once("exit", r))
      child.kill("SIGKILL")
      yield* Effect.promise(() => exited)
      assert.strictEqual(
        yield* NodeLockSocket.make({ name, timeout: "2 seconds" }).withLock(Effect.succeed(1)),
        1
      )
    })
  )
})
