/**
 * Soak of the BUILT executable, once per backend: many ADD/DEL cycles (1000 by default,
 * TRW_SOAK_CYCLES to change it) through the mini libcni inside a simulated node namespace, the plugin
 * delegating to the real ptp + host-local, pods of every kind mixed: tenant-a and tenant-b named by
 * tenant name and by mark literal, read from the Kubernetes API and from the runtime's `runtimeConfig`
 * annotations, and pods without a tenant both ways.
 *
 * The cycles between the first and the last 100 run with bounded parallelism (TRW_SOAK_PARALLEL,
 * default 4): four pods at a time, each slot its own pod name and network namespace, a fresh container
 * id per cycle, which keeps the node lock contended (the soak should exercise that too) and uses both
 * cores of a CI machine. The first and last 100 cycles, whose calls are compared, run one at a time, so
 * both windows are measured under the same conditions.
 *
 * Afterwards nothing may be left: no netfilter entry in either backend, no state record, no veth, no
 * host-local lease, no descriptor of the plugin's children in this process, no process of the
 * executable or a delegate. And the calls must not slow down as cycles accumulate: the median call of
 * the last 100 cycles within 1.2x the median of the first 100 (medians, so a few calls delayed by the
 * machine's other work do not decide it). That ratio is the one performance assertion of the suite,
 * because the reliability issue asks for it; the figures are printed.
 *
 * A shared machine's load can change between the first and the last window and move both medians
 * alike. So each measured cycle is paired with a VERSION call of the same executable (process start,
 * no state touched): what grows with the soak's state shows in the calls and not in VERSION, what
 * grows with the machine's load shows in both. The judged figure is the calls' ratio divided by
 * VERSION's; both raw ratios are printed.
 */
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { CniRuntime, type Conflist } from "../sim/cniRuntime.ts"
import { execIn, randomPrefix, removePath, tempDir } from "../sim/netns.ts"
import { type KubeApi, type Pod, Topology } from "../sim/topology.ts"
import { skipLive } from "../support/liveGate.ts"
import {
  ANNOTATION,
  type Backend,
  entriesOf,
  type InstalledPlugin,
  installPlugin,
  leases,
  logLines,
  median,
  missingPrerequisites,
  NODE_ENV,
  openFds,
  POD_ANNOTATIONS,
  processesRunning,
  readRecord,
  recordDirs,
  SYSTEM_CNI,
  tenantConflist
} from "./harness.ts"

const CYCLES = Number(process.env.TRW_SOAK_CYCLES ?? 1000)
const PARALLEL = Number(process.env.TRW_SOAK_PARALLEL ?? 4)
// Measured windows: the first and last 100 cycles (a quarter each on a shorter run, so cycles remain
// between them to run in parallel).
const WINDOW = Math.min(100, Math.floor(CYCLES / 4))
const MAX_RATIO = 1.2
const NETWORK = "trw-soak"

interface Kind {
  readonly kind: string
  /** Annotations of the pod in the API; undefined: the pod is not in the API. */
  readonly api: Record<string, string> | undefined
  /** Annotations the runtime passes in runtimeConfig. */
  readonly runtime?: Record<string, string>
  readonly tenant: string | null
  readonly mark: number | null
}

const KINDS: ReadonlyArray<Kind> = [
  { kind: "api-name", api: { [ANNOTATION]: "tenant-a" }, tenant: "tenant-a", mark: 0x10 },
  { kind: "api-mark", api: { [ANNOTATION]: "0x20" }, tenant: "tenant-b", mark: 0x20 },
  { kind: "rt-name", api: undefined, runtime: { [ANNOTATION]: "tenant-b" }, tenant: "tenant-b", mark: 0x20 },
  { kind: "rt-mark", api: undefined, runtime: { [ANNOTATION]: "0x10" }, tenant: "tenant-a", mark: 0x10 },
  { kind: "api-none", api: {}, tenant: null, mark: null },
  { kind: "rt-none", api: undefined, runtime: {}, tenant: null, mark: null }
]

/** One pod name per (kind, slot): a slot runs one cycle at a time, so names never collide. */
const podName = (k: Kind, slot: number) => `soak-${k.kind}-${slot}`

interface CycleTiming {
  readonly cycle: number
  readonly add: number
  readonly del: number
  /** VERSION of the same executable right after the cycle, in the measured windows only. */
  readonly reference: number | undefined
}

const soakSuite = (backend: Backend): void => {
  const missing = missingPrerequisites()
  const title = `soak of the built executable, backend ${backend}`
  describe.skipIf(skipLive(title, missing))(title, () => {
    let topo: Topology | undefined
    let api: KubeApi | undefined
    let plugin: InstalledPlugin = { argv: [], cniPath: [], commands: {} }
    let pluginDir = ""

    beforeAll(async () => {
      pluginDir = tempDir("trw-soak-plugins-")
      plugin = await installPlugin(pluginDir)
      topo = await Topology.create({ prefix: randomPrefix(`trw-soak${backend === "iptables" ? "i" : "n"}`) })
      api = await topo.startKubeApi({
        namespaces: [{ name: "default" }],
        pods: Array.from({ length: PARALLEL }, (_, slot) =>
          KINDS.filter((k) => k.api !== undefined).map((k) => ({
            namespace: "default",
            name: podName(k, slot),
            annotations: k.api!
          }))
        ).flat()
      })
    }, 10 * 60_000)

    afterAll(async () => {
      const problems = (await topo?.destroy()) ?? []
      if (pluginDir !== "") removePath(pluginDir)
      assert.deepStrictEqual(problems, [])
    }, 60_000)

    it(
      `${CYCLES} ADD/DEL cycles (${PARALLEL} pods at a time between the measured windows), mixed tenants: ` +
        `nothing leaks, and the median call ` +
        `of the last ${WINDOW} cycles is within ${MAX_RATIO}x that of the first ${WINDOW}`,
      async () => {
        const t = topo!
        const stateDir = join(t.dir, "state")
        const dataDir = join(t.dir, "ipam")
        const logFile = join(t.dir, "plugin.log")
        const full = tenantConflist({
          version: "1.0.0",
          name: NETWORK,
          backend,
          kubeconfig: api!.kubeconfig,
          stateDir,
          logFile,
          dataDir,
          ranges: [
            [{ subnet: "10.200.0.0/16", rangeStart: "10.200.10.2", rangeEnd: "10.200.10.254" }],
            [{ subnet: "fd00:200::/64", rangeStart: "fd00:200::10:2", rangeEnd: "fd00:200::10:ffff" }]
          ],
          podAnnotationsCapability: true
        })
        // Our plugin alone (delegating to ptp + host-local): the soak is about it, not portmap.
        const conflist: Conflist = { ...full, plugins: [full.plugins[0]!] }
        const runtime = new CniRuntime({
          conflist,
          cniPath: plugin.cniPath,
          prefix: ["ip", "netns", "exec", t.node],
          commands: plugin.commands,
          env: NODE_ENV
        })

        // The paired reference: the same executable's VERSION, started the way the runtime starts it.
        const versionMs = async (): Promise<number> => {
          const t0 = performance.now()
          const r = await execIn(t.node, plugin.argv[0]!, [...plugin.argv.slice(1)], {
            env: { ...NODE_ENV, CNI_COMMAND: "VERSION", CNI_PATH: plugin.cniPath.join(":") },
            // No agent serves the soak: the shim falls back to the executable, as for the calls.
            input: JSON.stringify({ cniVersion: "1.0.0", agentSocket: join(stateDir, "no-agent.sock") })
          })
          const ms = performance.now() - t0
          if (r.code !== 0) failures.push(`VERSION exited ${r.code}: ${r.stdout}${r.stderr}`)
          return ms
        }

        const fdsBefore = openFds()
        const timings: Array<CycleTiming> = []
        const failures: Array<string> = []
        let next = 0
        const started = performance.now()

        const cycle = async (n: number, slot: number) => {
          const k = KINDS[n % KINDS.length]!
          const pod: Pod = await t.addPod(runtime, {
            name: podName(k, slot),
            namespace: "default",
            ...(k.runtime === undefined ? {} : { capabilityArgs: { [POD_ANNOTATIONS]: k.runtime } })
          })
          if (!pod.add.ok) failures.push(`cycle ${n} ADD ${k.kind}: ${JSON.stringify(pod.add.error)}`)
          else {
            // The tenant was resolved the way this kind of pod names it.
            const record = readRecord(stateDir, NETWORK, pod.attachment.containerId, "eth0")
            if (record?.tenant !== k.tenant || record?.mark !== k.mark)
              failures.push(`cycle ${n} ${k.kind}: record ${JSON.stringify(record)}`)
          }
          const del = await t.deletePod(runtime, pod)
          if (!del.ok) failures.push(`cycle ${n} DEL ${k.kind}: ${JSON.stringify(del.error)}`)
          const measured = n < WINDOW || n >= CYCLES - WINDOW
          timings.push({
            cycle: n,
            add: pod.add.runs[0]?.durationMs ?? 0,
            del: del.runs[0]?.durationMs ?? 0,
            reference: measured ? await versionMs() : undefined
          })
        }
        const worker = async (slot: number, end: number) => {
          // A handful of failures is enough to report; going on would only burn CI time.
          while (next < end && failures.length < 5) await cycle(next++, slot)
        }
        // The measured windows run one cycle at a time, so each call competes only with the machine's
        // other work, the same way at the start and at the end; the cycles between run in parallel.
        await worker(0, WINDOW)
        await Promise.all(Array.from({ length: PARALLEL }, (_, slot) => worker(slot, CYCLES - WINDOW)))
        await worker(0, CYCLES)
        const wallSeconds = (performance.now() - started) / 1000
        assert.deepStrictEqual(failures, [])

        // Nothing left behind.
        assert.deepStrictEqual(await entriesOf(t.node, NETWORK), [], "netfilter entries (both backends)")
        assert.deepStrictEqual(recordDirs(stateDir, NETWORK), [], "state records")
        assert.deepStrictEqual(leases(dataDir, NETWORK), [], "host-local leases")
        const veths = (await t.nodeLinks()).filter((l) => l.startsWith("veth"))
        assert.deepStrictEqual(veths, [], "veths in the node")
        const stray = processesRunning([...plugin.argv.slice(0, 1), SYSTEM_CNI])
        assert.deepStrictEqual(stray, [], "processes of the executable or a delegate")
        const fdsAfter = openFds()
        const leaked = [...fdsAfter].filter(([fd, target]) => fdsBefore.get(fd) !== target)
        assert.deepStrictEqual(leaked, [], "descriptors opened during the cycles and still open")

        // One log line per call, every one a success.
        const lines = logLines(logFile) as ReadonlyArray<{ message?: ReadonlyArray<unknown> }>
        const outcomes = lines.map((l) => (Array.isArray(l.message) ? l.message[0] : l))
        assert.strictEqual(outcomes.length, 2 * CYCLES)
        assert.deepStrictEqual(
          [...new Set(outcomes)].sort(),
          ["ADD ok", "DEL ok"],
          "every call logged one success line"
        )

        // Latency: the last cycles against the first, median against median.
        const ordered = [...timings].sort((a, b) => a.cycle - b.cycle)
        const first = ordered.slice(0, WINDOW)
        const last = ordered.slice(-WINDOW)
        const calls = (w: ReadonlyArray<CycleTiming>) => w.flatMap((c) => [c.add, c.del])
        const firstMedian = median(calls(first))
        const lastMedian = median(calls(last))
        const refs = (w: ReadonlyArray<CycleTiming>) =>
          w.flatMap((c) => (c.reference === undefined ? [] : [c.reference]))
        const refFirst = median(refs(first))
        const refLast = median(refs(last))
        const rawRatio = lastMedian / firstMedian
        const loadRatio = refLast / refFirst
        const ratio = rawRatio / loadRatio
        console.log(
          `[soak ${backend}] ${CYCLES} ADD/DEL cycles (${PARALLEL} at a time between the windows), wall ${wallSeconds.toFixed(0)} s: ` +
            `median call first ${WINDOW} cycles ${firstMedian} ms, last ${WINDOW} cycles ${lastMedian} ms, ` +
            `ratio ${rawRatio.toFixed(3)}; paired VERSION ${refFirst.toFixed(0)} -> ${refLast.toFixed(0)} ms (machine load ratio ${loadRatio.toFixed(3)}); ` +
            `judged ratio ${ratio.toFixed(3)} (limit ${MAX_RATIO}); ADD ${median(first.map((c) => c.add))} -> ` +
            `${median(last.map((c) => c.add))} ms, DEL ${median(first.map((c) => c.del))} -> ` +
            `${median(last.map((c) => c.del))} ms; all ${CYCLES} cycles: ADD median ` +
            `${median(ordered.map((c) => c.add))} ms, DEL median ${median(ordered.map((c) => c.del))} ms`
        )
        assert.isAtMost(
          ratio,
          MAX_RATIO,
          `median call ${firstMedian} ms -> ${lastMedian} ms, paired VERSION ${refFirst} -> ${refLast} ms`
        )
      },
      // vitest's patience, not a performance limit: ~3 s per cycle at worst on a loaded 2-core machine.
      CYCLES * 3_000 + 120_000
    )
  })
}

soakSuite("iptables")
soakSuite("nftables")
