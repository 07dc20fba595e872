/**
 * The node lock as a one-permit semaphore: concurrent fibers in one test exclude each other exactly
 * as concurrent plugin processes do on a node.
 */
import { Effect, Layer, Semaphore } from "effect"
import { NodeLock } from "../../domain/datapath/NodeLock.ts"

export const NodeLockMemory = {
  layer: Layer.effect(
    NodeLock,
    Effect.map(Semaphore.make(1), (sem) => NodeLock.of({ withLock: (self) => sem.withPermits(1)(self) }))
  )
}
