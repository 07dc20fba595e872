/**
 * What ADD installed for one attachment, kept on disk at
 * `<stateDir>/<network>/<containerId>/<ifname>.json` (docs/DESIGN.md §4). CHECK compares it with the
 * kernel, GC finds hashed owners through it, and `inspect` names tenants and pods from it.
 *
 * `pod` is the Kubernetes pod the runtime named in CNI_ARGS (K8S_POD_NAMESPACE, K8S_POD_NAME,
 * K8S_POD_UID); absent when it named none, and in records written before it existed, which still
 * decode. The uid tells a pod from a later one of the same name.
 */
import * as Schema from "effect/Schema"
import { BACKENDS, type Backend } from "../cni/Config.ts"
import type { MarkEntry } from "./Entries.ts"
import { type Attachment, ownerOf, ownerTag } from "./Owner.ts"

export const PodRef = Schema.Struct({
  namespace: Schema.String,
  name: Schema.String,
  uid: Schema.optionalKey(Schema.String).annotate({ description: "absent when the runtime passed none" })
})
export type PodRef = typeof PodRef.Type

/** The pod a call's CNI_ARGS name: both namespace and name, or none. */
export const podRefOf = (env: {
  readonly podNamespace: string | undefined
  readonly podName: string | undefined
  readonly podUid: string | undefined
}): PodRef | undefined =>
  env.podNamespace === undefined || env.podName === undefined
    ? undefined
    : {
        namespace: env.podNamespace,
        name: env.podName,
        ...(env.podUid === undefined ? {} : { uid: env.podUid })
      }

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
  backend: Schema.Literals(BACKENDS),
  pod: Schema.optionalKey(PodRef)
})
export type AttachmentRecord = typeof AttachmentRecord.Type

export const makeRecord = (
  a: Attachment,
  tenant: { readonly name: string; readonly mark: number } | null,
  mask: number,
  ips: ReadonlyArray<string>,
  backend: Backend,
  pod?: PodRef
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
  backend,
  ...(pod === undefined ? {} : { pod })
})

/** The entries a record says the kernel should hold. */
export const recordEntries = (r: AttachmentRecord): ReadonlyArray<Omit<MarkEntry, "family">> =>
  r.mark === null ? [] : r.ips.map((ip) => ({ ip, mark: r.mark as number, mask: r.mask, owner: r.tag }))
