/**
 * The `nftables` backend (docs/DESIGN.md §4): `table inet tenant_routing`, chain `prerouting` (filter
 * hook at mangle priority), one set per mark and family (`m10_v4`, `m10_v6`) whose elements are the
 * pod IPs commented with their owner tag, and one rule per set:
 *
 *   ct direction original ip saddr @m10_v4 meta mark set meta mark & 0xffffffcf | 0x10
 *
 * A packet costs one set lookup per mark, not one rule per pod. nft 1.0.x cannot OR a map lookup
 * into a masked mark, hence sets.
 *
 * This file is pure: it decodes `nft -j list table inet tenant_routing` with a Schema and renders
 * one `nft -f -` transaction; NetfilterLive.ts runs the commands. Facts checked against nft 1.0.6:
 * - nft folds the mark into the AND constant when listing: `& 0xffffffcf | 0x10` is listed as
 *   `& 0xffffffdf | 0x00000010` (JSON `4294967263`, `16`), and `& 0xffffffef | 0x10` as plain
 *   `meta mark | 0x00000010` (no `&` at all). Since MARK ⊆ MASK, MASK = ~AND | MARK recovers the
 *   mask from either form; `~AND` alone would not.
 * - `add table/chain/set` of an existing object is a no-op, `add element` of an existing element
 *   keeps its old comment, `delete element` of a missing one fails the transaction, and a delete
 *   then add of one element in a transaction replaces it (IP reuse by a new owner).
 * Choices and limits:
 * - The transaction deletes only elements the listing shows with the entry's owner (mask is a
 *   property of the mark's rule, not of an element, so removal matches ip, mark and owner). A plain
 *   `delete element` fails on a stale view instead of silently succeeding the way the stateless
 *   `add element` + `delete element` idiom would, and NetfilterLive then retries on a fresh listing.
 * - An IP has at most one entry per mark: adding it for another owner under the same mark takes the
 *   element over. All entries of a mark share the mask of that mark's rule; adding one with another
 *   mask rewrites the rule (`replace rule ... handle`), e.g. after `markMask` changed.
 * - Empty sets and their rules stay (a lookup in an empty set is nearly free; deleting them would
 *   cost an RCU grace period and force the next ADD of that mark to recreate both).
 * - Elements without an owner-tag comment, sets not named `m<hex>_v4|6`, and rules of any other
 *   shape are not ours: ignored, neither listed nor removed. An element of a set whose rule is
 *   missing is listed with mask = mark, so DEL and GC still clean it up.
 * - Never change these names: upgrades depend on them.
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import type { Changes, MarkEntry } from "../../domain/datapath/Entries.ts"
import { isOwnerTag } from "../../domain/datapath/Owner.ts"
import { canonicalIp, type Family, parseIp } from "../../domain/net/Ip.ts"
import { formatMark, not32, or32 } from "../../domain/net/Mark.ts"

export const TABLE = "tenant_routing"
export const CHAIN = "prerouting"
const T = `inet ${TABLE}`

/** One command lists both families; one `nft -f -` applies a change of both atomically. */
export const listCommand: readonly [string, ReadonlyArray<string>] = [
  "nft",
  ["-j", "list", "table", "inet", TABLE]
]
export const applyCommand: readonly [string, ReadonlyArray<string>] = ["nft", ["-f", "-"]]

/**
 * `nft list table` of a missing table exits 1 with exactly this (children run with LC_ALL=C). Matched
 * whole, so that a wrapper's own ENOENT (`ip netns exec` of a missing netns or binary) is not taken
 * for an empty table.
 */
export const isTableMissing = (exitCode: number, stderr: string): boolean =>
  exitCode === 1 && stderr.startsWith(`Error: No such file or directory\nlist table inet ${TABLE}\n`)

export const setName = (mark: number, family: Family): string => `m${(mark >>> 0).toString(16)}_v${family}`

const SET_NAME = /^m([1-9a-f][0-9a-f]{0,7})_v([46])$/
const parseSetName = (name: string): { readonly mark: number; readonly family: Family } | undefined => {
  const m = SET_NAME.exec(name)
  return m === null ? undefined : { mark: Number.parseInt(m[1] as string, 16), family: m[2] === "4" ? 4 : 6 }
}

// --- The JSON listing, as nft 1.0.6 prints it (`nft -j list table inet tenant_routing`). -----------

const Uint32 = Schema.Number.check(Schema.isUint32())
const MetaMark = Schema.Struct({ meta: Schema.Struct({ key: Schema.Literal("mark") }) })
const CtOriginal = Schema.Struct({
  match: Schema.Struct({
    op: Schema.Literal("=="),
    left: Schema.Struct({ ct: Schema.Struct({ key: Schema.Literal("direction") }) }),
    right: Schema.Literal("original")
  })
})
const SaddrInSet = Schema.Struct({
  match: Schema.Struct({
    op: Schema.Literal("=="),
    left: Schema.Struct({
      payload: Schema.Struct({ protocol: Schema.Literals(["ip", "ip6"]), field: Schema.Literal("saddr") })
    }),
    right: Schema.String.check(Schema.isPattern(/^@/))
  })
})
/** `meta mark & AND | OR`, or `meta mark | OR` when nft folded AND to all ones. */
const MarkValue = Schema.Union([
  Schema.Struct({ "|": Schema.Tuple([Schema.Struct({ "&": Schema.Tuple([MetaMark, Uint32]) }), Uint32]) }),
  Schema.Struct({ "|": Schema.Tuple([MetaMark, Uint32]) })
])
const SetMark = Schema.Struct({ mangle: Schema.Struct({ key: MetaMark, value: MarkValue }) })

const TableItem = Schema.Struct({
  table: Schema.Struct({ family: Schema.Literal("inet"), name: Schema.Literal(TABLE) })
})
const ChainItem = Schema.Struct({
  chain: Schema.Struct({
    family: Schema.Literal("inet"),
    table: Schema.Literal(TABLE),
    name: Schema.Literal(CHAIN)
  })
})
const SetItem = Schema.Struct({
  set: Schema.Struct({
    family: Schema.Literal("inet"),
    table: Schema.Literal(TABLE),
    name: Schema.String,
    type: Schema.Literals(["ipv4_addr", "ipv6_addr"]),
    // Elements are decoded one by one below, so one foreign element cannot hide the others.
    elem: Schema.optionalKey(Schema.Array(Schema.Unknown))
  })
})
const Element = Schema.Struct({ elem: Schema.Struct({ val: Schema.String, comment: Schema.String }) })
const RuleItem = Schema.Struct({
  rule: Schema.Struct({
    family: Schema.Literal("inet"),
    table: Schema.Literal(TABLE),
    chain: Schema.Literal(CHAIN),
    handle: Schema.Number,
    expr: Schema.Tuple([CtOriginal, SaddrInSet, SetMark])
  })
})
const Listing = Schema.fromJsonString(Schema.Struct({ nftables: Schema.Array(Schema.Unknown) }))

export interface NftSet {
  readonly name: string
  readonly family: Family
  readonly mark: number
  /** ip (canonical) → owner tag */
  readonly elements: ReadonlyMap<string, string>
}
export interface NftRule {
  readonly handle: number
  readonly set: string
  readonly family: Family
  /** The AND constant as the kernel holds it (0xffffffff when nft printed no `&`). */
  readonly and: number
  readonly or: number
}
export interface NftState {
  readonly tableExists: boolean
  readonly chainExists: boolean
  readonly sets: ReadonlyArray<NftSet>
  readonly rules: ReadonlyArray<NftRule>
}

export const EMPTY: NftState = { tableExists: false, chainExists: false, sets: [], rules: [] }

const asTable = Schema.decodeUnknownOption(TableItem)
const asChain = Schema.decodeUnknownOption(ChainItem)
const asSet = Schema.decodeUnknownOption(SetItem)
const asElement = Schema.decodeUnknownOption(Element)
const asRule = Schema.decodeUnknownOption(RuleItem)

/** Decodes the JSON listing; items that are not ours in exactly our shape are skipped. */
export const decodeListing = (json: string): Effect.Effect<NftState, Schema.SchemaError> =>
  Effect.map(Schema.decodeUnknownEffect(Listing)(json), ({ nftables }) => {
    let tableExists = false
    let chainExists = false
    const sets: Array<NftSet> = []
    const rules: Array<NftRule> = []
    for (const item of nftables) {
      if (Option.isSome(asTable(item))) tableExists = true
      if (Option.isSome(asChain(item))) chainExists = true
      const set = asSet(item)
      if (Option.isSome(set)) {
        const s = set.value.set
        const named = parseSetName(s.name)
        if (named === undefined || s.type !== (named.family === 4 ? "ipv4_addr" : "ipv6_addr")) continue
        const elements = new Map<string, string>()
        for (const raw of s.elem ?? []) {
          const el = asElement(raw)
          if (Option.isNone(el) || !isOwnerTag(el.value.elem.comment)) continue
          const ip = parseIp(el.value.elem.val)
          if (ip !== undefined && ip.family === named.family) elements.set(ip.text, el.value.elem.comment)
        }
        sets.push({ name: s.name, family: named.family, mark: named.mark, elements })
      }
      const rule = asRule(item)
      if (Option.isSome(rule)) {
        const [, saddr, setMark] = rule.value.rule.expr
        const v = setMark.mangle.value["|"]
        const [left, or] = v
        const and = "&" in left ? left["&"][1] : 0xffffffff
        rules.push({
          handle: rule.value.rule.handle,
          set: saddr.match.right.slice(1),
          family: saddr.match.left.payload.protocol === "ip" ? 4 : 6,
          and,
          or
        })
      }
    }
    return { tableExists, chainExists, sets, rules }
  })

/** The rule that marks for `set`: same family and the set's own mark as the OR value. */
const ruleOf = (state: NftState, set: NftSet): NftRule | undefined =>
  state.rules.find((r) => r.set === set.name && r.family === set.family && r.or === set.mark)

/** MASK = ~AND | MARK (see the file comment for why not just ~AND). */
const maskOf = (rule: NftRule | undefined, mark: number): number =>
  rule === undefined ? mark : or32(not32(rule.and), mark)

/** Our entries as the service lists them. */
export const entriesOf = (state: NftState): ReadonlyArray<MarkEntry> =>
  state.sets.flatMap((set) => {
    const mask = maskOf(ruleOf(state, set), set.mark)
    return [...set.elements].map(([ip, owner]) => ({ ip, family: set.family, mark: set.mark, mask, owner }))
  })

export const ruleText = (family: Family, mark: number, mask: number): string =>
  `ct direction original ${family === 4 ? "ip" : "ip6"} saddr @${setName(mark, family)} meta mark set meta mark & ${formatMark(not32(mask))} | ${formatMark(mark)}`

const CHAIN_SPEC = "{ type filter hook prerouting priority mangle; policy accept; }"

const key = (e: MarkEntry): string => `${setName(e.mark, e.family)} ${canonicalIp(e.ip)}`

/** What one transaction does: the element deletions and additions, and whether it adds structure. */
interface Transaction {
  readonly deletes: ReadonlyArray<MarkEntry>
  readonly adds: ReadonlyArray<MarkEntry>
  /** Table, chain, set or rule lines (objects whose handles a later listing must reveal). */
  readonly structure: ReadonlyArray<string>
}

const planTransaction = (state: NftState, changes: Changes): Result.Result<Transaction, string> => {
  const sets = new Map(state.sets.map((s) => [s.name, s]))
  const ownerIn = (e: MarkEntry) => sets.get(setName(e.mark, e.family))?.elements.get(canonicalIp(e.ip))

  const deletes = new Map<string, MarkEntry>()
  for (const e of changes.remove) if (ownerIn(e) === e.owner) deletes.set(key(e), e)

  // One mask per mark and family: it lives in that set's single rule.
  const masks = new Map<string, MarkEntry>()
  for (const e of changes.add) {
    const other = masks.get(setName(e.mark, e.family))
    if (other !== undefined && other.mask !== e.mask) {
      return Result.fail(
        `mark ${formatMark(e.mark)} added with two masks (${formatMark(other.mask)}, ${formatMark(e.mask)})`
      )
    }
    masks.set(setName(e.mark, e.family), e)
  }

  const adds = new Map<string, MarkEntry>()
  for (const e of changes.add) {
    const current = ownerIn(e)
    const deleted = deletes.has(key(e))
    if (current === e.owner && !deleted) continue
    // Another owner's element for this IP and mark, not removed by the caller: take it over.
    if (current !== undefined && !deleted) deletes.set(key(e), { ...e, owner: current })
    adds.set(key(e), e)
  }

  const head: Array<string> = []
  const newSets: Array<string> = []
  const ruleLines: Array<string> = []
  for (const [name, e] of masks) {
    const set = sets.get(name)
    const rule = set === undefined ? undefined : ruleOf(state, set)
    if (set === undefined)
      newSets.push(`add set ${T} ${name} { type ${e.family === 4 ? "ipv4_addr" : "ipv6_addr"}; }`)
    if (rule === undefined) ruleLines.push(`add rule ${T} ${CHAIN} ${ruleText(e.family, e.mark, e.mask)}`)
    else if (maskOf(rule, e.mark) !== e.mask) {
      ruleLines.push(`replace rule ${T} ${CHAIN} handle ${rule.handle} ${ruleText(e.family, e.mark, e.mask)}`)
    }
  }
  if (newSets.length + ruleLines.length > 0) {
    if (!state.tableExists) head.push(`add table ${T}`)
    if (!state.chainExists) head.push(`add chain ${T} ${CHAIN} ${CHAIN_SPEC}`)
  }
  return Result.succeed({
    deletes: [...deletes.values()],
    adds: [...adds.values()],
    structure: [...head, ...newSets, ...ruleLines]
  })
}

/**
 * The `nft -f -` transaction taking `state` through `changes` (both families), undefined when
 * nothing needs doing, or a failure when two additions give one mark two masks. Entries must be
 * valid (NetfilterLive checks).
 */
export const renderTransaction = (
  state: NftState,
  changes: Changes
): Result.Result<string | undefined, string> =>
  Result.map(planTransaction(state, changes), (tx) => {
    const grouped = (entries: Iterable<MarkEntry>, verb: string, render: (e: MarkEntry) => string) => {
      const bySet = new Map<string, Array<string>>()
      for (const e of entries) {
        const name = setName(e.mark, e.family)
        bySet.set(name, [...(bySet.get(name) ?? []), render(e)])
      }
      return [...bySet].map(([name, items]) => `${verb} element ${T} ${name} { ${items.join(", ")} }`)
    }
    const lines = [
      ...tx.structure,
      ...grouped(tx.deletes, "delete", (e) => canonicalIp(e.ip)),
      ...grouped(tx.adds, "add", (e) => `${canonicalIp(e.ip)} comment "${e.owner}"`)
    ]
    return lines.length === 0 ? undefined : `${lines.join("\n")}\n`
  })

/**
 * The state after the transaction for `changes` succeeded, when it can be known without listing:
 * only element changes. A transaction that adds a table, chain, set or rule gives undefined (the
 * new rule's handle is the kernel's to choose; the next listing reads it).
 */
export const evolve = (state: NftState, changes: Changes): NftState | undefined => {
  const tx = planTransaction(state, changes)
  if (Result.isFailure(tx) || tx.success.structure.length > 0) return undefined
  const sets = state.sets.map((set) => {
    const elements = new Map(set.elements)
    for (const e of tx.success.deletes)
      if (setName(e.mark, e.family) === set.name) elements.delete(canonicalIp(e.ip))
    for (const e of tx.success.adds)
      if (setName(e.mark, e.family) === set.name) elements.set(canonicalIp(e.ip), e.owner)
    return { ...set, elements }
  })
  return { ...state, sets }
}
