/**
 * `inspect` on the memory node: which attachment and tenant each kernel entry is shown as (record,
 * unreadable record, plain tag, nothing), which backends are listed, and the exact human table.
 */
import { describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import { assert } from "vitest"
import { makeRecord } from "../src/domain/datapath/AttachmentRecord.ts"
import { type Attachment, legacyTag, ownerTag } from "../src/domain/datapath/Owner.ts"
import * as AttachmentStoreMemory from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { Records } from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { FaultPlan } from "../src/interpreters/memory/Faults.ts"
import * as NetfilterMemory from "../src/interpreters/memory/NetfilterMemory.ts"
import { Kernel } from "../src/interpreters/memory/NetfilterMemory.ts"
import { formatInspect, type InspectedEntry, inspect } from "../src/programs/inspect.ts"

const DIR = "/state"
const plain: Attachment = { network: "net-a", containerId: "plainpod", ifname: "eth0" }
// A space in the container id makes the tag hashed (and gives it a legacy form too).
const hashed: Attachment = { network: "net-b", containerId: "hashed pod", ifname: "eth1" }

const node = () => {
  const kernel = new Kernel()
  const records = new Records()
  const faults = new FaultPlan()
  const logs: Array<{ message: unknown; level: string }> = []
  const capture = Logger.make((o) => void logs.push({ message: o.message, level: o.logLevel }))
  const layer = Layer.mergeAll(
    NetfilterMemory.layer(kernel, faults),
    AttachmentStoreMemory.layer(records, faults),
    Logger.layer([capture])
  )
  const put = (
    a: Attachment,
    tenant: string | null,
    pod?: { readonly namespace: string; readonly name: string; readonly uid?: string }
  ) => {
    const r = makeRecord(
      a,
      tenant === null ? null : { name: tenant, mark: 0x10 },
      0x30,
      ["10.0.0.1"],
      "nftables",
      pod
    )
    records.byPath.set(Records.path(DIR, a), r)
  }
  return { kernel, records, logs, layer, put }
}

const entry = (ip: string, mark: number, owner: string) => ({
  ip,
  family: 4 as const,
  mark,
  mask: 0x30,
  owner
})

describe("inspect", () => {
  it.effect("names a hashed tag's attachment and tenant from its record", () =>
    Effect.gen(function* () {
      const w = node()
      w.put(hashed, "tenant-b", { namespace: "ns", name: "web", uid: "u-1" })
      w.kernel.entries.nftables = [entry("10.0.0.7", 0x10, ownerTag(hashed))]
      const rows = yield* inspect(DIR, undefined).pipe(Effect.provide(w.layer))
      assert.deepStrictEqual(rows, [
        {
          backend: "nftables",
          network: "net-b",
          containerId: "hashed pod",
          ifname: "eth1",
          ip: "10.0.0.7",
          tenant: "tenant-b",
          mark: "0x10",
          pod: { namespace: "ns", name: "web", uid: "u-1" }
        }
      ])
      assert.deepStrictEqual(w.logs, [])
    })
  )

  it.effect("shows a plain tag without a record as its attachment with an unknown tenant", () =>
    Effect.gen(function* () {
      const w = node()
      w.kernel.entries.iptables = [entry("10.0.0.8", 0xffffffff, ownerTag(plain))]
      const rows = yield* inspect(DIR, undefined).pipe(Effect.provide(w.layer))
      assert.deepStrictEqual(rows, [
        {
          backend: "iptables",
          network: "net-a",
          containerId: "plainpod",
          ifname: "eth0",
          ip: "10.0.0.8",
          tenant: null,
          mark: "0xffffffff",
          pod: null
        }
      ])
    })
  )

  it.effect("shows a hashed tag without any record, and a foreign string, as nobody's", () =>
    Effect.gen(function* () {
      const w = node()
      w.kernel.entries.nftables = [
        entry("10.0.0.9", 0, ownerTag(hashed)),
        entry("10.0.0.10", 0x20, "not a tag!")
      ]
      const rows = yield* inspect(DIR, "nftables").pipe(Effect.provide(w.layer))
      assert.deepStrictEqual(
        rows.map((r) => [r.ip, r.network, r.containerId, r.ifname, r.tenant, r.mark]),
        [
          ["10.0.0.9", null, null, null, null, "0x0"],
          ["10.0.0.10", null, null, null, null, "0x20"]
        ]
      )
    })
  )

  it.effect(
    "names the attachment of an unreadable record by its place (current and legacy tag), warns with file and reason",
    () =>
      Effect.gen(function* () {
        const w = node()
        w.records.setCorrupt(DIR, hashed, "")
        const legacy = legacyTag(hashed)
        assert.isDefined(legacy)
        w.kernel.entries.nftables = [
          entry("10.0.0.11", 0x10, ownerTag(hashed)),
          entry("10.0.0.12", 0x10, legacy!)
        ]
        const rows = yield* inspect(DIR, undefined).pipe(Effect.provide(w.layer))
        assert.deepStrictEqual(
          rows.map((r) => [r.ip, r.network, r.containerId, r.ifname, r.tenant]),
          [
            ["10.0.0.11", "net-b", "hashed pod", "eth1", null],
            ["10.0.0.12", "net-b", "hashed pod", "eth1", null]
          ]
        )
        assert.strictEqual(w.logs.length, 1)
        assert.strictEqual(w.logs[0]!.level, "Warn")
        const text = JSON.stringify(w.logs[0]!.message)
        assert.include(text, "unreadable state record skipped")
        assert.include(text, Records.path(DIR, hashed))
        assert.include(text, "reason")
      })
  )

  it.effect("lists iptables then nftables without a backend, and only the one asked for", () =>
    Effect.gen(function* () {
      const w = node()
      w.put(plain, "tenant-a")
      w.kernel.entries.iptables = [entry("10.0.0.1", 0x10, ownerTag(plain))]
      w.kernel.entries.nftables = [entry("10.0.0.2", 0x10, ownerTag(plain))]
      const both = yield* inspect(DIR, undefined).pipe(Effect.provide(w.layer))
      assert.deepStrictEqual(
        both.map((r) => [r.backend, r.ip, r.tenant]),
        [
          ["iptables", "10.0.0.1", "tenant-a"],
          ["nftables", "10.0.0.2", "tenant-a"]
        ]
      )
      const ipt = yield* inspect(DIR, "iptables").pipe(Effect.provide(w.layer))
      assert.deepStrictEqual(
        ipt.map((r) => r.ip),
        ["10.0.0.1"]
      )
      const nft = yield* inspect(DIR, "nftables").pipe(Effect.provide(w.layer))
      assert.deepStrictEqual(
        nft.map((r) => r.ip),
        ["10.0.0.2"]
      )
    })
  )

  it.effect("shows a record's pod with a null uid when the record has none, and null without a pod", () =>
    Effect.gen(function* () {
      const w = node()
      w.put(hashed, "tenant-b", { namespace: "ns", name: "web" })
      w.put(plain, "tenant-a")
      w.kernel.entries.nftables = [
        entry("10.0.0.4", 0x10, ownerTag(hashed)),
        entry("10.0.0.5", 0x10, ownerTag(plain))
      ]
      const rows = yield* inspect(DIR, "nftables").pipe(Effect.provide(w.layer))
      assert.deepStrictEqual(
        rows.map((r) => r.pod),
        [{ namespace: "ns", name: "web", uid: null }, null]
      )
    })
  )

  it.effect("ignores records of another state directory", () =>
    Effect.gen(function* () {
      const w = node()
      w.put(hashed, "tenant-b")
      w.kernel.entries.nftables = [entry("10.0.0.3", 0x10, ownerTag(hashed))]
      const rows = yield* inspect("/elsewhere", "nftables").pipe(Effect.provide(w.layer))
      assert.strictEqual(rows[0]!.tenant, null)
      assert.strictEqual(rows[0]!.network, null)
    })
  )
})

describe("formatInspect", () => {
  it("prints only the header for no entries", () => {
    assert.strictEqual(formatInspect([]), "BACKEND  NETWORK  CONTAINER  IFNAME  POD  IP  TENANT  MARK")
  })

  it("aligns columns to the widest cell, cuts container ids to 12, shows ? and - for unknowns", () => {
    const rows: ReadonlyArray<InspectedEntry> = [
      {
        backend: "nftables",
        network: "a-long-network",
        containerId: "0123456789abcdef",
        ifname: "eth0",
        ip: "10.0.0.1",
        tenant: "tenant-a",
        mark: "0x10",
        pod: { namespace: "ns", name: "web", uid: null }
      },
      {
        backend: "iptables",
        network: null,
        containerId: null,
        ifname: null,
        ip: "fd00::1",
        tenant: null,
        mark: "0xffffffff",
        pod: null
      }
    ]
    assert.strictEqual(
      formatInspect(rows),
      [
        "BACKEND   NETWORK         CONTAINER     IFNAME  POD     IP        TENANT    MARK",
        "nftables  a-long-network  0123456789ab  eth0    ns/web  10.0.0.1  tenant-a  0x10",
        "iptables  ?               ?             ?       -       fd00::1   -         0xffffffff"
      ].join("\n")
    )
  })
})
