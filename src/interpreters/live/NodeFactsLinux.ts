/**
 * `NodeFacts` on Linux, read-only, through the node's own tools run as argument arrays (never a
 * shell) with `LC_ALL=C`:
 * - sysctls: `cat /proc/sys/<path>` (so that a `prefix` reads another network namespace's values:
 *   /proc/sys/net is per network namespace of the reading process);
 * - routes: `ip -j route get IP` and `ip -j -4|-6 route show table main default`, decoded with Schema;
 * - netfilter: `iptables-save` and `ip6tables-save` for every table, in both the nft and the legacy
 *   variant when those binaries exist (kube-proxy may use the other one than the host's default
 *   `iptables`), and `nft -j list tables`. Only chain names and MARK targets are extracted; nothing
 *   else of other software's rules is interpreted;
 * - files: `FileSystem.exists` (mount namespace, never behind the prefix);
 * - Cilium: `cilium-dbg status` (talks to the agent's socket; not behind the prefix either).
 *
 * `prefix` (e.g. `["ip", "netns", "exec", "trw-doc-1"]`) runs the network reads inside a network
 * namespace; tests use it, the CLI does not. A missing binary is "absent" where absence is a fact
 * (iptables variants, nft, cilium-dbg) and an error elsewhere.
 */
import * as NodeChildProcessSpawner from "@effect/platform-node/NodeChildProcessSpawner"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import { ChildProcessSpawner } from "effect/process"
import * as Schema from "effect/Schema"
import {
  type ChainFact,
  type CommandOutput,
  type MarkSetFact,
  type NetfilterInventory,
  NodeFacts,
  NodeFactsError
} from "../../domain/doctor/NodeFacts.ts"
import type { Family } from "../../domain/net/Ip.ts"
import { not32, parseMarkLiteral } from "../../domain/net/Mark.ts"
import { type Ran, runTool } from "./runTool.ts"

export interface NodeFactsLinuxOptions {
  /** Prepended to network reads, e.g. `["ip", "netns", "exec", NS]`. */
  readonly prefix?: ReadonlyArray<string>
  /** The Cilium agent CLI; default `cilium-dbg` from PATH. */
  readonly ciliumDbg?: string
  /** Bound on each command; default 15 s (cilium-dbg may wait for its agent). */
  readonly timeout?: Duration.Input
}

// ---------------------------------------------------------------------------------------------------
// Pure parsing (exported for tests)

const MARK_TARGET =
  /-j MARK --(set-xmark|set-mark|or-mark|and-mark|xor-mark) (0x[0-9a-fA-F]+|\d+)(?:\/(0x[0-9a-fA-F]+|\d+))?/

/** The bits a MARK target touches: `--set-xmark V/M` touches M|V, `--or-mark V` V, `--and-mark V` ~V. */
const markSetOf = (chain: string, line: string): MarkSetFact | undefined => {
  const m = MARK_TARGET.exec(line)
  if (m === null) return undefined
  const value = parseMarkLiteral(m[2]!) ?? 0
  const mask = m[3] === undefined ? undefined : parseMarkLiteral(m[3])
  switch (m[1]) {
    case "set-xmark":
    case "set-mark":
      return { chain, mark: value, mask: ((mask ?? 0xffffffff) | value) >>> 0 }
    case "and-mark":
      return { chain, mark: 0, mask: not32(value) }
    default:
      return { chain, mark: value, mask: value }
  }
}

/** Chains and MARK rules of `iptables-save` (all tables) output. */
export const parseIptablesSave = (
  tool: ChainFact["tool"],
  text: string
): { readonly chains: ReadonlyArray<ChainFact>; readonly markSets: ReadonlyArray<MarkSetFact> } => {
  const chains: Array<ChainFact> = []
  const markSets: Array<MarkSetFact> = []
  let table = ""
  for (const line of text.split("\n")) {
    if (line.startsWith("*")) table = line.slice(1).trim()
    else if (line.startsWith(":")) {
      const chain = line.slice(1).split(" ")[0]
      if (chain !== undefined && chain !== "") chains.push({ tool, table, chain })
    } else if (line.startsWith("-A ")) {
      const chain = line.split(" ")[1] ?? ""
      const set = markSetOf(chain, line)
      if (set !== undefined) markSets.push(set)
    }
  }
  return { chains, markSets }
}

const NftTables = Schema.fromJsonString(
  Schema.Struct({
    nftables: Schema.Array(
      Schema.Union([
        Schema.Struct({ table: Schema.Struct({ family: Schema.String, name: Schema.String }) }),
        Schema.Record(Schema.String, Schema.Unknown)
      ])
    )
  })
)

/** Tables of `nft -j list tables`. */
export const parseNftTables = (
  text: string
): ReadonlyArray<{ readonly family: string; readonly name: string }> | undefined => {
  const decoded = Schema.decodeUnknownResult(NftTables)(text)
  if (decoded._tag === "Failure") return undefined
  return decoded.success.nftables.flatMap((item) => {
    const t = (item as { readonly table?: unknown }).table
    return typeof t === "object" && t !== null && "family" in t && "name" in t
      ? [{ family: String(t.family), name: String(t.name) }]
      : []
  })
}

const RouteJson = Schema.Struct({
  dev: Schema.optionalKey(Schema.String),
  nexthops: Schema.optionalKey(Schema.Array(Schema.Struct({ dev: Schema.optionalKey(Schema.String) })))
})
const RoutesJson = Schema.fromJsonString(Schema.Array(RouteJson))

/** Every interface a list of `ip -j route` objects leaves through (next hops included). */
export const parseRouteDevices = (text: string): ReadonlyArray<string> | undefined => {
  const decoded = Schema.decodeUnknownResult(RoutesJson)(text)
  if (decoded._tag === "Failure") return undefined
  const devs = decoded.success.flatMap((r) => [
    ...(r.dev === undefined ? [] : [r.dev]),
    ...(r.nexthops ?? []).flatMap((h) => (h.dev === undefined ? [] : [h.dev]))
  ])
  return [...new Set(devs)]
}

// ---------------------------------------------------------------------------------------------------

/** A /proc/sys path segment: a sysctl name or an interface name (never `/`, `.` or `..`). */
const SEGMENT = /^(?!\.\.?$)[^/\0\s]{1,64}$/

const IPTABLES_VARIANTS: ReadonlyArray<readonly [ChainFact["tool"], string]> = [
  ["iptables", "iptables-nft-save"],
  ["ip6tables", "ip6tables-nft-save"],
  ["iptables", "iptables-legacy-save"],
  ["ip6tables", "ip6tables-legacy-save"]
]
const IPTABLES_DEFAULT: ReadonlyArray<readonly [ChainFact["tool"], string]> = [
  ["iptables", "iptables-save"],
  ["ip6tables", "ip6tables-save"]
]

export const make = (options: NodeFactsLinuxOptions = {}) =>
  Effect.gen(function* () {
    const spawner = yield* ChildProcessSpawner.ChildProcessSpawner
    const fs = yield* FileSystem.FileSystem
    const prefix = options.prefix ?? []
    const timeout = options.timeout ?? "15 seconds"

    /** Runs a command; "missing" when its binary (or the prefix's) does not exist. */
    const run = (argv: ReadonlyArray<string>): Effect.Effect<Ran | "missing", NodeFactsError> =>
      runTool(argv, { timeout }).pipe(
        Effect.provideService(ChildProcessSpawner.ChildProcessSpawner, spawner),
        Effect.mapError((e) => new NodeFactsError({ msg: e.msg }))
      )

    /** Runs a network read behind the prefix; a non-zero exit is returned, a missing binary fails. */
    const runNet = (argv: ReadonlyArray<string>) =>
      Effect.flatMap(run([...prefix, ...argv]), (r) =>
        r === "missing" ? Effect.fail(new NodeFactsError({ msg: `${argv[0]} not found` })) : Effect.succeed(r)
      )

    const failed = (argv: ReadonlyArray<string>, r: Ran) =>
      new NodeFactsError({
        msg: `${argv.join(" ")} exited ${r.exitCode}: ${r.stderr.trim().slice(0, 500)}`
      })

    /**
     * Whether a binary is on PATH. Looked up here rather than by running it, since behind
     * `ip netns exec` a missing binary is only an exit status; the prefix changes the network
     * namespace, not where binaries are.
     */
    const onPath = (binary: string) =>
      Effect.map(
        Effect.forEach(
          (process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").filter((d) => d.startsWith("/")),
          (dir) => fs.exists(`${dir}/${binary}`).pipe(Effect.orElseSucceed(() => false))
        ),
        (found) => found.some((x) => x)
      )

    const sysctl = (path: ReadonlyArray<string>) =>
      Effect.gen(function* () {
        if (path.length === 0 || !path.every((s) => SEGMENT.test(s))) {
          return yield* new NodeFactsError({ msg: `not a sysctl path: ${JSON.stringify(path)}` })
        }
        const file = `/proc/sys/${path.join("/")}`
        const r = yield* runNet(["cat", file])
        if (r.exitCode !== 0) {
          if (r.stderr.includes("No such file or directory")) return undefined
          return yield* failed(["cat", file], r)
        }
        return r.stdout.trim()
      })

    const routeInterface = (ip: string) =>
      Effect.gen(function* () {
        const argv = ["ip", "-j", "route", "get", ip]
        const r = yield* runNet(argv)
        // "RTNETLINK answers: Network is unreachable" and the like: no route, which is an answer.
        if (r.exitCode !== 0) return undefined
        const devs = parseRouteDevices(r.stdout)
        if (devs === undefined)
          return yield* new NodeFactsError({ msg: `${argv.join(" ")}: unexpected output` })
        return devs[0]
      })

    const mainDefaultInterfaces = (family: Family) =>
      Effect.gen(function* () {
        const argv = ["ip", "-j", `-${family}`, "route", "show", "table", "main", "default"]
        const r = yield* runNet(argv)
        if (r.exitCode !== 0) return yield* failed(argv, r)
        const devs = parseRouteDevices(r.stdout)
        if (devs === undefined)
          return yield* new NodeFactsError({ msg: `${argv.join(" ")}: unexpected output` })
        return devs
      })

    const netfilterInventory = Effect.gen(function* () {
      const present = yield* Effect.forEach(IPTABLES_VARIANTS, ([, bin]) => onPath(bin), {
        concurrency: "unbounded"
      })
      const variants = IPTABLES_VARIANTS.filter((_, i) => present[i] === true)
      const defaults = yield* Effect.filter(IPTABLES_DEFAULT, ([, bin]) => onPath(bin))
      const tools = variants.length > 0 ? variants : defaults
      const saves = yield* Effect.forEach(
        tools,
        ([tool, bin]) =>
          Effect.flatMap(run([...prefix, bin]), (r) => {
            if (r === "missing") return Effect.succeed({ chains: [], markSets: [] })
            if (r.exitCode !== 0) return Effect.fail(failed([bin], r))
            return Effect.succeed(parseIptablesSave(tool, r.stdout))
          }),
        { concurrency: "unbounded" }
      )
      const nft = (yield* onPath("nft")) ? yield* run([...prefix, "nft", "-j", "list", "tables"]) : "missing"
      let nftTables: NetfilterInventory["nftTables"] = []
      if (nft !== "missing") {
        if (nft.exitCode !== 0) return yield* failed(["nft", "-j", "list", "tables"], nft)
        const parsed = parseNftTables(nft.stdout)
        if (parsed === undefined)
          return yield* new NodeFactsError({ msg: "nft -j list tables: unexpected output" })
        nftTables = parsed
      }
      const chains = saves.flatMap((s) => s.chains)
      return {
        chains: chains.filter(
          (c, i) =>
            chains.findIndex((d) => d.tool === c.tool && d.table === c.table && d.chain === c.chain) === i
        ),
        markSets: saves.flatMap((s) => s.markSets),
        nftTables
      } satisfies NetfilterInventory
    })

    const fileExists = (path: string) => fs.exists(path).pipe(Effect.orElseSucceed(() => false))

    const ciliumStatus: Effect.Effect<CommandOutput | undefined, NodeFactsError> = Effect.map(
      run([options.ciliumDbg ?? "cilium-dbg", "status"]),
      (r) => (r === "missing" ? undefined : { exitCode: r.exitCode, text: r.stdout + r.stderr })
    )

    return NodeFacts.of({
      sysctl,
      routeInterface,
      mainDefaultInterfaces,
      netfilterInventory,
      fileExists,
      ciliumStatus
    })
  })

/** `NodeFacts` on this host; `prefix` runs the network reads in another network namespace. */
export const layer = (options: NodeFactsLinuxOptions = {}): Layer.Layer<NodeFacts> =>
  Layer.effect(NodeFacts, make(options)).pipe(
    Layer.provide(NodeChildProcessSpawner.layer),
    Layer.provide(Layer.mergeAll(NodeFileSystem.layer, NodePath.layer))
  )
