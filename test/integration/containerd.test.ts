/**
 * The plugin driven by a real container runtime, the way kubelet drives it: Debian's containerd 1.6
 * (CRI plugin built in) with runc, started by this suite inside the simulated node's network namespace
 * (test/cri/containerd.ts), spoken to over CRI v1 gRPC (test/cri/criClient.ts), running a pause image
 * built here from source (test/cri/pauseImage.ts). containerd executes the BUILT plugin from its one
 * CNI bin dir, next to Debian's ptp, host-local, portmap and loopback; tenants come from the project's
 * test Kubernetes API server on the node's loopback, as in the other integration suites.
 *
 * For each backend (iptables, then nftables) two conflists are loaded in turn, each by a rename over
 * the previous one (the only reload containerd 1.6 does reliably), waiting until the CRI Status call
 * reports the new network ready:
 * - with the `io.kubernetes.cri.pod-annotations` capability: containerd passes the PodSandboxConfig's
 *   annotations in `runtimeConfig`. Pods: tenant from those annotations (the pod is absent from the
 *   API), tenant from the namespace's annotation, no tenant; and an unknown tenant, refused.
 * - without it: containerd passes only K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS, so the tenant comes
 *   from the pod read from the API; and an unknown tenant there, refused.
 * Each phase checks the kernel's marks (read with iptables-save / nft in the node namespace), the state
 * records, which API reads happened, real connections from inside the sandboxes, and that StopPodSandbox
 * (twice, as kubelet may) and RemovePodSandbox leave no entry, record, lease or veth.
 *
 * Tests inside a phase depend on the sandboxes its ADD test started (vitest runs a file's tests in
 * order). Everything is removed in afterAll, and at process exit if that never runs.
 */
import { chmodSync, copyFileSync, symlinkSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Containerd } from "../cri/containerd.ts"
import { CriError } from "../cri/criClient.ts"
import { buildPauseImage, pauseCompiler } from "../cri/pauseImage.ts"
import { probeFromSandbox, sandboxPid } from "../cri/sandbox.ts"
import { randomPrefix, removePath, tempDir } from "../sim/netns.ts"
import {
  DEFAULT_TENANT_ROUTES,
  type GatewayName,
  type KubeApi,
  SERVICE_V4,
  Topology
} from "../sim/topology.ts"
import { missingOf, skipLive } from "../support/liveGate.ts"
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
  readRecord,
  recordDirs,
  SYSTEM_CNI,
  tenantConflist
} from "./harness.ts"

const TITLE = "the built plugin under containerd 1.6, driven through the CRI like kubelet"
const PAUSE_IMAGE = "localhost/trw-pause:test"
const BACKENDS: ReadonlyArray<Backend> = ["iptables", "nftables"]
const DELEGATES = ["ptp", "host-local", "portmap", "loopback"]
/** The runner's limit for tests that start or stop sandboxes (each a few seconds, more on a busy machine). */
const CRI_TIMEOUT = 180_000

const missing = [
  ...missingPrerequisites(),
  ...missingOf({
    commands: [
      "containerd",
      "containerd-shim-runc-v2",
      "ctr",
      "runc",
      "nsenter",
      "unshare",
      "mount",
      "umount"
    ],
    files: [join(SYSTEM_CNI, "loopback")]
  }),
  ...(pauseCompiler() === undefined ? ["go or gcc"] : [])
]

/** A pod as kubelet would hand it to the runtime, and what the plugin must make of it. */
interface PodCase {
  readonly kind: string
  readonly namespace: string
  /** The PodSandboxConfig's annotations (kubelet copies the pod's API annotations there). */
  readonly annotations: Readonly<Record<string, string>>
  /** The pod's annotations in the API; undefined: the pod is not in the API at all. */
  readonly api: Readonly<Record<string, string>> | undefined
  readonly tenant: string | null
  readonly mark: number | null
  readonly gateway: GatewayName
}

interface Phase {
  readonly tag: "rt" | "api"
  readonly capability: boolean
  readonly how: string
  readonly pods: ReadonlyArray<PodCase>
  readonly refused: PodCase
}

/** An annotation every kubelet-made sandbox carries; none of the plugin's business. */
const SEEN = { "kubernetes.io/config.source": "api" }

const PHASES: ReadonlyArray<Phase> = [
  {
    tag: "rt",
    capability: true,
    how: "pod-annotations capability on: annotations come in runtimeConfig",
    pods: [
      {
        kind: "rt",
        namespace: "default",
        annotations: { ...SEEN, [ANNOTATION]: "tenant-b" },
        api: undefined,
        tenant: "tenant-b",
        mark: 0x20,
        gateway: "gw-b"
      },
      {
        kind: "ns",
        namespace: "pinned-a",
        annotations: SEEN,
        api: {},
        tenant: "tenant-a",
        mark: 0x10,
        gateway: "gw-a"
      },
      {
        kind: "none",
        namespace: "default",
        annotations: SEEN,
        api: {},
        tenant: null,
        mark: null,
        gateway: "gw-default"
      }
    ],
    refused: {
      kind: "bad-rt",
      namespace: "default",
      annotations: { ...SEEN, [ANNOTATION]: "tenant-zzz" },
      api: undefined,
      tenant: null,
      mark: null,
      gateway: "gw-default"
    }
  },
  {
    tag: "api",
    capability: false,
    how: "capability off: the pod is read from the API (K8S_POD_* in CNI_ARGS)",
    pods: [
      {
        kind: "api",
        namespace: "default",
        annotations: { ...SEEN, [ANNOTATION]: "0x20" },
        api: { [ANNOTATION]: "0x20" },
        tenant: "tenant-b",
        mark: 0x20,
        gateway: "gw-b"
      }
    ],
    refused: {
      kind: "bad-api",
      namespace: "default",
      annotations: { ...SEEN, [ANNOTATION]: "tenant-zzz" },
      api: { [ANNOTATION]: "tenant-zzz" },
      tenant: null,
      mark: null,
      gateway: "gw-default"
    }
  }
]

const short = (backend: Backend) => (backend === "iptables" ? "ipt" : "nft")
const podName = (c: PodCase, backend: Backend) => `${c.kind}-${short(backend)}`
const networkOf = (backend: Backend, phase: Phase) => `trw-cri-${short(backend)}-${phase.tag}`

const kubeState = () => ({
  namespaces: [{ name: "default" }, { name: "pinned-a", annotations: { [ANNOTATION]: "tenant-a" } }],
  pods: BACKENDS.flatMap((b) =>
    PHASES.flatMap((p) => [...p.pods, p.refused])
      .filter((c) => c.api !== undefined)
      .map((c) => ({ namespace: c.namespace, name: podName(c, b), annotations: { ...c.api! } }))
  )
})

/** The plugin's outcome lines (one per call) of `verb` for one sandbox, from its JSON-lines log. */
const outcomeLines = (file: string, verb: string, containerId: string) =>
  logLines(file).filter((l) => {
    const text = JSON.stringify(l)
    return text.includes(`"containerId":"${containerId}"`) && new RegExp(`"${verb} (ok|failed)"`).test(text)
  })

const failedLines = (file: string, verb: string, containerId: string) =>
  outcomeLines(file, verb, containerId).filter((l) => JSON.stringify(l).includes(`"${verb} failed"`))

const skip = skipLive(TITLE, missing)

describe.skipIf(skip)(TITLE, () => {
  let topo: Topology | undefined
  let api: KubeApi | undefined
  let containerd: Containerd | undefined
  let plugin: InstalledPlugin = { argv: [], cniPath: [], commands: {} }
  let pluginDir = ""
  let workDir = ""
  const timings = { run: [] as Array<number>, stop: [] as Array<number>, remove: [] as Array<number> }
  const logFile = () => join(topo!.dir, "plugin.log")

  const conflistFor = (backend: Backend, phase: Phase) =>
    tenantConflist({
      version: "1.0.0",
      name: networkOf(backend, phase),
      backend,
      kubeconfig: api!.kubeconfig,
      stateDir: join(topo!.dir, "state"),
      logFile: logFile(),
      dataDir: join(topo!.dir, "ipam"),
      ranges: [[{ subnet: "10.200.0.0/16", rangeStart: "10.200.40.2", rangeEnd: "10.200.40.254" }]],
      podAnnotationsCapability: phase.capability
    })

  /** The node's links that are not the topology's own: the pods' host-side veths. */
  const podVeths = async () => (await topo!.nodeLinks()).filter((l) => l !== "lo" && !l.startsWith("to-gw"))

  const sandboxConfig = (c: PodCase, backend: Backend) => ({
    metadata: { name: podName(c, backend), namespace: c.namespace, uid: randomPrefix("uid"), attempt: 0 },
    hostname: podName(c, backend),
    annotations: c.annotations,
    labels: { app: c.kind },
    linux: { cgroupParent: containerd!.cgroupParent }
  })

  beforeAll(async () => {
    pluginDir = tempDir("trw-cri-plugin-")
    workDir = tempDir("trw-cri-")
    plugin = await installPlugin(pluginDir)
    topo = await Topology.create({ prefix: randomPrefix("trw-cri") })
    await topo.applyRouting(DEFAULT_TENANT_ROUTES, plugin.argv)
    api = await topo.startKubeApi(kubeState(), { logRequests: true })
    const archive = await buildPauseImage(workDir, PAUSE_IMAGE)
    containerd = await Containerd.start({
      dir: join(workDir, "containerd"),
      netns: topo.node,
      sandboxImage: PAUSE_IMAGE,
      conflist: conflistFor(BACKENDS[0]!, PHASES[0]!)
    })
    // containerd 1.6 takes one bin dir: the plugin and Debian's plugins side by side, as on a node.
    const installed = join(containerd.binDir, "tenant-routing-wrapper")
    if (plugin.argv.length === 1 && plugin.argv[0] === join(pluginDir, "tenant-routing-wrapper")) {
      // The shim, and the full program it execs when no agent answers (none runs in this suite).
      copyFileSync(plugin.argv[0], installed)
      copyFileSync(join(pluginDir, "tenant-routing"), join(containerd.binDir, "tenant-routing"))
      chmodSync(join(containerd.binDir, "tenant-routing"), 0o755)
    } else {
      // Development mode (TRW_INTEGRATION_COMMAND): a launcher for that command line.
      const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
      writeFileSync(installed, `#!/bin/sh\nexec ${plugin.argv.map(quote).join(" ")} "$@"\n`)
    }
    chmodSync(installed, 0o755)
    for (const name of DELEGATES) symlinkSync(join(SYSTEM_CNI, name), join(containerd.binDir, name))
    await containerd.importImage(archive, PAUSE_IMAGE)
  }, 10 * 60_000)

  afterAll(async () => {
    const stopped = (await containerd?.stop()) ?? []
    const destroyed = (await topo?.destroy()) ?? []
    if (pluginDir !== "") removePath(pluginDir)
    if (workDir !== "") removePath(workDir)
    if (timings.run.length > 0)
      console.log(
        `[containerd] RunPodSandbox median ${median(timings.run)} ms (n=${timings.run.length}; pause ` +
          `container + CNI ADD of the chain), StopPodSandbox median ${median(timings.stop)} ms, ` +
          `RemovePodSandbox median ${median(timings.remove)} ms`
      )
    assert.deepStrictEqual([...stopped, ...destroyed], [])
  }, 120_000)

  it("containerd runs the CRI v1 API and reports the first network ready", async () => {
    const version = await containerd!.client.version()
    assert.strictEqual(version.runtimeName, "containerd")
    assert.strictEqual(version.runtimeApiVersion, "v1")
    await containerd!.waitForNetwork(`"Name":"${networkOf(BACKENDS[0]!, PHASES[0]!)}"`)
  })

  for (const backend of BACKENDS)
    for (const phase of PHASES) {
      const network = networkOf(backend, phase)
      describe(`backend ${backend}, ${phase.how} (network ${network})`, () => {
        const sandboxes = new Map<string, string>()
        const stateDir = () => join(topo!.dir, "state")
        const dataDir = () => join(topo!.dir, "ipam")
        const idOf = (kind: string) => {
          const id = sandboxes.get(kind)
          if (id === undefined) throw new Error(`sandbox ${kind} was not started (see the ADD test)`)
          return id
        }
        const ipOf = async (kind: string) => {
          const { status } = await containerd!.client.podSandboxStatus(idOf(kind))
          return status.network?.ip ?? ""
        }

        beforeAll(async () => {
          await containerd!.setConflist(conflistFor(backend, phase), `"Name":"${network}"`)
        }, 60_000)

        it(
          `an unknown tenant (${phase.refused.kind}): RunPodSandbox fails with the plugin's refusal (100) and leaves no sandbox, entry, record, lease or veth`,
          async () => {
            const veths = await podVeths()
            let error: unknown
            try {
              const id = await containerd!.client.runPodSandbox(sandboxConfig(phase.refused, backend))
              sandboxes.set(phase.refused.kind, id)
            } catch (e) {
              error = e
            }
            assert.instanceOf(error, CriError)
            const details = (error as CriError).details
            assert.include(details, 'plugin type="tenant-routing-wrapper" failed (add)', details)
            assert.include(details, 'unknown tenant "tenant-zzz"', details)
            // The sandbox containerd gave up on: the plugin refused its ADD, then containerd's DEL cleaned up.
            const id = /sandbox "([0-9a-f]{64})"/.exec(details)?.[1]
            assert.isDefined(id, details)
            const add = outcomeLines(logFile(), "ADD", id!)
            assert.strictEqual(add.length, 1, JSON.stringify(add))
            assert.include(JSON.stringify(add[0]), '"code":100')
            assert.isAtLeast(outcomeLines(logFile(), "DEL", id!).length, 1)
            assert.deepStrictEqual(failedLines(logFile(), "DEL", id!), [])
            const listed = await containerd!.client.listPodSandbox()
            assert.deepStrictEqual(
              listed.filter((s) => s.metadata.name === podName(phase.refused, backend)),
              []
            )
            assert.deepStrictEqual(await entriesOf(topo!.node, network), [])
            assert.deepStrictEqual(recordDirs(stateDir(), network), [])
            assert.deepStrictEqual(leases(dataDir(), network), [])
            assert.deepStrictEqual(await podVeths(), veths)
          },
          CRI_TIMEOUT
        )

        it(
          `RunPodSandbox of ${phase.pods.map((c) => c.kind).join(", ")} at once: every sandbox ready with an address`,
          async () => {
            const started = await Promise.all(
              phase.pods.map(async (c) => {
                const t0 = performance.now()
                const id = await containerd!.client.runPodSandbox(sandboxConfig(c, backend))
                timings.run.push(Math.round(performance.now() - t0))
                return [c.kind, id] as const
              })
            )
            for (const [kind, id] of started) sandboxes.set(kind, id)
            for (const c of phase.pods) {
              const { status } = await containerd!.client.podSandboxStatus(idOf(c.kind))
              assert.strictEqual(status.state, "SANDBOX_READY", c.kind)
              assert.match(
                status.network?.ip ?? "",
                /^10\.200\.40\.\d+$/,
                `${c.kind}: ${JSON.stringify(status)}`
              )
            }
          },
          CRI_TIMEOUT
        )

        it("the kernel holds exactly the tenant sandboxes' marks, in this backend; the records match", async () => {
          const expected: Array<string> = []
          for (const c of phase.pods)
            if (c.mark !== null)
              expected.push(`${backend} ${await ipOf(c.kind)} ${c.mark} ${network}/${idOf(c.kind)}/eth0`)
          const actual = (await entriesOf(topo!.node, network)).map(
            (e) => `${e.backend} ${e.ip} ${e.mark} ${e.owner}`
          )
          assert.deepStrictEqual(actual.sort(), expected.sort())
          for (const c of phase.pods) {
            const record = readRecord(stateDir(), network, idOf(c.kind), "eth0")
            assert.isDefined(record, `state record of ${c.kind}`)
            assert.strictEqual(record!.tenant, c.tenant, `tenant of ${c.kind}`)
            assert.strictEqual(record!.mark, c.mark, `mark of ${c.kind}`)
            assert.strictEqual(record!.backend, backend)
            assert.deepStrictEqual([...record!.ips], [await ipOf(c.kind)])
          }
        })

        it(
          phase.capability
            ? "with the annotations in runtimeConfig no pod is read from the API; the pinned namespace is"
            : "without them the pod itself is read from the API",
          () => {
            const paths = api!.requests().map((r) => r.path)
            for (const c of [...phase.pods, phase.refused]) {
              const podPath = `/api/v1/namespaces/${c.namespace}/pods/${podName(c, backend)}`
              if (phase.capability) assert.notInclude(paths, podPath)
              else assert.include(paths, podPath)
            }
            if (phase.capability) assert.include(paths, "/api/v1/namespaces/pinned-a")
          }
        )

        it("connections from inside each sandbox leave through its tenant's gateway, from the pod's own address", async () => {
          const rows = await Promise.all(
            phase.pods.map(async (c) => {
              const answer = await probeFromSandbox(
                await sandboxPid(containerd!.client, idOf(c.kind)),
                SERVICE_V4,
                topo!.port
              )
              return { c, answer, ip: await ipOf(c.kind) }
            })
          )
          assert.deepStrictEqual(
            rows.map((r) => `${r.c.kind} -> ${r.answer.answeredBy ?? r.answer.detail}`),
            rows.map((r) => `${r.c.kind} -> ${r.c.gateway}`)
          )
          for (const r of rows) assert.strictEqual(r.answer.peer, r.ip)
        })

        it(
          "StopPodSandbox removes the entries, records, leases and veths; a second StopPodSandbox and RemovePodSandbox (DEL without netns or prevResult) succeed and leave nothing",
          async () => {
            const ids = phase.pods.map((c) => idOf(c.kind))
            await Promise.all(
              ids.map(async (id) => {
                const t0 = performance.now()
                await containerd!.client.stopPodSandbox(id)
                timings.stop.push(Math.round(performance.now() - t0))
              })
            )
            assert.deepStrictEqual(await entriesOf(topo!.node, network), [])
            assert.deepStrictEqual(recordDirs(stateDir(), network), [])
            assert.deepStrictEqual(leases(dataDir(), network), [])
            assert.deepStrictEqual(await podVeths(), [])
            const afterStop = new Map(ids.map((id) => [id, outcomeLines(logFile(), "DEL", id).length]))
            await Promise.all(
              ids.map(async (id) => {
                // kubelet may stop a sandbox more than once; containerd's netns is gone by then.
                await containerd!.client.stopPodSandbox(id)
                const t0 = performance.now()
                await containerd!.client.removePodSandbox(id)
                timings.remove.push(Math.round(performance.now() - t0))
              })
            )
            for (const id of ids) {
              assert.isAbove(
                outcomeLines(logFile(), "DEL", id).length,
                afterStop.get(id)!,
                `later DELs of ${id}`
              )
              assert.deepStrictEqual(failedLines(logFile(), "DEL", id), [], `a DEL of ${id} failed`)
            }
            assert.deepStrictEqual(await entriesOf(topo!.node, network), [])
            assert.deepStrictEqual(recordDirs(stateDir(), network), [])
            assert.deepStrictEqual(leases(dataDir(), network), [])
            assert.deepStrictEqual(await podVeths(), [])
            assert.deepStrictEqual(await containerd!.client.listPodSandbox(), [])
          },
          CRI_TIMEOUT
        )
      })
    }
})
