/**
 * A containerd (1.6, CRI plugin built in) started by a test, inside the simulated node's network
 * namespace, with everything it writes kept under one temp directory, and removed again.
 *
 * Isolation from the machine's own containerd:
 * - `root`, `state`, the gRPC socket, the CNI conf and bin dirs and the CRI plugin's netns mounts
 *   (`netns_mounts_under_state_dir`) are all under the temp dir; the config file is written here.
 * - containerd 1.6 still writes to two fixed paths: the shims' sockets and runc's state under
 *   /run/containerd, and libcni's result cache under /var/lib/cni. So containerd runs in a private
 *   mount namespace (`unshare --mount --propagation private`) where temp directories are bind-mounted
 *   over those two paths: the machine's directories are never written. The mount points must exist; one
 *   that did not is created empty and removed again afterwards.
 * - It enters the node's network namespace with `nsenter --net=`, not `ip netns exec`: the latter also
 *   remounts /sys for the namespace, which hides the cgroup hierarchy from runc.
 * - Sandboxes get a cgroup parent of their own, removed at the end, so no cgroup directory is left
 *   in the machine's hierarchy.
 *
 * Every mount containerd and runc make lives in that private mount namespace, which disappears with its
 * last process; `stop()` removes the sandboxes through the CRI, stops containerd, then (in case any
 * survived) deletes runc containers, kills the shims this containerd started (found by the socket path
 * in their command line, killed by pid), unmounts anything under the temp dir, and removes the cgroup
 * parent. A process 'exit' hook does the synchronous part if `stop()` never ran.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmdirSync,
  writeFileSync
} from "node:fs"
import { join } from "node:path"
import { netnsPath } from "../sim/netns.ts"
import { CriClient } from "./criClient.ts"

export const CRI_NAMESPACE = "k8s.io"
const MOUNT_POINTS = ["/run/containerd", "/var/lib/cni"] as const
const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

export interface ContainerdOptions {
  /** A directory of the test's own (containerd's whole world lives below it). */
  readonly dir: string
  /** The network namespace (a name under /var/run/netns) containerd and the CNI plugins run in. */
  readonly netns: string
  /** The sandbox image reference (must be imported before the first RunPodSandbox). */
  readonly sandboxImage: string
  /** The conflist loaded at start (containerd 1.6 reloads later ones only on a rename, see `setConflist`). */
  readonly conflist: object
  readonly snapshotter?: "overlayfs" | "native"
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Whether root may lower its OOM score here (in some sandboxes it may not; containerd then must not try). */
const canLowerOomScore = (): boolean =>
  spawnSync("sh", ["-c", "echo -1 > /proc/self/oom_score_adj"], { stdio: "ignore" }).status === 0

const toml = (value: string) => JSON.stringify(value)

export class Containerd {
  readonly dir: string
  readonly socket: string
  readonly confDir: string
  readonly binDir: string
  readonly rootDir: string
  readonly stateDir: string
  readonly logFile: string
  readonly cgroupParent: string
  readonly client: CriClient
  private readonly runDir: string
  private readonly cniCacheDir: string
  private readonly createdMountPoints: Array<string> = []
  private child: ChildProcess | undefined
  private exited: Promise<void> = Promise.resolve()
  private stopped = false
  private readonly exitHook = () => this.forceCleanupSync()
  private readonly options: ContainerdOptions

  private constructor(options: ContainerdOptions) {
    this.options = options
    const d = options.dir
    this.dir = d
    this.socket = join(d, "containerd.sock")
    this.confDir = join(d, "cni-conf")
    this.binDir = join(d, "cni-bin")
    this.rootDir = join(d, "root")
    this.stateDir = join(d, "state")
    this.runDir = join(d, "run-containerd")
    this.cniCacheDir = join(d, "var-lib-cni")
    this.logFile = join(d, "containerd.log")
    this.cgroupParent = `/trw-cri-${randomBytes(4).toString("hex")}`
    for (const sub of [this.confDir, this.binDir, this.rootDir, this.stateDir, this.runDir, this.cniCacheDir])
      mkdirSync(sub, { recursive: true })
    this.client = new CriClient(this.socket)
  }

  /** Writes the config and the first conflist, starts containerd and waits for its CRI to answer. */
  static async start(options: ContainerdOptions): Promise<Containerd> {
    const c = new Containerd(options)
    try {
      await c.launch()
      return c
    } catch (error) {
      await c.stop()
      throw new Error(`${error instanceof Error ? error.message : String(error)}\n${c.logTail()}`)
    }
  }

  private configToml(): string {
    const cri = `plugins."io.containerd.grpc.v1.cri"`
    return [
      "version = 2",
      `root = ${toml(this.rootDir)}`,
      `state = ${toml(this.stateDir)}`,
      // Snapshotters that cannot work here, and the plugin that installs into /opt/containerd.
      `disabled_plugins = ${JSON.stringify([
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.zfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.internal.v1.opt"
      ])}`,
      "[grpc]",
      `  address = ${toml(this.socket)}`,
      "[ttrpc]",
      `  address = ${toml(`${this.socket}.ttrpc`)}`,
      `[${cri}]`,
      `  sandbox_image = ${toml(this.options.sandboxImage)}`,
      `  restrict_oom_score_adj = ${canLowerOomScore() ? "false" : "true"}`,
      "  netns_mounts_under_state_dir = true",
      "  disable_apparmor = true",
      "  enable_selinux = false",
      `  stream_server_address = "127.0.0.1"`,
      `  stream_server_port = "0"`,
      `[${cri}.containerd]`,
      `  snapshotter = ${toml(this.options.snapshotter ?? "overlayfs")}`,
      `  default_runtime_name = "runc"`,
      `[${cri}.containerd.runtimes.runc]`,
      `  runtime_type = "io.containerd.runc.v2"`,
      `[${cri}.cni]`,
      `  bin_dir = ${toml(this.binDir)}`,
      `  conf_dir = ${toml(this.confDir)}`,
      "  max_conf_num = 1",
      ""
    ].join("\n")
  }

  private conflistPath(): string {
    return join(this.confDir, "10-tenant-routing.conflist")
  }

  private async launch(): Promise<void> {
    const config = join(this.dir, "config.toml")
    writeFileSync(config, this.configToml())
    writeFileSync(this.conflistPath(), JSON.stringify(this.options.conflist, null, 2))
    for (const point of MOUNT_POINTS)
      if (!existsSync(point)) {
        mkdirSync(point, { recursive: true })
        this.createdMountPoints.push(point)
      }
    // First in line at exit: netns.ts's own hook removes the temp dirs, and runc's state with them.
    process.prependListener("exit", this.exitHook)
    const log = openSync(this.logFile, "a")
    // The script's values arrive as positional parameters, never inside the script text.
    const script =
      'mount --bind "$1" /run/containerd && mount --bind "$2" /var/lib/cni && ' +
      'exec nsenter --net="$3" -- containerd --config "$4"'
    const child = spawn(
      "unshare",
      [
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "containerd-in-node",
        this.runDir,
        this.cniCacheDir,
        netnsPath(this.options.netns),
        config
      ],
      { stdio: ["ignore", log, log], env: { PATH: SYSTEM_PATH } }
    )
    closeSync(log)
    this.child = child
    let gone: string | undefined
    this.exited = new Promise((resolve) => {
      child.on("exit", (code, signal) => {
        gone = `containerd exited (${code ?? signal})`
        resolve()
      })
    })
    const deadline = Date.now() + 60_000
    for (;;) {
      if (gone !== undefined) throw new Error(gone)
      if (existsSync(this.socket)) {
        try {
          await this.client.version()
          return
        } catch {
          // the socket exists before the CRI service is registered
        }
      }
      if (Date.now() > deadline) throw new Error("containerd's CRI did not answer within 60 s")
      await sleep(200)
    }
  }

  /** The last lines of containerd's log (for error messages). */
  logTail(lines = 40): string {
    if (!existsSync(this.logFile)) return ""
    return readFileSync(this.logFile, "utf8").split("\n").slice(-lines).join("\n")
  }

  /** `ctr images import` of an OCI archive into the CRI's namespace, then waits until the CRI sees it. */
  async importImage(archive: string, reference: string): Promise<void> {
    const r = spawnSync(
      "ctr",
      [
        "--address",
        this.socket,
        "--namespace",
        CRI_NAMESPACE,
        "images",
        "import",
        "--snapshotter",
        this.options.snapshotter ?? "overlayfs",
        archive
      ],
      { encoding: "utf8", timeout: 120_000, env: { PATH: SYSTEM_PATH } }
    )
    if (r.status !== 0) throw new Error(`ctr images import exited ${r.status}: ${r.stderr}${r.stdout}`)
    const deadline = Date.now() + 30_000
    while ((await this.client.imageId(reference)) === undefined) {
      if (Date.now() > deadline) throw new Error(`the CRI does not list ${reference} after the import`)
      await sleep(100)
    }
  }

  /** The network config containerd has loaded (from the verbose CRI Status), and whether it is ready. */
  async networkStatus(): Promise<{ ready: boolean; message: string; loaded: string }> {
    const s = await this.client.status(true)
    const condition = s.status.conditions.find((c) => c.type === "NetworkReady")
    return {
      ready: condition?.status === true,
      message:
        `${condition?.reason ?? ""} ${condition?.message ?? ""} ${s.info.lastCNILoadStatus ?? ""}`.trim(),
      loaded: s.info.cniconfig ?? ""
    }
  }

  /**
   * Replaces the conflist and waits until the runtime has loaded it and reports the network ready.
   * containerd 1.6 reloads its conf dir on file events but only a rename over the existing file is
   * reliable (a write in place can be read half-written), so the new one is written under a name the
   * loader ignores and renamed over the old one. `marker` is a string of the new conflist (its network
   * name) that shows in the loaded config once it is in use.
   */
  async setConflist(conflist: object, marker: string): Promise<void> {
    const tmp = join(this.confDir, `.next-${randomBytes(4).toString("hex")}.tmp`)
    writeFileSync(tmp, JSON.stringify(conflist, null, 2))
    renameSync(tmp, this.conflistPath())
    await this.waitForNetwork(marker)
  }

  /** Waits until the CRI reports NetworkReady with a loaded config that contains `marker`. */
  async waitForNetwork(marker: string): Promise<void> {
    const deadline = Date.now() + 30_000
    let last = { ready: false, message: "", loaded: "" }
    for (;;) {
      last = await this.networkStatus()
      if (last.ready && last.loaded.includes(marker)) return
      if (Date.now() > deadline)
        throw new Error(`network ${marker} not ready after 30 s: ${last.message} (loaded: ${last.loaded})`)
      await sleep(100)
    }
  }

  /**
   * Removes every sandbox still there, stops containerd and removes whatever could survive it. Returns
   * what it had to clean up by force (empty after an orderly run); never throws.
   */
  async stop(): Promise<ReadonlyArray<string>> {
    if (this.stopped) return []
    const problems: Array<string> = []
    if (this.running()) {
      try {
        for (const s of await this.client.listPodSandbox()) {
          problems.push(`sandbox ${s.metadata.namespace}/${s.metadata.name} (${s.id}) left running`)
          await this.client.stopPodSandbox(s.id).catch(() => {})
          await this.client.removePodSandbox(s.id).catch(() => {})
        }
      } catch {
        // containerd does not answer: the forced path below handles it
      }
      this.child?.kill("SIGTERM")
      const timer = setTimeout(() => this.child?.kill("SIGKILL"), 10_000)
      await this.exited
      clearTimeout(timer)
    }
    this.client.close()
    problems.push(...this.forceCleanupSync())
    return problems
  }

  private running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null
  }

  /** The synchronous part of `stop()` (also the exit hook): kill, delete, unmount, remove. */
  forceCleanupSync(): ReadonlyArray<string> {
    if (this.stopped) return []
    this.stopped = true
    process.off("exit", this.exitHook)
    const problems: Array<string> = []
    if (this.running()) {
      this.child?.kill("SIGKILL")
      problems.push("containerd had to be killed")
    }
    // runc's state is in the bind-mounted directory, so runc can still reach containers from here.
    const runcRoot = join(this.runDir, "runc", CRI_NAMESPACE)
    if (existsSync(runcRoot))
      for (const id of readdirSync(runcRoot)) {
        spawnSync("runc", ["--root", runcRoot, "delete", "--force", id], { stdio: "ignore", timeout: 30_000 })
        problems.push(`runc container ${id} deleted by force`)
      }
    for (const pid of this.shimPids()) {
      try {
        process.kill(pid, "SIGKILL")
        problems.push(`shim ${pid} killed`)
      } catch {
        // gone meanwhile
      }
    }
    for (const mount of this.mountsUnderDir()) {
      spawnSync("umount", ["--recursive", "--lazy", mount], { stdio: "ignore" })
      problems.push(`unmounted ${mount}`)
    }
    problems.push(...this.removeCgroupParent())
    for (const point of this.createdMountPoints) {
      try {
        rmdirSync(point)
      } catch {
        problems.push(`could not remove the mount point ${point} this suite created`)
      }
    }
    return problems
  }

  /** Processes whose command line names this containerd's socket: the shims it started. */
  private shimPids(): ReadonlyArray<number> {
    const pids: Array<number> = []
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue
      try {
        const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0")
        if (cmdline.includes(this.socket) && Number(entry) !== this.child?.pid) pids.push(Number(entry))
      } catch {
        // exited while listing
      }
    }
    return pids
  }

  /** Mount points (seen from the test's mount namespace) at or below the temp dir, deepest first. */
  private mountsUnderDir(): ReadonlyArray<string> {
    const points = readFileSync("/proc/self/mountinfo", "utf8")
      .split("\n")
      .map((line) => line.split(" ")[4])
      .filter((p): p is string => p !== undefined && (p === this.dir || p.startsWith(`${this.dir}/`)))
    return [...new Set(points)].sort((a, b) => b.length - a.length)
  }

  /** Removes the sandboxes' cgroup parent from every hierarchy (children first). */
  private removeCgroupParent(): ReadonlyArray<string> {
    const problems: Array<string> = []
    const roots = existsSync("/sys/fs/cgroup")
      ? [
          "/sys/fs/cgroup",
          ...readdirSync("/sys/fs/cgroup", { withFileTypes: true })
            .filter((e) => e.isDirectory())
            .map((e) => join("/sys/fs/cgroup", e.name))
        ]
      : []
    const removeTree = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true }))
        if (e.isDirectory()) removeTree(join(dir, e.name))
      try {
        rmdirSync(dir)
      } catch (error) {
        problems.push(`cgroup ${dir}: ${(error as Error).message}`)
      }
    }
    for (const root of roots) {
      const dir = join(root, this.cgroupParent)
      if (existsSync(dir)) removeTree(dir)
    }
    return problems
  }
}
