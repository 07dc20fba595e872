/**
 * What every verb receives: the validated environment and config of one call, and helpers shared by
 * the verbs — the attachment it concerns and the backend `auto` stands for on this node.
 */
import * as Effect from "effect/Effect"
import type { CniEnv } from "../domain/cni/CniEnv.ts"
import type { Backend, PluginConfig } from "../domain/cni/Config.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import type { Attachment } from "../domain/datapath/Owner.ts"

export interface Call {
  readonly env: CniEnv
  readonly config: PluginConfig
  /** stdin as parsed JSON, for keys we pass through untouched (e.g. cni.dev/valid-attachments). */
  readonly raw: Readonly<Record<string, unknown>>
}

/** What a verb hands back: the document for stdout (if any) and fields for its log line. */
export interface Outcome {
  readonly output: unknown
  readonly log: Readonly<Record<string, unknown>>
}

export const attachmentOf = (call: Call): Attachment => ({
  network: call.config.name,
  containerId: call.env.containerId,
  ifname: call.env.ifname
})

/** `auto` means nftables when `nft` works on this node, else iptables (docs/DESIGN.md §2). */
export const activeBackend = (config: PluginConfig): Effect.Effect<Backend, never, Netfilter> =>
  config.backend === "auto"
    ? Effect.map(
        Netfilter.use((nf) => nf.usable("nftables")),
        (ok): Backend => (ok ? "nftables" : "iptables")
      )
    : Effect.succeed(config.backend)
