/**
 * ADD's and DEL's datapath steps on the memory node, pinned by entries, records and DEL's `removed`
 * count: which backend `auto` picks, stale entries of the other backend, failurePolicy open when
 * installing fails, a record that cannot be written, legacy hashed tags.
 */
import { describe, it } from "@effect/vitest"
import { Effect, Logger } from "effect"
import { assert } from "vitest"
import { legacyTag, ownerTag } from "../src/domain/datapath/Owner.ts"
import { runCni } from "../src/programs/dispatch.ts"
import { cniEnv, originalConf, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const pod = { containerId: "c1", namespace: "default", name: "p" }

const logged = async (w: World, env: Record<string, string>, conf: unknown) => {
  const lines: Array<{ level: string; fields: Record<string, unknown> }> = []
  const capture = Logger.make((o) => {
    const parts = Array.isArray(o.message) ? o.message : [o.message]
    lines.push({
      level: o.logLevel,
      fields: (parts.find((p) => typeof p === "object" && p !== null) ?? {}) as Record<string, unknown>
    })
  })
  const out = await Effect.runPromise(
    runCni(env, new TextEncoder().encode(JSON.stringify(conf)), () => Logger.layer([capture])).pipe(
      Effect.provide(w.layer())
    )
  )
  return { out, fields: lines.at(-1)!.fields, level: lines.at(-1)!.level }
}

const world = () => {
  const w = new World()
  w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
  return w
}

describe("ADD's datapath step", () => {
  it("auto picks nftables when usable, else iptables", async () => {
    const w = world()
    const { fields } = await logged(w, cniEnv("ADD", pod), originalConf())
    assert.strictEqual(fields.backend, "nftables")
    assert.strictEqual(w.kernel.entries.nftables.length, 1)
    assert.strictEqual(w.kernel.entries.iptables.length, 0)
    const v = world()
    v.kernel.usable.nftables = false
    const r = await logged(v, cniEnv("ADD", pod), originalConf())
    assert.strictEqual(r.out.exitCode, 0, r.out.stdout)
    assert.strictEqual(r.fields.backend, "iptables")
    assert.strictEqual(v.kernel.entries.iptables.length, 1)
    assert.strictEqual([...v.records.byPath.values()][0]!.backend, "iptables")
  })

  it("an explicit backend is used even when nftables is usable, and stale entries on the other backend go", async () => {
    const w = world()
    const tag = ownerTag({ network: "tenant-routing", containerId: "c1", ifname: "eth0" })
    w.kernel.entries.nftables = [{ ip: "10.200.0.2", family: 4, mark: 0x20, mask: 0x30, owner: tag }]
    const { out, fields } = await logged(w, cniEnv("ADD", pod), originalConf({ backend: "iptables" }))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(fields.backend, "iptables")
    assert.deepStrictEqual(w.kernel.entries.nftables, [])
    assert.deepStrictEqual(
      w.kernel.entries.iptables.map((e) => [e.ip, e.mark, e.owner]),
      [["10.200.0.2", 0x10, tag]]
    )
  })

  it("under failurePolicy open a failing install starts the pod untagged with a warning and an untagged record", async () => {
    const w = world()
    w.faults.faults = [{ op: "netfilter.apply", nth: 1, kind: "fail" }]
    const { out, fields, level } = await logged(
      w,
      cniEnv("ADD", pod),
      originalConf({ failurePolicy: "open" })
    )
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(level, "Warn")
    assert.include(JSON.stringify(fields.warnings), "installing the tenant mark failed")
    assert.strictEqual(fields.tenant, null)
    assert.strictEqual(fields.mark, null)
    assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
    const record = [...w.records.byPath.values()][0]!
    assert.strictEqual(record.tenant, null)
    assert.strictEqual(record.mark, null)
  })

  it("under failurePolicy closed a failing install fails the ADD and leaves no record", async () => {
    const w = world()
    w.faults.faults = [{ op: "netfilter.apply", nth: 1, kind: "fail" }]
    const { out } = await logged(w, cniEnv("ADD", pod), originalConf())
    assert.strictEqual(out.exitCode, 1)
    assert.strictEqual(w.records.byPath.size, 0)
  })

  it("a pod without a tenant whose install fails is not retried as untagged: it fails under open too", async () => {
    const w = new World()
    w.cluster.setPod("default", "p", {})
    const tag = ownerTag({ network: "tenant-routing", containerId: "c1", ifname: "eth0" })
    // A stale entry on its IP, so the untagged ADD must remove something, and that removal fails.
    w.kernel.entries.nftables = [{ ip: "10.200.0.2", family: 4, mark: 0x20, mask: 0x30, owner: tag }]
    w.faults.faults = [{ op: "netfilter.apply", nth: 1, kind: "fail" }]
    const { out } = await logged(w, cniEnv("ADD", pod), originalConf({ failurePolicy: "open" }))
    assert.strictEqual(out.exitCode, 1, out.stdout)
    assert.strictEqual(w.records.byPath.size, 0)
  })

  it("a record that cannot be written takes the installed entries back", async () => {
    const w = world()
    w.faults.faults = [{ op: "store.write", nth: 1, kind: "fail" }]
    const { out } = await logged(w, cniEnv("ADD", pod), originalConf())
    assert.strictEqual(out.exitCode, 1)
    assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
    assert.strictEqual(w.records.byPath.size, 0)
  })
})

describe("DEL's datapath step", () => {
  it("counts what it removed: 1 after a single-stack ADD, 0 when repeated", async () => {
    const w = world()
    await logged(w, cniEnv("ADD", pod), originalConf())
    const first = await logged(w, cniEnv("DEL", pod), originalConf())
    assert.strictEqual(first.out.exitCode, 0, first.out.stdout)
    assert.strictEqual(first.fields.removed, 1)
    assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
    assert.strictEqual(w.records.byPath.size, 0)
    const again = await logged(w, cniEnv("DEL", pod), originalConf())
    assert.strictEqual(again.fields.removed, 0)
  })

  it("removes entries of both backends and in the legacy hashed form, and counts them all", async () => {
    const w = new World()
    // An owner over 120 bytes is hashed, so it also has a legacy hashed form.
    const id = "c".repeat(130)
    const a = { network: "tenant-routing", containerId: id, ifname: "eth0" }
    const legacy = legacyTag(a)!
    w.kernel.entries.iptables = [{ ip: "10.0.0.1", family: 4, mark: 0x10, mask: 0x30, owner: ownerTag(a) }]
    w.kernel.entries.nftables = [
      { ip: "10.0.0.2", family: 4, mark: 0x10, mask: 0x30, owner: legacy },
      { ip: "10.0.0.3", family: 4, mark: 0x10, mask: 0x30, owner: "tenant-routing/other/eth0" }
    ]
    const { out, fields } = await logged(w, cniEnv("DEL", { containerId: id }), originalConf())
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(fields.removed, 2)
    assert.deepStrictEqual(w.kernel.entries.iptables, [])
    assert.deepStrictEqual(
      w.kernel.entries.nftables.map((e) => e.owner),
      ["tenant-routing/other/eth0"]
    )
    assert.strictEqual(out.stdout, undefined)
  })
})
