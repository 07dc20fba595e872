/**
 * The planner's functions by known answers (Entries.ts): each field sameEntry compares, what
 * desiredEntries drops and canonicalises, planAttach on the inactive backend, byFamily's split,
 * applyChanges' canonical IPs and de-duplication, diff, and the planners' empty cases.
 */
import { describe, it } from "@effect/vitest"
import { assert } from "vitest"
import {
  applyChanges,
  byFamily,
  desiredEntries,
  diff,
  invert,
  isEmpty,
  type MarkEntry,
  NO_CHANGES,
  planAttach,
  planDetach,
  planRemoveOwners,
  sameEntry
} from "../src/domain/datapath/Entries.ts"

const e = (ip: string, owner = "n/c/eth0", mark = 0x10, mask = 0x30): MarkEntry => ({
  ip,
  family: ip.includes(":") ? 6 : 4,
  mark,
  mask,
  owner
})
const tenant = { name: "t", mark: 0x10 }

describe("Entries by known answers", () => {
  it("sameEntry compares ip, mark, mask and owner, each on its own", () => {
    const a = e("10.0.0.1")
    assert.isTrue(sameEntry(a, { ...a }))
    assert.isFalse(sameEntry(a, { ...a, ip: "10.0.0.2" }))
    assert.isFalse(sameEntry(a, { ...a, mark: 0x20 }))
    assert.isFalse(sameEntry(a, { ...a, mask: 0xff }))
    assert.isFalse(sameEntry(a, { ...a, owner: "n/d/eth0" }))
  })

  it("isEmpty is true only when both sides are empty", () => {
    assert.isTrue(isEmpty(NO_CHANGES))
    assert.isFalse(isEmpty({ remove: [e("10.0.0.1")], add: [] }))
    assert.isFalse(isEmpty({ remove: [], add: [e("10.0.0.1")] }))
  })

  it("desiredEntries: none without a tenant, canonical IPs with their family, unparsable IPs dropped", () => {
    assert.deepStrictEqual(desiredEntries("o", ["10.0.0.1"], null, 0x30), [])
    assert.deepStrictEqual(desiredEntries("o", ["10.0.0.1", "bogus", "FD00:0:0::1"], tenant, 0x30), [
      { ip: "10.0.0.1", family: 4, mark: 0x10, mask: 0x30, owner: "o" },
      { ip: "fd00::1", family: 6, mark: 0x10, mask: 0x30, owner: "o" }
    ])
  })

  it("planAttach on the inactive backend removes the owner's entries and others' on the pod's IPs, adds nothing", () => {
    const current = [
      e("10.0.0.1"),
      e("10.0.0.9", "other/x/eth0"),
      e("10.0.0.1", "other/y/eth0"),
      e("10.0.0.5", "n/c/eth0")
    ]
    const desired = desiredEntries("n/c/eth0", ["10.0.0.1"], tenant, 0x30)
    const inactive = planAttach(current, "n/c/eth0", ["10.0.0.1"], desired, false)
    assert.deepStrictEqual(inactive.add, [])
    assert.deepStrictEqual(inactive.remove, [e("10.0.0.1"), e("10.0.0.1", "other/y/eth0"), e("10.0.0.5")])
    const active = planAttach(current, "n/c/eth0", ["10.0.0.1"], desired, true)
    assert.deepStrictEqual(active.add, [])
    assert.deepStrictEqual(active.remove, [e("10.0.0.1", "other/y/eth0"), e("10.0.0.5")])
  })

  it("planAttach matches the pod's IPs canonically", () => {
    const current = [e("fd00::1", "other/y/eth0")]
    const plan = planAttach(current, "n/c/eth0", ["FD00:0::1"], [], true)
    assert.deepStrictEqual(plan.remove, current)
  })

  it("planDetach and planRemoveOwners take exactly the named owners' entries", () => {
    const current = [e("10.0.0.1", "a"), e("10.0.0.2", "b"), e("10.0.0.3", "c")]
    assert.deepStrictEqual(planDetach(current, ["a", "c"]), { remove: [current[0]!, current[2]!], add: [] })
    assert.deepStrictEqual(planDetach(current, []), NO_CHANGES)
    assert.deepStrictEqual(planRemoveOwners(current, new Set(["b"])), { remove: [current[1]!], add: [] })
    assert.deepStrictEqual(planRemoveOwners(current, new Set()), NO_CHANGES)
  })

  it("invert swaps the sides", () => {
    const c = { remove: [e("10.0.0.1")], add: [e("10.0.0.2")] }
    assert.deepStrictEqual(invert(c), { remove: [e("10.0.0.2")], add: [e("10.0.0.1")] })
  })

  it("byFamily splits by family, 4 first, dropping an empty family", () => {
    const v4 = e("10.0.0.1")
    const v6 = e("fd00::1")
    assert.deepStrictEqual(byFamily({ remove: [v6], add: [v4] }), [
      [4, { remove: [], add: [v4] }],
      [6, { remove: [v6], add: [] }]
    ])
    assert.deepStrictEqual(byFamily({ remove: [v6], add: [] }), [[6, { remove: [v6], add: [] }]])
    assert.deepStrictEqual(byFamily(NO_CHANGES), [])
  })

  it("applyChanges removes present entries by canonical IP, adds absent ones once, canonically", () => {
    const current = [e("fd00::1"), e("10.0.0.1")]
    const after = applyChanges(current, {
      remove: [e("FD00:0::1")],
      add: [e("10.0.0.1"), e("FD00::2"), e("fd00::2")]
    })
    assert.deepStrictEqual(after, [e("10.0.0.1"), e("fd00::2")])
  })

  it("diff is the smallest change: only what differs, on each side", () => {
    const a = e("10.0.0.1")
    const b = e("10.0.0.2")
    const c = e("10.0.0.3")
    assert.deepStrictEqual(diff([a, b], [b, c]), { remove: [a], add: [c] })
    assert.deepStrictEqual(diff([a], [a]), NO_CHANGES)
  })
})
