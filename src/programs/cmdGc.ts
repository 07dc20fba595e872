/**
 * GC (CNI 1.1): remove every entry and record of this network whose attachment is not in
 * `cni.dev/valid-attachments`, in both backends; other networks are never touched. Then the
 * delegate's GC, when it speaks 1.1.0.
 */
import * as Effect from "effect/Effect"
import { atLeast, GC_STATUS_SINCE } from "../domain/cni/CniVersion.ts"
import { VALID_ATTACHMENTS_KEY } from "../domain/cni/Config.ts"
import { IncompatibleVersion, InvalidConfig } from "../domain/cni/Errors.ts"
import type { Call, Outcome } from "./Call.ts"
import { collect } from "./datapath.ts"
import { delegateGc, delegateSpeaks11 } from "./delegation.ts"

export const cmdGc = Effect.fn("cmdGc")(function* (call: Call) {
  const { config } = call
  if (!atLeast(config.cniVersion, GC_STATUS_SINCE)) {
    return yield* new IncompatibleVersion({
      msg: `GC needs cniVersion 1.1.0, the config says ${config.cniVersion}`
    })
  }
  const valid = config.validAttachments
  if (valid === undefined) {
    return yield* new InvalidConfig({
      msg: `invalid network config: GC needs ${VALID_ATTACHMENTS_KEY}`,
      issues: [{ path: VALID_ATTACHMENTS_KEY, message: "required for GC" }]
    })
  }
  const removed = yield* collect(config, valid)
  // Reported, not fatal: one bad record must not stop GC for the whole network.
  for (const u of removed.skipped) {
    yield* Effect.logWarning("unreadable state record skipped", { file: u.file, reason: u.reason })
  }
  if (removed.unattributed.length > 0) {
    yield* Effect.logWarning("legacy hashed entries without a record are left in place (doctor lists them)", {
      tags: removed.unattributed
    })
  }
  if (yield* delegateSpeaks11(call)) {
    yield* delegateGc(call, { [VALID_ATTACHMENTS_KEY]: call.raw[VALID_ATTACHMENTS_KEY] })
  }
  return {
    output: undefined,
    log: {
      removedEntries: removed.entries,
      removedRecords: removed.records,
      unreadableRecords: removed.skipped.map((u) => u.file)
    }
  } satisfies Outcome
})
