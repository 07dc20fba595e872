import { assert, describe, it } from "@effect/vitest"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

describe("memory smoke", () => {
  it("ADD marks an annotated pod and DEL removes it", async () => {
    const w = new World()
    w.cluster.setPod("default", "a", { "tenant.routing/fwmark": "0x10" })
    const pod = { containerId: "c1", namespace: "default", name: "a" }
    const add = await w.run(cniEnv("ADD", pod), originalConf())
    assert.strictEqual(add.exitCode, 0, add.stdout)
    const result = parse(add) as { ips: Array<{ address: string }> }
    assert.strictEqual(result.ips[0]?.address, "10.200.0.2/24")
    assert.deepStrictEqual(
      w.kernel.entries.nftables.map((e) => [e.ip, e.mark, e.owner]),
      [["10.200.0.2", 0x10, "tenant-routing/c1/eth0"]]
    )
    const del = await w.run(cniEnv("DEL", pod), originalConf())
    assert.strictEqual(del.exitCode, 0, del.stdout)
    assert.deepStrictEqual(w.snapshot(), new World().snapshot())
  })
})
