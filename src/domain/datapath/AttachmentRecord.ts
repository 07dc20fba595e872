/**
 * What ADD installed for one attachment, kept on disk at
 * `<stateDir>/<network>/<containerId>/<ifname>.json` (docs/DESIGN.md §4). CHECK compares it with the
 * kernel, GC finds hashed owners through it, and `inspect` names tenants from it.
 */
import { Schema } from "effect"
import type { Backend } from "../cni/Config.ts"
import type { MarkEntry } from "./Entries.ts"
import { type Attachment, ownerOf, ownerTag } from "./Owner.ts"

export const AttachmentRecord = Schema.Struct({
  owner: Schema.String.annotate({ description: "<network>/<containerId>/<ifname>, never hashed" }),
  tag: Schema.String.annotate({ description: "the owner tag in the kernel (hashed when long)" }),
  network: Schema.String,
  containerId: Schema.String,
  ifname: Schema.String,
  tenant: Schema.NullOr(Schema.String).annotate({ description: "null: the pod is not tenant-routed" }),
  mark: Schema.NullOr(Schema.Number),
  mask: Schema.Number,
  ips: Schema.Array(Schema.String),
  backend: Schema.Literals(["iptables", "nftables"])
})
export type AttachmentRecord = typeof AttachmentRecord.Type

export const makeRecord = (
  a: Attachment,
  tenant: { readonly name: string; readonly mark: number } | null,
  mask: number,
  ips: ReadonlyArray<string>,
  backend: Backend
): AttachmentRecord => ({
  owner: ownerOf(a),
  tag: ownerTag(a),
  network: a.network,
  containerId: a.containerId,
  ifname: a.ifname,
  tenant: tenant?.name ?? null,
  mark: tenant?.mark ?? null,
  mask,
  ips: [...ips],
  backend
})

/** The entries a record says the kernel should hold. */
export const recordEntries = (r: AttachmentRecord): ReadonlyArray<Omit<MarkEntry, "family">> =>
  r.mark === null ? [] : r.ips.map((ip) => ({ ip, mark: r.mark as number, mask: r.mask, owner: r.tag }))
