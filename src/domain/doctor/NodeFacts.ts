/**
 * What `doctor` needs to know about the node beyond routing rules, netfilter entries and state
 * records (those have their own services): sysctls, which interface a destination is reached
 * through, what other software installed in netfilter, which CNI binaries exist, and what Cilium
 * says about itself. Read-only: no method changes anything.
 *
 * `doctor/Diagnose.ts` decides what the facts mean; interpreters only read them
 * (`live/NodeFactsLinux.ts` on /proc, iproute2, iptables-save and nft; `memory/NodeFactsMemory.ts`).
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type { Family } from "../net/Ip.ts"

export class NodeFactsError extends Schema.TaggedError<NodeFactsError>()("NodeFactsError", {
  msg: Schema.String
}) {}

/** A chain some netfilter tool lists, e.g. `{ tool: "iptables", table: "nat", chain: "KUBE-MARK-MASQ" }`. */
export interface ChainFact {
  readonly tool: "iptables" | "ip6tables"
  readonly table: string
  readonly chain: string
}

/** A rule that sets mark bits: `-A CHAIN ... -j MARK --set-xmark MARK/MASK` (or `--or-mark MARK`). */
export interface MarkSetFact {
  readonly chain: string
  readonly mark: number
  readonly mask: number
}

/** Everything other software installed in netfilter that tells who uses which mark bits. */
export interface NetfilterInventory {
  /** Chains of every table of iptables and ip6tables (both the nft and the legacy variant when present). */
  readonly chains: ReadonlyArray<ChainFact>
  /** Rules with a MARK target, in any of those chains. */
  readonly markSets: ReadonlyArray<MarkSetFact>
  /** nftables tables, e.g. `{ family: "ip", name: "kube-proxy" }`. */
  readonly nftTables: ReadonlyArray<{ readonly family: string; readonly name: string }>
}

/** What a status command printed (stdout then stderr) and how it exited. */
export interface CommandOutput {
  readonly exitCode: number
  readonly text: string
}

export class NodeFacts extends Context.Service<
  NodeFacts,
  {
    /** A sysctl by its path under /proc/sys (`["net","ipv4","conf","eth0","rp_filter"]`); undefined when absent. */
    readonly sysctl: (path: ReadonlyArray<string>) => Effect.Effect<string | undefined, NodeFactsError>
    /** The interface an unmarked packet to `ip` leaves through (`ip route get`); undefined when unroutable. */
    readonly routeInterface: (ip: string) => Effect.Effect<string | undefined, NodeFactsError>
    /** The interfaces of the main table's default route(s) of a family (every next hop's). */
    readonly mainDefaultInterfaces: (family: Family) => Effect.Effect<ReadonlyArray<string>, NodeFactsError>
    /** Chains, mark-setting rules and nft tables that other software installed. */
    readonly netfilterInventory: Effect.Effect<NetfilterInventory, NodeFactsError>
    /** Whether a file exists (CNI plugin binaries). */
    readonly fileExists: (path: string) => Effect.Effect<boolean>
    /** `cilium-dbg status`; undefined when the binary is not installed. */
    readonly ciliumStatus: Effect.Effect<CommandOutput | undefined, NodeFactsError>
  }
>()("tenant-routing/NodeFacts") {}
