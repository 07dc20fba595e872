/**
 * The warm per-node agent's CNI handler: each call it receives is served by exactly `runCni`, the
 * function the standalone executable runs, so answers, codes, state records and log lines cannot
 * differ between the two paths (docs/DESIGN.md §1). What the agent saves is the process start, module
 * loading and the building of the services, which happens once here instead of once per call.
 *
 * Built once and shared by every call: every service. The delegate runner, the node lock (each
 * `withLock` binds its own socket), the state files and the annotation source (its `connect` loads
 * the kubeconfig named by each call's own config, so a changed kubeconfig is read by the next call,
 * as in standalone mode) keep nothing between calls. Netfilter keeps its last view of the kernel,
 * valid only while nobody else changed it (NetfilterLive.ts); it is read and changed only under the
 * node lock, by the one committer (src/programs/committer.ts) the calls share: calls that arrive
 * together have their datapath changes applied in one transaction per backend and family.
 *
 * The handler never fails: a defect that escapes `runCni` is answered as code 999, like the
 * standalone executable's last resort.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { unexpectedError } from "../domain/cni/CniError.ts"
import { replyVersionOf } from "../domain/cni/Invocation.ts"
import { committerLayer } from "./committer.ts"
import { type CniOutput, type CniServices, type LogSettings, runCni } from "./dispatch.ts"

export interface AgentLayers {
  /** Built once when the agent starts; the committer is added over its Netfilter and NodeLock. */
  readonly shared: Layer.Layer<CniServices>
}

export type CallHandler = (
  env: Readonly<Record<string, string | undefined>>,
  stdin: Uint8Array
) => Effect.Effect<CniOutput>

/** Builds the shared services in the caller's scope and returns the per-call handler. */
export const makeCallHandler = Effect.fn("agent.makeCallHandler")(function* (
  layers: AgentLayers,
  logging: (settings: LogSettings) => Layer.Layer<never>
): Effect.fn.Return<CallHandler, never, Scope.Scope> {
  const shared = yield* Layer.build(Layer.provideMerge(committerLayer, layers.shared))
  return (env, stdin) =>
    runCni(env, stdin, logging).pipe(
      Effect.provideContext(shared),
      Effect.catchCause((cause) =>
        Effect.gen(function* () {
          yield* Effect.logError("agent call failed unexpectedly", { cause: Cause.pretty(cause) })
          const doc = unexpectedError(
            replyVersionOf(stdin),
            Cause.pretty(cause).split("\n")[0]?.slice(0, 200) ?? "unknown"
          )
          return { stdout: JSON.stringify(doc), exitCode: 1 }
        })
      )
    )
})
