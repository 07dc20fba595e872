/**
 * More verb rules pinned by exact answers and log lines: when a failed delegate ADD is undone with
 * DEL (and a failing undo is logged), CHECK's drift message count and legacy-tagged records, GC's
 * warnings and its log fields.
 */
import { describe, it } from "@effect/vitest"
import { Effect, Logger } from "effect"
import { assert } from "vitest"
import { legacyTag, ownerTag } from "../src/domain/datapath/Owner.ts"
import { Records } from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { runCni } from "../src/programs/dispatch.ts"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const pod = { containerId: "c1", namespace: "default", name: "p" }
const gcEnv = { ...cniEnv("GC", { containerId: "" }), CNI_CONTAINERID: "", CNI_IFNAME: "", CNI_NETNS: "" }
const STATE = "/var/lib/cni/tenant-routing"

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

describe("ADD undoing a failed delegate", () => {
  it("a delegate that ran and printed garbage is undone with DEL; its lease is released", async () => {
    const w = world()
    w.leases.badOutput = "unparsable"
    w.faults.faults = [{ op: "delegate.ADD.output", nth: 1, kind: "fail" }]
    const { out } = await logged(w, cniEnv("ADD", pod), originalConf())
    assert.strictEqual(out.exitCode, 1)
    assert.deepStrictEqual(
      w.leases.calls.map((c) => c.command),
      ["ADD", "DEL"]
    )
    assert.deepStrictEqual(w.leases.snapshot(), [])
  })

  it("a delegate answering with no CNI result is refused naming it, and undone with DEL", async () => {
    const w = world()
    w.leases.badOutput = "not-a-result"
    w.faults.faults = [{ op: "delegate.ADD.output", nth: 1, kind: "fail" }]
    const { out } = await logged(w, cniEnv("ADD", pod), originalConf())
    assert.strictEqual(out.exitCode, 1)
    assert.strictEqual((parse(out) as { msg: string }).msg, "ptp: ADD printed no valid CNI result")
    assert.deepStrictEqual(
      w.leases.calls.map((c) => c.command),
      ["ADD", "DEL"]
    )
  })

  it("a delegate that answered with its own CNI error is not sent DEL", async () => {
    const w = world()
    w.faults.faults = [{ op: "delegate.ADD", nth: 1, kind: "fail" }]
    const { out } = await logged(w, cniEnv("ADD", pod), originalConf())
    assert.strictEqual(out.exitCode, 1)
    assert.strictEqual(w.faults.count("delegate.DEL"), 0)
    assert.deepStrictEqual(
      w.leases.calls.map((c) => c.command),
      []
    )
  })

  it("a failing undo DEL is logged with its error, and the ADD's own failure is what is printed", async () => {
    const w = world()
    w.faults.faults = [
      { op: "delegate.ADD.output", nth: 1, kind: "fail" },
      { op: "delegate.DEL", nth: 1, kind: "fail" }
    ]
    w.leases.badOutput = "unparsable"
    const { out, fields } = await logged(w, cniEnv("ADD", pod), originalConf())
    assert.strictEqual(out.exitCode, 1)
    assert.include((parse(out) as { msg: string }).msg, "printed invalid JSON")
    const notes = JSON.stringify(fields.warnings)
    assert.include(notes, "delegate DEL after a failed ADD failed")
    assert.include(notes, "DEL failed (injected)")
  })
})

describe("CHECK's drift and legacy records", () => {
  it("says '1 difference' for one and '2 differences' for two", async () => {
    const w = new World({ dualStack: true })
    w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
    const result = parse((await logged(w, cniEnv("ADD", pod), originalConf())).out)
    const tag = ownerTag({ network: "tenant-routing", containerId: "c1", ifname: "eth0" })
    const all = w.kernel.entries.nftables
    assert.strictEqual(all.length, 2)
    w.kernel.entries.nftables = all.slice(1)
    const one = parse((await logged(w, cniEnv("CHECK", pod), originalConf({ prevResult: result }))).out) as {
      msg: string
    }
    assert.strictEqual(
      one.msg,
      `tenant marks drifted for ${tag}: 1 difference between the state record and the kernel`
    )
    w.kernel.entries.nftables = []
    const two = parse((await logged(w, cniEnv("CHECK", pod), originalConf({ prevResult: result }))).out) as {
      msg: string
    }
    assert.strictEqual(
      two.msg,
      `tenant marks drifted for ${tag}: 2 differences between the state record and the kernel`
    )
  })

  it("passes for an attachment an older version tagged in the legacy hashed form", async () => {
    const w = world()
    const id = "c".repeat(130)
    const longPod = { ...pod, containerId: id }
    const a = { network: "tenant-routing", containerId: id, ifname: "eth0" }
    const result = parse((await logged(w, cniEnv("ADD", longPod), originalConf())).out)
    const legacy = legacyTag(a)!
    const path = Records.path(STATE, a)
    const record = w.records.byPath.get(path)!
    w.records.byPath.set(path, { ...record, tag: legacy })
    w.kernel.entries.nftables = w.kernel.entries.nftables.map((e) => ({ ...e, owner: legacy }))
    const { out, fields } = await logged(w, cniEnv("CHECK", longPod), originalConf({ prevResult: result }))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(fields.owner, legacy)
  })
})

describe("GC's warnings and log line", () => {
  const gcConf = (valid: ReadonlyArray<unknown>) =>
    originalConf({ cniVersion: "1.1.0", "cni.dev/valid-attachments": valid })

  it("logs what it removed and which records were unreadable, with a warning for each", async () => {
    const w = world()
    w.leases.supportedVersions = ["1.0.0", "1.1.0"]
    await logged(w, cniEnv("ADD", pod), originalConf())
    const bad = { network: "tenant-routing", containerId: "bad", ifname: "eth0" }
    w.records.setCorrupt(STATE, bad, "")
    const entries = w.kernel.entries.nftables.length + w.kernel.entries.iptables.length
    assert.isAbove(entries, 0)
    const { out, fields, level } = await logged(w, gcEnv, gcConf([]))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(level, "Warn")
    assert.strictEqual(fields.removedEntries, entries)
    // The pod's record and the unreadable one: neither attachment is valid, so both files go.
    assert.strictEqual(fields.removedRecords, 2)
    assert.deepStrictEqual(fields.unreadableRecords, [Records.path(STATE, bad)])
    assert.include(JSON.stringify(fields.warnings), "unreadable state record skipped")
    assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
  })

  it("leaves legacy hashed entries without a record in place, with a warning naming their tags", async () => {
    const w = world()
    const legacy = legacyTag({ network: "tenant-routing", containerId: "c".repeat(130), ifname: "eth0" })!
    w.kernel.entries.nftables = [{ ip: "10.0.0.1", family: 4, mark: 0x10, mask: 0x30, owner: legacy }]
    const { out, fields, level } = await logged(w, gcEnv, gcConf([]))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(level, "Warn")
    const notes = JSON.stringify(fields.warnings)
    assert.include(notes, "legacy hashed entries without a record are left in place")
    assert.include(notes, legacy)
    assert.strictEqual(w.kernel.entries.nftables.length, 1)
  })

  it("a GC with nothing to do logs at Info, with no warnings", async () => {
    const w = world()
    const { out, fields, level } = await logged(w, gcEnv, gcConf([]))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(level, "Info")
    assert.isUndefined(fields.warnings)
    assert.strictEqual(fields.removedEntries, 0)
    assert.deepStrictEqual(fields.unreadableRecords, [])
  })
})
