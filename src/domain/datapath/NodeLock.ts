/**
 * The node-wide exclusive lock around every read-then-change of entries and records (docs/DESIGN.md §4).
 * Its live form must be released by the kernel when the holder dies, so a crashed call never wedges
 * the node.
 */
import { Context, type Effect } from "effect"
import type { NetfilterFailed } from "../cni/Errors.ts"

export class NodeLock extends Context.Service<
  NodeLock,
  {
    /** Runs `self` while holding the lock; waits for it, failing only if it cannot be taken at all. */
    readonly withLock: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | NetfilterFailed, R>
  }
>()("tenant-routing/NodeLock") {}
