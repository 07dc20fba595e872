/**
 * Fault injection shared by the memory interpreters: a plan says which call of which operation fails
 * or hangs, and every operation counts its calls, so property tests can put a fault at any step and
 * assert how often each service was used (e.g. "DEL never reads the API").
 */
import { Effect } from "effect"

export type FaultKind = "fail" | "hang"

export interface Fault {
  /** Operation name, e.g. "delegate.ADD", "netfilter.apply", "store.write", "api.namespace". */
  readonly op: string
  /** Which call of that operation (1-based) is faulty. */
  readonly nth: number
  readonly kind: FaultKind
}

export class FaultPlan {
  readonly calls = new Map<string, number>()
  faults: ReadonlyArray<Fault>
  constructor(faults: ReadonlyArray<Fault> = []) {
    this.faults = faults
  }

  count(op: string): number {
    return this.calls.get(op) ?? 0
  }

  /**
   * Counts a call of `op`; succeeds normally, fails with `onFail()`, or never completes, as planned.
   */
  hit<E>(op: string, onFail: () => E): Effect.Effect<void, E> {
    return Effect.suspend(() => {
      const n = this.count(op) + 1
      this.calls.set(op, n)
      const fault = this.faults.find((f) => f.op === op && f.nth === n)
      if (fault === undefined) return Effect.void
      return fault.kind === "fail" ? Effect.fail(onFail()) : Effect.never
    })
  }
}
