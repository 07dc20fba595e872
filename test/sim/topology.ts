/**
 * A simulated Kubernetes node in network namespaces, for the integration tests and the demo.
 *
 *                 ┌──────────── <p>-gw-a ── lo: 198.18.0.1, fd00:198::1 (responder "gw-a")
 *   pods ── ptp ──┤ <p>-node ──── <p>-gw-b ── lo: 198.18.0.1, fd00:198::1 (responder "gw-b")
 *                 └──────────── <p>-gw-default ── same address (responder "gw-default"); node's default
 *
 * Every gateway owns the SAME service address on its lo and runs a responder that answers with its own
 * name, so which gateway answered shows which way a pod's packet left the node. Each gateway links to the
 * node by a veth (a /30 and a /64), routes the pod ranges back via the node with the service address as
 * preferred source (so a connection it makes to a pod comes from 198.18.0.1), and does not forward: a
 * packet it is not the destination of dies there (pod-to-pod traffic wrongly sent to a gateway fails).
 * The node forwards, uses loose reverse-path filtering (strict would drop a tenant gateway's replies,
 * which arrive on a link that is not the main table's way back to 198.18.0.1; `doctor` warns about
 * exactly that), and its main table's default goes via gw-default.
 *
 * `applyRouting` installs the tenant routing of docs/DESIGN.md §6 either by running the plugin's own
 * `node-setup` (when given its command line) or with `ip` directly. Pods are network namespaces handed to
 * a CniRuntime (cniRuntime.ts) whose plugins run inside the node namespace. `destroy()` removes all of it;
 * the registry of netns.ts removes it at exit if `destroy()` never ran.
 */
import { randomBytes } from "node:crypto"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { Attachment, CniRuntime, Outcome } from "./cniRuntime.ts"
import { kubernetesArgs } from "./cniRuntime.ts"
import {
  addAddress,
  addRoute,
  addVeth,
  createNetns,
  deleteNetns,
  enableForwarding,
  execIn,
  ip,
  ipJson,
  netnsPath,
  randomPrefix,
  removePath,
  type Spawned,
  spawnIn,
  sysctl,
  tempDir
} from "./netns.ts"

export const SERVICE_V4 = "198.18.0.1"
export const SERVICE_V6 = "fd00:198::1"
export const POD_CIDR_V4 = "10.200.0.0/16"
export const POD_CIDR_V6 = "fd00:200::/64"
export const RESPONDER_PORT = 8080

export type GatewayName = "gw-a" | "gw-b" | "gw-default"
export const GATEWAYS: ReadonlyArray<GatewayName> = ["gw-a", "gw-b", "gw-default"]

/** Link addresses: node side `.1`/`::1`, gateway side `.2`/`::2`. */
const LINKS: Record<GatewayName, { nodeDev: string; v4: [string, string]; v6: [string, string] }> = {
  "gw-a": { nodeDev: "to-gw-a", v4: ["192.0.2.1", "192.0.2.2"], v6: ["fd00:192:0:1::1", "fd00:192:0:1::2"] },
  "gw-b": { nodeDev: "to-gw-b", v4: ["192.0.2.5", "192.0.2.6"], v6: ["fd00:192:0:2::1", "fd00:192:0:2::2"] },
  "gw-default": {
    nodeDev: "to-gw-def",
    v4: ["192.0.2.9", "192.0.2.10"],
    v6: ["fd00:192:0:3::1", "fd00:192:0:3::2"]
  }
}

/** A gateway's addresses on its link to the node (what a tenant's route points at). */
export const gatewayAddresses = (gw: GatewayName): { readonly v4: string; readonly v6: string } => ({
  v4: LINKS[gw].v4[1],
  v6: LINKS[gw].v6[1]
})

/** The node's device towards a gateway. */
export const nodeDeviceTo = (gw: GatewayName): string => LINKS[gw].nodeDev

export interface TenantRoute {
  readonly mark: string
  readonly table: number
  readonly priority: number
  readonly gateway: GatewayName
}

/** The defaults of docs/DESIGN.md §2 routed to their gateways: tenant-a → gw-a, tenant-b → gw-b. */
export const DEFAULT_TENANT_ROUTES: Readonly<Record<string, TenantRoute>> = {
  "tenant-a": { mark: "0x10", table: 100, priority: 1000, gateway: "gw-a" },
  "tenant-b": { mark: "0x20", table: 200, priority: 1001, gateway: "gw-b" }
}

/** The tenants file `node-setup --config` reads (docs/DESIGN.md §6). */
export const nodeSetupConfig = (
  tenants: Readonly<Record<string, TenantRoute>>,
  markMask?: string
): Record<string, unknown> => ({
  ...(markMask === undefined ? {} : { markMask }),
  tenants: Object.fromEntries(
    Object.entries(tenants).map(([name, t]) => [
      name,
      {
        mark: t.mark,
        table: t.table,
        gateways: [gatewayAddresses(t.gateway).v4, gatewayAddresses(t.gateway).v6],
        priority: t.priority
      }
    ])
  )
})

const HERE = fileURLToPath(new URL(".", import.meta.url))
export const RESPONDER_SCRIPT = join(HERE, "responder.ts")
export const KUBE_API_MAIN = join(HERE, "..", "..", "test", "support", "kubeApiServerMain.ts")

export interface PodSpec {
  /** Kubernetes pod name (also names the pod's netns). */
  readonly name: string
  readonly namespace: string
  readonly containerId?: string
  readonly ifname?: string
  /** Capability args for the runtime to pass, e.g. `{"io.kubernetes.cri.pod-annotations": {...}}`. */
  readonly capabilityArgs?: Readonly<Record<string, unknown>>
  /** More CNI_ARGS after the Kubernetes ones, e.g. `[["IP", "10.200.0.7"]]` (host-local honours it). */
  readonly extraArgs?: ReadonlyArray<readonly [string, string]>
}

export interface Pod {
  readonly name: string
  readonly namespace: string
  /** The pod's network namespace name. */
  readonly ns: string
  readonly attachment: Attachment
  /** The ADD outcome (result, per-plugin runs and timings). */
  readonly add: Outcome
  readonly v4: string | undefined
  readonly v6: string | undefined
  /** The ptp veth's node-side name (from the result's interfaces without a sandbox). */
  readonly hostVeth: string | undefined
}

export interface ProbeAnswer {
  readonly ok: boolean
  /** The responder's name (`gw-a`, a pod name, ...), or undefined when nothing answered. */
  readonly answeredBy: string | undefined
  /** The address the responder saw the connection come from. */
  readonly peer: string | undefined
  readonly detail: string
}

export interface KubeApi {
  readonly url: string
  /** Absolute path of a kubeconfig for the server (bearer token, inline CA). */
  readonly kubeconfig: string
  readonly stateFile: string
  /** Replaces the served pods and namespaces (SIGHUP reload; resolves once the signal was sent and a short
   * grace period passed). */
  readonly update: (state: KubeState) => Promise<void>
  /** Requests received so far (only with `logRequests`). */
  readonly requests: () => ReadonlyArray<{ readonly method: string; readonly path: string }>
  readonly stop: () => Promise<void>
}

export interface KubeApiOptions {
  /** `token` (a ServiceAccount kubeconfig, default) or `cert` (a client certificate, like kubelet.conf). */
  readonly auth?: "token" | "cert"
  /** Record every request (see `requests()`). */
  readonly logRequests?: boolean
}

export interface KubeState {
  readonly pods?: ReadonlyArray<{ namespace: string; name: string; annotations?: Record<string, string> }>
  readonly namespaces?: ReadonlyArray<{ name: string; annotations?: Record<string, string> }>
  readonly nodes?: ReadonlyArray<{ name: string; podCIDRs: ReadonlyArray<string> }>
  readonly forbid?: Partial<Record<"pods" | "namespaces" | "nodes", boolean>>
}

export interface TopologyOptions {
  /** Namespace name prefix (default `trw-<random>`); namespaces are `<prefix>-node`, `<prefix>-gw-a`, ... */
  readonly prefix?: string
  /** Node 24 binary for responders and the API server (default: this process's). */
  readonly node?: string
  readonly port?: number
  /**
   * Turn IPv6 duplicate address detection off in pod namespaces (default true). ptp waits for the pod's
   * IPv6 address to leave the tentative state, ~1.5 s per dual-stack pod, which dominates a test run and
   * says nothing about the plugin; a real pod does wait it out.
   */
  readonly skipDad?: boolean
}

const podNsName = (prefix: string, pod: string) => `${prefix}-p-${pod}`.slice(0, 60)

/** One connection over bash's /dev/tcp with a deadline: prints what the peer sent. */
const TCP_PROBE = 'exec 3<>"/dev/tcp/$1/$2" || exit 3; timeout "$3" cat <&3'

export class Topology {
  readonly node: string
  readonly gateways: Readonly<Record<GatewayName, string>>
  readonly dir: string
  readonly port: number
  private readonly nodeBin: string
  private readonly skipDad: boolean
  private readonly responders = new Map<string, Spawned>()
  private readonly pods = new Map<string, Pod>()
  private readonly spawned = new Set<Spawned>()
  private readonly created: Array<string> = []

  readonly prefix: string

  private constructor(prefix: string, options: TopologyOptions) {
    this.prefix = prefix
    this.node = `${prefix}-node`
    this.gateways = {
      "gw-a": `${prefix}-gw-a`,
      "gw-b": `${prefix}-gw-b`,
      "gw-default": `${prefix}-gw-default`
    }
    this.dir = tempDir(`${prefix}-`)
    this.port = options.port ?? RESPONDER_PORT
    this.nodeBin = options.node ?? process.execPath
    this.skipDad = options.skipDad ?? true
  }

  /** Builds the node and its three gateways; on any failure, removes what was made and rethrows. */
  static async create(options: TopologyOptions = {}): Promise<Topology> {
    const t = new Topology(options.prefix ?? randomPrefix(), options)
    try {
      await t.build()
      return t
    } catch (error) {
      await t.destroy()
      throw error
    }
  }

  private async build(): Promise<void> {
    await createNetns(this.node)
    this.created.push(this.node)
    await enableForwarding(this.node)
    for (const k of ["all", "default"]) await sysctl(this.node, `net.ipv4.conf.${k}.rp_filter`, 2)
    for (const gw of GATEWAYS) {
      await createNetns(this.gateways[gw])
      this.created.push(this.gateways[gw])
    }
    await Promise.all(GATEWAYS.map((gw) => this.buildGateway(gw)))
    await addRoute(this.node, "default", "via", LINKS["gw-default"].v4[1])
    await addRoute(this.node, "default", "via", LINKS["gw-default"].v6[1])
    await Promise.all(GATEWAYS.map((gw) => this.serve(this.gateways[gw], gw)))
  }

  private async buildGateway(gw: GatewayName): Promise<void> {
    const ns = this.gateways[gw]
    const link = LINKS[gw]
    await sysctl(ns, "net.ipv4.ip_forward", 0)
    await sysctl(ns, "net.ipv6.conf.all.forwarding", 0)
    for (const k of ["all", "default"]) await sysctl(ns, `net.ipv4.conf.${k}.rp_filter`, 2)
    await addVeth({ ns: this.node, name: link.nodeDev }, { ns, name: "eth0" })
    await addAddress(this.node, link.nodeDev, `${link.v4[0]}/30`)
    await addAddress(this.node, link.nodeDev, `${link.v6[0]}/64`)
    await addAddress(ns, "eth0", `${link.v4[1]}/30`)
    await addAddress(ns, "eth0", `${link.v6[1]}/64`)
    await addAddress(ns, "lo", `${SERVICE_V4}/32`)
    await addAddress(ns, "lo", `${SERVICE_V6}/128`)
    await addRoute(ns, POD_CIDR_V4, "via", link.v4[0], "src", SERVICE_V4)
    await addRoute(ns, POD_CIDR_V6, "via", link.v6[0], "src", SERVICE_V6)
  }

  /** Starts a responder named `name` in `ns` (idempotent per namespace). */
  private async serve(ns: string, name: string): Promise<void> {
    if (this.responders.has(ns)) return
    const r = spawnIn(ns, this.nodeBin, [RESPONDER_SCRIPT, "--name", name, "--port", String(this.port)])
    this.responders.set(ns, r)
    await r.waitForLine((l) => l.startsWith("ready"))
  }

  // -------------------------------------------------------------------------------------------------
  // Node routing (docs/DESIGN.md §6)

  /** Writes the tenants file for `node-setup` and returns its path. */
  writeNodeSetupConfig(tenants: Readonly<Record<string, TenantRoute>> = DEFAULT_TENANT_ROUTES): string {
    const file = join(this.dir, "tenants.json")
    writeFileSync(file, JSON.stringify(nodeSetupConfig(tenants), null, 2))
    return file
  }

  /**
   * Installs tenant routing in the node: with `command` (the plugin's command line, e.g.
   * `["/path/dist/tenant-routing-wrapper"]`) by running `node-setup --config FILE` in the node namespace;
   * otherwise with `ip` directly, doing what §6 says node-setup does. Returns node-setup's stdout.
   */
  async applyRouting(
    tenants: Readonly<Record<string, TenantRoute>> = DEFAULT_TENANT_ROUTES,
    command?: ReadonlyArray<string>,
    extraArgs: ReadonlyArray<string> = []
  ): Promise<string> {
    if (command !== undefined) {
      const file = this.writeNodeSetupConfig(tenants)
      const r = await execIn(this.node, command[0]!, [
        ...command.slice(1),
        "node-setup",
        "--config",
        file,
        ...extraArgs
      ])
      if (r.code !== 0) throw new Error(`node-setup exited ${r.code}: ${r.stderr.trim()} ${r.stdout.trim()}`)
      return r.stdout
    }
    const list = Object.values(tenants)
    const maskBits = list.reduce((m, t) => m | Number(t.mark), 0)
    const mask = `0x${maskBits.toString(16)}`
    const first = Math.min(...list.map((t) => t.priority)) - 1
    for (const family of ["-4", "-6"]) {
      await ip(
        this.node,
        family,
        "rule",
        "add",
        "priority",
        String(first),
        "lookup",
        "main",
        "suppress_prefixlength",
        "0"
      )
      for (const t of list) {
        const table = String(t.table)
        const via = family === "-4" ? gatewayAddresses(t.gateway).v4 : gatewayAddresses(t.gateway).v6
        await ip(
          this.node,
          family,
          "rule",
          "add",
          "priority",
          String(t.priority),
          "fwmark",
          `${t.mark}/${mask}`,
          "lookup",
          table
        )
        await ip(this.node, family, "route", "add", "default", "via", via, "table", table)
        await ip(
          this.node,
          family,
          "route",
          "add",
          "unreachable",
          "default",
          "metric",
          "4294967295",
          "table",
          table
        )
      }
    }
    return ""
  }

  /** The node's rules and the routes of `tables`, per family, from `ip -j` (for assertions). */
  async routingState(tables: ReadonlyArray<number>): Promise<{
    rules4: ReadonlyArray<Record<string, unknown>>
    rules6: ReadonlyArray<Record<string, unknown>>
    routes: Record<string, ReadonlyArray<Record<string, unknown>>>
  }> {
    const routes: Record<string, ReadonlyArray<Record<string, unknown>>> = {}
    for (const t of tables) {
      routes[`4/${t}`] = await ipJson(this.node, "-4", "route", "show", "table", String(t))
      routes[`6/${t}`] = await ipJson(this.node, "-6", "route", "show", "table", String(t))
    }
    return {
      rules4: await ipJson(this.node, "-4", "rule", "show"),
      rules6: await ipJson(this.node, "-6", "rule", "show"),
      routes
    }
  }

  // -------------------------------------------------------------------------------------------------
  // Kubernetes API server (test/support/kubeApiServerMain.ts) inside the node

  /** Starts the project's test API server on the node's 127.0.0.1 (where the plugin, running in the node
   * namespace, reaches it) and writes its kubeconfig. */
  async startKubeApi(state: KubeState, options: KubeApiOptions = {}): Promise<KubeApi> {
    const stateFile = join(this.dir, "kube-state.json")
    const kubeconfig = join(this.dir, "kubeconfig.yaml")
    writeFileSync(stateFile, JSON.stringify(state))
    const server = spawnIn(this.node, this.nodeBin, [
      KUBE_API_MAIN,
      "--state",
      stateFile,
      "--kubeconfig",
      kubeconfig,
      "--host",
      "127.0.0.1",
      "--port",
      "0",
      "--auth",
      options.auth ?? "token",
      ...(options.logRequests === true ? ["--log-requests"] : [])
    ])
    this.spawned.add(server)
    let line: string
    try {
      line = await server.waitForLine((l) => l.startsWith("{"), 30_000)
    } catch (error) {
      await server.kill("SIGKILL")
      throw error
    }
    const { url } = JSON.parse(line) as { url: string }
    return {
      url,
      kubeconfig,
      stateFile,
      update: async (next) => {
        writeFileSync(stateFile, JSON.stringify(next))
        process.kill(server.pid, "SIGHUP")
        await new Promise((r) => setTimeout(r, 250))
      },
      requests: () =>
        server
          .output()
          .stderr.split("\n")
          .flatMap((l) => {
            try {
              const r = JSON.parse(l) as { method?: unknown; path?: unknown }
              return typeof r.path === "string" ? [{ method: String(r.method), path: r.path }] : []
            } catch {
              return []
            }
          }),
      stop: async () => {
        await server.kill("SIGTERM")
        this.spawned.delete(server)
      }
    }
  }

  // -------------------------------------------------------------------------------------------------
  // Pods

  /** Creates the pod's namespace and runs the conflist's ADD for it. On a failed ADD the pod is still
   * returned (so the caller can inspect and DEL); check `pod.add.ok`. */
  async addPod(runtime: CniRuntime, spec: PodSpec): Promise<Pod> {
    const ns = podNsName(this.prefix, spec.name)
    if (!this.pods.has(ns)) {
      await createNetns(ns)
      this.created.push(ns)
      if (this.skipDad)
        for (const k of ["all", "default"]) await sysctl(ns, `net.ipv6.conf.${k}.accept_dad`, 0)
    }
    // 64 hex digits, as containerd's sandbox ids are.
    const containerId = spec.containerId ?? randomBytes(32).toString("hex")
    const attachment: Attachment = {
      containerId,
      ifname: spec.ifname ?? "eth0",
      netns: netnsPath(ns),
      args: [...kubernetesArgs(spec.namespace, spec.name, containerId), ...(spec.extraArgs ?? [])],
      ...(spec.capabilityArgs === undefined ? {} : { capabilityArgs: spec.capabilityArgs })
    }
    const add = await runtime.add(attachment)
    const ips = ((add.result?.ips ?? []) as ReadonlyArray<{ address: string }>).map(
      (i) => i.address.split("/")[0]!
    )
    const interfaces = (add.result?.interfaces ?? []) as ReadonlyArray<{ name: string; sandbox?: string }>
    const pod: Pod = {
      name: spec.name,
      namespace: spec.namespace,
      ns,
      attachment,
      add,
      v4: ips.find((a) => !a.includes(":")),
      v6: ips.find((a) => a.includes(":")),
      hostVeth: interfaces.find((i) => i.sandbox === undefined || i.sandbox === "")?.name
    }
    this.pods.set(ns, pod)
    return pod
  }

  /** Runs DEL for the pod (with the runtime's cached result) and removes its namespace. */
  async deletePod(runtime: CniRuntime, pod: Pod): Promise<Outcome> {
    const outcome = await runtime.del(pod.attachment)
    await this.removePodNamespace(pod)
    return outcome
  }

  /** Removes the pod's namespace (and its responder) without running DEL. */
  async removePodNamespace(pod: Pod): Promise<void> {
    const r = this.responders.get(pod.ns)
    if (r !== undefined) {
      await r.kill("SIGKILL")
      this.responders.delete(pod.ns)
    }
    await deleteNetns(pod.ns)
    this.pods.delete(pod.ns)
  }

  /** Starts a responder in the pod answering with the pod's name (for inbound and pod-to-pod probes). */
  servePod(pod: Pod): Promise<void> {
    return this.serve(pod.ns, pod.name)
  }

  private async connect(ns: string, address: string, timeoutSeconds: number): Promise<ProbeAnswer> {
    const r = await execIn(
      ns,
      "timeout",
      [
        String(timeoutSeconds + 1),
        "bash",
        "-c",
        TCP_PROBE,
        "probe",
        address,
        String(this.port),
        String(timeoutSeconds)
      ],
      { timeoutMs: (timeoutSeconds + 3) * 1000 }
    )
    const line = r.stdout.trim().split("\n")[0] ?? ""
    const [answeredBy, peer] = line.split(" ")
    if (r.code === 0 && answeredBy !== undefined && answeredBy !== "")
      return { ok: true, answeredBy, peer, detail: line }
    return { ok: false, answeredBy: undefined, peer: undefined, detail: `exit ${r.code}: ${r.stderr.trim()}` }
  }

  /** Connects from the pod to the service address (198.18.0.1 or fd00:198::1): which gateway answered. */
  probe(pod: Pod, family: 4 | 6 = 4, timeoutSeconds = 2): Promise<ProbeAnswer> {
    return this.connect(pod.ns, family === 4 ? SERVICE_V4 : SERVICE_V6, timeoutSeconds)
  }

  /** Connects from `from` to `to`'s responder (start it with `servePod`); `to` should answer and see
   * `from`'s own address. */
  probePod(from: Pod, to: Pod, family: 4 | 6 = 4, timeoutSeconds = 2): Promise<ProbeAnswer> {
    const address = family === 4 ? to.v4 : to.v6
    if (address === undefined) throw new Error(`${to.name} has no IPv${family} address`)
    return this.connect(from.ns, address, timeoutSeconds)
  }

  /** Connects from a gateway's service address to the pod's responder: the pod answers only if its
   * replies come back through the node the way the connection came. */
  probeInbound(pod: Pod, family: 4 | 6 = 4, gateway: GatewayName = "gw-default", timeoutSeconds = 2) {
    const address = family === 4 ? pod.v4 : pod.v6
    if (address === undefined) throw new Error(`${pod.name} has no IPv${family} address`)
    return this.connect(this.gateways[gateway], address, timeoutSeconds)
  }

  /** `ip route get` in the node for a packet from `from` arriving on its veth with `mark`: the device the
   * node would send it out of. */
  async nodeRoute(
    from: Pod,
    to: string,
    mark: string | undefined,
    family: 4 | 6 = 4
  ): Promise<string | undefined> {
    const src = family === 4 ? from.v4 : from.v6
    if (src === undefined || from.hostVeth === undefined)
      throw new Error(`${from.name}: no IPv${family} or veth`)
    const args = [family === 4 ? "-4" : "-6", "route", "get", to, "from", src, "iif", from.hostVeth]
    if (mark !== undefined) args.push("mark", mark)
    const [route] = await ipJson(this.node, ...args)
    return route?.dev as string | undefined
  }

  /** The node's link names (for leak checks: no veth left after DEL). */
  async nodeLinks(): Promise<ReadonlyArray<string>> {
    return (await ipJson(this.node, "link", "show")).map((l) => String(l.ifname))
  }

  // -------------------------------------------------------------------------------------------------

  /** Stops every process and removes every namespace and file this topology made. Never throws; returns
   * the problems it met. */
  async destroy(): Promise<ReadonlyArray<string>> {
    const problems: Array<string> = []
    for (const r of [...this.responders.values(), ...this.spawned]) {
      try {
        await r.kill("SIGTERM", 1_000)
      } catch (error) {
        problems.push(String(error))
      }
    }
    this.responders.clear()
    this.spawned.clear()
    for (const ns of [...this.created].reverse()) {
      try {
        await deleteNetns(ns)
      } catch (error) {
        problems.push(String(error))
      }
    }
    this.created.length = 0
    this.pods.clear()
    removePath(this.dir)
    return problems
  }
}
