/**
 * A node described as data for `NodeFacts`: sysctls, which interface each address is routed through,
 * main's default-route interfaces, netfilter chains and mark rules, files, and Cilium's status text.
 * Tests mutate a `NodeModel` and read through the layer; `failing` makes a read fail.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import {
  type CommandOutput,
  type NetfilterInventory,
  NodeFacts,
  NodeFactsError
} from "../../domain/doctor/NodeFacts.ts"
import type { Family } from "../../domain/net/Ip.ts"

export class NodeModel {
  /** Keyed by the /proc/sys path joined with `/`, e.g. `net/ipv4/conf/all/rp_filter`. */
  readonly sysctls = new Map<string, string>()
  /** Address → interface an unmarked packet to it leaves through. */
  readonly routes = new Map<string, string>()
  mainDefault: Record<Family, ReadonlyArray<string>> = { 4: [], 6: [] }
  inventory: NetfilterInventory = { chains: [], markSets: [], nftTables: [] }
  readonly files = new Set<string>()
  cilium: CommandOutput | undefined = undefined
  /** Reads that fail: "sysctl", "route", "inventory", "cilium". */
  readonly failing = new Set<"sysctl" | "route" | "inventory" | "cilium">()

  /** Sets `net.ipv4.conf.<iface>.<leaf>`. */
  setConf(iface: string, leaf: "rp_filter" | "src_valid_mark", value: number): this {
    this.sysctls.set(`net/ipv4/conf/${iface}/${leaf}`, String(value))
    return this
  }
}

const fail = (what: string) => Effect.fail(new NodeFactsError({ msg: `${what} failed (injected)` }))

export const layer = (node: NodeModel): Layer.Layer<NodeFacts> =>
  Layer.succeed(
    NodeFacts,
    NodeFacts.of({
      sysctl: (path) =>
        Effect.suspend(() =>
          node.failing.has("sysctl") ? fail("sysctl") : Effect.succeed(node.sysctls.get(path.join("/")))
        ),
      routeInterface: (ip) =>
        Effect.suspend(() =>
          node.failing.has("route") ? fail("ip route get") : Effect.succeed(node.routes.get(ip))
        ),
      mainDefaultInterfaces: (family) =>
        Effect.suspend(() =>
          node.failing.has("route") ? fail("ip route show") : Effect.succeed(node.mainDefault[family])
        ),
      netfilterInventory: Effect.suspend(() =>
        node.failing.has("inventory") ? fail("iptables-save") : Effect.succeed(node.inventory)
      ),
      fileExists: (path) => Effect.sync(() => node.files.has(path)),
      ciliumStatus: Effect.suspend(() =>
        node.failing.has("cilium") ? fail("cilium-dbg") : Effect.succeed(node.cilium)
      )
    })
  )
