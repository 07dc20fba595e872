/**
 * The per-attachment state records (AttachmentRecord.ts) under a state directory. Writes are atomic
 * (a reader sees the old record or the new one); removing a missing record succeeds.
 */
import { Context, type Effect } from "effect"
import type { StateFailed } from "../cni/Errors.ts"
import type { AttachmentRecord } from "./AttachmentRecord.ts"
import type { Attachment } from "./Owner.ts"

export class AttachmentStore extends Context.Service<
  AttachmentStore,
  {
    /** The record of one attachment, if ADD wrote one. */
    readonly read: (
      stateDir: string,
      a: Attachment
    ) => Effect.Effect<AttachmentRecord | undefined, StateFailed>
    /** Replaces the attachment's record atomically. */
    readonly write: (stateDir: string, record: AttachmentRecord) => Effect.Effect<void, StateFailed>
    /** Removes the attachment's record (and its container directory when empty); absent is fine. */
    readonly remove: (stateDir: string, a: Attachment) => Effect.Effect<void, StateFailed>
    /** Every record of a network, or of all networks when `network` is undefined. */
    readonly list: (
      stateDir: string,
      network: string | undefined
    ) => Effect.Effect<ReadonlyArray<AttachmentRecord>, StateFailed>
  }
>()("tenant-routing/AttachmentStore") {}
