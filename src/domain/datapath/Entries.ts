/**
 * The planner: which netfilter entries an attachment should have, and the smallest change from what
 * the kernel has now to that (docs/DESIGN.md §4). Interpreters only apply these changes; every decision
 * about what to add, keep or take away is made here, where it can be read and property-tested.
 *
 * An entry marks packets of connections initiated from `ip` with `mark` under `mask`, tagged with
 * the owner tag of the attachment that installed it.
 */
import { canonicalIp, type Family, parseIp } from "../net/Ip.ts"
import type { Tenant } from "../tenancy/Tenant.ts"

export interface MarkEntry {
  readonly ip: string
  readonly family: Family
  readonly mark: number
  readonly mask: number
  readonly owner: string
}

export interface Changes {
  readonly remove: ReadonlyArray<MarkEntry>
  readonly add: ReadonlyArray<MarkEntry>
}

export const NO_CHANGES: Changes = { remove: [], add: [] }
export const isEmpty = (c: Changes): boolean => c.remove.length === 0 && c.add.length === 0

export const sameEntry = (a: MarkEntry, b: MarkEntry): boolean =>
  a.ip === b.ip && a.mark === b.mark && a.mask === b.mask && a.owner === b.owner

const has = (list: ReadonlyArray<MarkEntry>, e: MarkEntry) => list.some((x) => sameEntry(x, e))

/**
 * Equal exactly when `sameEntry` holds (no field holds a newline). Whole listings are compared
 * through sets of these: a node holds thousands of entries, and a pairwise comparison of two
 * listings cost 0.3 s at 5000.
 */
const keyOf = (e: MarkEntry): string => `${e.ip}\n${e.mark}\n${e.mask}\n${e.owner}`
const keysOf = (list: ReadonlyArray<MarkEntry>): Set<string> => new Set(list.map(keyOf))

/** The entries a pod with these IPs and this tenant (or none) should carry. */
export const desiredEntries = (
  owner: string,
  ips: ReadonlyArray<string>,
  tenant: Tenant | null,
  mask: number
): ReadonlyArray<MarkEntry> =>
  tenant === null
    ? []
    : ips.flatMap((ip) => {
        const parsed = parseIp(ip)
        return parsed === undefined
          ? []
          : [{ ip: parsed.text, family: parsed.family, mark: tenant.mark, mask, owner }]
      })

/**
 * ADD's change to one backend. The pod's IPs lose every entry of another owner (a stale entry from
 * a crashed call must never mark the new pod), in both backends and whether or not the pod has a
 * tenant; this owner's entries are made exactly `desired` in the active backend and removed from
 * the other (so switching backends leaks nothing).
 */
export const planAttach = (
  current: ReadonlyArray<MarkEntry>,
  owner: string,
  podIps: ReadonlyArray<string>,
  desired: ReadonlyArray<MarkEntry>,
  active: boolean
): Changes => {
  const ips = new Set(podIps.map(canonicalIp))
  const want = active ? desired : []
  const remove = current.filter((e) => (e.owner === owner ? !has(want, e) : ips.has(e.ip)))
  const add = want.filter((d) => !has(current, d))
  return { remove, add }
}

/** DEL's change: every entry carrying one of this attachment's tags (Owner.ts `tagsOf`) goes. */
export const planDetach = (current: ReadonlyArray<MarkEntry>, tags: ReadonlyArray<string>): Changes => ({
  remove: current.filter((e) => tags.includes(e.owner)),
  add: []
})

/** GC's change: entries whose owner is one of the given (stale) owner tags. */
export const planRemoveOwners = (
  current: ReadonlyArray<MarkEntry>,
  owners: ReadonlySet<string>
): Changes => ({
  remove: current.filter((e) => owners.has(e.owner)),
  add: []
})

/** The change that undoes `c` (ADD's rollback restores the kernel exactly). */
export const invert = (c: Changes): Changes => ({ remove: c.add, add: c.remove })

/** Splits a change by address family: each family is one kernel transaction. */
export const byFamily = (c: Changes): ReadonlyArray<readonly [Family, Changes]> =>
  ([4, 6] as const)
    .map(
      (f) =>
        [
          f,
          { remove: c.remove.filter((e) => e.family === f), add: c.add.filter((e) => e.family === f) }
        ] as const
    )
    .filter(([, ch]) => !isEmpty(ch))

const canonicalEntry = (e: MarkEntry): MarkEntry => ({ ...e, ip: canonicalIp(e.ip) })

/**
 * What a backend holds after `c` is applied to `current`, as every backend applies it: removals of
 * entries present, then additions of entries absent, IPs as the kernel prints them. The group commit
 * (Committer.ts) runs one call's plan after another over this, without touching the kernel.
 */
export const applyChanges = (current: ReadonlyArray<MarkEntry>, c: Changes): ReadonlyArray<MarkEntry> => {
  const removed = keysOf(c.remove.map(canonicalEntry))
  const kept = current.filter((e) => !removed.has(keyOf(e)))
  const present = keysOf(kept)
  const added: Array<MarkEntry> = []
  for (const e of c.add.map(canonicalEntry)) {
    const key = keyOf(e)
    if (present.has(key)) continue
    present.add(key)
    added.push(e)
  }
  return [...kept, ...added]
}

/** The smallest change taking `before` to `after` (one transaction for a whole group of calls). */
export const diff = (before: ReadonlyArray<MarkEntry>, after: ReadonlyArray<MarkEntry>): Changes => {
  const inBefore = keysOf(before)
  const inAfter = keysOf(after)
  return {
    remove: before.filter((e) => !inAfter.has(keyOf(e))),
    add: after.filter((e) => !inBefore.has(keyOf(e)))
  }
}
