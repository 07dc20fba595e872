/**
 * The host's packet-marking entries, in one backend at a time (iptables or nftables). The service
 * only reads and applies; the planner (Entries.ts) decides. Callers hold NodeLock around every
 * read-then-apply.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type { Backend } from "../cni/Config.ts"
import type { NetfilterFailed } from "../cni/Errors.ts"
import type { Changes, MarkEntry } from "./Entries.ts"

export class Netfilter extends Context.Service<
  Netfilter,
  {
    /** Whether the backend's tooling works on this node (drives `auto` and STATUS). */
    readonly usable: (backend: Backend) => Effect.Effect<boolean>
    /** Every entry this plugin manages in the backend; empty when the backend has none or is absent. */
    readonly list: (backend: Backend) => Effect.Effect<ReadonlyArray<MarkEntry>, NetfilterFailed>
    /**
     * Removals (of entries present) then additions (of entries absent), all or nothing: at most one
     * kernel transaction per family, a failed family reverting the others; none when empty.
     */
    readonly apply: (backend: Backend, changes: Changes) => Effect.Effect<void, NetfilterFailed>
  }
>()("tenant-routing/Netfilter") {}
