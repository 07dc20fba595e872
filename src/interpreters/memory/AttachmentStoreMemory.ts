/**
 * State records in a map keyed like the live file layout, with injectable write failures.
 */
import { Effect, Layer } from "effect"
import { StateFailed } from "../../domain/cni/Errors.ts"
import type { AttachmentRecord } from "../../domain/datapath/AttachmentRecord.ts"
import { AttachmentStore } from "../../domain/datapath/AttachmentStore.ts"
import type { Attachment } from "../../domain/datapath/Owner.ts"
import type { FaultPlan } from "./Faults.ts"

export class Records {
  readonly byPath = new Map<string, AttachmentRecord>()
  static path(stateDir: string, a: Attachment): string {
    return `${stateDir}/${a.network}/${a.containerId}/${a.ifname}.json`
  }
  snapshot(): ReadonlyArray<readonly [string, AttachmentRecord]> {
    return [...this.byPath.entries()].sort(([a], [b]) => a.localeCompare(b))
  }
}

export const AttachmentStoreMemory = {
  layer: (records: Records, faults: FaultPlan): Layer.Layer<AttachmentStore> =>
    Layer.succeed(
      AttachmentStore,
      AttachmentStore.of({
        read: (dir, a) => Effect.sync(() => records.byPath.get(Records.path(dir, a))),
        write: (dir, r) =>
          faults
            .hit("store.write", () => new StateFailed({ msg: "disk full (injected)" }))
            .pipe(Effect.andThen(Effect.sync(() => void records.byPath.set(Records.path(dir, r), r)))),
        remove: (dir, a) => Effect.sync(() => void records.byPath.delete(Records.path(dir, a))),
        list: (dir, network) =>
          Effect.sync(() =>
            [...records.byPath.entries()]
              .filter(([p, r]) => p.startsWith(`${dir}/`) && (network === undefined || r.network === network))
              .map(([, r]) => r)
          )
      })
    )
}
