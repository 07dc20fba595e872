/**
 * The laws every NodeLock interpreter obeys, run against the memory semaphore and the live abstract
 * unix socket (a random name per law, so it never meets a real plugin's lock), so programs whose
 * interleavings are explored on the memory lock are excluded the same way on a node.
 *
 * The laws use real time (`it.live`): the live lock polls with real sleeps, and overlap is only
 * observable while a section actually waits. "Free" is checked by taking the lock again under a short
 * deadline, far below the live lock's own wait timeout, so a lock left held fails the law quickly.
 * A waiter that outlives the lock's timeout gives up with TryAgainLater (code 11: the runtime retries
 * the call), in both interpreters. Not covered (live-only, see test/nodeLock.live.test.ts): other
 * processes, SIGKILL.
 */
import { assert, describe, it } from "@effect/vitest"
import { type Duration, Effect, Exit, Fiber, type Layer } from "effect"
import * as fc from "fast-check"
import { TryAgainLater } from "../../src/domain/cni/Errors.ts"
import { NodeLock } from "../../src/domain/datapath/NodeLock.ts"

export type NodeLockLaw =
  | "mutual-exclusion"
  | "failure-releases"
  | "defect-releases"
  | "interrupt-releases"
  | "waiter-interruptible"
  | "pass-through"
  | "timeout-try-again"

export interface NodeLockContractOptions {
  /** Runs of the property laws (live: each run costs real sleeps). */
  readonly propertyRuns?: number
}

class Boom {
  readonly _tag = "Boom"
  readonly n: number
  constructor(n: number) {
    this.n = n
  }
}

/** The lock is free: taking it again succeeds well within a second. */
const assertFree = (lock: NodeLock["Service"]) =>
  Effect.gen(function* () {
    const exit = yield* Effect.exit(lock.withLock(Effect.succeed("free")).pipe(Effect.timeout("1 second")))
    assert.isTrue(Exit.isSuccess(exit), "the lock was released")
  })

/** What a law may ask of the interpreter: how long a waiter waits before giving up. */
export interface NodeLockLayerOptions {
  readonly timeout?: Duration.Input
}

export const nodeLockContract = (
  name: string,
  makeLayer: (options: NodeLockLayerOptions) => Layer.Layer<NodeLock>,
  opts: NodeLockContractOptions = {}
) =>
  describe(`NodeLock contract: ${name}`, () => {
    const runs = opts.propertyRuns ?? 25
    const withLock = <A, E>(
      f: (lock: NodeLock["Service"]) => Effect.Effect<A, E>,
      options: NodeLockLayerOptions = {}
    ) =>
      Effect.gen(function* () {
        return yield* f(yield* NodeLock)
      }).pipe(Effect.provide(makeLayer(options)))
    const law = (
      title: string,
      id: NodeLockLaw,
      body: (lock: NodeLock["Service"]) => Effect.Effect<void, unknown>
    ) => it.live(`${title} [${id}]`, () => withLock(body))

    it.live("concurrent sections never overlap, and each gets its own result [mutual-exclusion]", () =>
      Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(
            fc.array(fc.integer({ min: 0, max: 8 }), { minLength: 1, maxLength: 6 }),
            (durations) =>
              Effect.runPromise(
                withLock((lock) =>
                  Effect.gen(function* () {
                    let inside = 0
                    let most = 0
                    const section = (i: number, ms: number) =>
                      lock.withLock(
                        Effect.gen(function* () {
                          inside++
                          most = Math.max(most, inside)
                          yield* Effect.sleep(`${ms} millis`)
                          yield* Effect.yieldNow
                          inside--
                          return i
                        })
                      )
                    const results = yield* Effect.all(
                      durations.map((ms, i) => section(i, ms)),
                      { concurrency: "unbounded" }
                    )
                    assert.deepStrictEqual(
                      results,
                      durations.map((_, i) => i)
                    )
                    assert.strictEqual(most, 1, "at most one section inside at a time")
                    assert.strictEqual(inside, 0)
                  })
                )
              )
          ),
          { numRuns: runs }
        )
      )
    )

    law("a failing section fails with its error and releases the lock", "failure-releases", (lock) =>
      Effect.gen(function* () {
        const err = yield* Effect.flip(lock.withLock(Effect.fail(new Boom(7))))
        assert.instanceOf(err, Boom)
        yield* assertFree(lock)
      })
    )

    law("a section that dies releases the lock, and the defect passes through", "defect-releases", (lock) =>
      Effect.gen(function* () {
        const exit = yield* Effect.exit(lock.withLock(Effect.die("kaput")))
        assert.isTrue(Exit.isFailure(exit))
        assert.isTrue(Exit.hasDies(exit), "a defect stays a defect")
        yield* assertFree(lock)
      })
    )

    law("an interrupted section releases the lock", "interrupt-releases", (lock) =>
      Effect.gen(function* () {
        const timedOut = yield* Effect.exit(lock.withLock(Effect.never).pipe(Effect.timeout("30 millis")))
        assert.isTrue(Exit.isFailure(timedOut))
        const fiber = yield* Effect.forkChild(lock.withLock(Effect.never))
        yield* Effect.sleep("20 millis")
        yield* Fiber.interrupt(fiber)
        yield* assertFree(lock)
      })
    )

    law(
      "a waiter can be interrupted; it never runs, and the lock stays usable",
      "waiter-interruptible",
      (lock) =>
        Effect.gen(function* () {
          let release!: () => void
          const held = new Promise<void>((r) => {
            release = r
          })
          let waiterRan = false
          const first = yield* Effect.forkChild(lock.withLock(Effect.promise(() => held)))
          yield* Effect.sleep("20 millis")
          const waiter = yield* Effect.exit(
            lock
              .withLock(
                Effect.sync(() => {
                  waiterRan = true
                })
              )
              .pipe(Effect.timeout("50 millis"))
          )
          assert.isTrue(Exit.isFailure(waiter))
          release()
          yield* Fiber.join(first)
          yield* assertFree(lock)
          assert.isFalse(waiterRan)
        })
    )

    it.live(
      "a wait that outlives the timeout fails with 11 (try again later), never 101, and the holder keeps the lock [timeout-try-again]",
      () =>
        withLock(
          (lock) =>
            Effect.gen(function* () {
              let release!: () => void
              const held = new Promise<void>((r) => {
                release = r
              })
              let waiterRan = false
              const holder = yield* Effect.forkChild(
                lock.withLock(
                  Effect.as(
                    Effect.promise(() => held),
                    "holder done"
                  )
                )
              )
              yield* Effect.sleep("20 millis")
              const refused = yield* Effect.flip(
                lock.withLock(
                  Effect.sync(() => {
                    waiterRan = true
                  })
                )
              )
              assert.instanceOf(refused, TryAgainLater)
              assert.strictEqual((refused as TryAgainLater).code, 11)
              assert.isFalse(waiterRan, "a waiter that gave up never runs")
              release()
              assert.strictEqual(yield* Fiber.join(holder), "holder done")
              yield* assertFree(lock)
            }),
          { timeout: "100 millis" }
        )
    )

    it.live("results and errors pass through unchanged [pass-through]", () =>
      Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(
            fc.oneof(
              fc.anything().map((v) => ({ ok: v })),
              fc.integer().map((n) => ({ err: n }))
            ),
            (outcome) =>
              Effect.runPromise(
                withLock((lock) =>
                  Effect.gen(function* () {
                    if ("ok" in outcome) {
                      const got = yield* lock.withLock(Effect.succeed(outcome.ok))
                      // The very value (SameValue: NaN is NaN, -0 stays -0, objects by identity).
                      assert.isTrue(Object.is(got, outcome.ok), "the section's result passes through")
                    } else {
                      const err = yield* Effect.flip(lock.withLock(Effect.fail(new Boom(outcome.err))))
                      assert.instanceOf(err, Boom)
                      assert.strictEqual((err as Boom).n, outcome.err)
                    }
                  })
                )
              )
          ),
          { numRuns: runs * 4 }
        )
      )
    )
  })
