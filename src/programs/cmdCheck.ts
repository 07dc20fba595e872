/**
 * CHECK (docs/DESIGN.md §5): the delegate's own CHECK, then the state record against the kernel, without
 * the Kubernetes API — a changed annotation takes effect at the next pod start, not here.
 */
import * as Effect from "effect/Effect"
import { podIps } from "../domain/cni/CniResult.ts"
import { atLeast, CHECK_SINCE } from "../domain/cni/CniVersion.ts"
import { Drift, IncompatibleVersion, InvalidConfig } from "../domain/cni/Errors.ts"
import { AttachmentStore } from "../domain/datapath/AttachmentStore.ts"
import { findDrift } from "../domain/datapath/Check.ts"
import { NodeLock } from "../domain/datapath/NodeLock.ts"
import { ownerTag } from "../domain/datapath/Owner.ts"
import { attachmentOf, type Call, type Outcome } from "./Call.ts"
import { listAll } from "./datapath.ts"
import { delegateCheck, negotiate } from "./delegation.ts"

export const cmdCheck = Effect.fn("cmdCheck")(function* (call: Call) {
  const { config } = call
  if (!atLeast(config.cniVersion, CHECK_SINCE)) {
    return yield* new IncompatibleVersion({
      msg: `CHECK needs cniVersion 0.4.0 or later, the config says ${config.cniVersion}`
    })
  }
  const prev = config.prevResult
  if (prev === undefined) {
    return yield* new InvalidConfig({
      msg: "invalid network config: CHECK needs prevResult",
      issues: [{ path: "prevResult", message: "required for CHECK" }]
    })
  }
  if (config.delegate !== undefined) {
    const version = yield* negotiate(call)
    yield* delegateCheck(call, version, prev)
  }
  const a = attachmentOf(call)
  const store = yield* AttachmentStore
  const lock = yield* NodeLock
  const [record, entries] = yield* lock.withLock(Effect.all([store.read(config.stateDir, a), listAll()]))
  // The tag ADD wrote: an attachment added by an older version may carry a legacy hashed one.
  const tag = record?.tag ?? ownerTag(a)
  const differences = findDrift(record, tag, podIps(prev), entries)
  if (differences.length > 0) {
    return yield* new Drift({
      // The differences themselves are the error's details (CniError.ts).
      msg: `tenant marks drifted for ${tag}: ${differences.length} difference${differences.length === 1 ? "" : "s"} between the state record and the kernel`,
      differences
    })
  }
  return { output: undefined, log: { owner: tag, tenant: record?.tenant ?? null } } satisfies Outcome
})
