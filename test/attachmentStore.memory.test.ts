/**
 * The AttachmentStore contract against the memory store used by the program tests; the files store
 * runs the same laws in test/attachmentStore.live.test.ts.
 */

import * as AttachmentStoreMemory from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { Records } from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { FaultPlan } from "../src/interpreters/memory/Faults.ts"
import { attachmentStoreContract } from "./conformance/attachmentStoreContract.ts"

let n = 0
let records = new Records()
attachmentStoreContract(
  "memory",
  () => {
    records = new Records()
    return AttachmentStoreMemory.layer(records, new FaultPlan())
  },
  {
    stateDir: () => `/state-${n++}`,
    corrupt: (dir, a, text) => records.setCorrupt(dir, a, text)
  }
)
