/**
 * The simulated node itself (test/sim), with bare ptp + host-local and marks set by hand — no plugin.
 * These tests show that the probes the plugin's suites rely on can fail: a mark that is missing, a
 * routing rule that is missing, or a mark put on replies each change what a probe sees. Without them, a
 * green plugin suite could mean a blind simulation. Also checks the mini libcni's chaining and that
 * `destroy()` leaves no namespace behind.
 */

import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { CniRuntime } from "../sim/cniRuntime.ts"
import { ip, listNetns, mustIn, randomPrefix } from "../sim/netns.ts"
import { type Pod, SERVICE_V4, SERVICE_V6, Topology } from "../sim/topology.ts"
import { skipLive } from "../support/liveGate.ts"
import { leases, missingPrerequisites, SYSTEM_CNI } from "./harness.ts"

const missing = missingPrerequisites()
const title = "the simulated node (bare ptp + host-local, marks set by hand)"

describe.skipIf(skipLive(title, missing))(title, () => {
  let topo: Topology | undefined
  let runtime: CniRuntime
  let dataDir = ""
  let a: Pod
  let b: Pod
  const prefix = randomPrefix("trw-sim")

  /** Marks `pod`'s packets by hand in the node: original direction only, or (`replies`) every packet. */
  const mark = (pod: Pod, value: string, replies = false) =>
    mustIn(topo!.node, "nft", [
      "add table inet trw_sim_test; add chain inet trw_sim_test pre { type filter hook prerouting priority mangle; }; " +
        `flush chain inet trw_sim_test pre; add rule inet trw_sim_test pre ${replies ? "" : "ct direction original "}` +
        `ip saddr ${pod.v4} meta mark set ${value}; add rule inet trw_sim_test pre ${replies ? "" : "ct direction original "}` +
        `ip6 saddr ${pod.v6} meta mark set ${value}`
    ])
  const unmark = () => mustIn(topo!.node, "nft", ["delete", "table", "inet", "trw_sim_test"])

  beforeAll(async () => {
    topo = await Topology.create({ prefix })
    await topo.applyRouting()
    dataDir = join(topo.dir, "ipam")
    runtime = new CniRuntime({
      conflist: {
        cniVersion: "1.0.0",
        name: "trw-sim",
        plugins: [
          {
            type: "ptp",
            ipam: {
              type: "host-local",
              dataDir,
              ranges: [[{ subnet: "10.200.0.0/16" }], [{ subnet: "fd00:200::/64" }]],
              routes: [{ dst: "0.0.0.0/0" }, { dst: "::/0" }]
            }
          },
          { type: "portmap" }
        ]
      },
      cniPath: [SYSTEM_CNI],
      prefix: ["ip", "netns", "exec", topo.node]
    })
    a = await topo.addPod(runtime, { name: "a", namespace: "default" })
    b = await topo.addPod(runtime, { name: "b", namespace: "default" })
    assert.isTrue(a.add.ok && b.add.ok, JSON.stringify([a.add.error, b.add.error]))
    await Promise.all([topo.servePod(a), topo.servePod(b)])
  }, 120_000)

  afterAll(async () => {
    const problems = (await topo?.destroy()) ?? []
    assert.deepStrictEqual(problems, [])
    assert.deepStrictEqual(
      (await listNetns()).filter((n) => n.startsWith(prefix)),
      [],
      "destroy() leaves no namespace"
    )
  }, 60_000)

  it("the mini libcni chains: prevResult passed along on ADD, DEL in reverse with the cached result", async () => {
    assert.deepStrictEqual(
      a.add.runs.map((r) => [
        r.type,
        r.verb,
        r.stdin.name,
        r.stdin.cniVersion,
        r.stdin.prevResult === undefined
      ]),
      [
        ["ptp", "ADD", "trw-sim", "1.0.0", true],
        ["portmap", "ADD", "trw-sim", "1.0.0", false]
      ]
    )
    assert.deepStrictEqual(a.add.runs[1]!.stdin.prevResult, a.add.runs[0]!.output)
    const check = await runtime.check(a.attachment)
    assert.isTrue(check.ok, JSON.stringify(check.error))
    assert.deepStrictEqual(
      check.runs.map((r) => [r.type, r.stdin.prevResult !== undefined]),
      [
        ["ptp", true],
        ["portmap", true]
      ]
    )
    const c = await topo!.addPod(runtime, { name: "c", namespace: "default" })
    assert.isTrue(c.add.ok)
    assert.strictEqual(leases(dataDir, "trw-sim").length, 6)
    const del = await topo!.deletePod(runtime, c)
    assert.isTrue(del.ok, JSON.stringify(del.error))
    assert.deepStrictEqual(
      del.runs.map((r) => [r.type, r.verb, r.stdin.prevResult !== undefined]),
      [
        ["portmap", "DEL", true],
        ["ptp", "DEL", true]
      ]
    )
    assert.strictEqual(leases(dataDir, "trw-sim").length, 4)
    assert.isUndefined(runtime.cachedResult(c.attachment.containerId, "eth0"))
  })

  it("portmap refuses a 1.1.0 config (why the 1.1.0 suites chain trw-next instead)", async () => {
    const v11 = new CniRuntime({ ...runtime.options, conflist: { ...runtime.conflist, cniVersion: "1.1.0" } })
    const r = await v11.exec(
      "portmap",
      "ADD",
      v11.pluginConfig({ type: "portmap" }, a.add.result, undefined),
      a.attachment
    )
    assert.strictEqual(r.code, 1)
    assert.strictEqual((r.output as { code: number }).code, 1)
  })

  it("unmarked pods leave through gw-default, v4 and v6", async () => {
    for (const family of [4, 6] as const)
      assert.strictEqual((await topo!.probe(a, family)).answeredBy, "gw-default")
  })

  it("a mark set by hand on original-direction packets sends the pod through its tenant's gateway", async () => {
    await mark(a, "0x10")
    try {
      assert.strictEqual((await topo!.probe(a, 4)).answeredBy, "gw-a")
      assert.strictEqual((await topo!.probe(a, 6)).answeredBy, "gw-a")
      assert.strictEqual((await topo!.probe(b, 4)).answeredBy, "gw-default")
      await mark(a, "0x20")
      assert.strictEqual((await topo!.probe(a, 4)).answeredBy, "gw-b")
      // Original direction only: a connection made to the marked pod still gets its replies.
      for (const family of [4, 6] as const) {
        const inbound = await topo!.probeInbound(a, family)
        assert.strictEqual(inbound.answeredBy, "a", inbound.detail)
        assert.strictEqual(inbound.peer, family === 4 ? SERVICE_V4 : SERVICE_V6)
      }
    } finally {
      await unmark()
    }
  })

  it("marking replies too breaks connections made to the pod (the probe sees it)", async () => {
    await mark(a, "0x10", true)
    try {
      assert.isFalse((await topo!.probeInbound(a, 4, "gw-default", 1)).ok)
      assert.isFalse((await topo!.probeInbound(a, 6, "gw-default", 1)).ok)
    } finally {
      await unmark()
    }
    assert.isTrue((await topo!.probeInbound(a, 4)).ok)
  })

  it("marked pod-to-pod traffic stays on the node only thanks to suppress_prefixlength 0", async () => {
    await mark(a, "0x10")
    try {
      assert.strictEqual((await topo!.probePod(a, b, 4)).answeredBy, "b")
      assert.strictEqual((await topo!.probePod(a, b, 6)).answeredBy, "b")
      assert.strictEqual(await topo!.nodeRoute(a, b.v4!, "0x10"), b.hostVeth)
      await ip(topo!.node, "-4", "rule", "del", "priority", "999")
      try {
        assert.strictEqual(await topo!.nodeRoute(a, b.v4!, "0x10"), "to-gw-a")
        assert.isFalse((await topo!.probePod(a, b, 4, 1)).ok)
      } finally {
        await ip(
          topo!.node,
          "-4",
          "rule",
          "add",
          "priority",
          "999",
          "lookup",
          "main",
          "suppress_prefixlength",
          "0"
        )
      }
    } finally {
      await unmark()
    }
  })

  it("a tenant whose gateway route is gone is dropped, not leaked through the main table", async () => {
    await mark(a, "0x10")
    await ip(topo!.node, "-4", "route", "del", "default", "via", "192.0.2.2", "table", "100")
    try {
      assert.isFalse((await topo!.probe(a, 4, 1)).ok)
    } finally {
      await ip(topo!.node, "-4", "route", "add", "default", "via", "192.0.2.2", "table", "100")
      await unmark()
    }
  })
})
