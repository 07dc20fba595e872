/**
 * The per-attachment state records (AttachmentRecord.ts) under a state directory. Writes are atomic
 * (a reader sees the old record or the new one); removing a missing record succeeds.
 *
 * A record that cannot be read as the record of the attachment its place names (empty, not JSON,
 * not a record, or naming another attachment) fails `read` of that attachment only. `list` sets it
 * aside instead: it is skipped, reported in `skipped` with its attachment and the reason, and
 * left in place, so one bad file never stops GC, `inspect` or `doctor` for the rest. GC removes it
 * once its attachment is no longer valid; ADD overwrites it and DEL removes it.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type { StateFailed } from "../cni/Errors.ts"
import type { AttachmentRecord } from "./AttachmentRecord.ts"
import type { Attachment } from "./Owner.ts"

/** A record `list` skipped: whose place it holds, where, and why it cannot be read. */
export interface UnreadableRecord {
  readonly attachment: Attachment
  readonly file: string
  readonly reason: string
}

export interface RecordListing {
  readonly records: ReadonlyArray<AttachmentRecord>
  readonly skipped: ReadonlyArray<UnreadableRecord>
}

export class AttachmentStore extends Context.Service<
  AttachmentStore,
  {
    /** The record of one attachment, if ADD wrote one; StateFailed when it is unreadable. */
    readonly read: (
      stateDir: string,
      a: Attachment
    ) => Effect.Effect<AttachmentRecord | undefined, StateFailed>
    /** Replaces the attachment's record atomically. */
    readonly write: (stateDir: string, record: AttachmentRecord) => Effect.Effect<void, StateFailed>
    /** Removes the attachment's record (and its container directory when empty); absent is fine. */
    readonly remove: (stateDir: string, a: Attachment) => Effect.Effect<void, StateFailed>
    /**
     * Every record of a network, or of all networks when `network` is undefined, and the unreadable
     * ones set aside; fails only when the directories themselves cannot be read.
     */
    readonly list: (
      stateDir: string,
      network: string | undefined
    ) => Effect.Effect<RecordListing, StateFailed>
  }
>()("tenant-routing/AttachmentStore") {}
