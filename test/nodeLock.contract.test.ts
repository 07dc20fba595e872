/**
 * The NodeLock contract against the memory semaphore (the lock of every interleaving test) and the
 * live abstract-socket lock with a random name per layer, so the two exclude the same way.
 * test/nodeLock.live.test.ts covers what only the socket has (other processes, SIGKILL).
 */
import { randomBytes } from "node:crypto"
import * as NodeLockSocket from "../src/interpreters/live/NodeLockSocket.ts"
import * as NodeLockMemory from "../src/interpreters/memory/NodeLockMemory.ts"
import { nodeLockContract } from "./conformance/nodeLockContract.ts"

nodeLockContract("memory", ({ timeout }) => NodeLockMemory.layerWith({ timeout: timeout ?? "5 seconds" }), {
  propertyRuns: 50
})
nodeLockContract(
  "live socket",
  ({ timeout }) =>
    NodeLockSocket.layer({
      name: `trw-test-lock-${randomBytes(6).toString("hex")}`,
      timeout: timeout ?? "5 seconds"
    }),
  { propertyRuns: 15 }
)
