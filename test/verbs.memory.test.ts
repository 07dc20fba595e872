/**
 * Verb-level behaviour on the memory node that the laws do not pin down: CHECK's drift reports,
 * version rules, delegate negotiation and error pass-through, backend switching, VERSION's answer.
 */
import { describe, it } from "@effect/vitest"
import { assert } from "vitest"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const pod = { containerId: "c1", namespace: "default", name: "p" }

const added = async (w: World, conf = originalConf()) => {
  w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
  const out = await w.run(cniEnv("ADD", pod), conf)
  assert.strictEqual(out.exitCode, 0, out.stdout)
  return parse(out)
}

describe("CHECK", () => {
  for (const cniVersion of ["0.4.0", "1.0.0", "1.1.0"]) {
    it(`passes right after ADD (cniVersion ${cniVersion})`, async () => {
      const w = new World()
      w.leases.supportedVersions = ["0.4.0", "1.0.0"]
      const result = await added(w, originalConf({ cniVersion }))
      const out = await w.run(cniEnv("CHECK", pod), originalConf({ cniVersion, prevResult: result }))
      assert.strictEqual(out.exitCode, 0, out.stdout)
    })
  }

  it("reports drift (103) naming the IP when an entry is removed by hand", async () => {
    const w = new World()
    const result = await added(w)
    w.kernel.entries.nftables = []
    const out = await w.run(cniEnv("CHECK", pod), originalConf({ prevResult: result }))
    const doc = parse(out) as { code: number; msg: string; details: string }
    assert.strictEqual(doc.code, 103)
    assert.include(doc.details, "10.200.0.2: missing nftables entry with mark 0x10")
  })

  it("reports a foreign owner and another mark as drift", async () => {
    const w = new World()
    const result = await added(w)
    w.kernel.entries.nftables = [
      { ip: "10.200.0.2", family: 4, mark: 0x20, mask: 0x30, owner: "tenant-routing/other/eth0" }
    ]
    const doc = parse(await w.run(cniEnv("CHECK", pod), originalConf({ prevResult: result }))) as {
      code: number
      msg: string
      details: string
    }
    assert.strictEqual(doc.code, 103)
    assert.match(
      doc.msg,
      /^tenant marks drifted for \S+: \d+ differences? between the state record and the kernel$/
    )
    assert.include(doc.details, "entry of another owner tenant-routing/other/eth0")
  })

  it("is refused with code 1 below 0.4.0, and needs prevResult", async () => {
    const w = new World()
    const old = parse(await w.run(cniEnv("CHECK", pod), originalConf({ cniVersion: "0.3.1" }))) as {
      code: number
    }
    assert.strictEqual(old.code, 1)
    const none = parse(await w.run(cniEnv("CHECK", pod), originalConf())) as { code: number }
    assert.strictEqual(none.code, 7)
  })
})

describe("versions", () => {
  it("VERSION lists every supported version and needs no config", async () => {
    const w = new World()
    const out = await w.run({ CNI_COMMAND: "VERSION" }, { cniVersion: "1.0.0" })
    assert.deepStrictEqual(parse(out), {
      cniVersion: "1.0.0",
      supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    })
  })

  for (const verb of ["GC", "STATUS"]) {
    it(`${verb} below 1.1.0 is code 1`, async () => {
      const w = new World()
      const doc = parse(await w.run(cniEnv(verb, pod), originalConf({ cniVersion: "1.0.0" }))) as {
        code: number
      }
      assert.strictEqual(doc.code, 1)
    })
  }

  it("a 1.1.0 config talks to a 1.0.0 delegate in 1.0.0 and answers in 1.1.0", async () => {
    const w = new World()
    const result = (await added(w, originalConf({ cniVersion: "1.1.0" }))) as { cniVersion: string }
    assert.strictEqual(result.cniVersion, "1.1.0")
    const adds = w.leases.calls.filter((c) => c.command === "ADD")
    assert.deepStrictEqual(
      adds.map((c) => c.conf.cniVersion),
      ["1.0.0"]
    )
    assert.deepStrictEqual(
      adds.map((c) => c.conf.name),
      ["tenant-routing"]
    )
  })

  it("0.3.1 results carry the IP version field", async () => {
    const w = new World()
    const result = (await added(w, originalConf({ cniVersion: "0.3.1" }))) as {
      ips: Array<{ version: string }>
    }
    assert.strictEqual(result.ips[0]?.version, "4")
  })

  it("STATUS is 50 when the backend cannot be used, and GC/STATUS skip a delegate without 1.1.0", async () => {
    const w = new World()
    w.kernel.usable.iptables = false
    const doc = parse(
      await w.run(cniEnv("STATUS", pod), originalConf({ cniVersion: "1.1.0", backend: "iptables" }))
    ) as { code: number }
    assert.strictEqual(doc.code, 50)
    const ok = await w.run(cniEnv("STATUS", pod), originalConf({ cniVersion: "1.1.0", backend: "nftables" }))
    assert.strictEqual(ok.exitCode, 0)
    assert.deepStrictEqual(
      w.leases.calls.map((c) => c.command).filter((c) => c === "STATUS"),
      []
    )
  })
})

describe("kubeconfig", () => {
  it("is loaded before the delegate runs: unparsable is 7, missing is 11, and the delegate is never run", async () => {
    for (const [state, code] of [
      ["broken", 7],
      ["missing", 11]
    ] as const) {
      const w = new World()
      w.cluster.kubeconfig = state
      const doc = parse(await w.run(cniEnv("ADD", pod), originalConf())) as { code: number }
      assert.strictEqual(doc.code, code)
      assert.deepStrictEqual(w.leases.calls, [])
      assert.deepStrictEqual(w.snapshot(), new World().snapshot())
    }
  })

  it("missing under failurePolicy open starts the pod untagged; unparsable still fails", async () => {
    const w = new World()
    w.cluster.kubeconfig = "missing"
    const ok = await w.run(cniEnv("ADD", pod), originalConf({ failurePolicy: "open" }))
    assert.strictEqual(ok.exitCode, 0, ok.stdout)
    assert.strictEqual(w.records.snapshot()[0]?.[1].tenant, null)
    const broken = new World()
    broken.cluster.kubeconfig = "broken"
    const doc = parse(await broken.run(cniEnv("ADD", pod), originalConf({ failurePolicy: "open" }))) as {
      code: number
    }
    assert.strictEqual(doc.code, 7)
  })
})

describe("delegate", () => {
  it("a delegate error keeps its code and gets its type as prefix; nothing is installed", async () => {
    const w = new World()
    w.faults.faults = [{ op: "delegate.ADD", nth: 1, kind: "fail" }]
    const doc = parse(await w.run(cniEnv("ADD", pod), originalConf())) as { code: number; msg: string }
    assert.strictEqual(doc.code, 999)
    assert.strictEqual(doc.msg, "ptp: ADD failed (injected)")
    assert.deepStrictEqual(w.snapshot(), new World().snapshot())
  })

  it("an unknown tenant waits for the delegate ADD, then undoes it with DEL", async () => {
    const w = new World()
    w.cluster.setPod("default", "p", { [KEY]: "tenant-z" })
    const doc = parse(await w.run(cniEnv("ADD", pod), originalConf())) as {
      code: number
      msg: string
      details: string
    }
    assert.strictEqual(doc.code, 100)
    // Runtimes show `msg; details`: the known tenants appear once, in details.
    assert.strictEqual(doc.msg, 'pod annotation tenant.routing/fwmark: unknown tenant "tenant-z"')
    assert.strictEqual(doc.details, "known tenants: tenant-a (0x10), tenant-b (0x20)")
    assert.deepStrictEqual(
      w.leases.calls.map((c) => c.command),
      ["ADD", "DEL"]
    )
  })
})

describe("backends", () => {
  it("switching backend moves the attachment's entries and leaks nothing", async () => {
    const w = new World()
    // A delegate that answers a repeated ADD (host-local refuses it), so the second ADD gets through.
    w.leases.repeatedAdd = "same-lease"
    await added(w, originalConf({ backend: "iptables" }))
    assert.strictEqual(w.kernel.entries.iptables.length, 1)
    await added(w, originalConf({ backend: "nftables" }))
    assert.strictEqual(w.kernel.entries.iptables.length, 0)
    assert.strictEqual(w.kernel.entries.nftables.length, 1)
    await w.run(cniEnv("DEL", pod), originalConf({ backend: "iptables" }))
    assert.deepStrictEqual(w.snapshot(), new World().snapshot())
  })

  for (const nftablesUsable of [true, false]) {
    it(`auto picks ${nftablesUsable ? "nftables when it is usable" : "iptables when nftables is not usable"}`, async () => {
      const w = new World()
      w.kernel.usable.nftables = nftablesUsable
      await added(w, originalConf({ backend: "auto" }))
      const [picked, other] = nftablesUsable
        ? (["nftables", "iptables"] as const)
        : (["iptables", "nftables"] as const)
      assert.deepStrictEqual(
        w.kernel.entries[picked].map((e) => e.mark),
        [0x10]
      )
      assert.deepStrictEqual(w.kernel.entries[other], [])
      assert.strictEqual(w.records.snapshot()[0]?.[1].backend, picked)
    })
  }
})
