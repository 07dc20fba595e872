/**
 * CHECK's comparison (docs/DESIGN.md §5): does the kernel hold exactly what ADD recorded for this
 * attachment? Entries are compared as data (ip, owner, mark), never as rule text, so a rule that was
 * re-rendered by another tool version is not drift while a missing or foreign one is.
 */

import type { Backend } from "../cni/Config.ts"
import { canonicalIp } from "../net/Ip.ts"
import { formatMark } from "../net/Mark.ts"
import type { AttachmentRecord } from "./AttachmentRecord.ts"
import type { MarkEntry } from "./Entries.ts"

export type BackendEntries = ReadonlyArray<readonly [Backend, ReadonlyArray<MarkEntry>]>

/** Every difference found, in words an operator can act on; empty means no drift. */
export const findDrift = (
  record: AttachmentRecord | undefined,
  tag: string,
  podIps: ReadonlyArray<string>,
  entries: BackendEntries
): ReadonlyArray<string> => {
  const all = entries.flatMap(([backend, list]) => list.map((e) => ({ backend, ...e })))
  const differences: Array<string> = []
  if (record === undefined) {
    const own = all.filter((e) => e.owner === tag)
    if (own.length > 0)
      differences.push(`no state record, but ${own.length} entries of this attachment exist`)
    return differences
  }
  const recorded = new Set(record.ips.map(canonicalIp))
  for (const raw of podIps) {
    const ip = canonicalIp(raw)
    if (!recorded.has(ip)) differences.push(`${ip}: in prevResult but not in the state record`)
    const on = all.filter((e) => e.ip === ip)
    const foreign = on.filter((e) => e.owner !== tag)
    for (const f of foreign)
      differences.push(`${ip}: entry of another owner ${f.owner} (${f.backend}, mark ${formatMark(f.mark)})`)
    const own = on.filter((e) => e.owner === tag)
    if (record.mark === null) {
      for (const o of own)
        differences.push(`${ip}: untagged pod carries mark ${formatMark(o.mark)} (${o.backend})`)
      continue
    }
    if (own.length === 0)
      differences.push(`${ip}: missing ${record.backend} entry with mark ${formatMark(record.mark)}`)
    for (const o of own) {
      if (o.mark !== record.mark || o.mask !== record.mask) {
        differences.push(
          `${ip}: mark ${formatMark(o.mark)}/${formatMark(o.mask)} instead of ${formatMark(record.mark)}/${formatMark(record.mask)}`
        )
      } else if (o.backend !== record.backend) {
        differences.push(`${ip}: entry in ${o.backend}, recorded in ${record.backend}`)
      }
    }
    if (own.length > 1) differences.push(`${ip}: ${own.length} entries of this attachment instead of one`)
  }
  return differences
}
