/**
 * What the delegate is called with, read from the memory delegate's call log: the config it gets
 * per verb (its own keys, our name, the negotiated version, runtimeConfig, prevResult, the valid
 * attachments), the VERSION question, negotiation's refusal, and who gets GC.
 */
import { describe, it } from "@effect/vitest"
import { assert } from "vitest"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const pod = { containerId: "c1", namespace: "default", name: "p" }
const gcEnv = { ...cniEnv("GC", { containerId: "" }), CNI_CONTAINERID: "", CNI_IFNAME: "", CNI_NETNS: "" }
const ipam = { type: "host-local", subnet: "10.200.0.0/16" }

const world = (versions: ReadonlyArray<string> = ["1.0.0", "1.1.0"]) => {
  const w = new World()
  w.leases.supportedVersions = [...versions]
  w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
  return w
}

describe("the delegate's calls", () => {
  it("ADD at 1.1.0 asks VERSION with the config's version, then ADDs with its keys, our name, the version and runtimeConfig", async () => {
    const w = world()
    const out = await w.run(
      cniEnv("ADD", pod),
      originalConf({ cniVersion: "1.1.0", runtimeConfig: { portMappings: [] } })
    )
    assert.strictEqual(out.exitCode, 0, out.stdout)
    const [version, add] = w.leases.calls
    assert.strictEqual(version!.command, "VERSION")
    assert.strictEqual(version!.type, "ptp")
    assert.deepStrictEqual(version!.conf, { cniVersion: "1.1.0" })
    assert.strictEqual(add!.command, "ADD")
    assert.strictEqual(add!.type, "ptp")
    assert.deepStrictEqual(add!.conf, {
      type: "ptp",
      ipam,
      name: "tenant-routing",
      cniVersion: "1.1.0",
      runtimeConfig: { portMappings: [] }
    })
    assert.strictEqual(add!.containerId, "c1")
    assert.strictEqual(add!.ifname, "eth0")
  })

  it("ADD below 1.1.0 asks no VERSION and passes no runtimeConfig key when there is none", async () => {
    const w = world()
    assert.strictEqual((await w.run(cniEnv("ADD", pod), originalConf())).exitCode, 0)
    assert.deepStrictEqual(
      w.leases.calls.map((c) => c.command),
      ["ADD"]
    )
    assert.deepStrictEqual(w.leases.calls[0]!.conf, {
      type: "ptp",
      ipam,
      name: "tenant-routing",
      cniVersion: "1.0.0"
    })
  })

  it("at 1.1.0 with a delegate that stops at 1.0.0, speaks 1.0.0 to it", async () => {
    const w = world(["0.4.0", "1.0.0"])
    const out = await w.run(cniEnv("ADD", pod), originalConf({ cniVersion: "1.1.0" }))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(w.leases.calls.find((c) => c.command === "ADD")!.conf.cniVersion, "1.0.0")
    assert.strictEqual((parse(out) as { cniVersion: string }).cniVersion, "1.1.0")
  })

  it("a delegate sharing no version is refused naming its type and its versions, before any ADD", async () => {
    const w = world(["0.1.0", "0.2.0"])
    const out = await w.run(cniEnv("ADD", pod), originalConf({ cniVersion: "1.1.0" }))
    assert.strictEqual(out.exitCode, 1)
    const doc = parse(out) as { msg: string }
    assert.strictEqual(doc.msg, "ptp: shares no CNI version with us (it speaks 0.1.0, 0.2.0)")
    assert.deepStrictEqual(
      w.leases.calls.map((c) => c.command),
      ["VERSION"]
    )
  })

  it("DEL and CHECK hand the delegate prevResult in the negotiated version", async () => {
    const w = world()
    const added = parse(await w.run(cniEnv("ADD", pod), originalConf()))
    const check = await w.run(cniEnv("CHECK", pod), originalConf({ prevResult: added }))
    assert.strictEqual(check.exitCode, 0, check.stdout)
    const del = await w.run(cniEnv("DEL", pod), originalConf({ prevResult: added }))
    assert.strictEqual(del.exitCode, 0, del.stdout)
    for (const command of ["CHECK", "DEL"]) {
      const c = w.leases.calls.find((x) => x.command === command)!
      assert.strictEqual(c.conf.cniVersion, "1.0.0", command)
      assert.strictEqual(c.conf.name, "tenant-routing", command)
      const prev = c.conf.prevResult as { cniVersion: string; ips: Array<{ address: string }> }
      assert.strictEqual(prev.cniVersion, "1.0.0", command)
      assert.deepStrictEqual(
        prev.ips.map((i) => i.address),
        ["10.200.0.2/24"],
        command
      )
    }
  })

  it("DEL without prevResult hands the delegate none", async () => {
    const w = world()
    await w.run(cniEnv("ADD", pod), originalConf())
    await w.run(cniEnv("DEL", pod), originalConf())
    const del = w.leases.calls.find((x) => x.command === "DEL")!
    assert.isFalse("prevResult" in del.conf)
  })

  it("GC goes to a delegate speaking 1.1.0, at 1.1.0, with the valid attachments", async () => {
    const w = world()
    const valid = [{ containerID: "c9", ifname: "eth0" }]
    const out = await w.run(gcEnv, originalConf({ cniVersion: "1.1.0", "cni.dev/valid-attachments": valid }))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    const gc = w.leases.calls.find((x) => x.command === "GC")!
    assert.deepStrictEqual(gc.conf, {
      type: "ptp",
      ipam,
      name: "tenant-routing",
      cniVersion: "1.1.0",
      "cni.dev/valid-attachments": valid
    })
  })

  it("GC skips a delegate that stops at 1.0.0, and chained mode has no delegate to ask", async () => {
    const old = world(["0.4.0", "1.0.0"])
    const out = await old.run(gcEnv, originalConf({ cniVersion: "1.1.0", "cni.dev/valid-attachments": [] }))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.deepStrictEqual(
      old.leases.calls.map((c) => c.command),
      ["VERSION"]
    )
    const chained = world()
    const conf = originalConf({ cniVersion: "1.1.0", "cni.dev/valid-attachments": [] })
    delete conf.delegate
    const none = await chained.run(gcEnv, conf)
    assert.strictEqual(none.exitCode, 0, none.stdout)
    assert.deepStrictEqual(chained.leases.calls, [])
  })

  it("STATUS goes to a delegate speaking 1.1.0 at 1.1.0", async () => {
    const w = world()
    const out = await w.run({ ...gcEnv, CNI_COMMAND: "STATUS" }, originalConf({ cniVersion: "1.1.0" }))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    const status = w.leases.calls.find((x) => x.command === "STATUS")!
    assert.strictEqual(status.conf.cniVersion, "1.1.0")
    assert.strictEqual(status.conf.name, "tenant-routing")
  })
})
