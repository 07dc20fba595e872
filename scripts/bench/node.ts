/**
 * The simulated node the benchmark runs on: a node namespace (where the plugins and the agent run),
 * pod namespaces, a temporary directory (state, IPAM, sockets, installed executables), the test API
 * server, and the CNI calls' environment and configurations. Everything is registered with
 * test/sim/netns.ts, so it is removed at exit and on SIGINT/SIGTERM even when a step fails.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { ANNOTATION, NODE_ENV, POD_ANNOTATIONS, SYSTEM_CNI, wrapperPlugin } from "../../test/sim/fixture.ts"
import { createNetns, deleteNetns, netnsPath, type Spawned, spawnIn } from "../../test/sim/netns.ts"
import { KUBE_API_MAIN } from "../../test/sim/topology.ts"

/** The tenant every benchmark pod gets: a mark (not a name), so no tenants file is needed. */
export const TENANT_MARK = "0x10"
export const NODE_NAME = "n1"

export type Backend = "iptables" | "nftables"
export type Verb = "ADD" | "DEL"

export interface NodeNs {
  readonly ns: string
  readonly prefix: ReadonlyArray<string>
}

export const makeNode = async (name: string): Promise<NodeNs> => {
  await createNetns(name)
  return { ns: name, prefix: ["ip", "netns", "exec", name] }
}

export const makePods = async (prefix: string, n: number): Promise<ReadonlyArray<string>> => {
  const names = Array.from({ length: n }, (_, i) => `${prefix}-p${i}`)
  for (const ns of names) await createNetns(ns)
  return names
}

export const removeNamespaces = async (names: ReadonlyArray<string>): Promise<void> => {
  for (const ns of names) await deleteNetns(ns)
}

/** The CNI_* environment of one call (plus the node's PATH), as a runtime sets it. */
export const cniEnv = (
  verb: Verb | "VERSION",
  o: {
    readonly podNs: string
    readonly id: string
    readonly pod: string
    readonly cniPath: ReadonlyArray<string>
  }
): Record<string, string> => ({
  ...NODE_ENV,
  CNI_COMMAND: verb,
  CNI_CONTAINERID: o.id,
  CNI_NETNS: netnsPath(o.podNs),
  CNI_IFNAME: "eth0",
  CNI_PATH: o.cniPath.join(":"),
  CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=${o.pod}`
})

export const ipam = (dataDir: string, subnet: string) => ({
  type: "host-local",
  dataDir,
  ranges: [[{ subnet }]]
})

export interface WrapperConf {
  readonly network: string
  readonly backend: Backend
  readonly stateDir: string
  readonly dataDir: string
  readonly subnet: string
  /** Absent: the shim finds nobody and execs tenant-routing (standalone). */
  readonly agentSocket?: string
  /** Tenant from the API (the agent's watch cache when it names the same kubeconfig), not runtimeConfig. */
  readonly kubeconfig?: string
}

/** Network configuration of our plugin (wrapper mode over ptp + host-local), as the runtime hands it. */
export const wrapperConf = (o: WrapperConf): Record<string, unknown> => ({
  cniVersion: "1.0.0",
  name: o.network,
  ...wrapperPlugin({
    backend: o.backend,
    stateDir: o.stateDir,
    dataDir: o.dataDir,
    ranges: [[{ subnet: o.subnet }]],
    ...(o.agentSocket === undefined ? {} : { agentSocket: o.agentSocket }),
    ...(o.kubeconfig === undefined
      ? { podAnnotations: { [ANNOTATION]: TENANT_MARK } }
      : { kubeconfig: o.kubeconfig })
  })
})

export const CNI_PATH_OF = (binDir: string): ReadonlyArray<string> => [binDir, SYSTEM_CNI]
export { POD_ANNOTATIONS }

export interface KubeApi {
  readonly kubeconfig: string
  readonly server: Spawned
  /** Requests the server logged (one JSON line each) since it started. */
  readonly requests: () => ReadonlyArray<{ method: string; path: string; query?: string }>
}

/**
 * The project's test API server in the node's loopback, holding `pods` pods (namespace `bench`, on this
 * node, annotated with the benchmark's tenant) and `namespaces` namespaces (`bench` among them).
 */
export const startKubeApi = async (
  node: NodeNs,
  dir: string,
  pods: number,
  namespaces: number
): Promise<KubeApi> => {
  const stateFile = join(dir, "kube-state.json")
  const kubeconfig = join(dir, "kubeconfig.yaml")
  writeFileSync(
    stateFile,
    JSON.stringify({
      namespaces: [
        { name: "bench" },
        ...Array.from({ length: namespaces - 1 }, (_, i) => ({ name: `ns-${String(i).padStart(4, "0")}` }))
      ],
      pods: Array.from({ length: pods }, (_, i) => ({
        namespace: "bench",
        name: `pod-${i}`,
        annotations: { [ANNOTATION]: TENANT_MARK },
        nodeName: NODE_NAME
      }))
    })
  )
  const server = spawnIn(node.ns, process.execPath, [
    KUBE_API_MAIN,
    "--state",
    stateFile,
    "--kubeconfig",
    kubeconfig,
    "--host",
    "127.0.0.1",
    "--port",
    "0",
    "--log-requests"
  ])
  await server.waitForLine((l) => l.startsWith("{"), 60_000)
  const requests = () =>
    server
      .output()
      .stderr.split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { method: string; path: string; query?: string })
  return { kubeconfig, server, requests }
}

/** Waits until both of the agent's informers watch (the server saw a WATCH of pods and of namespaces). */
export const waitForWatches = async (api: KubeApi, timeoutMs = 60_000): Promise<boolean> => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const watches = api.requests().filter((r) => r.query?.includes("watch=true") === true)
    const pods = watches.some((r) => r.path.endsWith("/pods"))
    const namespaces = watches.some((r) => r.path.endsWith("/namespaces"))
    if (pods && namespaces) return true
    if (Date.now() > deadline) return false
    await new Promise((r) => setTimeout(r, 100))
  }
}
