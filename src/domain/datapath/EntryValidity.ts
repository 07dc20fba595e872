/**
 * Which marking entries a backend may be asked to install or remove at all. Every Netfilter
 * interpreter refuses a change holding any entry this rejects, before touching anything: the live
 * ones because the entry would render to a wrong or injected rule, the memory model so that property
 * tests fail where a node would (e.g. a mask computed with a signed `|` comes out negative).
 */
import { parseIp } from "../net/Ip.ts"
import { and32, isMarkValue, MAX_MARK } from "../net/Mark.ts"
import type { MarkEntry } from "./Entries.ts"
import { isOwnerTag } from "./Owner.ts"

/** Why an entry cannot be applied, if it cannot. */
export const invalidEntry = (e: MarkEntry): string | undefined => {
  const ip = parseIp(e.ip)
  if (ip === undefined || ip.family !== e.family)
    return `${JSON.stringify(e.ip)} is not an IPv${e.family} address`
  if (!isMarkValue(e.mark) || !Number.isInteger(e.mask) || e.mask < 0 || e.mask > MAX_MARK)
    return "mark or mask out of range"
  if (and32(e.mark, e.mask) !== e.mark) return "mark has bits outside its mask"
  // The owner goes into rule text: anything but a tag Owner.ts writes could inject syntax.
  if (!isOwnerTag(e.owner)) return `${JSON.stringify(e.owner)} is not an owner tag`
  return undefined
}

/** The first reason a change cannot be applied, naming the entry's backend-independent fault. */
export const invalidChange = (changes: {
  readonly remove: ReadonlyArray<MarkEntry>
  readonly add: ReadonlyArray<MarkEntry>
}): string | undefined => {
  for (const e of [...changes.remove, ...changes.add]) {
    const why = invalidEntry(e)
    if (why !== undefined) return why
  }
  return undefined
}
