/**
 * The node-wide exclusive lock around every read-then-change of entries and records (docs/DESIGN.md §4).
 * Its live form must be released by the kernel when the holder dies, so a crashed call never wedges
 * the node.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type { NetfilterFailed, TryAgainLater } from "../cni/Errors.ts"

export class NodeLock extends Context.Service<
  NodeLock,
  {
    /**
     * Runs `self` while holding the lock. Waits for it up to the interpreter's timeout, then fails
     * with TryAgainLater (code 11): a busy node is a reason to retry the call, not a netfilter
     * failure. NetfilterFailed only when the lock cannot be taken at all (e.g. no socket allowed).
     */
    readonly withLock: <A, E, R>(
      self: Effect.Effect<A, E, R>
    ) => Effect.Effect<A, E | TryAgainLater | NetfilterFailed, R>
  }
>()("tenant-routing/NodeLock") {}
