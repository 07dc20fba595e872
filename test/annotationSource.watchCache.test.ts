/**
 * The AnnotationSource contract against the agent's watch cache (AnnotationsWatchCache over the live
 * reader and the HTTPS test API server). Each setup builds the cache for the state's kubeconfig and
 * waits until every informer has either synced or stopped on an error (403, 503, no kubeconfig), so
 * the contract's reads go through the cache where it can answer, and through its fallback elsewhere.
 * All the contract's pods are on the cache's node (`n1`, the test server's default).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as AnnotationsWatchCache from "../src/interpreters/live/AnnotationsWatchCache.ts"
import { WatchCacheStatus } from "../src/interpreters/live/AnnotationsWatchCache.ts"
import { annotationSourceContract } from "./conformance/annotationSourceContract.ts"
import { type KubeApiServer, startKubeApiServer } from "./support/kubeApiServer.ts"

let dir: string
let server: KubeApiServer
let kubeconfig: string
let broken: string

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "annotation-source-cache-"))
  server = await startKubeApiServer()
  kubeconfig = join(dir, "kubeconfig")
  server.writeKubeconfig(kubeconfig)
  broken = join(dir, "broken-kubeconfig")
  writeFileSync(broken, "apiVersion: v1\nkind: Config\nclusters: []\n")
})

afterAll(async () => {
  await server?.close()
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
})

const reset = () => {
  server.setForbid("pods", false)
  server.setForbid("namespaces", false)
  server.setFault(undefined)
}

// The contract runs under the TestClock; the informers' backoff and this setup's waiting need real time.
annotationSourceContract("watch cache (informers over HTTPS, direct reads on a miss)", (state) =>
  TestClock.withLive(
    Effect.gen(function* () {
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          reset()
          server.load({ pods: state.pods, namespaces: state.namespaces })
          server.setForbid("pods", state.forbid?.pods === true)
          server.setForbid("namespaces", state.forbid?.namespaces === true)
          if (state.unavailable === true) server.setFault({ kind: "status", code: 503 })
        }),
        () => Effect.sync(reset)
      )
      const path = state.kubeconfigMissing
        ? join(dir, "no-such-kubeconfig")
        : state.kubeconfigBroken
          ? broken
          : kubeconfig
      const context = yield* Layer.build(
        AnnotationsWatchCache.layer({
          kubeconfig: path,
          nodeName: "n1",
          retry: { initialMs: 10, maxMs: 100 }
        })
      )
      const status = Context.get(context, WatchCacheStatus)
      const settled = () => {
        const synced = status.synced()
        const errors = status.lastErrors()
        return (
          (synced.pods || errors.pods !== undefined) && (synced.namespaces || errors.namespaces !== undefined)
        )
      }
      while (!settled()) yield* Effect.sleep("5 millis")
      return { layer: Layer.succeedContext(context), kubeconfig: path }
    })
  )
)
