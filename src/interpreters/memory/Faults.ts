/**
 * Fault injection shared by the memory interpreters: a plan says which call of which operation fails,
 * hangs or is late, and every operation counts its calls, so property tests can put a fault at any
 * step, order concurrent calls, and assert how often each service was used (e.g. "DEL never reads the
 * API").
 */
import * as Effect from "effect/Effect"

/** `fail`: fails; `hang`: never completes; `delay`: proceeds normally, only late. */
export type FaultKind = "fail" | "hang" | "delay"

export interface Fault {
  /** Operation name, e.g. "delegate.ADD", "netfilter.apply", "store.write", "api.namespaces". */
  readonly op: string
  /** Which call of that operation (1-based) is faulty. */
  readonly nth: number
  readonly kind: FaultKind
  /**
   * Scheduler turns the call waits before the fault takes effect (or, for `delay`, before it
   * proceeds): how a test decides which of two concurrent calls finishes first.
   */
  readonly yields?: number
  /**
   * Which failure, for services that fail in more than one way (the API: "401", "403", "503");
   * each interpreter documents the reasons it knows.
   */
  readonly reason?: string
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
   * Counts a call of `op`; succeeds normally, fails with `onFail(fault)`, never completes, or
   * proceeds late, as planned.
   */
  hit<E>(op: string, onFail: (fault: Fault) => E): Effect.Effect<void, E> {
    return Effect.suspend(() => {
      const n = this.count(op) + 1
      this.calls.set(op, n)
      const fault = this.faults.find((f) => f.op === op && f.nth === n)
      if (fault === undefined) return Effect.void
      const outcome: Effect.Effect<void, E> =
        fault.kind === "fail"
          ? Effect.fail(onFail(fault))
          : fault.kind === "hang"
            ? Effect.never
            : Effect.void
      let late: Effect.Effect<void, E> = outcome
      for (let i = 0; i < (fault.yields ?? 0); i++) late = Effect.andThen(Effect.yieldNow, late)
      return late
    })
  }
}
