/**
 * The laws every Netfilter interpreter obeys, run against the memory model and against the live
 * backends in a throwaway netns, so the model used by the property tests behaves like the kernel.
 *
 * Each law starts by removing every entry the backend lists (a live netns is shared by the laws of
 * one suite) and builds a fresh layer. "At most one transaction per family" is not observable on a
 * live kernel and is left to the memory model's own tests. Semantics the laws pin down:
 * - apply is "remove if present, add if absent": removing an absent entry succeeds, adding a
 *   present one keeps one copy;
 * - entries are listed with canonical IPs (`canonicalIp`), whatever text they were added with;
 * - an IP may carry entries of several owners under different marks;
 * - a change holding an entry EntryValidity.ts rejects is refused whole, in every interpreter.
 * Not covered (backend-specific, see NetfilterNftables.ts): one IP under two owners with the SAME
 * mark (nft keeps one element per IP and mark), and one mark under two masks (nft keeps one rule
 * per mark).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Layer, Result } from "effect"
import * as fc from "fast-check"
import type { Backend } from "../../src/domain/cni/Config.ts"
import { BACKENDS } from "../../src/domain/cni/Config.ts"
import type { NetfilterFailed } from "../../src/domain/cni/Errors.ts"
import type { Changes, MarkEntry } from "../../src/domain/datapath/Entries.ts"
import { Netfilter } from "../../src/domain/datapath/Netfilter.ts"
import { canonicalIp, type Family } from "../../src/domain/net/Ip.ts"

export type NetfilterLaw =
  | "usable"
  | "add-list"
  | "remove-all"
  | "remove-absent"
  | "add-twice"
  | "empty-change"
  | "ipv6-canonical"
  | "two-owners-two-marks"
  | "ip-reuse"
  | "owners-independent"
  | "mark-edges"
  | "owner-shapes"
  | "many-entries"
  | "backends-separate"
  | "model"
  | "refuses-invalid"

export interface NetfilterContractOptions {
  /** The backends to run the laws on (default both). */
  readonly backends?: ReadonlyArray<Backend>
  /** Runs of the model-based property (live: keep it small, each step costs processes). */
  readonly propertyRuns?: number
  /** Laws this interpreter is known to break; the caller says why next to the list. */
  readonly skip?: ReadonlyArray<NetfilterLaw>
}

export const MASK = 0x30

export const entry = (ip: string, family: Family, mark: number, owner: string, mask = MASK): MarkEntry => ({
  ip,
  family,
  mark,
  mask,
  owner
})

const key = (e: MarkEntry) => `${e.family} ${canonicalIp(e.ip)} ${e.mark} ${e.mask} ${e.owner}`
const keys = (l: ReadonlyArray<MarkEntry>) => l.map(key).sort()
const canonical = (e: MarkEntry): MarkEntry => ({ ...e, ip: canonicalIp(e.ip) })

/** `actual` holds exactly `expected` (order aside), with every IP in canonical text. */
export const assertEntries = (actual: ReadonlyArray<MarkEntry>, expected: ReadonlyArray<MarkEntry>) => {
  assert.deepStrictEqual(
    actual.map((e) => e.ip),
    actual.map((e) => canonicalIp(e.ip)),
    "listed IPs are canonical"
  )
  assert.deepStrictEqual(keys(actual), keys(expected.map(canonical)))
}

/** Removes every entry the backend lists, so a law starts from nothing. */
export const reset = (backend: Backend) =>
  Effect.gen(function* () {
    const nf = yield* Netfilter
    const current = yield* nf.list(backend)
    if (current.length > 0) yield* nf.apply(backend, { remove: current, add: [] })
    assertEntries(yield* nf.list(backend), [])
  })

const add = (...entries: ReadonlyArray<MarkEntry>): Changes => ({ remove: [], add: entries })
const remove = (...entries: ReadonlyArray<MarkEntry>): Changes => ({ remove: entries, add: [] })

const A = "net/aaa/eth0"
const B = "net/bbb/eth0"
const C = "other-net/ccc/net1"

// The pool the model-based property draws from: one owner per IP, two marks, both families.
const POOL: ReadonlyArray<MarkEntry> = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "fd00::1", "fd00::2"].flatMap(
  (ip, i) => [0x10, 0x20].map((mark) => entry(ip, ip.includes(":") ? 6 : 4, mark, `prop/c${i}/eth0`))
)

export const netfilterContract = (
  name: string,
  makeLayer: () => Layer.Layer<Netfilter>,
  opts: NetfilterContractOptions = {}
) =>
  describe(`Netfilter contract: ${name}`, () => {
    for (const backend of opts.backends ?? BACKENDS) {
      describe(backend, () => {
        const law = (
          id: NetfilterLaw,
          title: string,
          body: (nf: Netfilter["Service"]) => Effect.Effect<void, NetfilterFailed>
        ) =>
          (opts.skip?.includes(id) ? it.effect.skip : it.effect)(`${title} [${id}]`, () =>
            Effect.gen(function* () {
              yield* reset(backend)
              yield* body(yield* Netfilter)
            }).pipe(Effect.provide(makeLayer()))
          )

        law("usable", "the backend is usable", (nf) =>
          Effect.gen(function* () {
            assert.isTrue(yield* nf.usable(backend))
          })
        )

        law("add-list", "apply then list shows exactly the added entries", (nf) =>
          Effect.gen(function* () {
            const added = [
              entry("10.0.0.5", 4, 0x10, A),
              entry("10.0.0.6", 4, 0x20, B),
              entry("2001:db8::5", 6, 0x10, A),
              entry("2001:db8::6", 6, 0x20, C)
            ]
            yield* nf.apply(backend, add(...added))
            assertEntries(yield* nf.list(backend), added)
          })
        )

        law("remove-all", "removing what was added leaves nothing", (nf) =>
          Effect.gen(function* () {
            const added = [entry("10.0.0.5", 4, 0x10, A), entry("2001:db8::5", 6, 0x10, A)]
            yield* nf.apply(backend, add(...added))
            yield* nf.apply(backend, remove(...added))
            assertEntries(yield* nf.list(backend), [])
          })
        )

        law("remove-absent", "removing an absent entry succeeds and changes nothing", (nf) =>
          Effect.gen(function* () {
            const kept = entry("10.0.0.5", 4, 0x10, A)
            yield* nf.apply(backend, add(kept))
            yield* nf.apply(
              backend,
              remove(
                entry("10.0.0.9", 4, 0x10, A),
                entry("10.0.0.5", 4, 0x10, B), // same IP and mark, other owner
                entry("10.0.0.5", 4, 0x20, A), // same IP and owner, other mark
                entry("2001:db8::9", 6, 0x10, A)
              )
            )
            assertEntries(yield* nf.list(backend), [kept])
          })
        )

        law("add-twice", "adding a present entry keeps one copy", (nf) =>
          Effect.gen(function* () {
            const e = entry("10.0.0.5", 4, 0x10, A)
            yield* nf.apply(backend, add(e))
            yield* nf.apply(backend, add(e, e))
            assertEntries(yield* nf.list(backend), [e])
            yield* nf.apply(backend, remove(e))
            assertEntries(yield* nf.list(backend), [])
          })
        )

        law("empty-change", "an empty change changes nothing", (nf) =>
          Effect.gen(function* () {
            const e = entry("10.0.0.5", 4, 0x10, A)
            yield* nf.apply(backend, add(e))
            yield* nf.apply(backend, { remove: [], add: [] })
            assertEntries(yield* nf.list(backend), [e])
          })
        )

        law("ipv6-canonical", "IPv6 entries are listed canonically and removable in any spelling", (nf) =>
          Effect.gen(function* () {
            const spelled = [
              entry("2001:DB8:0:0:0:0:0:7", 6, 0x10, A),
              entry("fd00:0:0:1::0:8", 6, 0x10, B),
              entry("::ffff:10.1.2.3", 6, 0x10, C),
              entry("2001:db8:0:1:0:0:0:1", 6, 0x20, A)
            ]
            yield* nf.apply(backend, add(...spelled))
            const listed = yield* nf.list(backend)
            assertEntries(listed, spelled)
            assert.deepStrictEqual(
              listed.map((e) => e.ip).sort(),
              ["2001:db8::7", "fd00:0:0:1::8", "::ffff:a01:203", "2001:db8:0:1::1"].sort()
            )
            yield* nf.apply(backend, remove(entry("2001:0db8::0007", 6, 0x10, A), ...spelled.slice(1)))
            assertEntries(yield* nf.list(backend), [])
          })
        )

        law(
          "two-owners-two-marks",
          "one IP under two owners with different marks: both listed, each removable",
          (nf) =>
            Effect.gen(function* () {
              const a = entry("10.0.0.5", 4, 0x10, A)
              const b = entry("10.0.0.5", 4, 0x20, B)
              const a6 = entry("fd00::5", 6, 0x10, A)
              const b6 = entry("fd00::5", 6, 0x20, B)
              yield* nf.apply(backend, add(a, b, a6, b6))
              assertEntries(yield* nf.list(backend), [a, b, a6, b6])
              yield* nf.apply(backend, remove(a, b6))
              assertEntries(yield* nf.list(backend), [b, a6])
            })
        )

        law(
          "ip-reuse",
          "removing the old owner's entry and adding the new one's in one apply leaves the new one",
          (nf) =>
            Effect.gen(function* () {
              const old4 = entry("10.0.0.5", 4, 0x10, A)
              const old6 = entry("fd00::5", 6, 0x20, A)
              yield* nf.apply(backend, add(old4, old6))
              const new4 = entry("10.0.0.5", 4, 0x10, B)
              const new6 = entry("fd00::5", 6, 0x10, B)
              yield* nf.apply(backend, { remove: [old4, old6], add: [new4, new6] })
              assertEntries(yield* nf.list(backend), [new4, new6])
            })
        )

        law("owners-independent", "removing one owner's entries leaves the others", (nf) =>
          Effect.gen(function* () {
            const mine = [entry("10.0.0.5", 4, 0x10, A), entry("fd00::5", 6, 0x10, A)]
            const theirs = [
              entry("10.0.0.6", 4, 0x10, B),
              entry("fd00::6", 6, 0x10, B),
              entry("10.0.0.7", 4, 0x20, C)
            ]
            yield* nf.apply(backend, add(...mine, ...theirs))
            yield* nf.apply(backend, remove(...mine))
            assertEntries(yield* nf.list(backend), theirs)
          })
        )

        law("mark-edges", "marks and masks at the edges of 32 bits round-trip", (nf) =>
          Effect.gen(function* () {
            const edges = [
              entry("10.0.1.1", 4, 0x1, A, 0x1),
              entry("10.0.1.2", 4, 0x80000000, A, 0xffffffff),
              entry("10.0.1.3", 4, 0xffffffff, A, 0xffffffff),
              entry("10.0.1.4", 4, 0x100, A, 0xff00),
              entry("fd00::1:1", 6, 0x80000000, B, 0xc0000000)
            ]
            yield* nf.apply(backend, add(...edges))
            assertEntries(yield* nf.list(backend), edges)
            yield* nf.apply(backend, remove(...edges))
            assertEntries(yield* nf.list(backend), [])
          })
        )

        law(
          "refuses-invalid",
          "a change holding any invalid entry is refused whole: negative or oversized mask (a signed `|`), mark outside its mask or 0, wrong family, foreign owner text",
          (nf) =>
            Effect.gen(function* () {
              const present = entry("10.0.4.1", 4, 0x10, A)
              yield* nf.apply(backend, add(present))
              const valid = entry("10.0.4.2", 4, 0x20, B)
              const invalid: ReadonlyArray<MarkEntry> = [
                // 0x80000000 | 0x10 with JS's signed `|`: the mask of a tenant at the high bit.
                entry("10.0.4.3", 4, 0x10, A, 0x80000000 | 0x10),
                entry("10.0.4.3", 4, 0x10, A, -1),
                entry("10.0.4.3", 4, 0x10, A, 0x1_0000_0030),
                entry("10.0.4.3", 4, 0x10, A, 48.5),
                entry("10.0.4.3", 4, 0x40, A, 0x30),
                entry("10.0.4.3", 4, 0, A, 0x30),
                entry("10.0.4.3", 4, 0x1_0000_0010, A, 0xffffffff),
                entry("10.0.4.3", 6, 0x10, A),
                entry("fd00::3", 4, 0x10, A),
                entry("10.0.4.3", 4, 0x10, 'x" ; flush ruleset ; "'),
                entry("10.0.4.3", 4, 0x10, "a".repeat(121))
              ]
              for (const bad of invalid) {
                for (const change of [add(valid, bad), remove(present, bad)]) {
                  const refused = yield* Effect.result(nf.apply(backend, change))
                  if (!Result.isFailure(refused)) assert.fail(`applied ${JSON.stringify(bad)}`)
                  else {
                    assert.strictEqual(refused.failure._tag, "NetfilterFailed")
                    assert.strictEqual(refused.failure.removal, change.add.length === 0)
                  }
                  assertEntries(yield* nf.list(backend), [present])
                }
              }
            })
        )

        law("owner-shapes", "owner tags of every shape round-trip: plain, hashed, longest", (nf) =>
          Effect.gen(function* () {
            const owners = [
              "h:0123456789abcdef0123456789abcdef", // legacy hashed (before the network part)
              "h:0123456789abcdef:0123456789abcdef0123456789abcdef", // hashed, network part first
              "plain_tag-1", // iptables-save prints this one without quotes
              `n.e-t_/${"c".repeat(64)}/${"x".repeat(48)}` // 120 bytes, the longest plain tag
            ]
            const es = owners.map((o, i) => entry(`10.0.0.${i + 1}`, 4, 0x10, o))
            yield* nf.apply(backend, add(...es))
            assertEntries(yield* nf.list(backend), es)
            yield* nf.apply(backend, remove(...es))
            assertEntries(yield* nf.list(backend), [])
          })
        )

        law("many-entries", "150 entries in one apply are all listed, and all removed in one", (nf) =>
          Effect.gen(function* () {
            const many = [
              ...Array.from({ length: 100 }, (_, i) =>
                entry(`10.2.${i >> 4}.${i & 15}`, 4, i % 2 ? 0x10 : 0x20, `net/c${i}/eth0`)
              ),
              ...Array.from({ length: 50 }, (_, i) =>
                entry(`fd00:2::${(i + 1).toString(16)}`, 6, 0x10, `net/c${i}/eth0`)
              )
            ]
            yield* nf.apply(backend, add(...many))
            assertEntries(yield* nf.list(backend), many)
            yield* nf.apply(backend, remove(...many))
            assertEntries(yield* nf.list(backend), [])
          })
        )

        law("backends-separate", "entries applied to one backend are not listed by the other", (nf) =>
          Effect.gen(function* () {
            const e = entry("10.0.3.1", 4, 0x10, A)
            yield* nf.apply(backend, add(e))
            const other = yield* nf.list(backend === "iptables" ? "nftables" : "iptables")
            assert.isFalse(other.some((x) => key(x) === key(e)))
          })
        )

        // A model-based property over planner-like changes: removals of present entries and
        // additions of absent ones, in any mix of families, marks and owners.
        const runs = opts.propertyRuns ?? 25
        const steps = fc.array(fc.record({ remove: fc.subarray([...POOL]), add: fc.subarray([...POOL]) }), {
          minLength: 1,
          maxLength: 4
        })
        ;(opts.skip?.includes("model") ? it.effect.skip : it.effect)(
          `after any sequence of changes, list equals the model [model]`,
          () =>
            Effect.promise(() =>
              fc.assert(
                fc.asyncProperty(steps, (plan) =>
                  Effect.runPromise(
                    Effect.gen(function* () {
                      const nf = yield* Netfilter
                      yield* reset(backend)
                      let model: ReadonlyArray<MarkEntry> = []
                      for (const step of plan) {
                        const has = (e: MarkEntry) => model.some((m) => key(m) === key(e))
                        const change = {
                          remove: step.remove.filter(has),
                          add: step.add.filter((e) => !has(e))
                        }
                        yield* nf.apply(backend, change)
                        model = [
                          ...model.filter((m) => !change.remove.some((r) => key(r) === key(m))),
                          ...change.add
                        ]
                        assertEntries(yield* nf.list(backend), model)
                      }
                    }).pipe(Effect.provide(makeLayer()))
                  )
                ),
                { numRuns: runs }
              )
            )
        )
      })
    }
  })
