/**
 * `tenant-routing inspect`: every managed entry of both backends (or one), joined with the
 * attachment records so hashed owner tags are shown as the attachment they belong to, with the pod
 * the record names (null when it names none: no CNI_ARGS pod, an older record, or no record). An
 * unreadable record is reported (a warning with its reason on stderr) and the rest is still shown.
 */
import * as Effect from "effect/Effect"
import type { Backend } from "../domain/cni/Config.ts"
import { BACKENDS } from "../domain/cni/Config.ts"
import { AttachmentStore, type RecordListing } from "../domain/datapath/AttachmentStore.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import { parseTag, tagsOf } from "../domain/datapath/Owner.ts"
import { formatMark } from "../domain/net/Mark.ts"

export interface InspectedEntry {
  readonly backend: Backend
  readonly network: string | null
  readonly containerId: string | null
  readonly ifname: string | null
  readonly ip: string
  readonly tenant: string | null
  readonly mark: string
  readonly pod: InspectedPod | null
}

export interface InspectedPod {
  readonly namespace: string
  readonly name: string
  readonly uid: string | null
}

const NOBODY = { network: null, containerId: null, ifname: null, tenant: null, pod: null }

/**
 * Whose entry this is: the record carrying the tag, else an unreadable record whose place names an
 * attachment with that tag (the tenant is then unknown), else what a plain tag says by itself.
 */
const attachmentOfTag = (tag: string, listing: RecordListing) => {
  const r = listing.records.find((x) => x.tag === tag)
  if (r !== undefined)
    return {
      network: r.network,
      containerId: r.containerId,
      ifname: r.ifname,
      tenant: r.tenant,
      pod:
        r.pod === undefined ? null : { namespace: r.pod.namespace, name: r.pod.name, uid: r.pod.uid ?? null }
    }
  const bad = listing.skipped.find((u) => tagsOf(u.attachment).includes(tag))
  const parsed = parseTag(tag)
  const a = bad?.attachment ?? (parsed?.form === "plain" ? parsed.attachment : undefined)
  return a === undefined
    ? NOBODY
    : { network: a.network, containerId: a.containerId, ifname: a.ifname, tenant: null, pod: null }
}

export const inspect = Effect.fn("inspect")(function* (stateDir: string, only: Backend | undefined) {
  const nf = yield* Netfilter
  const store = yield* AttachmentStore
  const listing = yield* store.list(stateDir, undefined)
  // One bad record hides only its own tenant; the reason goes to stderr with the rest served.
  for (const u of listing.skipped) {
    yield* Effect.logWarning("unreadable state record skipped", { file: u.file, reason: u.reason })
  }
  const out: Array<InspectedEntry> = []
  for (const backend of only === undefined ? BACKENDS : [only]) {
    for (const e of yield* nf.list(backend)) {
      out.push({ backend, ...attachmentOfTag(e.owner, listing), ip: e.ip, mark: formatMark(e.mark) })
    }
  }
  return out
})

/** The human form: one aligned row per entry. */
export const formatInspect = (entries: ReadonlyArray<InspectedEntry>): string => {
  const header = ["BACKEND", "NETWORK", "CONTAINER", "IFNAME", "POD", "IP", "TENANT", "MARK"]
  const rows = entries.map((e) => [
    e.backend,
    e.network ?? "?",
    (e.containerId ?? "?").slice(0, 12),
    e.ifname ?? "?",
    e.pod === null ? "-" : `${e.pod.namespace}/${e.pod.name}`,
    e.ip,
    e.tenant ?? "-",
    e.mark
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  return [header, ...rows]
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd()
    )
    .join("\n")
}
