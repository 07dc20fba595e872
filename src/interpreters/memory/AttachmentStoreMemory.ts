/**
 * State records in a map keyed like the live file layout, with injectable write failures. `corrupt`
 * holds raw texts in a record's place (an empty or torn file, a foreign document); they are decoded
 * with the same Schema and checks as the files store, so both report unreadable records alike.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { StateFailed } from "../../domain/cni/Errors.ts"
import { AttachmentRecord } from "../../domain/datapath/AttachmentRecord.ts"
import { AttachmentStore, type UnreadableRecord } from "../../domain/datapath/AttachmentStore.ts"
import type { Attachment } from "../../domain/datapath/Owner.ts"
import type { FaultPlan } from "./Faults.ts"

const decodeRecord = Schema.decodeUnknownResult(Schema.fromJsonString(AttachmentRecord))

export class Records {
  readonly byPath = new Map<string, AttachmentRecord>()
  /** path → raw text that stands where a record should be. */
  readonly corrupt = new Map<string, { readonly attachment: Attachment; readonly text: string }>()
  static path(stateDir: string, a: Attachment): string {
    return `${stateDir}/${a.network}/${a.containerId}/${a.ifname}.json`
  }
  /** Puts `text` in the place of the attachment's record, as a crash or a stray writer would. */
  setCorrupt(stateDir: string, a: Attachment, text: string): void {
    const p = Records.path(stateDir, a)
    this.byPath.delete(p)
    this.corrupt.set(p, { attachment: a, text })
  }
  snapshot(): ReadonlyArray<readonly [string, AttachmentRecord]> {
    return [...this.byPath.entries()].sort(([a], [b]) => a.localeCompare(b))
  }
}

/** Why the text in `file` is not the record of `a`, or the record. */
const decodeCorrupt = (
  file: string,
  a: Attachment,
  text: string
): Result.Result<AttachmentRecord, string> => {
  const r = decodeRecord(text)
  if (Result.isFailure(r)) return Result.fail(`undecodable state record ${file}: ${r.failure.message}`)
  const rec = r.success
  return rec.network === a.network && rec.containerId === a.containerId && rec.ifname === a.ifname
    ? Result.succeed(rec)
    : Result.fail(`state record ${file} names another attachment`)
}

export const layer = (records: Records, faults: FaultPlan): Layer.Layer<AttachmentStore> =>
  Layer.succeed(
    AttachmentStore,
    AttachmentStore.of({
      read: (dir, a) =>
        Effect.suspend(() => {
          const p = Records.path(dir, a)
          const bad = records.corrupt.get(p)
          if (bad === undefined) return Effect.succeed(records.byPath.get(p))
          const r = decodeCorrupt(p, a, bad.text)
          return Result.isSuccess(r)
            ? Effect.succeed(r.success)
            : Effect.fail(new StateFailed({ msg: r.failure }))
        }),
      write: (dir, r) =>
        faults
          .hit("store.write", () => new StateFailed({ msg: "disk full (injected)" }))
          .pipe(
            Effect.andThen(
              Effect.sync(() => {
                records.corrupt.delete(Records.path(dir, r))
                records.byPath.set(Records.path(dir, r), r)
              })
            )
          ),
      remove: (dir, a) =>
        Effect.sync(() => {
          records.byPath.delete(Records.path(dir, a))
          records.corrupt.delete(Records.path(dir, a))
        }),
      list: (dir, network) =>
        Effect.sync(() => {
          const inScope = (p: string, a: Attachment) =>
            p.startsWith(`${dir}/`) && (network === undefined || a.network === network)
          const good = [...records.byPath.entries()].filter(([p, r]) => inScope(p, r)).map(([, r]) => r)
          const skipped: Array<UnreadableRecord> = []
          for (const [file, { attachment, text }] of records.corrupt) {
            if (!inScope(file, attachment)) continue
            const r = decodeCorrupt(file, attachment, text)
            if (Result.isSuccess(r)) good.push(r.success)
            else skipped.push({ attachment, file, reason: r.failure })
          }
          return { records: good, skipped }
        })
    })
  )
