/**
 * Group commit of the datapath (docs/DESIGN.md §4): calls that arrive together have their netfilter
 * changes applied in one transaction per backend and family, so a burst of ADDs or DELs pays the
 * kernel's per-transaction cost once, not once per pod.
 *
 * A call hands the committer a Step: its datapath work as a pure plan over a View of the node (what
 * each backend holds, which backends work), plus the same work as an effect that lists and applies
 * on its own. The committer, holding the node lock once, lists once, runs the queued plans in arrival
 * order over an evolving view (`applyView`), applies the difference as one change per backend, then
 * runs each plan's `finish` (its state record) in arrival order, still under the lock. Every call's
 * outcome is one it could have had run alone in arrival order:
 * - a group of one call runs `alone` (its own transaction and failure handling, as standalone);
 * - when the first listing fails, every call of the group fails with it, as each would have alone;
 * - when the merged change fails (nothing of it stays: Netfilter.apply is all or nothing, and what
 *   one backend applied is undone when the next fails), each call runs `alone`, in arrival order,
 *   and gets that outcome;
 * - when a `finish` fails, that call fails, and the entries are taken to what the plans of the other
 *   calls give without it (replayed from the first view), so its entries go as its own undo would
 *   have taken them.
 * A step without a plan (GC, whose decision reads the records) runs alone at its place in the order.
 * Standalone mode commits a queue of one: the same code path.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type { Backend } from "../cni/Config.ts"
import type { NetfilterFailed, TryAgainLater } from "../cni/Errors.ts"
import type { BackendEntries } from "./Check.ts"
import { applyChanges, type Changes } from "./Entries.ts"

export interface View {
  /** Every managed entry of each backend. */
  readonly entries: BackendEntries
  /** Whether each backend's tooling works here (what `auto` stands for). */
  readonly usable: Readonly<Record<Backend, boolean>>
}

export interface Plan<A, E> {
  /** Per backend, in the order they would be applied alone. */
  readonly changes: ReadonlyArray<readonly [Backend, Changes]>
  /** The call's answer if it succeeds. */
  readonly result: A
  /** What follows the entries under the lock (the record); its failure is the call's. */
  readonly finish: Effect.Effect<void, E>
}

export interface Step<A, E> {
  /** The call's work as a pure plan; absent: the step always runs alone. */
  readonly plan?: (view: View) => Plan<A, E>
  /** The call's work listing and applying on its own, run under the lock the committer holds. */
  readonly alone: Effect.Effect<A, E>
  /**
   * Undoes a step that succeeded after its caller went away (interrupted while it was committed),
   * so an abandoned ADD leaves nothing behind.
   */
  // biome-ignore lint/suspicious/noExplicitAny: the undo's own result is nobody's
  readonly undo?: (result: A) => Step<any, unknown>
}

/** The view once `changes` are applied (pure). */
export const applyView = (view: View, changes: ReadonlyArray<readonly [Backend, Changes]>): View => ({
  usable: view.usable,
  entries: view.entries.map(([b, list]) => [
    b,
    changes.filter(([cb]) => cb === b).reduce((l, [, c]) => applyChanges(l, c), list)
  ])
})

export class Committer extends Context.Service<
  Committer,
  {
    /**
     * Commits the step with whatever else is queued, under the node lock. Interrupting a caller whose
     * step is still queued withdraws it; one already being committed is finished (and undone, when
     * the step says how) before the interruption takes effect.
     */
    readonly submit: <A, E>(step: Step<A, E>) => Effect.Effect<A, E | TryAgainLater | NetfilterFailed>
  }
>()("tenant-routing/Committer") {}
