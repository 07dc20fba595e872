/**
 * The original project's conflist (the one docs/DESIGN.md §2 shows) must keep working unchanged apart from
 * paths and the next plugin's type (docs/DESIGN.md §2). Here it runs as written — no `backend` (so `auto`),
 * no capability, no tenants, the kubelet's own identity (a client certificate, as kubelet.conf has, which
 * may not read namespaces: the test API server answers 403 there) — with only these changes: the
 * kubeconfig path, host-local's `dataDir` and our `stateDir` pointing into the test's temp dir (both
 * default to the host's /var/lib/cni), and `portmap` in place of `cilium-cni`.
 *
 * The original IPAM has no routes (Cilium, its next plugin, managed the pod's routes), so a pod has no
 * default route; the traffic test adds one by hand in each pod, as that next plugin would have.
 *
 * The last test measures ADD and DEL of the executable against bare ptp + host-local, one pod at a time,
 * every plugin under `ip netns exec` in the node namespace as the suites run them; the medians are
 * printed.
 */

import { mkdirSync } from "node:fs"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { CniRuntime, type Conflist } from "../sim/cniRuntime.ts"
import { ip, randomPrefix } from "../sim/netns.ts"
import { DEFAULT_TENANT_ROUTES, type KubeApi, type Pod, Topology } from "../sim/topology.ts"
import { skipLive } from "../support/liveGate.ts"
import {
  ANNOTATION,
  entriesOf,
  installPlugin,
  leases,
  median,
  missingPrerequisites,
  NODE_ENV,
  recordDirs,
  SYSTEM_CNI
} from "./harness.ts"

/** Verbatim from the original README. */
const ORIGINAL = {
  cniVersion: "1.0.0",
  name: "tenant-routing",
  plugins: [
    {
      type: "tenant-routing-wrapper",
      kubeconfig: "/etc/kubernetes/kubelet.conf",
      annotationKey: "tenant.routing/fwmark",
      delegate: {
        type: "ptp",
        ipam: {
          type: "host-local",
          subnet: "10.200.0.0/16"
        }
      }
    },
    {
      type: "cilium-cni"
    }
  ]
} as const

const PODS = [
  { name: "orig-a", annotations: { [ANNOTATION]: "0x10" }, mark: 0x10, gateway: "gw-a" },
  { name: "orig-b", annotations: { [ANNOTATION]: "0x20" }, mark: 0x20, gateway: "gw-b" },
  { name: "orig-none", annotations: {}, mark: null, gateway: "gw-default" }
] as const
const TIMED = 5

/** `durationMs` of the outcome line the plugin logs to stderr (no logFile in the original conflist). */
const loggedDuration = (stderr: string): number | undefined => {
  for (const line of stderr.split("\n")) {
    try {
      const parsed = JSON.parse(line) as { message?: unknown }
      const message: ReadonlyArray<unknown> = Array.isArray(parsed.message) ? parsed.message : []
      for (const m of message)
        if (
          typeof m === "object" &&
          m !== null &&
          typeof (m as { durationMs?: unknown }).durationMs === "number"
        )
          return (m as { durationMs: number }).durationMs
    } catch {
      // not a log line
    }
  }
  return undefined
}

const missing = missingPrerequisites()
const title = "the original conflist, unchanged apart from paths and the next plugin"

describe.skipIf(skipLive(title, missing))(title, () => {
  let topo: Topology | undefined
  let api: KubeApi | undefined
  let runtime: CniRuntime
  let stateDir = ""
  let dataDir = ""
  const pods = new Map<string, Pod>()

  beforeAll(async () => {
    topo = await Topology.create({ prefix: randomPrefix("trw-orig") })
    const binDir = join(topo.dir, "opt-cni-bin")
    mkdirSync(binDir)
    const plugin = await installPlugin(binDir)
    await topo.applyRouting(DEFAULT_TENANT_ROUTES, plugin.argv)
    api = await topo.startKubeApi(
      {
        namespaces: [{ name: "default" }],
        pods: [
          ...PODS.map((p) => ({ namespace: "default", name: p.name, annotations: { ...p.annotations } })),
          ...Array.from({ length: TIMED }, (_, i) => ({
            namespace: "default",
            name: `timed-${i}`,
            annotations: { [ANNOTATION]: "0x10" }
          }))
        ],
        forbid: { namespaces: true }
      },
      { auth: "cert" }
    )
    stateDir = join(topo.dir, "state")
    dataDir = join(topo.dir, "ipam")
    const adapted = structuredClone(ORIGINAL) as unknown as {
      plugins: [Record<string, unknown> & { delegate: { ipam: Record<string, unknown> } }, { type: string }]
    }
    adapted.plugins[0].kubeconfig = api.kubeconfig
    adapted.plugins[0].stateDir = stateDir
    adapted.plugins[0].delegate.ipam.dataDir = dataDir
    adapted.plugins[1].type = "portmap"
    runtime = new CniRuntime({
      conflist: adapted as unknown as Conflist,
      cniPath: plugin.cniPath,
      prefix: ["ip", "netns", "exec", topo.node],
      commands: plugin.commands,
      env: NODE_ENV
    })
  }, 10 * 60_000)

  afterAll(async () => {
    const problems = (await topo?.destroy()) ?? []
    assert.deepStrictEqual(problems, [])
  }, 60_000)

  it("ADD marks the annotated pods in nftables (backend auto), with the kubelet's identity", async () => {
    for (const spec of PODS) {
      const pod = await topo!.addPod(runtime, { name: spec.name, namespace: "default" })
      assert.isTrue(pod.add.ok, `${spec.name}: ${JSON.stringify(pod.add.error)} ${pod.add.runs[0]?.stderr}`)
      assert.strictEqual(pod.add.result?.cniVersion, "1.0.0")
      pods.set(spec.name, pod)
    }
    const entries = await entriesOf(topo!.node, "tenant-routing")
    const want = PODS.filter((p) => p.mark !== null).map(
      (p) =>
        `nftables ${pods.get(p.name)!.v4} ${p.mark} tenant-routing/${pods.get(p.name)!.attachment.containerId}/eth0`
    )
    assert.deepStrictEqual(
      entries.map((e) => `${e.backend} ${e.ip} ${e.mark} ${e.owner}`).sort(),
      want.sort()
    )
  })

  it("each pod's connections leave through its tenant's gateway (default route added by hand)", async () => {
    for (const spec of PODS) {
      const pod = pods.get(spec.name)!
      await ip(pod.ns, "route", "add", "default", "via", "10.200.0.1")
      const answer = await topo!.probe(pod)
      assert.strictEqual(answer.answeredBy, spec.gateway, `${spec.name}: ${answer.detail}`)
    }
  })

  it("CHECK passes, DEL leaves no lease, entry or record", async () => {
    for (const spec of PODS) {
      const check = await runtime.check(pods.get(spec.name)!.attachment)
      assert.isTrue(check.ok, JSON.stringify(check.error))
    }
    for (const spec of PODS) {
      const del = await topo!.deletePod(runtime, pods.get(spec.name)!)
      assert.isTrue(del.ok, JSON.stringify(del.error))
    }
    assert.deepStrictEqual(await entriesOf(topo!.node, "tenant-routing"), [])
    assert.deepStrictEqual(leases(dataDir, "tenant-routing"), [])
    assert.deepStrictEqual(recordDirs(stateDir, "tenant-routing"), [])
  })

  it(`timings: ADD and DEL of the executable against bare ptp + host-local (${TIMED} pods each, one at a time)`, async () => {
    const bare = new CniRuntime({
      conflist: {
        cniVersion: "1.0.0",
        name: "bare-ptp",
        plugins: [{ type: "ptp", ipam: { type: "host-local", subnet: "10.201.0.0/16", dataDir } }]
      },
      cniPath: [SYSTEM_CNI],
      prefix: ["ip", "netns", "exec", topo!.node],
      env: NODE_ENV
    })
    const measure = async (rt: CniRuntime, name: string, namespace: string) => {
      const pod = await topo!.addPod(rt, { name, namespace })
      assert.isTrue(pod.add.ok, `${name}: ${JSON.stringify(pod.add.error)}`)
      const del = await topo!.deletePod(rt, pod)
      assert.isTrue(del.ok, `${name}: ${JSON.stringify(del.error)}`)
      const delRun = del.runs[del.runs.length - 1]!
      return {
        add: pod.add.runs[0]!.durationMs,
        del: delRun.durationMs,
        addInside: loggedDuration(pod.add.runs[0]!.stderr),
        delInside: loggedDuration(delRun.stderr)
      }
    }
    const ours = []
    const theirs = []
    for (let i = 0; i < TIMED; i++) {
      ours.push(await measure(runtime, `timed-${i}`, "default"))
      theirs.push(await measure(bare, `bare-${i}`, "default"))
    }
    const line = (label: string, xs: ReadonlyArray<{ add: number; del: number }>) =>
      `${label}: ADD median ${median(xs.map((x) => x.add))} ms, DEL median ${median(xs.map((x) => x.del))} ms`
    const inside = (xs: ReadonlyArray<number | undefined>) =>
      median(xs.filter((x): x is number => x !== undefined))
    console.log(
      `${line("tenant-routing-wrapper (tenant pod, delegating to ptp)", ours)} ` +
        `(as logged by the program: ADD ${inside(ours.map((x) => x.addInside))} ms, ` +
        `DEL ${inside(ours.map((x) => x.delInside))} ms; the rest is process start-up)\n` +
        line("bare ptp", theirs)
    )
  })
})
