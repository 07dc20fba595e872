/**
 * A mini libcni: runs a conflist's plugins the way a container runtime does through libcni
 * (containernetworking/cni `libcni/api.go`), so tests and the demo exercise the plugin exactly as a
 * node would, chained with real plugins.
 *
 * - ADD runs the plugins in order; each gets the conflist's `name` and `cniVersion` injected, the previous
 *   plugin's result as `prevResult` (none for the first), and `runtimeConfig` holding the capability args
 *   the plugin declares in `capabilities` (e.g. `io.kubernetes.cri.pod-annotations`, `portMappings`). The
 *   last result is cached per (containerId, ifname), as libcni does under /var/lib/cni/results.
 * - DEL runs them in reverse, with the cached result as `prevResult` from 0.4.0 on (none if nothing is
 *   cached), and stops at the first failure; the cache entry goes only when every plugin succeeded.
 * - CHECK (0.4.0 and later) runs them in order with the cached result; no cached result is an error.
 * - GC and STATUS (1.1.0 and later; a no-op below, as in libcni) run every plugin in order. GC first
 *   issues DEL for cached attachments missing from the valid list (libcni does; `deleteStale: false`
 *   skips it, so a test can see the plugin's own GC at work), then passes `cni.dev/valid-attachments`.
 *
 * Plugins are found by `type` in `cniPath` (or given an explicit command line in `commands`). Every
 * plugin command can be prefixed, e.g. `["ip", "netns", "exec", "trw-1234-node"]`, so the plugins act in a
 * simulated node namespace. Differences from libcni, on purpose: results are passed on verbatim (libcni
 * re-encodes them in the conflist's version; a plugin printing another version is recorded in the run and
 * the tests assert it), and the cache lives in memory.
 *
 * Plain Node 24, importable from vitest and from scripts.
 */
import { accessSync, constants, statSync } from "node:fs"
import { join } from "node:path"
import { type Ran, run } from "./netns.ts"

export type PluginConf = {
  readonly type: string
  readonly capabilities?: Readonly<Record<string, boolean>>
} & {
  readonly [key: string]: unknown
}

export interface Conflist {
  readonly cniVersion: string
  readonly name: string
  readonly plugins: ReadonlyArray<PluginConf>
  readonly [key: string]: unknown
}

export type Verb = "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" | "VERSION"

/** What the runtime knows about one attachment (libcni's RuntimeConf). */
export interface Attachment {
  readonly containerId: string
  readonly ifname: string
  /** A netns path, e.g. `/var/run/netns/trw-1234-pod1` (CNI_NETNS). */
  readonly netns: string
  /** CNI_ARGS pairs in order, e.g. `[["IgnoreUnknown","1"],["K8S_POD_NAMESPACE","ns"],...]`. */
  readonly args?: ReadonlyArray<readonly [string, string]>
  /** Capability args, passed as `runtimeConfig` to plugins that declare the capability. */
  readonly capabilityArgs?: Readonly<Record<string, unknown>>
}

/** The CNI_ARGS containerd passes for a Kubernetes pod. */
export const kubernetesArgs = (
  namespace: string,
  name: string,
  containerId: string
): ReadonlyArray<readonly [string, string]> => [
  ["IgnoreUnknown", "1"],
  ["K8S_POD_NAMESPACE", namespace],
  ["K8S_POD_NAME", name],
  ["K8S_POD_INFRA_CONTAINER_ID", containerId],
  ["K8S_POD_UID", `00000000-0000-4000-8000-${containerId.slice(0, 12).padEnd(12, "0")}`]
]

export interface CniErrorDoc {
  readonly cniVersion?: string
  readonly code: number
  readonly msg?: string
  readonly details?: unknown
}

/** One plugin execution. */
export interface PluginRun {
  readonly type: string
  readonly verb: Verb
  /** The config sent on stdin. */
  readonly stdin: Record<string, unknown>
  readonly code: number
  readonly stdout: string
  readonly stderr: string
  readonly durationMs: number
  /** stdout decoded, when it was JSON. */
  readonly output: unknown
}

export interface Outcome {
  readonly ok: boolean
  /** ADD: the last plugin's result; VERSION: the answer. */
  readonly result?: Record<string, unknown>
  /** The failing plugin's CNI error (or one made up by the runtime, code 999, for a crash/garbage). */
  readonly error?: CniErrorDoc
  /** `type` of the plugin that failed. */
  readonly failedPlugin?: string
  readonly runs: ReadonlyArray<PluginRun>
  readonly durationMs: number
}

export interface CniRuntimeOptions {
  readonly conflist: Conflist
  /** CNI_PATH: directories searched for each plugin's `type`. */
  readonly cniPath: ReadonlyArray<string>
  /** Prepended to every plugin command line, e.g. `["ip", "netns", "exec", NODE_NS]`. */
  readonly prefix?: ReadonlyArray<string>
  /** Explicit command lines by plugin type (e.g. `["node", "bin/tenant-routing.ts"]`). */
  readonly commands?: Readonly<Record<string, ReadonlyArray<string>>>
  /** Extra environment for every plugin. */
  readonly env?: Readonly<Record<string, string>>
  /** Per plugin execution (default 120 s). */
  readonly timeoutMs?: number
}

const compareVersions = (a: string, b: string): number => {
  const pa = a.split(".").map(Number)
  const pb = b.split(".").map(Number)
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0)
    if (d !== 0) return d
  }
  return 0
}
export const versionAtLeast = (version: string, min: string): boolean => compareVersions(version, min) >= 0

const parseJson = (text: string): unknown => {
  if (text.trim() === "") return undefined
  try {
    return JSON.parse(text) as unknown
  } catch {
    return undefined
  }
}

const isRecord = (u: unknown): u is Record<string, unknown> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

/** libcni's FindInPath. */
export const findPlugin = (type: string, dirs: ReadonlyArray<string>): string | undefined => {
  if (type === "" || type.includes("/")) return undefined
  for (const dir of dirs) {
    const candidate = join(dir, type)
    try {
      if (!statSync(candidate).isFile()) continue
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {
      // next directory
    }
  }
  return undefined
}

const key = (containerId: string, ifname: string) => `${containerId}/${ifname}`

export class CniRuntime {
  private readonly cache = new Map<string, { attachment: Attachment; result: Record<string, unknown> }>()

  readonly options: CniRuntimeOptions
  constructor(options: CniRuntimeOptions) {
    this.options = options
  }

  get conflist(): Conflist {
    return this.options.conflist
  }

  /** The cached ADD result of an attachment, if any. */
  cachedResult(containerId: string, ifname: string): Record<string, unknown> | undefined {
    return this.cache.get(key(containerId, ifname))?.result
  }

  /** Replaces (or, with `undefined`, drops) a cached result, e.g. to simulate a lost cache. */
  setCachedResult(attachment: Attachment, result: Record<string, unknown> | undefined): void {
    if (result === undefined) this.cache.delete(key(attachment.containerId, attachment.ifname))
    else this.cache.set(key(attachment.containerId, attachment.ifname), { attachment, result })
  }

  /** The attachments with a cached result. */
  cachedAttachments(): ReadonlyArray<Attachment> {
    return [...this.cache.values()].map((c) => c.attachment)
  }

  /** The config one plugin receives (libcni's buildOneConfig + injectRuntimeConfig). */
  pluginConfig(
    plugin: PluginConf,
    prevResult: Record<string, unknown> | undefined,
    capabilityArgs: Readonly<Record<string, unknown>> | undefined
  ): Record<string, unknown> {
    const conf: Record<string, unknown> = {
      ...plugin,
      name: this.conflist.name,
      cniVersion: this.conflist.cniVersion
    }
    const runtimeConfig: Record<string, unknown> = {}
    for (const [capability, supported] of Object.entries(plugin.capabilities ?? {})) {
      if (supported && capabilityArgs !== undefined && capability in capabilityArgs)
        runtimeConfig[capability] = capabilityArgs[capability]
    }
    if (Object.keys(runtimeConfig).length > 0) conf.runtimeConfig = runtimeConfig
    if (prevResult !== undefined) conf.prevResult = prevResult
    return conf
  }

  /** Executes one plugin with `verb`, `config` on stdin, and the CNI environment. */
  async exec(
    type: string,
    verb: Verb,
    config: Record<string, unknown>,
    attachment?: Attachment
  ): Promise<PluginRun> {
    const start = performance.now()
    const explicit = this.options.commands?.[type]
    const path = explicit === undefined ? findPlugin(type, this.options.cniPath) : undefined
    const stdin = config
    if (explicit === undefined && path === undefined) {
      const stderr = `plugin ${JSON.stringify(type)} not found in ${this.options.cniPath.join(":")}`
      return { type, verb, stdin, code: 127, stdout: "", stderr, durationMs: 0, output: undefined }
    }
    const argv = [...(this.options.prefix ?? []), ...(explicit ?? [path!])]
    const env: NodeJS.ProcessEnv = {}
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("CNI_")) env[k] = v
    if (!(env.PATH ?? "").split(":").includes("/usr/sbin"))
      env.PATH = `${env.PATH ?? "/usr/bin:/bin"}:/usr/sbin:/sbin`
    Object.assign(env, this.options.env ?? {}, {
      CNI_COMMAND: verb,
      CNI_PATH: this.options.cniPath.join(":")
    })
    if (attachment !== undefined) {
      env.CNI_CONTAINERID = attachment.containerId
      env.CNI_NETNS = attachment.netns
      env.CNI_IFNAME = attachment.ifname
      if (attachment.args !== undefined && attachment.args.length > 0)
        env.CNI_ARGS = attachment.args.map(([k, v]) => `${k}=${v}`).join(";")
    }
    const ran: Ran = await run(argv[0]!, argv.slice(1), {
      input: JSON.stringify(config),
      env,
      timeoutMs: this.options.timeoutMs ?? 120_000
    })
    return {
      type,
      verb,
      stdin,
      code: ran.code,
      stdout: ran.stdout,
      stderr: ran.stderr,
      durationMs: performance.now() - start,
      output: parseJson(ran.stdout)
    }
  }

  private static failure(run: PluginRun): CniErrorDoc {
    if (isRecord(run.output) && typeof run.output.code === "number")
      return run.output as unknown as CniErrorDoc
    return {
      code: 999,
      msg: `${run.type} ${run.verb} exited ${run.code} without a CNI error`,
      details: `${run.stdout.slice(0, 2000)}\n${run.stderr.slice(-2000)}`
    }
  }

  private static outcome(
    start: number,
    runs: ReadonlyArray<PluginRun>,
    failed: PluginRun | undefined,
    result?: Record<string, unknown>
  ): Outcome {
    const durationMs = performance.now() - start
    if (failed !== undefined)
      return { ok: false, error: CniRuntime.failure(failed), failedPlugin: failed.type, runs, durationMs }
    return { ok: true, ...(result === undefined ? {} : { result }), runs, durationMs }
  }

  /** Runs `plugins` in order with one fixed prevResult, stopping at the first failure. */
  private async runInOrder(
    plugins: ReadonlyArray<PluginConf>,
    verb: Verb,
    prev: Record<string, unknown> | undefined,
    attachment?: Attachment
  ): Promise<{ readonly runs: Array<PluginRun>; readonly failed: PluginRun | undefined }> {
    const runs: Array<PluginRun> = []
    for (const plugin of plugins) {
      const r = await this.exec(
        plugin.type,
        verb,
        this.pluginConfig(plugin, prev, attachment?.capabilityArgs),
        attachment
      )
      runs.push(r)
      if (r.code !== 0) return { runs, failed: r }
    }
    return { runs, failed: undefined }
  }

  /** ADD through every plugin; on success the result is cached. Nothing is undone on failure (the
   * runtime's later DEL does that, as with a real runtime). */
  async add(attachment: Attachment): Promise<Outcome> {
    const start = performance.now()
    const runs: Array<PluginRun> = []
    let prev: Record<string, unknown> | undefined
    for (const plugin of this.conflist.plugins) {
      const r = await this.exec(
        plugin.type,
        "ADD",
        this.pluginConfig(plugin, prev, attachment.capabilityArgs),
        attachment
      )
      runs.push(r)
      if (r.code !== 0) return CniRuntime.outcome(start, runs, r)
      if (!isRecord(r.output))
        return CniRuntime.outcome(start, runs, {
          ...r,
          code: 999,
          stderr: `${r.stderr}\n(ADD printed no result)`
        })
      prev = r.output
    }
    if (prev !== undefined) this.setCachedResult(attachment, prev)
    return CniRuntime.outcome(start, runs, undefined, prev)
  }

  /** DEL in reverse order; the cached result is prevResult from 0.4.0 on. */
  async del(attachment: Attachment): Promise<Outcome> {
    const start = performance.now()
    const cached = versionAtLeast(this.conflist.cniVersion, "0.4.0")
      ? this.cachedResult(attachment.containerId, attachment.ifname)
      : undefined
    const { runs, failed } = await this.runInOrder(
      [...this.conflist.plugins].reverse(),
      "DEL",
      cached,
      attachment
    )
    if (failed !== undefined) return CniRuntime.outcome(start, runs, failed)
    this.setCachedResult(attachment, undefined)
    return CniRuntime.outcome(start, runs, undefined)
  }

  /** CHECK in order with the cached result (0.4.0 and later). */
  async check(attachment: Attachment): Promise<Outcome> {
    const start = performance.now()
    if (!versionAtLeast(this.conflist.cniVersion, "0.4.0"))
      return {
        ok: false,
        error: { code: 999, msg: `configuration version ${this.conflist.cniVersion} does not support CHECK` },
        runs: [],
        durationMs: 0
      }
    const cached = this.cachedResult(attachment.containerId, attachment.ifname)
    if (cached === undefined)
      return { ok: false, error: { code: 999, msg: "no cached result for CHECK" }, runs: [], durationMs: 0 }
    const { runs, failed } = await this.runInOrder(this.conflist.plugins, "CHECK", cached, attachment)
    return CniRuntime.outcome(start, runs, failed)
  }

  /** GC (1.1.0+): DEL for stale cached attachments (unless `deleteStale: false`), then GC through every
   * plugin with `cni.dev/valid-attachments`. All plugins run; the first failure is reported. */
  async gc(
    valid: ReadonlyArray<{ readonly containerId: string; readonly ifname: string }>,
    options: { readonly deleteStale?: boolean } = {}
  ): Promise<Outcome> {
    const start = performance.now()
    const runs: Array<PluginRun> = []
    let failed: PluginRun | undefined
    if (options.deleteStale ?? true) {
      const keep = new Set(valid.map((v) => key(v.containerId, v.ifname)))
      for (const stale of this.cachedAttachments()) {
        if (keep.has(key(stale.containerId, stale.ifname))) continue
        const d = await this.del(stale)
        runs.push(...d.runs)
        if (!d.ok) failed ??= d.runs[d.runs.length - 1]
      }
    }
    if (versionAtLeast(this.conflist.cniVersion, "1.1.0")) {
      const attachments = valid.map((v) => ({ containerID: v.containerId, ifname: v.ifname }))
      for (const plugin of this.conflist.plugins) {
        const conf = {
          ...this.pluginConfig(plugin, undefined, undefined),
          "cni.dev/valid-attachments": attachments
        }
        const r = await this.exec(plugin.type, "GC", conf)
        runs.push(r)
        if (r.code !== 0) failed ??= r
      }
    }
    return CniRuntime.outcome(start, runs, failed)
  }

  /** STATUS (1.1.0+) through every plugin in order; stops at the first failure. */
  async status(): Promise<Outcome> {
    const start = performance.now()
    if (!versionAtLeast(this.conflist.cniVersion, "1.1.0")) return CniRuntime.outcome(start, [], undefined)
    const { runs, failed } = await this.runInOrder(this.conflist.plugins, "STATUS", undefined)
    return CniRuntime.outcome(start, runs, failed)
  }

  /** VERSION of one plugin type. */
  async version(type: string): Promise<Outcome> {
    const start = performance.now()
    const r = await this.exec(type, "VERSION", { cniVersion: this.conflist.cniVersion })
    if (r.code !== 0 || !isRecord(r.output)) return CniRuntime.outcome(start, [r], r)
    return CniRuntime.outcome(start, [r], undefined, r.output)
  }
}
