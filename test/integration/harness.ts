/**
 * Shared parts of the integration suites: prerequisites (skip without root or tools, fail instead under
 * TRW_REQUIRE_INTEGRATION=1), the built executable (built once, under a lock, when missing or older than
 * the sources), conflists, and readers of what the kernel and the disk actually hold — read with the
 * system tools directly, never through the plugin's own interpreters, so the tests check the plugin
 * against the kernel rather than against itself.
 *
 * Everything here runs commands inside namespaces made by test/sim (the node namespace), never in the
 * root namespace.
 */
import { chmodSync, existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs"
import { isIP } from "node:net"
import { join } from "node:path"
import type { Conflist } from "../sim/cniRuntime.ts"
import { ensureBuilt, installInto, SYSTEM_CNI, wrapperConflist } from "../sim/fixture.ts"
import { execIn, mustIn } from "../sim/netns.ts"

// The executables, the node's environment, prerequisites and disk readers are shared with the demo and
// the benchmark (test/sim/fixture.ts).
export {
  ANNOTATION,
  BINARY,
  DIST_DIR,
  leases,
  missingPrerequisites,
  NODE_ENV,
  POD_ANNOTATIONS,
  ROOT,
  recordDirs,
  SHIM,
  SYSTEM_CNI
} from "../sim/fixture.ts"
export const VERSIONS = ["0.4.0", "1.0.0", "1.1.0"] as const
export type Version = (typeof VERSIONS)[number]
export type Backend = "iptables" | "nftables"

// ---------------------------------------------------------------------------------------------------
// Prerequisites

/** CI sets TRW_REQUIRE_INTEGRATION=1: a missing prerequisite is then a failure, not a skip. */
export { integrationRequired } from "../support/liveGate.ts"

// ---------------------------------------------------------------------------------------------------
// The executable

/** Builds the executables when missing or older than the sources (test/sim/fixture.ts ensureBuilt). */
export const ensureBinary = ensureBuilt

export interface InstalledPlugin {
  /** The command line of the executable (for `node-setup`). */
  readonly argv: ReadonlyArray<string>
  /** CNI_PATH: `binDir` (the executable alone, like /opt/cni/bin) and the system plugins. */
  readonly cniPath: ReadonlyArray<string>
  /** The runtime's `commands` override (development mode only). */
  readonly commands: Readonly<Record<string, ReadonlyArray<string>>>
}

/**
 * Installs the plugin into `binDir` the way the DaemonSet does: the shim as `tenant-routing-wrapper` and
 * the full program as `tenant-routing`, copied there alone (so nothing next to them in dist/ can help).
 * No agent listens in these suites, so every call goes shim → exec `tenant-routing` (standalone mode). For development only, TRW_INTEGRATION_COMMAND (a JSON
 * array, e.g. `["node","bin/tenant-routing.ts"]`) runs that command line instead and skips the
 * build.
 */
export const installPlugin = async (binDir: string): Promise<InstalledPlugin> => {
  const cniPath = [binDir, SYSTEM_CNI]
  const dev = process.env.TRW_INTEGRATION_COMMAND
  if (dev !== undefined && dev !== "") {
    const argv = JSON.parse(dev) as ReadonlyArray<string>
    return { argv, cniPath, commands: { "tenant-routing-wrapper": argv } }
  }
  await ensureBuilt()
  const { shim } = installInto(binDir)
  return { argv: [shim], cniPath, commands: {} }
}

// ---------------------------------------------------------------------------------------------------
// A chained plugin that speaks 1.1.0

/**
 * The Debian plugins (portmap included) speak at most 1.0.0 and refuse a 1.1.0 config, so a 1.1.0
 * conflist needs another plugin after ours: `trw-next`, a pass-through chained plugin (as Cilium's
 * chained mode is, for our purposes) that requires a `prevResult` of the conflist's version on ADD and
 * CHECK and prints it back. It is written into `dir` with the Node binary as interpreter.
 */
export const NEXT_PLUGIN = "trw-next"

export const writeNextPlugin = (dir: string, node = process.execPath): string => {
  const source = `#!${node}
"use strict"
const fs = require("node:fs")
const fail = (code, msg) => { process.stdout.write(JSON.stringify({ cniVersion: "1.1.0", code, msg })); process.exit(1) }
const command = process.env.CNI_COMMAND
let conf = {}
try { conf = JSON.parse(fs.readFileSync(0, "utf8") || "{}") } catch { fail(6, "stdin is not JSON") }
const supported = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
if (command === "VERSION") { process.stdout.write(JSON.stringify({ cniVersion: "1.1.0", supportedVersions: supported })); process.exit(0) }
if (!supported.includes(conf.cniVersion)) fail(1, "incompatible CNI version " + conf.cniVersion)
if (command === "ADD" || command === "CHECK") {
  const prev = conf.prevResult
  if (typeof prev !== "object" || prev === null) fail(7, "no prevResult")
  if (prev.cniVersion !== conf.cniVersion) fail(7, "prevResult is " + prev.cniVersion + ", config " + conf.cniVersion)
  if (command === "ADD") process.stdout.write(JSON.stringify(prev))
}
process.exit(0)
`
  const path = join(dir, NEXT_PLUGIN)
  writeFileSync(path, source)
  chmodSync(path, 0o755)
  return path
}

// ---------------------------------------------------------------------------------------------------
// Conflists

export interface WrapperConfOptions {
  readonly version: string
  readonly name: string
  readonly backend?: Backend
  readonly kubeconfig: string
  readonly stateDir: string
  readonly logFile?: string
  readonly dataDir: string
  /** host-local ranges; a second entry makes pods dual-stack. */
  readonly ranges: ReadonlyArray<ReadonlyArray<Record<string, string>>>
  /** Declare the pod-annotations capability (the runtime then passes annotations in runtimeConfig). */
  readonly podAnnotationsCapability?: boolean
}

/** Our plugin (wrapper mode: delegate ptp + host-local) followed by portmap, or `trw-next` for 1.1.0. */
export const tenantConflist = (o: WrapperConfOptions): Conflist =>
  // No agent serves these suites: wrapperConflist's default socket path keeps a node's real agent out.
  wrapperConflist({ ...o, after: [{ type: o.version === "1.1.0" ? NEXT_PLUGIN : "portmap" }] })

// ---------------------------------------------------------------------------------------------------
// The kernel's marks, read with the system tools in the node namespace

export interface KernelEntry {
  readonly backend: Backend
  readonly family: 4 | 6
  readonly ip: string
  readonly mark: number
  readonly mask: number
  readonly owner: string
  /** iptables: the rule's position in TRW-MARK (1-based), for removal by hand; nft: the set's name. */
  readonly handle: string
}

/** Canonical text of an address (so `fd00:200::0:2` and `fd00:200::2` compare equal). */
export const canonicalIp = (ip: string): string => {
  if (isIP(ip) !== 6) return ip
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1)
}

/** Parses the TRW-MARK rules of `iptables-save -t mangle` output. */
export const parseIptablesSave = (text: string, family: 4 | 6): ReadonlyArray<KernelEntry> => {
  const entries: Array<KernelEntry> = []
  let position = 0
  for (const line of text.split("\n")) {
    if (!line.startsWith("-A TRW-MARK ")) continue
    position++
    const src = /(?:^|\s)-s (\S+)/.exec(line)?.[1]
    const comment = /--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))/.exec(line)
    const xmark = /--set-xmark (0x[0-9a-fA-F]+)\/(0x[0-9a-fA-F]+)/.exec(line)
    if (src === undefined || comment === null || xmark === null || !/--ctdir ORIGINAL/.test(line))
      throw new Error(`unexpected TRW-MARK rule: ${line}`)
    entries.push({
      backend: "iptables",
      family,
      ip: canonicalIp(src.split("/")[0]!),
      mark: Number(xmark[1]),
      mask: Number(xmark[2]),
      owner: comment[1] ?? comment[2]!,
      handle: String(position)
    })
  }
  return entries
}

/** Reads both families' TRW-MARK rules, and whether PREROUTING's first rule jumps to it. */
export const iptablesState = async (
  ns: string
): Promise<{ entries: ReadonlyArray<KernelEntry>; jumpFirst: { 4: boolean; 6: boolean } }> => {
  const entries: Array<KernelEntry> = []
  const jumpFirst = { 4: false, 6: false }
  for (const family of [4, 6] as const) {
    const text = await mustIn(ns, family === 4 ? "iptables-save" : "ip6tables-save", ["-t", "mangle"])
    entries.push(...parseIptablesSave(text, family))
    const first = text.split("\n").find((l) => l.startsWith("-A PREROUTING "))
    jumpFirst[family] = first !== undefined && /-j TRW-MARK\s*$/.test(first)
  }
  return { entries, jumpFirst }
}

type NftObject = Record<string, Record<string, unknown>>

/** Reads `table inet tenant_routing`: set elements as entries, and the rule text of the chain. */
export const nftState = async (
  ns: string
): Promise<{ exists: boolean; entries: ReadonlyArray<KernelEntry>; rules: ReadonlyArray<string> }> => {
  const r = await execIn(ns, "nft", ["-j", "list", "table", "inet", "tenant_routing"])
  if (r.code !== 0) {
    if (/No such file or directory|does not exist/i.test(r.stderr))
      return { exists: false, entries: [], rules: [] }
    throw new Error(`nft -j list table: ${r.stderr}`)
  }
  const doc = JSON.parse(r.stdout) as { nftables: ReadonlyArray<NftObject> }
  const entries: Array<KernelEntry> = []
  for (const item of doc.nftables) {
    const set = item.set as { name: string; elem?: ReadonlyArray<unknown> } | undefined
    if (set === undefined) continue
    const m = /^m([0-9a-f]+)_v([46])$/.exec(set.name)
    if (m === null) continue
    for (const el of set.elem ?? []) {
      const e = (
        typeof el === "object" && el !== null && "elem" in el ? (el as { elem: unknown }).elem : el
      ) as string | { val: string; comment?: string }
      const val = typeof e === "string" ? e : e.val
      const comment = typeof e === "string" ? "" : (e.comment ?? "")
      entries.push({
        backend: "nftables",
        family: m[2] === "4" ? 4 : 6,
        ip: canonicalIp(val),
        mark: Number.parseInt(m[1]!, 16),
        mask: Number.NaN,
        owner: comment,
        handle: set.name
      })
    }
  }
  const text = await mustIn(ns, "nft", ["list", "chain", "inet", "tenant_routing", "prerouting"])
  const rules = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.includes("meta mark set"))
  return { exists: true, entries, rules }
}

/** Every entry of both backends whose owner tag belongs to `network`. */
export const entriesOf = async (ns: string, network: string): Promise<ReadonlyArray<KernelEntry>> => {
  const [ipt, nft] = await Promise.all([iptablesState(ns), nftState(ns)])
  return [...ipt.entries, ...nft.entries].filter((e) => e.owner.startsWith(`${network}/`))
}

/** Removes one entry by hand, the way an operator (or a stray script) would. */
export const removeEntryByHand = async (ns: string, entry: KernelEntry): Promise<void> => {
  if (entry.backend === "iptables")
    await mustIn(ns, entry.family === 4 ? "iptables" : "ip6tables", [
      "-t",
      "mangle",
      "-D",
      "TRW-MARK",
      entry.handle
    ])
  else
    await mustIn(ns, "nft", ["delete", "element", "inet", "tenant_routing", entry.handle, `{ ${entry.ip} }`])
}

// ---------------------------------------------------------------------------------------------------
// Disk: state records and host-local leases

export interface StateRecord {
  readonly owner: string
  readonly tenant: string | null
  readonly mark: number | null
  readonly ips: ReadonlyArray<string>
  readonly backend: string
}

export const recordPath = (stateDir: string, network: string, containerId: string, ifname: string) =>
  join(stateDir, network, containerId, `${ifname}.json`)

export const readRecord = (
  stateDir: string,
  network: string,
  containerId: string,
  ifname: string
): StateRecord | undefined => {
  const path = recordPath(stateDir, network, containerId, ifname)
  return existsSync(path) ? (JSON.parse(readFileSync(path, "utf8")) as StateRecord) : undefined
}

/** The JSON lines of a log file (unparsable lines are returned as strings, to fail an assertion). */
export const logLines = (path: string): ReadonlyArray<unknown> =>
  existsSync(path)
    ? readFileSync(path, "utf8")
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => {
          try {
            return JSON.parse(l) as unknown
          } catch {
            return l
          }
        })
    : []

/** Median of a list of durations, rounded to the millisecond. */
export const median = (values: ReadonlyArray<number>): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return Math.round(sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2)
}

// ---------------------------------------------------------------------------------------------------
// Leak checks: the test process's descriptors, processes still running, the node's whole ruleset

/** What this process's descriptors point at (`pipe:[123]`, `socket:[456]`, a path), by fd number. */
export const openFds = (): ReadonlyMap<string, string> => {
  const fds = new Map<string, string>()
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      fds.set(fd, readlinkSync(`/proc/self/fd/${fd}`))
    } catch {
      // closed between the listing and the read (the listing's own descriptor is one)
    }
  }
  return fds
}

/** Processes whose command line names one of `paths` (as argv[0] or an argument): `pid: cmdline`. */
export const processesRunning = (paths: ReadonlyArray<string>): ReadonlyArray<string> => {
  const found: Array<string> = []
  for (const pid of readdirSync("/proc")) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue
    let argv: ReadonlyArray<string>
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
    } catch {
      continue // exited meanwhile
    }
    if (argv.some((a) => paths.some((p) => a === p || a.startsWith(`${p}/`))))
      found.push(`${pid}: ${argv.join(" ").trim()}`)
  }
  return found
}

/** Everything netfilter holds in the namespace, both tools' views (for "nothing changed" comparisons). */
export const netfilterSnapshot = async (ns: string): Promise<string> => {
  // The save tools print a timestamped header and packet counters; neither is a change we made.
  const stable = (text: string) =>
    text
      .split("\n")
      .filter((l) => !l.startsWith("#"))
      .map((l) => l.replace(/\[\d+:\d+\]/g, "[0:0]"))
      .join("\n")
  const uncounted = (text: string) => text.replace(/packets \d+ bytes \d+/g, "packets 0 bytes 0")
  const [v4, v6, nft] = await Promise.all([
    mustIn(ns, "iptables-save", []),
    mustIn(ns, "ip6tables-save", []),
    mustIn(ns, "nft", ["list", "ruleset"])
  ])
  return `${stable(v4)}\n${stable(v6)}\n${uncounted(nft)}`
}
