/**
 * The integration suite, once per backend (tenantRouting.iptables.test.ts, tenantRouting.nftables.test.ts):
 * the BUILT executable as the first plugin of a conflist (delegate ptp + host-local), followed by portmap
 * (trw-next for 1.1.0, which portmap refuses), run by a mini libcni inside a simulated node namespace with
 * three gateways, the node's tenant routing applied by the executable's own `node-setup`, and the project's
 * test Kubernetes API server on the node's loopback.
 *
 * Per CNI version (0.4.0 with IPv4 pods; 1.0.0 and 1.1.0 with dual-stack pods), five pods are added at
 * once, one per way of naming a tenant: a mark literal on the pod, a tenant name on the pod, only the
 * namespace (pinned), only the runtime's `runtimeConfig` annotations (the pod absent from the API), and
 * nothing at all. Then: the kernel holds exactly the expected marks and the disk the expected records;
 * real connections leave through the tenant's gateway, stay on the node between pods, and come back for
 * connections made to a tenant pod; CHECK passes, then reports drift (103) once an entry is removed by
 * hand; DEL leaves no veth, lease, entry or record. 1.1.0 adds STATUS and GC.
 *
 * Tests inside a version depend on the pods its first test added (they run in order, as vitest runs a
 * file's tests). Namespaces get a random suffix and are removed in afterAll, and at process exit if that
 * never runs.
 */
import { rmSync, statSync } from "node:fs"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { CniRuntime } from "../sim/cniRuntime.ts"
import { randomPrefix, removePath, tempDir } from "../sim/netns.ts"
import {
  DEFAULT_TENANT_ROUTES,
  type GatewayName,
  type KubeApi,
  type Pod,
  SERVICE_V4,
  SERVICE_V6,
  Topology
} from "../sim/topology.ts"
import { skipLive } from "../support/liveGate.ts"
import {
  ANNOTATION,
  type Backend,
  canonicalIp,
  entriesOf,
  type InstalledPlugin,
  installPlugin,
  iptablesState,
  leases,
  logLines,
  median,
  missingPrerequisites,
  NEXT_PLUGIN,
  NODE_ENV,
  nftState,
  POD_ANNOTATIONS,
  readRecord,
  recordDirs,
  removeEntryByHand,
  tenantConflist,
  VERSIONS,
  type Version,
  writeNextPlugin
} from "./harness.ts"

interface PodCase {
  readonly kind: string
  readonly how: string
  readonly namespace: string
  /** Pod annotations in the API; undefined: the pod is not in the API at all. */
  readonly api: Record<string, string> | undefined
  /** Annotations the runtime passes in runtimeConfig. */
  readonly runtime?: Record<string, string>
  readonly tenant: string | null
  readonly mark: number | null
  readonly gateway: GatewayName
}

const CASES: ReadonlyArray<PodCase> = [
  {
    kind: "mark",
    how: "pod annotated 0x10",
    namespace: "default",
    api: { [ANNOTATION]: "0x10" },
    tenant: "tenant-a",
    mark: 0x10,
    gateway: "gw-a"
  },
  {
    kind: "name",
    how: "pod annotated tenant-b",
    namespace: "default",
    api: { [ANNOTATION]: "tenant-b" },
    tenant: "tenant-b",
    mark: 0x20,
    gateway: "gw-b"
  },
  {
    kind: "ns",
    how: "namespace pinned to tenant-a",
    namespace: "pinned-a",
    api: {},
    tenant: "tenant-a",
    mark: 0x10,
    gateway: "gw-a"
  },
  {
    kind: "rt",
    how: "runtimeConfig annotations only",
    namespace: "default",
    api: undefined,
    runtime: { [ANNOTATION]: "tenant-b" },
    tenant: "tenant-b",
    mark: 0x20,
    gateway: "gw-b"
  },
  {
    kind: "none",
    how: "no annotation",
    namespace: "default",
    api: {},
    tenant: null,
    mark: null,
    gateway: "gw-default"
  }
]

const tag = (version: string) => `v${version.replace(/\./g, "")}`
const podName = (c: PodCase, version: string) => `${c.kind}-${tag(version)}`
const dualStackFor = (version: Version) => version !== "0.4.0"

const kubeState = () => ({
  namespaces: [{ name: "default" }, { name: "pinned-a", annotations: { [ANNOTATION]: "tenant-a" } }],
  pods: VERSIONS.flatMap((v) =>
    CASES.filter((c) => c.api !== undefined).map((c) => ({
      namespace: c.namespace,
      name: podName(c, v),
      annotations: c.api!
    }))
  )
})

/**
 * What `meta mark set meta mark & A | B` does, as the pair (result for mark 0, result for mark 0xffffffff):
 * bitwise functions act on each bit alone, so these two values determine it. nft may list an equivalent
 * constant (nft 1.0.6 prints `& 0xffffffdf | 0x10` for `& 0xffffffcf | 0x10`), hence no text comparison.
 */
const markFunction = (rule: string): string => {
  const m = /meta mark & (0x[0-9a-f]+|\d+) \| (0x[0-9a-f]+|\d+)\s*$/.exec(rule)
  if (m === null) return `unparsed: ${rule}`
  const and = Number(m[1]) >>> 0
  const or = Number(m[2]) >>> 0
  return `${((0 & and) | or) >>> 0}/${((0xffffffff & and) | or) >>> 0}`
}

const ipsOf = (pod: Pod) => [pod.v4, pod.v6].filter((ip): ip is string => ip !== undefined)
const sortKey = (e: { backend: string; ip: string; mark: number; owner: string }) =>
  `${e.backend} ${e.ip} ${e.mark} ${e.owner}`
const errorText = (pod: Pod) =>
  `${pod.name}: ${JSON.stringify(pod.add.error)} ${pod.add.runs.map((r) => r.stderr.trim()).join(" | ")}`

export const tenantRoutingSuite = (backend: Backend): void => {
  const missing = missingPrerequisites()
  const title = `tenant routing through the built executable, backend ${backend}`
  describe.skipIf(skipLive(title, missing))(title, () => {
    let topo: Topology | undefined
    let api: KubeApi | undefined
    let plugin: InstalledPlugin = { argv: [], cniPath: [], commands: {} }
    let pluginDir = ""
    const timings = { add: [] as Array<number>, del: [] as Array<number>, check: [] as Array<number> }
    let calls = 0
    const logFile = () => join(topo!.dir, "plugin.log")

    beforeAll(async () => {
      pluginDir = tempDir("trw-plugins-")
      plugin = await installPlugin(pluginDir)
      writeNextPlugin(pluginDir)
      topo = await Topology.create({ prefix: randomPrefix(`trw-${backend === "iptables" ? "ipt" : "nft"}`) })
      await topo.applyRouting(DEFAULT_TENANT_ROUTES, plugin.argv)
      api = await topo.startKubeApi(kubeState(), { logRequests: true })
    }, 10 * 60_000)

    afterAll(async () => {
      const problems = (await topo?.destroy()) ?? []
      if (pluginDir !== "") removePath(pluginDir)
      if (timings.add.length > 0)
        console.log(
          `[${backend}] executable (one process per verb, under ip netns exec): ADD median ${median(timings.add)} ms ` +
            `(n=${timings.add.length}, includes ptp+host-local), DEL median ${median(timings.del)} ms, ` +
            `CHECK median ${median(timings.check)} ms`
        )
      assert.deepStrictEqual(problems, [])
    }, 60_000)

    for (const [index, version] of VERSIONS.entries()) {
      const dualStack = dualStackFor(version)
      describe(`CNI ${version}, ${dualStack ? "dual-stack" : "IPv4"} pods`, () => {
        const network = `trw-it-${version}`
        const pods = new Map<string, Pod>()
        let runtime: CniRuntime
        let stateDir = ""
        let dataDir = ""
        const pod = (kind: string) => {
          const p = pods.get(kind)
          if (p === undefined) throw new Error(`pod ${kind} was not added (see the ADD test)`)
          return p
        }
        const families: ReadonlyArray<4 | 6> = dualStack ? [4, 6] : [4]

        beforeAll(() => {
          stateDir = join(topo!.dir, `state-${tag(version)}`)
          dataDir = join(topo!.dir, `ipam-${tag(version)}`)
          const third = String(index + 1)
          const ranges = [
            [{ subnet: "10.200.0.0/16", rangeStart: `10.200.${third}.2`, rangeEnd: `10.200.${third}.254` }],
            ...(dualStack
              ? [
                  [
                    {
                      subnet: "fd00:200::/64",
                      rangeStart: `fd00:200::${third}:2`,
                      rangeEnd: `fd00:200::${third}:ffff`
                    }
                  ]
                ]
              : [])
          ]
          runtime = new CniRuntime({
            conflist: tenantConflist({
              version,
              name: network,
              backend,
              kubeconfig: api!.kubeconfig,
              stateDir,
              logFile: logFile(),
              dataDir,
              ranges,
              podAnnotationsCapability: true
            }),
            cniPath: plugin.cniPath,
            prefix: ["ip", "netns", "exec", topo!.node],
            commands: plugin.commands,
            env: NODE_ENV
          })
        })

        it(`ADD of five pods at once: ${CASES.map((c) => c.how).join(", ")}`, async () => {
          const added = await Promise.all(
            CASES.map((c) =>
              topo!.addPod(runtime, {
                name: podName(c, version),
                namespace: c.namespace,
                ...(c.runtime === undefined ? {} : { capabilityArgs: { [POD_ANNOTATIONS]: c.runtime } })
              })
            )
          )
          calls += added.length
          for (const [i, c] of CASES.entries()) pods.set(c.kind, added[i]!)
          for (const p of added) {
            assert.isTrue(p.add.ok, errorText(p))
            timings.add.push(p.add.runs[0]!.durationMs)
            const result = p.add.result!
            assert.strictEqual(result.cniVersion, version, `${p.name}: result version`)
            // What the next plugin received from ours: a result of the conflist's version.
            const passed = p.add.runs[1]!.stdin.prevResult as Record<string, unknown>
            assert.strictEqual(passed.cniVersion, version)
            assert.isDefined(p.v4, `${p.name} has an IPv4 address`)
            assert.strictEqual(
              p.v6 !== undefined,
              dualStack,
              `${p.name} IPv6 address: ${JSON.stringify(result)}`
            )
            assert.isDefined(p.hostVeth)
            if (version === "0.4.0")
              for (const ipc of result.ips as ReadonlyArray<{ version?: string; address: string }>)
                assert.strictEqual(ipc.version, ipc.address.includes(":") ? "6" : "4")
          }
        })

        it("the kernel holds exactly the tenant pods' marks, in the configured backend only; records match", async () => {
          const expected = CASES.filter((c) => c.mark !== null).flatMap((c) =>
            ipsOf(pod(c.kind)).map((ip) => ({
              backend,
              ip: canonicalIp(ip),
              mark: c.mark!,
              owner: `${network}/${pod(c.kind).attachment.containerId}/eth0`
            }))
          )
          const actual = (await entriesOf(topo!.node, network)).map((e) => ({
            backend: e.backend,
            ip: e.ip,
            mark: e.mark,
            owner: e.owner
          }))
          assert.deepStrictEqual(actual.map(sortKey).sort(), expected.map(sortKey).sort())

          if (backend === "iptables") {
            const ipt = await iptablesState(topo!.node)
            for (const family of families)
              assert.isTrue(ipt.jumpFirst[family], `IPv${family} PREROUTING's first rule jumps to TRW-MARK`)
            for (const e of ipt.entries) assert.strictEqual(e.mask, 0x30, `mask of ${e.ip}`)
          } else {
            const nft = await nftState(topo!.node)
            for (const family of families)
              for (const mark of [0x10, 0x20]) {
                const set = `@m${mark.toString(16)}_v${family}`
                const rule = nft.rules.find((r) =>
                  r.startsWith(
                    `ct direction original ${family === 4 ? "ip" : "ip6"} saddr ${set} meta mark set`
                  )
                )
                assert.isDefined(rule, `a rule for ${set} in ${JSON.stringify(nft.rules)}`)
                assert.strictEqual(
                  markFunction(rule!),
                  markFunction(`meta mark & ${~0x30 >>> 0} | ${mark}`),
                  rule
                )
              }
          }

          for (const c of CASES) {
            const p = pod(c.kind)
            const record = readRecord(stateDir, network, p.attachment.containerId, "eth0")
            assert.isDefined(record, `state record of ${p.name}`)
            assert.strictEqual(record!.owner, `${network}/${p.attachment.containerId}/eth0`)
            assert.strictEqual(record!.tenant, c.tenant, `tenant of ${p.name}`)
            assert.strictEqual(record!.mark, c.mark, `mark of ${p.name}`)
            assert.strictEqual(record!.backend, backend)
            assert.deepStrictEqual([...record!.ips].map(canonicalIp).sort(), ipsOf(p).map(canonicalIp).sort())
          }

          // The runtime's annotations were enough: that pod was never fetched; the others were.
          const paths = api!.requests().map((r) => r.path)
          assert.notInclude(paths, `/api/v1/namespaces/default/pods/${pod("rt").name}`)
          assert.include(paths, `/api/v1/namespaces/default/pods/${pod("mark").name}`)
        })

        it("each pod's connections leave through its tenant's gateway (gw-a, gw-b, gw-default), unNATed", async () => {
          const probes = CASES.flatMap((c) =>
            families.map(async (family) => {
              const answer = await topo!.probe(pod(c.kind), family)
              return { c, family, answer, ip: family === 4 ? pod(c.kind).v4 : pod(c.kind).v6 }
            })
          )
          const rows = await Promise.all(probes)
          const got = rows.map((r) => `${r.c.kind}/v${r.family} -> ${r.answer.answeredBy ?? r.answer.detail}`)
          const want = rows.map((r) => `${r.c.kind}/v${r.family} -> ${r.c.gateway}`)
          assert.deepStrictEqual(got, want)
          for (const r of rows)
            assert.strictEqual(r.answer.peer, r.ip, "the gateway saw the pod's own address")
        })

        it("pod-to-pod traffic from a tenant pod stays on the node", async () => {
          const from = pod("mark")
          await Promise.all([topo!.servePod(pod("name")), topo!.servePod(pod("none"))])
          for (const family of families) {
            for (const to of [pod("name"), pod("none")]) {
              const answer = await topo!.probePod(from, to, family)
              assert.strictEqual(
                answer.answeredBy,
                to.name,
                `${from.name} -> ${to.name} v${family}: ${answer.detail}`
              )
              assert.strictEqual(answer.peer, family === 4 ? from.v4 : from.v6)
              // Even with the tenant's mark, the node's route to the other pod is its local veth.
              const dst = (family === 4 ? to.v4 : to.v6)!
              assert.strictEqual(await topo!.nodeRoute(from, dst, "0x10", family), to.hostVeth)
            }
          }
        })

        it("a connection made to a tenant pod from outside gets its replies back the way it came", async () => {
          await Promise.all([topo!.servePod(pod("mark")), topo!.servePod(pod("rt"))])
          for (const family of families)
            for (const target of [pod("mark"), pod("rt")]) {
              const answer = await topo!.probeInbound(target, family)
              assert.strictEqual(
                answer.answeredBy,
                target.name,
                `gw-default -> ${target.name} v${family}: ${answer.detail}`
              )
              assert.strictEqual(answer.peer, family === 4 ? SERVICE_V4 : SERVICE_V6)
            }
        })

        it("CHECK passes for every pod, then fails with 103 once a mark entry is removed by hand", async () => {
          const checks = await Promise.all(CASES.map((c) => runtime.check(pod(c.kind).attachment)))
          calls += checks.length
          for (const [i, outcome] of checks.entries()) {
            assert.isTrue(outcome.ok, `CHECK ${CASES[i]!.kind}: ${JSON.stringify(outcome.error)}`)
            timings.check.push(outcome.runs[0]!.durationMs)
          }
          const victim = pod("mark")
          const entry = (await entriesOf(topo!.node, network)).find(
            (e) => e.ip === canonicalIp(victim.v4!) && e.backend === backend
          )
          assert.isDefined(entry)
          await removeEntryByHand(topo!.node, entry!)
          const drift = await runtime.check(victim.attachment)
          const other = await runtime.check(pod("name").attachment)
          calls += 2
          assert.isFalse(drift.ok)
          assert.strictEqual(drift.failedPlugin, "tenant-routing-wrapper")
          assert.strictEqual(drift.error?.code, 103, JSON.stringify(drift.error))
          assert.isTrue(other.ok, JSON.stringify(other.error))
        })

        if (version === "1.1.0") {
          it("STATUS succeeds through the chain", async () => {
            const outcome = await runtime.status()
            calls++
            assert.isTrue(outcome.ok, JSON.stringify(outcome.error))
            assert.deepStrictEqual(
              outcome.runs.map((r) => r.type),
              ["tenant-routing-wrapper", NEXT_PLUGIN]
            )
          })
        }

        it("DEL of every pod leaves no veth, no host-local lease, no mark entry and no state record; DEL again succeeds", async () => {
          const deleted = await Promise.all(CASES.map((c) => topo!.deletePod(runtime, pod(c.kind))))
          calls += deleted.length
          for (const [i, outcome] of deleted.entries()) {
            assert.isTrue(outcome.ok, `DEL ${CASES[i]!.kind}: ${JSON.stringify(outcome.error)}`)
            timings.del.push(outcome.runs.find((r) => r.type === "tenant-routing-wrapper")!.durationMs)
          }
          const hostVeths = CASES.map((c) => pod(c.kind).hostVeth!)
          const links = await topo!.nodeLinks()
          for (const veth of hostVeths) assert.notInclude(links, veth)
          assert.deepStrictEqual(leases(dataDir, network), [])
          assert.deepStrictEqual(await entriesOf(topo!.node, network), [])
          assert.deepStrictEqual(recordDirs(stateDir, network), [])
          // A runtime may repeat DEL (no cached result left, netns gone): still success.
          const again = await runtime.del(pod("mark").attachment)
          calls++
          assert.isTrue(again.ok, JSON.stringify(again.error))
        })

        if (version === "1.1.0") {
          it("GC removes the entries and record of an attachment the runtime no longer lists, nothing else", async () => {
            const keep = await topo!.addPod(runtime, {
              name: `gc-keep-${tag(version)}`,
              namespace: "default",
              capabilityArgs: { [POD_ANNOTATIONS]: { [ANNOTATION]: "tenant-a" } }
            })
            const gone = await topo!.addPod(runtime, {
              name: `gc-gone-${tag(version)}`,
              namespace: "default",
              capabilityArgs: { [POD_ANNOTATIONS]: { [ANNOTATION]: "tenant-b" } }
            })
            calls += 2
            assert.isTrue(keep.add.ok && gone.add.ok, `${errorText(keep)} ${errorText(gone)}`)
            assert.strictEqual((await entriesOf(topo!.node, network)).length, 4)
            // A runtime that lost its cache for `gone`: only GC can clean it up.
            runtime.setCachedResult(gone.attachment, undefined)
            const gc = await runtime.gc([{ containerId: keep.attachment.containerId, ifname: "eth0" }], {
              deleteStale: false
            })
            calls++
            assert.isTrue(gc.ok, JSON.stringify(gc.error))
            const left = await entriesOf(topo!.node, network)
            assert.deepStrictEqual(
              [...new Set(left.map((e) => e.owner))],
              [`${network}/${keep.attachment.containerId}/eth0`]
            )
            assert.deepStrictEqual(recordDirs(stateDir, network), [keep.attachment.containerId])
            for (const p of [keep, gone]) {
              const outcome = await topo!.deletePod(runtime, p)
              calls++
              assert.isTrue(outcome.ok, JSON.stringify(outcome.error))
            }
            assert.deepStrictEqual(await entriesOf(topo!.node, network), [])
            assert.deepStrictEqual(leases(dataDir, network), [])
          })
        }
      })
    }

    describe("invariants across pods and backends (CNI 1.0.0, IPv4)", () => {
      const network = "trw-it-invariants"
      const other: Backend = backend === "iptables" ? "nftables" : "iptables"
      let dataDir = ""
      const runtimeFor = (b: Backend) =>
        new CniRuntime({
          conflist: tenantConflist({
            version: "1.0.0",
            name: network,
            backend: b,
            kubeconfig: api!.kubeconfig,
            stateDir: join(topo!.dir, "state-invariants"),
            logFile: logFile(),
            dataDir,
            ranges: [[{ subnet: "10.200.0.0/16", rangeStart: "10.200.9.2", rangeEnd: "10.200.9.254" }]],
            podAnnotationsCapability: true
          }),
          cniPath: plugin.cniPath,
          prefix: ["ip", "netns", "exec", topo!.node],
          commands: plugin.commands,
          env: NODE_ENV
        })
      const withTenant = (tenant: string) => ({ [POD_ANNOTATIONS]: { [ANNOTATION]: tenant } })

      beforeAll(() => {
        dataDir = join(topo!.dir, "ipam-invariants")
      })

      it("an address taken over from a pod that vanished without DEL carries no stale mark", async () => {
        const runtime = runtimeFor(backend)
        const old = await topo!.addPod(runtime, {
          name: "reuse-old",
          namespace: "default",
          capabilityArgs: withTenant("tenant-a")
        })
        calls++
        assert.isTrue(old.add.ok, errorText(old))
        // The runtime lost the pod: no DEL ever ran; its lease was freed by hand (as an operator would).
        await topo!.removePodNamespace(old)
        runtime.setCachedResult(old.attachment, undefined)
        rmSync(join(dataDir, network, old.v4!))
        assert.deepStrictEqual(
          (await entriesOf(topo!.node, network)).map((e) => `${e.ip} ${e.mark}`),
          [`${old.v4} ${0x10}`],
          "the vanished pod's entry is still there"
        )
        const next = await topo!.addPod(runtime, {
          name: "reuse-new",
          namespace: "default",
          extraArgs: [["IP", old.v4!]]
        })
        calls++
        assert.isTrue(next.add.ok, errorText(next))
        assert.strictEqual(next.v4, old.v4)
        // Untagged, yet the old owner's entry for that address is gone, so it leaves the default way.
        assert.deepStrictEqual(await entriesOf(topo!.node, network), [])
        assert.strictEqual((await topo!.probe(next)).answeredBy, "gw-default")
        const check = await runtime.check(next.attachment)
        calls++
        assert.isTrue(check.ok, JSON.stringify(check.error))
        const del = await topo!.deletePod(runtime, next)
        calls++
        assert.isTrue(del.ok, JSON.stringify(del.error))
      })

      it(`switching the conflist's backend to ${other} between ADD and DEL leaks nothing`, async () => {
        const before = runtimeFor(backend)
        const after = runtimeFor(other)
        const p = await topo!.addPod(before, {
          name: "switch",
          namespace: "default",
          capabilityArgs: withTenant("tenant-b")
        })
        calls++
        assert.isTrue(p.add.ok, errorText(p))
        assert.deepStrictEqual(
          (await entriesOf(topo!.node, network)).map((e) => `${e.backend} ${e.ip} ${e.mark}`),
          [`${backend} ${p.v4} ${0x20}`]
        )
        after.setCachedResult(p.attachment, before.cachedResult(p.attachment.containerId, "eth0"))
        const del = await topo!.deletePod(after, p)
        calls++
        assert.isTrue(del.ok, JSON.stringify(del.error))
        assert.deepStrictEqual(await entriesOf(topo!.node, network), [])
        assert.deepStrictEqual(leases(dataDir, network), [])
      })
    })

    it("the log file has mode 0600, only JSON lines, and one outcome line per call", () => {
      const lines = logLines(logFile())
      assert.strictEqual(statSync(logFile()).mode & 0o777, 0o600)
      for (const line of lines) assert.isObject(line, `not a JSON object: ${String(line)}`)
      const outcomes = lines.filter((l) =>
        /"(ADD|DEL|CHECK|GC|STATUS) (ok|failed)"/.test(JSON.stringify((l as { message?: unknown }).message))
      )
      assert.strictEqual(outcomes.length, calls)
    })
  })
}
