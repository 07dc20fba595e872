/**
 * Holds an AnnotationsWatchCache for a kubeconfig until it has synced `--pods` pods and `--namespaces`
 * namespaces, then prints one JSON line: the process's resident memory after a full GC, and the V8
 * heap. Run with `node --expose-gc test/support/watchCacheMemory.ts --kubeconfig K --pods N
 * --namespaces M` (annotationsWatchCache.test.ts does, against its test API server), so the figure is
 * that of a process holding only the cache, not the server.
 */
import { parseArgs } from "node:util"
import { Context, Effect, Layer } from "effect"
import * as AnnotationsWatchCache from "../../src/interpreters/live/AnnotationsWatchCache.ts"
import { WatchCacheStatus } from "../../src/interpreters/live/AnnotationsWatchCache.ts"

const { values } = parseArgs({
  options: { kubeconfig: { type: "string" }, pods: { type: "string" }, namespaces: { type: "string" } }
})
const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined || values.kubeconfig === undefined) {
  process.stderr.write("usage: node --expose-gc watchCacheMemory.ts --kubeconfig K --pods N --namespaces M\n")
  process.exit(2)
}
const want = { pods: Number(values.pods), namespaces: Number(values.namespaces) }
const mib = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10
gc()
const baseline = process.memoryUsage().rss

await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const context = yield* Layer.build(
        AnnotationsWatchCache.layer({ kubeconfig: values.kubeconfig!, nodeName: "n1" })
      )
      const status = Context.get(context, WatchCacheStatus)
      const done = () => {
        const { pods, namespaces } = status.synced()
        const counts = status.counts()
        return pods && namespaces && counts.pods === want.pods && counts.namespaces === want.namespaces
      }
      while (!done()) yield* Effect.sleep("20 millis")
      for (let i = 0; i < 3; i++) gc()
      yield* Effect.sleep("200 millis")
      gc()
      const m = process.memoryUsage()
      process.stdout.write(
        `${JSON.stringify({
          counts: status.counts(),
          rssMiB: mib(m.rss),
          baselineRssMiB: mib(baseline),
          heapUsedMiB: mib(m.heapUsed),
          externalMiB: mib(m.external)
        })}\n`
      )
    })
  )
)
