/**
 * GC (docs/DESIGN.md §5) through real CNI calls on the memory node: it keeps exactly the valid
 * attachments of its network, for owners of every tag form, with records deleted at random (as a
 * crash between the kernel change and the record write leaves them), in both backends, and never
 * touches another network's entries or records. Then the pure planner (Collect.ts) directly: the
 * legacy hashed rule, and unreadable records.
 */
import { assert, describe, it } from "@effect/vitest"
import * as fc from "fast-check"
import type { AttachmentRecord } from "../src/domain/datapath/AttachmentRecord.ts"
import { makeRecord } from "../src/domain/datapath/AttachmentRecord.ts"
import { planCollect } from "../src/domain/datapath/Collect.ts"
import type { MarkEntry } from "../src/domain/datapath/Entries.ts"
import { type Attachment, legacyTag, ownerTag } from "../src/domain/datapath/Owner.ts"
import { Records } from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { cniEnv, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const STATE = "/var/lib/cni/tenant-routing"

const conf = (network: string, backend: string, extra: Record<string, unknown> = {}) => ({
  cniVersion: "1.1.0",
  name: network,
  type: "tenant-routing-wrapper",
  backend,
  delegate: { type: "ptp", ipam: { type: "host-local", subnet: "10.200.0.0/24" } },
  runtimeConfig: { "io.kubernetes.cri.pod-annotations": { [KEY]: "0x10" } },
  ...extra
})

// Short ids give plain tags; long ids (over 120 bytes of owner) and odd ifnames give hashed ones.
const podArb = fc.record({
  containerId: fc.oneof(
    fc.stringMatching(/^[a-z0-9]{1,12}$/),
    fc.stringMatching(/^[a-f0-9]{121,300}$/),
    fc.stringMatching(/^[a-f0-9]{64}$/)
  ),
  ifname: fc.constantFrom("eth0", "net1", "eth@0"),
  keep: fc.boolean(),
  dropRecord: fc.boolean()
})
const networkArb = fc.oneof(
  fc.constantFrom("net-a", "tenant-routing"),
  fc.stringMatching(/^[a-z][a-z0-9]{100,120}$/)
)

const attachmentKey = (p: { containerId: string; ifname: string }) => `${p.containerId}/${p.ifname}`

describe("GC laws", () => {
  it("GC keeps exactly its network's valid attachments (any tag form, records deleted at random, either backend) and never touches another network", async () => {
    await fc.assert(
      fc.asyncProperty(
        networkArb,
        fc.constantFrom("iptables", "nftables"),
        fc.uniqueArray(podArb, { minLength: 1, maxLength: 6, selector: attachmentKey }),
        fc.uniqueArray(podArb, { minLength: 1, maxLength: 3, selector: attachmentKey }),
        async (network, backend, pods, others) => {
          const other = `${network}-other`
          const w = new World({ poolSize: 32 })
          w.leases.supportedVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
          for (const [net, list] of [
            [network, pods],
            [other, others]
          ] as const) {
            for (const p of list) {
              const out = await w.run(cniEnv("ADD", p), conf(net, backend))
              assert.strictEqual(out.exitCode, 0, out.stdout)
              const a = { network: net, containerId: p.containerId, ifname: p.ifname }
              if (p.dropRecord) w.records.byPath.delete(Records.path(STATE, a))
            }
          }
          const entries = () => [...w.kernel.entries.iptables, ...w.kernel.entries.nftables]
          const tagsOfNet = (net: string, list: typeof pods) =>
            new Set(list.map((p) => ownerTag({ network: net, ...p })))
          const otherBefore = entries().filter((e) => tagsOfNet(other, others).has(e.owner))
          const otherRecords = w.records.snapshot().filter(([, r]) => r.network === other)
          assert.strictEqual(entries().length, pods.length + others.length, "one entry per attachment")

          const valid = pods.filter((p) => p.keep)
          const out = await w.run(
            { ...cniEnv("GC", { containerId: "x" }), CNI_CONTAINERID: "", CNI_IFNAME: "" },
            conf(network, backend, {
              "cni.dev/valid-attachments": valid.map((p) => ({
                containerID: p.containerId,
                ifname: p.ifname
              }))
            })
          )
          assert.strictEqual(out.exitCode, 0, out.stdout)

          const ours = entries().filter((e) => !tagsOfNet(other, others).has(e.owner))
          assert.deepStrictEqual(
            new Set(ours.map((e) => e.owner)),
            tagsOfNet(network, valid),
            "exactly the valid attachments' entries remain"
          )
          assert.strictEqual(ours.length, valid.length)
          assert.deepStrictEqual(
            entries().filter((e) => tagsOfNet(other, others).has(e.owner)),
            otherBefore,
            "another network's entries are untouched"
          )
          assert.deepStrictEqual(
            w.records
              .snapshot()
              .filter(([, r]) => r.network === network)
              .map(([, r]) => attachmentKey(r))
              .sort(),
            valid
              .filter((p) => !p.dropRecord)
              .map(attachmentKey)
              .sort(),
            "exactly the valid attachments' records remain"
          )
          assert.deepStrictEqual(
            w.records.snapshot().filter(([, r]) => r.network === other),
            otherRecords
          )
        }
      ),
      { numRuns: 60 }
    )
  })

  it("one unreadable record does not stop GC: it is reported, removed when its attachment is stale, and the rest is collected", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        fc.constantFrom("", "{", "not json", '{"owner":1}'),
        async (badIsValid, text) => {
          const w = new World()
          w.leases.supportedVersions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
          for (const containerId of ["bad", "stale", "kept"]) {
            assert.strictEqual(
              (await w.run(cniEnv("ADD", { containerId }), conf("net-a", "nftables"))).exitCode,
              0
            )
          }
          w.records.setCorrupt(STATE, { network: "net-a", containerId: "bad", ifname: "eth0" }, text)
          const valid = [
            { containerID: "kept", ifname: "eth0" },
            ...(badIsValid ? [{ containerID: "bad", ifname: "eth0" }] : [])
          ]
          const out = await w.run(
            { ...cniEnv("GC", { containerId: "x" }), CNI_CONTAINERID: "", CNI_IFNAME: "" },
            conf("net-a", "nftables", { "cni.dev/valid-attachments": valid })
          )
          assert.strictEqual(out.exitCode, 0, out.stdout)
          assert.deepStrictEqual(
            w.kernel.entries.nftables.map((e) => e.owner).sort(),
            badIsValid ? ["net-a/bad/eth0", "net-a/kept/eth0"] : ["net-a/kept/eth0"]
          )
          assert.deepStrictEqual(
            w.records.snapshot().map(([, r]) => r.containerId),
            ["kept"]
          )
          assert.strictEqual(w.records.corrupt.size, badIsValid ? 1 : 0, "a stale unreadable record goes")
        }
      ),
      { numRuns: 16 }
    )
  })
})

const entry = (owner: string, ip = "10.0.0.5"): MarkEntry => ({
  ip,
  family: 4,
  mark: 0x10,
  mask: 0x30,
  owner
})
const rec = (a: Attachment, tag: string): AttachmentRecord => ({
  ...makeRecord(a, { name: "t", mark: 0x10 }, 0x30, ["10.0.0.5"], "nftables"),
  tag
})

describe("planCollect: legacy hashed tags (h: + 32 hex)", () => {
  const long = (network: string, containerId: string): Attachment => ({
    network,
    containerId: containerId.repeat(130),
    ifname: "eth0"
  })

  it("a legacy entry is collected through a stale record of this network that names it", () => {
    const a = long("net-a", "a")
    const old = legacyTag(a) as string
    const plan = planCollect({
      network: "net-a",
      valid: [],
      records: [rec(a, old)],
      unreadable: [],
      entries: [entry(old)]
    })
    assert.deepStrictEqual([...plan.staleTags], [old])
    assert.deepStrictEqual(plan.staleRecords, [a])
    assert.deepStrictEqual(plan.unattributed, [])
  })

  it("a legacy entry of a valid attachment is kept, with or without its record", () => {
    const a = long("net-a", "a")
    const old = legacyTag(a) as string
    for (const records of [[], [rec(a, old)]]) {
      const plan = planCollect({
        network: "net-a",
        valid: [{ containerId: a.containerId, ifname: a.ifname }],
        records,
        unreadable: [],
        entries: [entry(old)]
      })
      assert.deepStrictEqual([...plan.staleTags], [])
      assert.deepStrictEqual(plan.staleRecords, [])
    }
  })

  it("a legacy entry without a record is left alone and reported: it could be any network's", () => {
    fc.assert(
      fc.property(fc.constantFrom("net-a", "net-b"), fc.stringMatching(/^[a-f0-9]$/), (owner, c) => {
        const old = legacyTag(long(owner, c)) as string
        const plan = planCollect({
          network: "net-a",
          valid: [],
          records: [],
          unreadable: [],
          entries: [entry(old)]
        })
        assert.deepStrictEqual([...plan.staleTags], [])
        assert.deepStrictEqual(plan.unattributed, [old])
      })
    )
  })

  it("a new hashed entry without a record is attributed by its network part: ours stale, others' untouched", () => {
    const mine = ownerTag(long("net-a", "a"))
    const theirs = ownerTag(long("net-b", "a"))
    const plan = planCollect({
      network: "net-a",
      valid: [],
      records: [],
      unreadable: [],
      entries: [entry(mine), entry(theirs, "10.0.0.6")]
    })
    assert.deepStrictEqual([...plan.staleTags], [mine])
  })

  it("a record claiming a valid attachment's tag never gets that tag removed", () => {
    const valid = { network: "net-a", containerId: "v", ifname: "eth0" }
    const stale = { network: "net-a", containerId: "s", ifname: "eth0" }
    const plan = planCollect({
      network: "net-a",
      valid: [{ containerId: "v", ifname: "eth0" }],
      records: [rec(stale, ownerTag(valid))],
      unreadable: [],
      entries: [entry(ownerTag(valid))]
    })
    assert.deepStrictEqual([...plan.staleTags], [])
    assert.deepStrictEqual(plan.staleRecords, [stale])
  })
})
