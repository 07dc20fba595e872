/**
 * DEL (docs/DESIGN.md §5): this attachment's entries and record go first, so an IP handed to the next pod
 * is never marked for this one; then the delegate's DEL. Best effort by the CNI spec ("plugins should
 * generally complete a DEL action without error even if some resources are missing"): nothing present
 * is success, no prevResult is fine, and the Kubernetes API is never consulted.
 */
import * as Effect from "effect/Effect"
import { ownerTag } from "../domain/datapath/Owner.ts"
import { attachmentOf, type Call, type Outcome } from "./Call.ts"
import { detach } from "./datapath.ts"
import { delegateDel, negotiate } from "./delegation.ts"

export const cmdDel = Effect.fn("cmdDel")(function* (call: Call) {
  const a = attachmentOf(call)
  const removed = yield* detach(call.config, a)
  if (call.config.delegate !== undefined) {
    const version = yield* negotiate(call)
    yield* delegateDel(call, version, call.config.prevResult)
  }
  return { output: undefined, log: { owner: ownerTag(a), removed } } satisfies Outcome
})
