/**
 * Verb rules the laws leave open, each pinned by its exact answer and log line: ADD in chained mode
 * (with and without prevResult), CHECK in chained mode, GC's version and validAttachments rules.
 */
import { describe, it } from "@effect/vitest"
import { Effect, Logger } from "effect"
import { assert } from "vitest"
import { runCni } from "../src/programs/dispatch.ts"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const pod = { containerId: "c1", namespace: "default", name: "p" }

/** Runs one call in `w` and returns its output with the fields of its one log line. */
const runLogged = async (w: World, env: Record<string, string>, conf: unknown) => {
  const lines: Array<{ level: string; message: unknown }> = []
  const capture = Logger.make((o) => void lines.push({ level: o.logLevel, message: o.message }))
  const out = await Effect.runPromise(
    runCni(env, new TextEncoder().encode(JSON.stringify(conf)), () => Logger.layer([capture])).pipe(
      Effect.provide(w.layer())
    )
  )
  const last = lines.at(-1)
  const parts = Array.isArray(last?.message) ? last.message : [last?.message]
  const fields = (parts.find((p) => typeof p === "object" && p !== null) ?? {}) as Record<string, unknown>
  return { out, level: last?.level, text: parts.find((p) => typeof p === "string"), fields }
}

const prevResult = {
  cniVersion: "1.0.0",
  interfaces: [{ name: "eth0", sandbox: "/var/run/netns/c1" }],
  ips: [{ address: "10.9.0.5/24", interface: 0 }]
}

describe("ADD in chained mode", () => {
  it("without prevResult is refused with 7 naming prevResult, and touches nothing", async () => {
    const w = new World()
    w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
    const conf = originalConf()
    delete conf.delegate
    const { out, fields } = await runLogged(w, cniEnv("ADD", pod), conf)
    assert.strictEqual(out.exitCode, 1)
    const doc = parse(out) as { code: number; msg: string; details?: string }
    assert.strictEqual(doc.code, 7)
    assert.strictEqual(doc.msg, "invalid network config: chained mode (no delegate) needs prevResult")
    assert.include(doc.details ?? "", "prevResult")
    assert.include(doc.details ?? "", "required when no delegate is configured")
    assert.strictEqual(fields.outcome, "error")
    assert.deepStrictEqual(w.snapshot().entries, { iptables: [], nftables: [] })
    assert.strictEqual(w.records.byPath.size, 0)
    assert.deepStrictEqual(w.leases.calls, [])
  })

  it("with prevResult tags prevResult's IPs, answers prevResult, runs no delegate", async () => {
    const w = new World()
    w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
    const conf = originalConf({ prevResult })
    delete conf.delegate
    const { out, fields, level } = await runLogged(w, cniEnv("ADD", pod), conf)
    assert.strictEqual(out.exitCode, 0, out.stdout)
    const doc = parse(out) as { ips: Array<{ address: string }> }
    assert.deepStrictEqual(
      doc.ips.map((i) => i.address),
      ["10.9.0.5/24"]
    )
    assert.deepStrictEqual(w.leases.calls, [])
    const nft = w.snapshot().entries.nftables
    assert.deepStrictEqual(
      nft.map((e) => e.ip),
      ["10.9.0.5"]
    )
    assert.strictEqual(level, "Info")
    assert.strictEqual(fields.outcome, "ok")
    assert.strictEqual(fields.owner, "tenant-routing/c1/eth0")
    assert.strictEqual(fields.tenant, "tenant-a")
    assert.strictEqual(fields.mark, "0x10")
    assert.deepStrictEqual(fields.ips, ["10.9.0.5"])
    assert.strictEqual(fields.backend, "nftables")
  })

  it("logs tenant and mark as null for a pod without a tenant", async () => {
    const w = new World()
    w.cluster.setPod("default", "p", {})
    const conf = originalConf({ prevResult })
    delete conf.delegate
    const { out, fields } = await runLogged(w, cniEnv("ADD", pod), conf)
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(fields.tenant, null)
    assert.strictEqual(fields.mark, null)
    assert.deepStrictEqual(w.snapshot().entries, { iptables: [], nftables: [] })
  })
})

describe("CHECK in chained mode", () => {
  it("passes after a chained ADD without asking any delegate, logging the tenant", async () => {
    const w = new World()
    w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
    const conf = originalConf({ prevResult })
    delete conf.delegate
    assert.strictEqual((await runLogged(w, cniEnv("ADD", pod), conf)).out.exitCode, 0)
    const { out, fields } = await runLogged(w, cniEnv("CHECK", pod), conf)
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(out.stdout, undefined)
    assert.deepStrictEqual(w.leases.calls, [])
    assert.strictEqual(fields.owner, "tenant-routing/c1/eth0")
    assert.strictEqual(fields.tenant, "tenant-a")
  })

  it("without a record logs the tenant as null", async () => {
    const w = new World()
    const conf = originalConf({ prevResult })
    delete conf.delegate
    const { out, fields } = await runLogged(w, cniEnv("CHECK", pod), conf)
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(fields.tenant, null)
  })

  it("below 0.4.0 is refused with 1 naming the version; without prevResult with 7", async () => {
    const w = new World()
    const old = parse(
      (await runLogged(w, cniEnv("CHECK", pod), originalConf({ cniVersion: "0.3.1" }))).out
    ) as {
      code: number
      msg: string
    }
    assert.strictEqual(old.code, 1)
    assert.strictEqual(old.msg, "CHECK needs cniVersion 0.4.0 or later, the config says 0.3.1")
    const none = parse((await runLogged(w, cniEnv("CHECK", pod), originalConf())).out) as {
      code: number
      msg: string
      details?: string
    }
    assert.strictEqual(none.code, 7)
    assert.strictEqual(none.msg, "invalid network config: CHECK needs prevResult")
    assert.include(none.details ?? "", "required for CHECK")
  })
})

describe("GC", () => {
  const gcEnv = { ...cniEnv("GC", { containerId: "" }), CNI_CONTAINERID: "", CNI_IFNAME: "", CNI_NETNS: "" }

  it("below 1.1.0 is refused with 1 naming the version", async () => {
    const w = new World()
    const doc = parse((await runLogged(w, gcEnv, originalConf({ cniVersion: "1.0.0" }))).out) as {
      code: number
      msg: string
    }
    assert.strictEqual(doc.code, 1)
    assert.strictEqual(doc.msg, "GC needs cniVersion 1.1.0, the config says 1.0.0")
  })

  it("without cni.dev/valid-attachments is refused with 7 naming the key, removing nothing", async () => {
    const w = new World()
    w.kernel.entries.nftables = [
      { ip: "10.0.0.1", family: 4, mark: 0x10, mask: 0x30, owner: "tenant-routing/x/eth0" }
    ]
    const { out } = await runLogged(w, gcEnv, originalConf({ cniVersion: "1.1.0" }))
    const doc = parse(out) as { code: number; msg: string; details?: string }
    assert.strictEqual(doc.code, 7)
    assert.strictEqual(doc.msg, "invalid network config: GC needs cni.dev/valid-attachments")
    assert.include(doc.details ?? "", "required for GC")
    assert.strictEqual(w.kernel.entries.nftables.length, 1)
  })
})
