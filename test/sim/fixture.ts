/**
 * What the demo (scripts/demo.ts), the benchmark (scripts/bench.ts) and the integration suites share
 * about running the plugin on a simulated node: where the built executables are and how they are built
 * and installed, the system CNI plugins, the annotation key, the node's PATH, what must be installed,
 * the conflist of our plugin in wrapper mode over ptp + host-local, and readers of what a run leaves on
 * disk. Plain Node (no vitest, no Effect), like netns.ts, so scripts and tests both import it; nothing
 * here imports from scripts/.
 */
import { spawnSync } from "node:child_process"
import {
  chmodSync,
  copyFileSync,
  existsSync,
  linkSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync
} from "node:fs"
import { isIP } from "node:net"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { Conflist, PluginConf } from "./cniRuntime.ts"
import { hasTool, isRoot, type Spawned, spawnIn } from "./netns.ts"

export const ROOT = fileURLToPath(new URL("../..", import.meta.url))
export const DIST_DIR = join(ROOT, "dist")
/** The full program: standalone CNI plugin, agent and operator CLI. */
export const BINARY = join(DIST_DIR, "tenant-routing")
/** The Go shim the conflist names; with no agent listening it execs `tenant-routing` next to it. */
export const SHIM = join(DIST_DIR, "tenant-routing-wrapper")
export const SYSTEM_CNI = "/usr/lib/cni"
export const ANNOTATION = "tenant.routing/fwmark"
export const POD_ANNOTATIONS = "io.kubernetes.cri.pod-annotations"

/** The environment a container runtime on a node gives plugins: system paths only, no Node toolchain. */
export const NODE_ENV: Readonly<Record<string, string>> = {
  PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

// ---------------------------------------------------------------------------------------------------
// Prerequisites

/** What is missing to run the plugin on a simulated node (empty: nothing). */
export const missingPrerequisites = (): ReadonlyArray<string> => {
  const missing: Array<string> = []
  if (!isRoot()) missing.push("root")
  const tools: ReadonlyArray<[string, ReadonlyArray<string>]> = [
    ["ip", ["-V"]],
    ["iptables", ["--version"]],
    ["ip6tables", ["--version"]],
    ["iptables-save", ["--version"]],
    ["nft", ["--version"]],
    ["bash", ["--version"]],
    ["timeout", ["--version"]],
    ["openssl", ["version"]],
    ["sysctl", ["--version"]]
  ]
  for (const [tool, args] of tools) if (!hasTool(tool, args)) missing.push(tool)
  for (const plugin of ["ptp", "host-local", "portmap"])
    if (!existsSync(join(SYSTEM_CNI, plugin))) missing.push(`${SYSTEM_CNI}/${plugin}`)
  if (isRoot() && spawnSync("ip", ["netns", "list"], { stdio: "ignore" }).status !== 0)
    missing.push("ip netns")
  return missing
}

// ---------------------------------------------------------------------------------------------------
// The executables: built when stale, installed into a directory of their own

const newestMtime = (path: string): number => {
  let st: ReturnType<typeof statSync>
  try {
    st = statSync(path)
  } catch {
    return 0
  }
  if (!st.isDirectory()) return st.mtimeMs
  let newest = st.mtimeMs
  for (const entry of readdirSync(path)) {
    if (entry === "node_modules") continue
    newest = Math.max(newest, newestMtime(join(path, entry)))
  }
  return newest
}

/** The inputs of the build: if any is newer than an executable, both are rebuilt. */
const sourcesMtime = () =>
  Math.max(
    ...["src", "bin", "shim", "package-lock.json", "scripts/build.ts"].map((p) => newestMtime(join(ROOT, p)))
  )

/** Both executables exist and are newer than every source of the build. */
export const isBuilt = (): boolean =>
  [BINARY, SHIM].every((f) => existsSync(f) && statSync(f).mtimeMs >= sourcesMtime())

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * Builds dist/tenant-routing and the shim with `bash scripts/run.sh build` when either is missing or
 * older than the sources. Several suites start at once, so the build runs under a lock directory
 * (mkdir is atomic); the others wait for it and then find the executables fresh. A lock whose holder
 * died is taken over. Resolves with the path of the full program.
 */
export const ensureBuilt = async (): Promise<string> => {
  if (isBuilt()) return BINARY
  const lock = join(ROOT, "node_modules", ".trw-integration-build.lock")
  const deadline = Date.now() + 8 * 60_000
  for (;;) {
    try {
      mkdirSync(lock)
      writeFileSync(join(lock, "pid"), String(process.pid))
      break
    } catch {
      let holder = Number.NaN
      try {
        holder = Number(readFileSync(join(lock, "pid"), "utf8"))
      } catch {
        // being created or removed
      }
      let alive = true
      if (Number.isInteger(holder)) {
        try {
          process.kill(holder, 0)
        } catch {
          alive = false
        }
      }
      if (!alive) rmSync(lock, { recursive: true, force: true })
      if (Date.now() > deadline) throw new Error(`timed out waiting for the build lock ${lock}`)
      await sleep(500)
    }
  }
  try {
    if (isBuilt()) return BINARY
    const r = spawnSync("bash", [join(ROOT, "scripts", "run.sh"), "build"], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 8 * 60_000
    })
    if (r.status !== 0 || !existsSync(BINARY) || !existsSync(SHIM))
      throw new Error(
        `bash scripts/run.sh build failed (exit ${r.status}):\n${r.stderr}\n${r.stdout}`.slice(0, 8000)
      )
    return BINARY
  } finally {
    rmSync(lock, { recursive: true, force: true })
  }
}

export interface Installed {
  /** `binDir/tenant-routing-wrapper`: what the conflist's `type` finds through CNI_PATH. */
  readonly shim: string
  /** `binDir/tenant-routing`: the full program the shim execs when no agent serves. */
  readonly program: string
}

/**
 * Puts the two executables alone into `binDir` (created if missing), the way the DaemonSet fills
 * /opt/cni/bin, so nothing next to them in dist/ can help. Copies by default (a test may change or
 * remove its copy); `link: true` hard-links when the filesystem allows, which saves copying the
 * ~120 MB program for a demo or a benchmark.
 */
export const installInto = (binDir: string, options: { readonly link?: boolean } = {}): Installed => {
  mkdirSync(binDir, { recursive: true })
  const installed = { shim: join(binDir, "tenant-routing-wrapper"), program: join(binDir, "tenant-routing") }
  for (const [from, to] of [
    [BINARY, installed.program],
    [SHIM, installed.shim]
  ] as const) {
    rmSync(to, { force: true })
    let linked = false
    if (options.link === true) {
      try {
        linkSync(from, to)
        linked = true
      } catch {
        // another filesystem: copy
      }
    }
    if (!linked) {
      copyFileSync(from, to)
      chmodSync(to, 0o755)
    }
  }
  return installed
}

// ---------------------------------------------------------------------------------------------------
// The agent

/** Whether `program` has the `agent` subcommand with its watch-cache flags (`--kubeconfig`). */
export const hasAgentCommand = (program: string): boolean => {
  const r = spawnSync(program, ["agent", "--help"], { encoding: "utf8", timeout: 30_000 })
  return r.status === 0 && `${r.stdout}${r.stderr}`.includes("--kubeconfig")
}

export interface RunningAgent extends Spawned {
  readonly socket: string
  /** Its resident memory now, in KiB (VmRSS), from /proc. */
  readonly rssKiB: () => number
  /** The anonymous part of it (RssAnon: not the executable's file pages, which the page cache shares). */
  readonly anonKiB: () => number
  /** The CNI calls it has logged (`ADD ok`, `DEL failed`, ...), when calls log to its stderr. */
  readonly calls: () => Readonly<Record<string, number>>
}

/**
 * Starts an agent in namespace `ns` (`argv`: e.g. `[program, "agent"]`, or `[node, "bin/agent.ts"]`
 * from source) listening on `socket`, with the node's PATH, and resolves once it logged `agent ready`.
 * It is registered with netns.ts, so it is killed at exit if the caller does not stop it first.
 */
export const startAgentIn = async (
  ns: string,
  argv: ReadonlyArray<string>,
  socket: string,
  extraArgs: ReadonlyArray<string> = [],
  timeoutMs = 60_000
): Promise<RunningAgent> => {
  const spawned = spawnIn(ns, argv[0]!, [...argv.slice(1), "--socket", socket, ...extraArgs], {
    env: { ...NODE_ENV }
  })
  const deadline = Date.now() + timeoutMs
  let exited = false
  void spawned.exited.then(() => {
    exited = true
  })
  while (!spawned.output().stderr.includes('"agent ready"')) {
    if (exited || Date.now() > deadline) {
      await spawned.kill("SIGKILL")
      throw new Error(`agent not ready (${exited ? "exited" : "timed out"}): ${spawned.output().stderr}`)
    }
    await sleep(50)
  }
  const statusKiB = (field: string) => () => {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
      readFileSync(`/proc/${spawned.pid}/status`, "utf8")
    )
    return m === null ? Number.NaN : Number(m[1])
  }
  const rssKiB = statusKiB("VmRSS")
  const anonKiB = statusKiB("RssAnon")
  const calls = () => {
    const counts: Record<string, number> = {}
    for (const line of spawned.output().stderr.split("\n")) {
      const m = /"(ADD|DEL|CHECK|GC|STATUS|VERSION) (ok|failed)"/.exec(line)
      if (m !== null) counts[`${m[1]} ${m[2]}`] = (counts[`${m[1]} ${m[2]}`] ?? 0) + 1
    }
    return counts
  }
  return { ...spawned, socket, rssKiB, anonKiB, calls }
}

// ---------------------------------------------------------------------------------------------------
// Conflists

export interface WrapperPluginOptions {
  readonly kubeconfig?: string
  readonly backend?: "iptables" | "nftables"
  readonly stateDir: string
  /** Where the shim looks for the agent; default a path in `stateDir` nobody listens on (standalone). */
  readonly agentSocket?: string
  readonly logFile?: string
  /** host-local's data directory. */
  readonly dataDir: string
  /** host-local ranges; a second entry makes pods dual-stack. */
  readonly ranges: ReadonlyArray<ReadonlyArray<Record<string, string>>>
  /** Declare the pod-annotations capability (the runtime then passes annotations in runtimeConfig). */
  readonly podAnnotationsCapability?: boolean
  /** Pod annotations as a runtime passes them (`runtimeConfig["io.kubernetes.cri.pod-annotations"]`). */
  readonly podAnnotations?: Readonly<Record<string, string>>
}

/** Our plugin in wrapper mode, delegating to ptp + host-local: one entry of a conflist's `plugins`. */
export const wrapperPlugin = (o: WrapperPluginOptions): PluginConf => {
  const dualStack = o.ranges.length > 1
  return {
    type: "tenant-routing-wrapper",
    ...(o.podAnnotationsCapability === true ? { capabilities: { [POD_ANNOTATIONS]: true } } : {}),
    ...(o.kubeconfig === undefined ? {} : { kubeconfig: o.kubeconfig }),
    ...(o.backend === undefined ? {} : { backend: o.backend }),
    stateDir: o.stateDir,
    // Without an agent of its own, a socket path nobody serves keeps a node's real agent out of the run.
    agentSocket: o.agentSocket ?? join(o.stateDir, "no-agent.sock"),
    ...(o.logFile === undefined ? {} : { logFile: o.logFile, logLevel: "info" }),
    ...(o.podAnnotations === undefined ? {} : { runtimeConfig: { [POD_ANNOTATIONS]: o.podAnnotations } }),
    delegate: {
      type: "ptp",
      ipam: {
        type: "host-local",
        dataDir: o.dataDir,
        ranges: o.ranges,
        routes: dualStack ? [{ dst: "0.0.0.0/0" }, { dst: "::/0" }] : [{ dst: "0.0.0.0/0" }]
      }
    }
  }
}

/** A conflist: our plugin (wrapper mode over ptp + host-local), then `after` (e.g. portmap). */
export const wrapperConflist = (
  o: WrapperPluginOptions & {
    readonly version: string
    readonly name: string
    readonly after?: ReadonlyArray<PluginConf>
  }
): Conflist => ({
  cniVersion: o.version,
  name: o.name,
  plugins: [wrapperPlugin(o), ...(o.after ?? [])]
})

// ---------------------------------------------------------------------------------------------------
// Disk: state records and host-local leases

/** The attachment directories left under `<stateDir>/<network>`. */
export const recordDirs = (stateDir: string, network: string): ReadonlyArray<string> => {
  const dir = join(stateDir, network)
  return existsSync(dir) ? readdirSync(dir) : []
}

/** The IPs host-local holds a lease for in `<dataDir>/<network>` (one file per address). */
export const leases = (dataDir: string, network: string): ReadonlyArray<string> => {
  const dir = join(dataDir, network)
  return existsSync(dir) ? readdirSync(dir).filter((f) => isIP(f) !== 0) : []
}
