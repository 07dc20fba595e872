/**
 * `tenant-routing-wrapper inspect`: every managed entry of both backends (or one), joined with the
 * attachment records so hashed owner tags are shown as the attachment they belong to.
 */
import { Effect } from "effect"
import type { Backend } from "../domain/cni/Config.ts"
import type { AttachmentRecord } from "../domain/datapath/AttachmentRecord.ts"
import { AttachmentStore } from "../domain/datapath/AttachmentStore.ts"
import { BACKENDS } from "../domain/datapath/Entries.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import { formatMark } from "../domain/net/Mark.ts"

export interface InspectedEntry {
  readonly backend: Backend
  readonly network: string | null
  readonly containerId: string | null
  readonly ifname: string | null
  readonly ip: string
  readonly tenant: string | null
  readonly mark: string
}

const attachmentOfTag = (tag: string, records: ReadonlyArray<AttachmentRecord>) => {
  const r = records.find((x) => x.tag === tag)
  if (r !== undefined)
    return { network: r.network, containerId: r.containerId, ifname: r.ifname, tenant: r.tenant }
  if (tag.startsWith("h:")) return { network: null, containerId: null, ifname: null, tenant: null }
  const [network = null, containerId = null, ifname = null] = tag.split("/")
  return { network, containerId, ifname, tenant: null }
}

export const inspect = Effect.fn("inspect")(function* (stateDir: string, only: Backend | undefined) {
  const nf = yield* Netfilter
  const store = yield* AttachmentStore
  const records = yield* store.list(stateDir, undefined)
  const out: Array<InspectedEntry> = []
  for (const backend of only === undefined ? BACKENDS : [only]) {
    for (const e of yield* nf.list(backend)) {
      out.push({ backend, ...attachmentOfTag(e.owner, records), ip: e.ip, mark: formatMark(e.mark) })
    }
  }
  return out
})

/** The human form: one aligned row per entry. */
export const formatInspect = (entries: ReadonlyArray<InspectedEntry>): string => {
  const header = ["BACKEND", "NETWORK", "CONTAINER", "IFNAME", "IP", "TENANT", "MARK"]
  const rows = entries.map((e) => [
    e.backend,
    e.network ?? "?",
    (e.containerId ?? "?").slice(0, 12),
    e.ifname ?? "?",
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
