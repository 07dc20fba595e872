/**
 * `npm run demo` (started by scripts/demo.sh, which checks root and tools and builds the executable): the
 * product on one Linux machine, in network namespaces named `trw-demo-<random>-*`.
 *
 * 1. A simulated node with three gateways (test/sim/topology.ts): gw-a, gw-b and gw-default all own
 *    198.18.0.1 and answer with their own name, so only the node's routing decides who answers.
 * 2. The node's tenant routing applied by the BUILT executable, `node-setup --config tenants.json`, run
 *    twice: the second run must say `0 changes`.
 * 3. The project's test Kubernetes API server on the node's loopback, with namespaces team-a, team-b
 *    (pinned to tenant-b) and shared, and five annotated (or not) pods.
 * 3b. The warm path, when the built executable has the `agent` subcommand: `tenant-routing agent` in the
 *    node (watch cache on that API server), so the shim hands it every call; its log shows it served
 *    each ADD and DEL (without the subcommand the demo says so and every call runs standalone).
 * 4. Each pod created as a container runtime does (test/sim/cniRuntime.ts): conflist = the executable
 *    (delegate ptp + host-local, backend auto, a kubeconfig for the API server), then portmap; CNI_ARGS
 *    with IgnoreUnknown=1, K8S_POD_NAMESPACE, K8S_POD_NAME.
 * 5. A real TCP connection from each pod to 198.18.0.1, and one from web-a to pod `plain` (which must
 *    stay on the node); the tenant and mark shown are what `tenant-routing inspect --json`
 *    reports in the node. `intruder` (team-b, asking for tenant-a) must be refused with code 100.
 * 6. DEL of every pod through the executable; `inspect` must list nothing, host-local hold no lease.
 * 7. Everything torn down; exit 0 only if every row and every check is as expected.
 *
 * Nothing here changes the root namespace: every route, rule, address and netfilter entry is made in a
 * namespace this script creates, and traffic only goes to addresses of those namespaces. Ctrl-C,
 * SIGTERM and SIGHUP tear everything down too (a second signal skips the graceful part).
 */
import { spawnSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { CniRuntime } from "../test/sim/cniRuntime.ts"
import {
  ANNOTATION,
  BINARY,
  hasAgentCommand,
  installInto,
  leases,
  missingPrerequisites,
  NODE_ENV,
  type RunningAgent,
  recordDirs,
  SHIM,
  SYSTEM_CNI,
  startAgentIn,
  wrapperConflist
} from "../test/sim/fixture.ts"
import { cleanupAllSync, execIn, listNetns, randomPrefix } from "../test/sim/netns.ts"
import {
  DEFAULT_TENANT_ROUTES,
  type GatewayName,
  type KubeState,
  type Pod,
  type ProbeAnswer,
  SERVICE_V4,
  Topology
} from "../test/sim/topology.ts"

const NETWORK = "trw-demo"
const PREFIX = randomPrefix("trw-demo")

interface DemoPod {
  readonly name: string
  readonly namespace: string
  /** The pod's `tenant.routing/fwmark` annotation in the API, if any. */
  readonly annotation?: string
  /** What the plugin must decide: a tenant, untagged (null), or refused. */
  readonly expect: { readonly tenant: string | null; readonly gateway: GatewayName } | "refused"
}

const PODS: ReadonlyArray<DemoPod> = [
  { name: "web-a", namespace: "team-a", annotation: "0x10", expect: { tenant: "tenant-a", gateway: "gw-a" } },
  { name: "web-b", namespace: "team-b", expect: { tenant: "tenant-b", gateway: "gw-b" } },
  { name: "plain", namespace: "shared", expect: { tenant: null, gateway: "gw-default" } },
  {
    name: "named",
    namespace: "shared",
    annotation: "tenant-a",
    expect: { tenant: "tenant-a", gateway: "gw-a" }
  },
  { name: "intruder", namespace: "team-b", annotation: "tenant-a", expect: "refused" }
]

const KUBE_STATE: KubeState = {
  namespaces: [
    { name: "team-a" },
    { name: "team-b", annotations: { [ANNOTATION]: "tenant-b" } },
    { name: "shared" }
  ],
  pods: PODS.map((p) => ({
    namespace: p.namespace,
    name: p.name,
    annotations: p.annotation === undefined ? {} : { [ANNOTATION]: p.annotation }
  }))
}

const markOf = (tenant: string | null): string =>
  tenant === null ? "-" : (DEFAULT_TENANT_ROUTES[tenant]?.mark ?? "?")

// ---------------------------------------------------------------------------------------------------
// Output and teardown

let interrupted: NodeJS.Signals | undefined
const say = (line: string) => {
  if (interrupted === undefined) process.stdout.write(`${line}\n`)
}

/** Thrown at the next step of the demo once a signal came: the flow stops starting new work. */
class Interrupted extends Error {}
const go = (): void => {
  if (interrupted !== undefined) throw new Interrupted(interrupted)
}

let topo: Topology | undefined
/** Stops the agent, once one runs (before the namespaces go). */
let stopAgent: () => Promise<void> = () => Promise.resolve()
let teardownRun: Promise<ReadonlyArray<string>> | undefined

/** This run's namespaces still there (all are named `<PREFIX>-...`). */
const ourNamespacesSync = (): ReadonlyArray<string> => {
  const r = spawnSync("ip", ["-j", "netns", "list"], { encoding: "utf8" })
  const list =
    r.status === 0 && r.stdout.trim() !== "" ? (JSON.parse(r.stdout) as Array<{ name: string }>) : []
  return list.map((n) => n.name).filter((n) => n.startsWith(`${PREFIX}-`))
}

/**
 * Processes of this run still alive that no registry knows: a plugin (its path is in the run's temporary
 * directory) or a delegate it started in a process group of its own (its CNI_NETNS names a pod namespace
 * of the run), e.g. after Ctrl-C killed the plugin but not its delegate.
 */
const strayProcessesSync = (): ReadonlyArray<number> => {
  const found: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "latin1")
      const environ = readFileSync(`/proc/${entry}/environ`, "latin1")
      if (cmdline.includes(PREFIX) || environ.includes(`CNI_NETNS=/var/run/netns/${PREFIX}-`))
        found.push(Number(entry))
    } catch {
      // gone meanwhile, or a kernel thread
    }
  }
  return found
}

/** Last resort, synchronous: kill what is left of the run, delete its namespaces and temporary files. */
const reapSync = (): void => {
  cleanupAllSync()
  for (const pid of strayProcessesSync()) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // gone
    }
  }
  for (const ns of ourNamespacesSync()) spawnSync("ip", ["netns", "del", ns], { stdio: "ignore" })
  for (const entry of readdirSync(tmpdir()))
    if (entry.startsWith(`${PREFIX}-`)) rmSync(join(tmpdir(), entry), { recursive: true, force: true })
}

/** Stops every process and removes every namespace and file of the run; once, whoever asks first. */
const teardown = (): Promise<ReadonlyArray<string>> => {
  teardownRun ??= (async () => {
    await stopAgent()
    const problems = (await topo?.destroy()) ?? []
    reapSync()
    return problems
  })()
  return teardownRun
}

const exitCodeOf = (signal: NodeJS.Signals) =>
  128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 } as Record<string, number>)[signal]!
let onInterrupt: () => void = () => {}
const interruption = new Promise<void>((resolve) => {
  onInterrupt = resolve
})
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const)
  process.on(signal, () => {
    if (interrupted !== undefined) {
      // A second signal: no more waiting.
      reapSync()
      process.exit(exitCodeOf(interrupted))
    }
    interrupted = signal
    process.stderr.write(`\n${signal}: tearing the demo down ...\n`)
    onInterrupt()
  })

// ---------------------------------------------------------------------------------------------------

interface Inspected {
  readonly backend: string
  readonly containerId: string | null
  readonly ip: string
  readonly tenant: string | null
  readonly mark: string
}

const inspect = async (plugin: string, node: string, stateDir: string): Promise<ReadonlyArray<Inspected>> => {
  const r = await execIn(node, plugin, ["inspect", "--json", "--state-dir", stateDir], { env: NODE_ENV })
  if (r.code !== 0) throw new Error(`inspect exited ${r.code}: ${r.stderr.trim()}`)
  return JSON.parse(r.stdout) as ReadonlyArray<Inspected>
}

const table = (rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd()
    )
    .join("\n")
}

const seconds = (start: number) => `${((performance.now() - start) / 1000).toFixed(1)} s`

const main = async (): Promise<number> => {
  const start = performance.now()
  if (!existsSync(BINARY) || !existsSync(SHIM)) {
    process.stderr.write(
      `demo: ${BINARY} or ${SHIM} is missing; run it as  sudo npm run demo  (which builds it)\n`
    )
    return 1
  }
  const missing = missingPrerequisites()
  // The checks run tools synchronously: a Ctrl-C meanwhile is seen only now (and made a tool look missing).
  await new Promise((r) => setTimeout(r, 20))
  go()
  if (missing.includes("root")) {
    process.stderr.write(
      "demo: creates network namespaces, which needs root. Run it as:  sudo npm run demo\n"
    )
    return 1
  }
  if (missing.length > 0) {
    process.stderr.write(
      `demo: missing ${missing.join(", ")} (Debian/Ubuntu: apt-get install containernetworking-plugins ` +
        "iptables nftables iproute2 openssl procps; or run  sudo npm run demo, which does it)\n"
    )
    return 1
  }
  const failures: Array<string> = []

  say(`tenant-routing-wrapper demo, in network namespaces ${PREFIX}-*`)
  topo = await Topology.create({ prefix: PREFIX })
  go()
  const t = topo
  say("• node + gateways gw-a (tenant-a), gw-b (tenant-b), gw-default; all three own 198.18.0.1")

  // The two executables alone in a directory of the run, as the DaemonSet puts them in /opt/cni/bin.
  const { shim: plugin, program } = installInto(join(t.dir, "bin"), { link: true })
  const firstLine = (text: string) => text.trim().split("\n")[0] ?? ""
  const setup1 = firstLine(await t.applyRouting(DEFAULT_TENANT_ROUTES, [plugin]))
  const setup2 = firstLine(await t.applyRouting(DEFAULT_TENANT_ROUTES, [plugin]))
  go()
  say(`• node-setup (the binary, in the node): "${setup1}"; run again: "${setup2}"`)
  if (!/: 0 changes$/.test(setup2)) failures.push(`node-setup's second run made changes: ${setup2}`)

  const api = await t.startKubeApi(KUBE_STATE)
  go()
  say("• Kubernetes API server in the node; namespaces team-a, team-b (annotated tenant-b: pinned), shared")
  say(
    `  pods: ${PODS.map((p) => `${p.namespace}/${p.name}${p.annotation === undefined ? "" : ` (annotated ${p.annotation})`}`).join(", ")}`
  )

  // The warm path: `tenant-routing agent` in the node, watching this node's pods and all namespaces.
  // Calls then log to the agent's stderr (no logFile), which is how the demo counts what it served.
  let agent: RunningAgent | undefined
  if (hasAgentCommand(program)) {
    agent = await startAgentIn(t.node, [program, "agent"], join(t.dir, "agent", "agent.sock"), [
      "--kubeconfig",
      api.kubeconfig,
      "--node-name",
      "n1"
    ])
    stopAgent = () => agent?.kill("SIGTERM", 5_000) ?? Promise.resolve()
    go()
    say(`• tenant-routing agent (pid ${agent.pid}) serving in the node; the shim hands it every call`)
  } else
    say(
      "• warm path skipped: this build of tenant-routing has no `agent` subcommand; every call runs standalone"
    )

  const stateDir = join(t.dir, "state")
  const dataDir = join(t.dir, "ipam")
  const runtime = new CniRuntime({
    conflist: wrapperConflist({
      version: "1.0.0",
      name: NETWORK,
      kubeconfig: api.kubeconfig,
      stateDir,
      ...(agent === undefined ? { logFile: join(t.dir, "plugin.log") } : { agentSocket: agent.socket }),
      dataDir,
      ranges: [[{ subnet: "10.200.0.0/16" }]],
      after: [{ type: "portmap" }]
    }),
    cniPath: [join(t.dir, "bin"), SYSTEM_CNI],
    prefix: ["ip", "netns", "exec", t.node],
    env: NODE_ENV
  })
  const pods = await Promise.all(PODS.map((p) => t.addPod(runtime, { name: p.name, namespace: p.namespace })))
  go()
  const entries = await inspect(plugin, t.node, stateDir)
  go()
  const backends = [...new Set(entries.map((e) => e.backend))].join("+") || "none used"
  const up = pods.filter((p) => p.add.ok).length
  say(
    `• ADD of ${pods.length} pods through the binary (delegate ptp + host-local, then portmap; backend auto: ` +
      `${backends}): ${up} up, ${pods.length - up} refused`
  )

  // Traffic: each pod to 198.18.0.1, and web-a to pod plain.
  const byName = new Map(pods.map((p) => [p.name, p]))
  const webA = byName.get("web-a")!
  const plain = byName.get("plain")!
  if (plain.add.ok) await t.servePod(plain)
  const probes = await Promise.all(
    pods.map((p) => (p.add.ok ? t.probe(p, 4) : Promise.resolve<ProbeAnswer | undefined>(undefined)))
  )
  const podToPod = webA.add.ok && plain.add.ok ? await t.probePod(webA, plain, 4) : undefined
  go()

  const entryOf = (pod: Pod) => entries.find((e) => e.containerId === pod.attachment.containerId)
  const rows: Array<Array<string>> = [["POD", "NAMESPACE", "TENANT", "MARK", "GATEWAY", "EXPECTED", "OK"]]
  const notes: Array<string> = []
  let allOk = true
  const row = (cells: Array<string>, ok: boolean) => {
    rows.push([...cells, ok ? "yes" : "NO"])
    allOk &&= ok
  }
  for (const [i, spec] of PODS.entries()) {
    const pod = pods[i]!
    const entry = entryOf(pod)
    const tenant = entry?.tenant ?? "-"
    const mark = entry?.mark ?? "-"
    if (spec.expect === "refused") {
      const code = pod.add.error?.code
      const answered = pod.add.ok ? (probes[i]?.answeredBy ?? "nobody") : `refused (${code})`
      row(
        [spec.name, spec.namespace, tenant, mark, answered, "refused"],
        !pod.add.ok && code === 100 && entry === undefined
      )
      if (!pod.add.ok) notes.push(`${spec.name}: ${pod.add.error?.msg ?? JSON.stringify(pod.add.error)}`)
      continue
    }
    const answer = probes[i]
    const answered = pod.add.ok
      ? (answer?.answeredBy ?? "no answer")
      : `ADD failed (${pod.add.error?.code}): ${pod.add.error?.msg ?? ""}`
    const ok =
      pod.add.ok &&
      tenant === (spec.expect.tenant ?? "-") &&
      mark === markOf(spec.expect.tenant) &&
      answer?.answeredBy === spec.expect.gateway &&
      answer.peer === pod.v4
    row([spec.name, spec.namespace, tenant, mark, answered, spec.expect.gateway], ok)
    if (answer?.ok && answer.peer !== pod.v4)
      notes.push(`${spec.name}: the gateway saw ${answer.peer}, not the pod's ${pod.v4}`)
  }
  {
    const entry = entryOf(webA)
    const answered = podToPod?.answeredBy === undefined ? "no answer" : `pod ${podToPod.answeredBy}`
    row(
      [
        `web-a → plain (${plain.v4 ?? "?"})`,
        "team-a",
        entry?.tenant ?? "-",
        entry?.mark ?? "-",
        answered,
        "pod plain"
      ],
      podToPod?.answeredBy === "plain" && podToPod.peer === webA.v4
    )
  }
  say(`• one TCP connection from each pod to ${SERVICE_V4}; the gateway that answered shows the way out:`)
  say("")
  say(table(rows))
  say("")
  for (const note of notes) say(`  ${note}`)

  // DEL, as the runtime does when the pods go away (the refused one too).
  const deleted = await Promise.all(pods.map((p) => t.deletePod(runtime, p)))
  go()
  for (const [i, d] of deleted.entries())
    if (!d.ok) failures.push(`DEL ${pods[i]!.name} failed: ${JSON.stringify(d.error)}`)
  const after = await inspect(plugin, t.node, stateDir)
  go()
  const leftLeases = leases(dataDir, NETWORK)
  const leftRecords = recordDirs(stateDir, NETWORK)
  say(
    `• DEL of every pod through the binary: inspect lists ${after.length} entries; ` +
      `${leftLeases.length} IP leases and ${leftRecords.length} state records left`
  )
  if (after.length + leftLeases.length + leftRecords.length > 0)
    failures.push(
      `left after DEL: ${JSON.stringify({ entries: after, leases: leftLeases, records: leftRecords })}`
    )

  if (agent !== undefined) {
    const calls = agent.calls()
    const adds = (calls["ADD ok"] ?? 0) + (calls["ADD failed"] ?? 0)
    const dels = (calls["DEL ok"] ?? 0) + (calls["DEL failed"] ?? 0)
    say(
      `• the agent served ${adds} ADDs and ${dels} DELs of the ${pods.length} pods (its log: ` +
        `${Object.entries(calls)
          .map(([k, n]) => `${n} ${k}`)
          .join(", ")})`
    )
    if (adds !== pods.length || dels < pods.length)
      failures.push(`the agent served ${adds} ADDs and ${dels} DELs, not every call of ${pods.length} pods`)
    await stopAgent()
  }

  // Teardown, then check that nothing of the run is left: namespaces and the processes that ran in them.
  const ours = (await listNetns()).filter((n) => n.startsWith(`${PREFIX}-`))
  const pids = ours.flatMap((ns) => {
    const r = spawnSync("ip", ["netns", "pids", ns], { encoding: "utf8" })
    return r.stdout
      .split(/\s+/)
      .filter((s) => /^\d+$/.test(s))
      .map(Number)
  })
  const problems = await teardown()
  const leftNs = (await listNetns()).filter((n) => n.startsWith(`${PREFIX}-`))
  const alive = [
    ...pids.filter((pid) => {
      try {
        process.kill(pid, 0)
        return true
      } catch {
        return false
      }
    }),
    ...strayProcessesSync()
  ]
  const leftDir = existsSync(t.dir) ? [t.dir] : []
  say(
    `• torn down: node and gateway namespaces (${ours.length}), their processes (${pids.length}: responders, ` +
      `API server) and files; ${leftNs.length + alive.length + leftDir.length} left`
  )
  failures.push(...problems)
  if (leftNs.length > 0) failures.push(`namespaces left: ${leftNs.join(", ")}`)
  if (alive.length > 0) failures.push(`processes left: ${alive.join(", ")}`)
  if (leftDir.length > 0) failures.push(`directory left: ${t.dir} (${readdirSync(t.dir).join(", ")})`)

  for (const f of failures) say(`  problem: ${f}`)
  const pass = allOk && failures.length === 0
  say(
    pass
      ? `PASS: every pod's traffic left through the expected gateway, and nothing is left (${seconds(start)})`
      : `FAIL: ${allOk ? "" : "a row is not as expected"}${!allOk && failures.length > 0 ? "; " : ""}` +
          `${failures.length > 0 ? `${failures.length} problem(s) above` : ""} (${seconds(start)})`
  )
  return pass ? 0 : 1
}

const finished = main().catch((error: unknown) => {
  if (interrupted === undefined && !(error instanceof Interrupted))
    process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`)
  return 1
})
const code = await Promise.race([finished, interruption.then(() => undefined)])
if (interrupted === undefined && code !== undefined) {
  // main tears down itself when it gets that far (and reports it); otherwise it is done here.
  if (teardownRun === undefined) for (const p of await teardown()) process.stderr.write(`teardown: ${p}\n`)
  process.exit(code)
}
// Interrupted: let the step in progress end (it throws Interrupted at the next one), then tear down.
const signal = interrupted ?? "SIGINT"
await Promise.race([finished, new Promise((r) => setTimeout(r, 8_000))])
const problems = await teardown()
const left = [...ourNamespacesSync(), ...strayProcessesSync().map((pid) => `process ${pid}`)]
process.stderr.write(
  left.length === 0 && problems.length === 0
    ? "removed everything the demo made\n"
    : `teardown problems: ${[...problems, ...left].join("; ")}\n`
)
process.exit(exitCodeOf(signal))
