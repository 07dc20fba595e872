/**
 * The node lock as a one-permit semaphore: concurrent fibers in one test exclude each other exactly
 * as concurrent plugin processes do on a node. Like the live lock, a waiter gives up after `timeout`
 * with TryAgainLater (code 11), so laws see the same failure a busy node gives.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Semaphore from "effect/Semaphore"
import { TryAgainLater } from "../../domain/cni/Errors.ts"
import { NodeLock } from "../../domain/datapath/NodeLock.ts"

export interface NodeLockMemoryOptions {
  /** How long a waiter waits before giving up. Default 30 s, as the live lock. */
  readonly timeout?: Duration.Input
}

/** One lock: every call given this service excludes every other, as on one node. */
export const makeUnsafe = (options: NodeLockMemoryOptions = {}): NodeLock["Service"] => {
  const sem = Semaphore.makeUnsafe(1)
  const timeout = options.timeout ?? "30 seconds"
  return NodeLock.of({
    withLock: (self) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(
          restore(
            sem.take(1).pipe(
              Effect.timeoutOrElse({
                duration: timeout,
                orElse: () =>
                  Effect.fail(
                    new TryAgainLater({
                      msg: `node lock still held after ${Duration.format(Duration.fromInputUnsafe(timeout))}`
                    })
                  )
              })
            )
          ),
          () => restore(self).pipe(Effect.ensuring(sem.release(1)))
        )
      )
  })
}

/** A fresh lock each time the layer is built. */
export const layer = Layer.sync(NodeLock, () => makeUnsafe())

export const layerWith = (options: NodeLockMemoryOptions): Layer.Layer<NodeLock> =>
  Layer.sync(NodeLock, () => makeUnsafe(options))
