/**
 * `agent --tenants FILE` (docs/DESIGN.md §8): keeps the node's policy routing converged on the tenants
 * file, with exactly the program `node-setup --config FILE` runs (nodeSetup.ts, mode apply).
 *
 * When it runs, one run at a time:
 * - `start`: once, when the agent starts;
 * - `change`: after anything changes in the file's directory. The directory is watched, not the file:
 *   files are often replaced by a rename (editors, `kubectl` ConfigMap updates swap the `..data`
 *   symlink), which a watch on the file itself stops following. Events are let to settle (`settle`)
 *   and merged, and the content's hash decides: a touch, or an event about another file, does nothing;
 * - `periodic`: every `interval` (a minute), whether or not the file changed. It re-reads the file too,
 *   so a change the watch missed is still applied, and then it is a `change`.
 *
 * Each run logs one JSON line, `node-setup run`, with its reason and number of changes. A file that
 * cannot be read or is invalid is logged with each problem's field and changes nothing: the last
 * valid content stays in force, and periodic runs keep applying it. A failed apply is logged and left
 * for the next run (node-setup converges from wherever a run stopped).
 *
 * Drift: a periodic run over an unchanged file should find nothing to do; the changes it makes anyway
 * are routing edited behind our back, counted in `tenant_routing_agent_node_setup_drift_total`.
 */
import * as Deferred from "effect/Deferred"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Metric from "effect/Metric"
import * as Path from "effect/Path"
import * as Queue from "effect/Queue"
import * as Result from "effect/Result"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { formatIssues } from "../domain/decode/Issue.ts"
import { sha256Hex } from "../domain/net/Sha256.ts"
import { decodeNodeSetupConfigJson, type NodeSetupConfig } from "../domain/node-setup/NodeSetupConfig.ts"
import type { Routing } from "../domain/node-setup/Routing.ts"
import { nodeSetupDrift, nodeSetupRuns } from "./agentMetrics.ts"
import { describeFileError } from "./fileError.ts"
import { nodeSetup } from "./nodeSetup.ts"

export type RunReason = "start" | "change" | "periodic"

export interface TenantsLoopOptions {
  readonly file: string
  /** Between periodic runs. Default 1 minute. */
  readonly interval?: Duration.Input
  /** How long events settle before a `change` run. Default 200 ms. */
  readonly settle?: Duration.Input
  /** Where rt_tables is; only read by node-setup when asked, which the loop never asks. */
  readonly rtTablesPath?: string
}

type Outcome = "applied" | "unchanged" | "invalid" | "failed"

const count = (reason: RunReason, outcome: Outcome) =>
  Metric.update(Metric.withAttributes(nodeSetupRuns, { reason, outcome }), 1)

/**
 * Runs the loop until interrupted (the caller's scope holds the watcher). The first run has happened
 * when this returns; the others happen in the background.
 */
export const keepNodeSetupConverged = Effect.fn("agent.keepNodeSetupConverged")(function* (
  options: TenantsLoopOptions
): Effect.fn.Return<void, never, Routing | FileSystem.FileSystem | Path.Path | Scope.Scope> {
  const fs = yield* FileSystem.FileSystem
  const paths = yield* Path.Path
  const file = options.file
  const interval = options.interval ?? "1 minute"
  const settle = options.settle ?? "200 millis"
  let lastHash: string | undefined
  let good: NodeSetupConfig | undefined

  const run = (asked: RunReason) =>
    Effect.gen(function* () {
      const text = yield* fs.readFileString(file).pipe(Effect.result)
      if (Result.isFailure(text)) {
        yield* count(asked, "invalid")
        return yield* Effect.logWarning("tenants file unreadable; the last valid one stays in force", {
          reason: asked,
          error: describeFileError(text.failure, "tenants file", file, "")
        })
      }
      const hash = sha256Hex(text.success)
      const changed = hash !== lastHash
      // An event about another file, or a touch: nothing to apply (a debug line says it was seen).
      if (asked === "change" && !changed)
        return yield* Effect.logDebug("tenants file unchanged", { reason: asked })
      lastHash = hash
      const reason: RunReason = asked === "periodic" && changed ? "change" : asked
      if (changed) {
        const decoded = decodeNodeSetupConfigJson(text.success)
        if (Result.isFailure(decoded)) {
          yield* count(reason, "invalid")
          yield* Effect.logWarning("tenants file invalid; the last valid one stays in force", {
            reason,
            issues: decoded.failure.map((i) => ({ field: i.path, message: i.message })),
            text: formatIssues(decoded.failure)
          })
          // A periodic run still repairs drift from the last valid content.
          if (reason !== "periodic") return
        } else good = decoded.success
      }
      if (good === undefined) return
      const report = yield* nodeSetup(good, {
        mode: "apply",
        ...(options.rtTablesPath === undefined ? {} : { rtTablesPath: options.rtTablesPath })
      }).pipe(Effect.result)
      if (Result.isFailure(report)) {
        yield* count(reason, "failed")
        return yield* Effect.logError("node-setup run failed", { reason, error: report.failure.msg })
      }
      const { changes, lines, foreign, blocked } = report.success
      yield* count(reason, changes === 0 ? "unchanged" : "applied")
      if (reason === "periodic" && changes > 0) yield* Metric.update(nodeSetupDrift, changes)
      yield* Effect.logInfo("node-setup run", {
        reason,
        changes,
        ...(changes === 0 ? {} : { lines }),
        ...(foreign.length === 0 ? {} : { foreign }),
        ...(blocked.length === 0 ? {} : { blocked })
      })
    })

  // One run at a time: every trigger goes through this queue, read by one fiber.
  const triggers = yield* Queue.unbounded<RunReason>()

  const dir = paths.dirname(paths.resolve(file))
  // Returns once the watcher is installed (or failed): a change right after start is not missed.
  const watching = yield* Deferred.make<void>()
  yield* fs.watch(dir, { onReady: () => void Deferred.doneUnsafe(watching, Effect.void) }).pipe(
    Stream.runForEach(() => Queue.offer(triggers, "change")),
    Effect.catch((e) =>
      Effect.logWarning("tenants directory not watched; only periodic runs will see changes", {
        directory: dir,
        error: e.message
      })
    ),
    Effect.ensuring(Deferred.succeed(watching, undefined)),
    Effect.forkScoped
  )
  yield* Deferred.await(watching)
  yield* run("start")
  yield* Effect.sleep(interval).pipe(
    Effect.andThen(Queue.offer(triggers, "periodic")),
    Effect.forever,
    Effect.forkScoped
  )
  yield* Effect.gen(function* () {
    const first = yield* Queue.take(triggers)
    if (first === "change") yield* Effect.sleep(settle)
    // Everything that arrived meanwhile is the same run; a periodic one wins, as it always applies.
    const rest = yield* Queue.clear(triggers)
    yield* run(rest.includes("periodic") ? "periodic" : first)
  }).pipe(Effect.forever, Effect.forkScoped)
})
