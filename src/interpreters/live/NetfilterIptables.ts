/**
 * The `iptables` backend (docs/DESIGN.md §4, the original plugin's mechanism): chain `TRW-MARK` in the
 * mangle table of `iptables` and `ip6tables`, jumped to from the first rule of PREROUTING, one rule
 * per pod IP:
 *
 *   -A TRW-MARK -s 10.0.0.5/32 -m conntrack --ctdir ORIGINAL -m comment --comment "OWNER" -j MARK --set-xmark 0x10/0x30
 *
 * `--set-xmark MARK/MASK` means `mark = (mark & ~MASK) ^ MARK`; since MARK ⊆ MASK that is
 * `(mark & ~MASK) | MARK`, the plugin's semantics. iptables-save (1.8.9) lists the rule exactly as
 * above: IPv6 compressed and lowercased, marks in lowercase hex without padding, and the comment in
 * double quotes only when it holds a character outside `[A-Za-z0-9_-]` (so `net/c1/eth0` and
 * `h:…` are quoted, a bare `abc` is not; both forms are parsed).
 *
 * This file is pure: it reads `iptables-save -t mangle` text and renders one `iptables-restore
 * --noflush` batch per family. NetfilterLive.ts runs the commands. Limits:
 * - Only lines of chain TRW-MARK that match our rule shape exactly (RULE below) are entries; any
 *   other rule someone adds to the chain is ignored: neither listed nor removed.
 * - The chain is created with `-N`, never declared with `:TRW-MARK - [0:0]`: under `--noflush` a
 *   declaration flushes an existing chain (every pod would lose its mark), while `-N` on an existing
 *   chain fails the batch, so a batch built from a stale view fails instead of wiping.
 * - The chain and the jump stay in place when the last entry goes (an empty chain costs nothing, and
 *   deleting them would cost a kernel RCU grace period and race with the next ADD).
 * - Never change CHAIN: entries installed by an older version must still be found by a newer one.
 */
import type { Changes, MarkEntry } from "../../domain/datapath/Entries.ts"
import { TAG_PATTERN } from "../../domain/datapath/Owner.ts"
import { canonicalIp, type Family, parseIp } from "../../domain/net/Ip.ts"
import { and32, formatMark } from "../../domain/net/Mark.ts"

export const CHAIN = "TRW-MARK"
export const TABLE = "mangle"
const JUMP = `-A PREROUTING -j ${CHAIN}`

/** The tools per family; listing is one `*-save` call, a change one `*-restore` call. */
export const saveCommand = (family: Family): readonly [string, ReadonlyArray<string>] => [
  family === 4 ? "iptables-save" : "ip6tables-save",
  ["-t", TABLE]
]
export const restoreCommand = (family: Family): readonly [string, ReadonlyArray<string>] => [
  family === 4 ? "iptables-restore" : "ip6tables-restore",
  // -w: wait for the xtables lock (iptables-legacy) instead of failing; --noflush: keep everything else.
  ["-w", "--noflush"]
]

/** What one family's mangle table holds of ours. */
export interface IptablesState {
  readonly family: Family
  readonly chainExists: boolean
  /** PREROUTING's first rule is the jump to TRW-MARK. */
  readonly jumpFirst: boolean
  /** How many jumps to TRW-MARK PREROUTING holds (anywhere). */
  readonly jumps: number
  /** Our rules in chain order, duplicates kept (each needs its own `-D`); IPs in canonical text. */
  readonly rules: ReadonlyArray<MarkEntry>
}

// Owner tags in every form Owner.ts recognises (old hashed ones included, so upgrades find them).
const TAG = TAG_PATTERN
const RULE = new RegExp(
  `^-A ${CHAIN} -s ([0-9a-fA-F:.]+)/(32|128) -m conntrack --ctdir ORIGINAL -m comment --comment (?:"(${TAG})"|(${TAG})) -j MARK --set-xmark (0x[0-9a-f]{1,8})/(0x[0-9a-f]{1,8})$`
)

/** Parses `iptables-save -t mangle` (or ip6tables-save) output. */
export const parseSave = (family: Family, text: string): IptablesState => {
  let table = ""
  let chainExists = false
  let firstPrerouting: string | undefined
  let jumps = 0
  const rules: Array<MarkEntry> = []
  for (const line of text.split("\n")) {
    if (line.startsWith("*")) table = line.slice(1)
    if (table !== TABLE) continue
    if (line.startsWith(`:${CHAIN} `)) chainExists = true
    else if (line.startsWith("-A PREROUTING ")) {
      firstPrerouting ??= line
      if (line === JUMP) jumps++
    } else if (line.startsWith(`-A ${CHAIN} `)) {
      const m = RULE.exec(line)
      if (m === null) continue
      const [, ipText, prefix, quoted, bare, markHex, maskHex] = m as unknown as [
        string,
        string,
        string,
        string | undefined,
        string | undefined,
        string,
        string
      ]
      const owner = (quoted ?? bare) as string
      const ip = parseIp(ipText)
      const mark = Number.parseInt(markHex, 16)
      const mask = Number.parseInt(maskHex, 16)
      // Only rules whose semantics are ours: the right family and prefix, and MARK ⊆ MASK
      // (otherwise --set-xmark would toggle bits rather than set them).
      if (ip === undefined || ip.family !== family || prefix !== (family === 4 ? "32" : "128")) continue
      if (mark === 0 || and32(mark, mask) !== mark) continue
      rules.push({ ip: ip.text, family, mark, mask, owner })
    }
  }
  return { family, chainExists, jumpFirst: firstPrerouting === JUMP, jumps, rules }
}

/**
 * Equal exactly when two rules are the same rule, for a rule whose IP is canonical (the state's);
 * `ruleKey` first makes it so (a change's entries may spell an IPv6 address another way). Lists are
 * matched through sets of these: with 5000 rules a pairwise comparison cost a second per call, and
 * canonicalising every rule of the state again a few milliseconds.
 */
const canonicalKey = (e: MarkEntry): string => `${e.ip}\n${e.mark}\n${e.mask}\n${e.owner}`
const ruleKey = (e: MarkEntry): string => canonicalKey({ ...e, ip: canonicalIp(e.ip) })

const dedupe = (
  entries: ReadonlyArray<MarkEntry>,
  key: (e: MarkEntry) => string = ruleKey
): ReadonlyArray<MarkEntry> => {
  const seen = new Set<string>()
  return entries.filter((e) => {
    const k = key(e)
    if (seen.has(k)) return false
    seen.add(k)
    return true
  })
}

/** The rule's match and target, as iptables-save prints it (so `-D` matches it exactly). */
export const ruleSpec = (e: MarkEntry): string =>
  `-s ${canonicalIp(e.ip)}/${e.family === 4 ? 32 : 128} -m conntrack --ctdir ORIGINAL -m comment --comment "${e.owner}" -j MARK --set-xmark ${formatMark(e.mark)}/${formatMark(e.mask)}`

/**
 * The `iptables-restore --noflush` batch that takes one family from `state` through `changes`, or
 * undefined when there is nothing to do. Removals are "if present" (a rule we do not see is not
 * deleted, so the batch cannot fail on it); additions already present are skipped (no duplicates).
 * Entries must be valid and of `state.family` (NetfilterLive checks).
 */
const planBatch = (state: IptablesState, changes: Changes) => {
  const copies = new Map<string, number>()
  for (const r of state.rules) {
    const key = canonicalKey(r)
    copies.set(key, (copies.get(key) ?? 0) + 1)
  }
  const removals = dedupe(changes.remove).filter((e) => copies.has(ruleKey(e)))
  const removed = new Set(removals.map(ruleKey))
  const remaining = state.rules.filter((r) => !removed.has(canonicalKey(r)))
  const additions = dedupe(changes.add).filter((e) => removed.has(ruleKey(e)) || !copies.has(ruleKey(e)))
  /** How many times `e` is in the chain (each copy needs its own `-D`). */
  const copiesOf = (e: MarkEntry): number => copies.get(ruleKey(e)) ?? 0
  return { removals, remaining, additions, copiesOf }
}

export const renderBatch = (state: IptablesState, changes: Changes): string | undefined => {
  const { removals, additions, copiesOf } = planBatch(state, changes)
  if (removals.length === 0 && additions.length === 0) return undefined
  const lines = [`*${TABLE}`]
  if (additions.length > 0) {
    if (!state.chainExists) lines.push(`-N ${CHAIN}`)
    // The jump must be PREROUTING's first rule, so no earlier rule (Cilium, Calico, kube-proxy) can
    // accept or mark the packet before us. Moving it is one atomic batch with the rest.
    if (!state.jumpFirst) {
      for (let i = 0; i < state.jumps; i++) lines.push(`-D PREROUTING -j ${CHAIN}`)
      lines.push(`-I PREROUTING 1 -j ${CHAIN}`)
    }
  }
  for (const e of removals) {
    for (let i = 0; i < copiesOf(e); i++) lines.push(`-D ${CHAIN} ${ruleSpec(e)}`)
  }
  for (const e of additions) lines.push(`-A ${CHAIN} ${ruleSpec(e)}`)
  lines.push("COMMIT", "")
  return lines.join("\n")
}

/** Our entries as the service lists them (a rule present twice is one entry). */
export const entriesOf = (state: IptablesState): ReadonlyArray<MarkEntry> => dedupe(state.rules, canonicalKey)

/** The family's state after the batch for `changes` succeeded (what the next listing would show). */
export const evolve = (state: IptablesState, changes: Changes): IptablesState => {
  const { removals, remaining, additions } = planBatch(state, changes)
  if (removals.length === 0 && additions.length === 0) return state
  const adding = additions.length > 0
  return {
    family: state.family,
    chainExists: state.chainExists || adding,
    jumpFirst: state.jumpFirst || adding,
    jumps: adding && !state.jumpFirst ? 1 : state.jumps,
    rules: [...remaining, ...additions.map((e) => ({ ...e, ip: canonicalIp(e.ip) }))]
  }
}
