/**
 * STATUS (CNI 1.1): can this node serve ADD? Our part is the netfilter backend the config would use;
 * the delegate answers for itself when it speaks 1.1.0.
 */
import * as Effect from "effect/Effect"
import { atLeast, GC_STATUS_SINCE } from "../domain/cni/CniVersion.ts"
import { IncompatibleVersion, NotAvailable } from "../domain/cni/Errors.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import { activeBackend, type Call, type Outcome } from "./Call.ts"
import { delegateSpeaks11, delegateStatus } from "./delegation.ts"

export const cmdStatus = Effect.fn("cmdStatus")(function* (call: Call) {
  const { config } = call
  if (!atLeast(config.cniVersion, GC_STATUS_SINCE)) {
    return yield* new IncompatibleVersion({
      msg: `STATUS needs cniVersion 1.1.0, the config says ${config.cniVersion}`
    })
  }
  const backend = yield* activeBackend(config)
  const nf = yield* Netfilter
  if (!(yield* nf.usable(backend))) {
    return yield* new NotAvailable({ msg: `the ${backend} backend cannot be used on this node` })
  }
  if (yield* delegateSpeaks11(call)) yield* delegateStatus(call)
  return { output: undefined, log: { backend } } satisfies Outcome
})
