/**
 * GC's decision (docs/DESIGN.md §5): which entries and records of one network are stale, given the
 * runtime's valid attachments. Pure, so the rule can be read and property-tested; datapath.ts only
 * applies it (with `planRemoveOwners`, Entries.ts) under the node lock.
 *
 * An entry is judged by its tag alone, so a record that is gone (deleted, or never written after a
 * crash) or unreadable does not hide it (Owner.ts):
 * - plain and hashed tags name their network: this network's are stale unless they are the tag of
 *   a valid attachment (computed from the valid list, current or legacy form);
 * - legacy hashed tags name no network: stale only through a stale record of this network naming
 *   them, and kept otherwise (`unattributed` lists those without any such record, for the log and
 *   `doctor`).
 * A valid attachment's tags are never stale, whatever a record claims; other networks' entries are
 * never touched (short of a 64-bit SHA-256 collision of two network names).
 */
import type { AttachmentRecord } from "./AttachmentRecord.ts"
import type { MarkEntry } from "./Entries.ts"
import { type Attachment, belongsTo, parseTag, tagsOf } from "./Owner.ts"

export interface CollectInput {
  readonly network: string
  readonly valid: ReadonlyArray<{ readonly containerId: string; readonly ifname: string }>
  /** This network's readable records. */
  readonly records: ReadonlyArray<AttachmentRecord>
  /** This network's unreadable records, by the attachment their place names. */
  readonly unreadable: ReadonlyArray<Attachment>
  /** Every entry of every backend. */
  readonly entries: ReadonlyArray<MarkEntry>
}

export interface Collection {
  /** Owner tags whose entries go, in every backend. */
  readonly staleTags: ReadonlySet<string>
  /** Attachments whose record (readable or not) goes. */
  readonly staleRecords: ReadonlyArray<Attachment>
  /** Legacy hashed tags that no valid attachment and no record of this network names: kept, reported. */
  readonly unattributed: ReadonlyArray<string>
}

const key = (a: { readonly containerId: string; readonly ifname: string }) => `${a.containerId}/${a.ifname}`

export const planCollect = (input: CollectInput): Collection => {
  const { network } = input
  const validKeys = new Set(input.valid.map(key))
  const validTags = new Set(input.valid.flatMap((v) => tagsOf({ network, ...v })))
  const ours = (a: Attachment) => a.network === network
  const staleRecords = [
    ...input.records.filter((r) => ours(r) && !validKeys.has(key(r))),
    ...input.unreadable.filter((a) => ours(a) && !validKeys.has(key(a)))
  ].map(({ network, containerId, ifname }) => ({ network, containerId, ifname }))

  const staleTags = new Set<string>()
  for (const r of input.records) {
    if (ours(r) && !validKeys.has(key(r)) && !validTags.has(r.tag)) staleTags.add(r.tag)
  }
  for (const e of input.entries) {
    if (belongsTo(e.owner, network) === true && !validTags.has(e.owner)) staleTags.add(e.owner)
  }
  const recorded = new Set(input.records.map((r) => r.tag))
  const unattributed = [
    ...new Set(
      input.entries
        .map((e) => e.owner)
        .filter((t) => parseTag(t)?.form === "legacy-hashed" && !recorded.has(t) && !validTags.has(t))
    )
  ]
  return { staleTags, staleRecords, unattributed }
}
