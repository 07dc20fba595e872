/**
 * The AnnotationSource contract against the live interpreter: a ServiceAccount-style token kubeconfig
 * interpreted by the real `@kubernetes/client-node` KubeConfig, and GETs over HTTPS to the test API server.
 * One server serves the whole file; each test's setup loads its state and resets RBAC and faults.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll } from "@effect/vitest"
import { Effect } from "effect"
import * as AnnotationsKubernetes from "../src/interpreters/live/AnnotationsKubernetes.ts"
import { annotationSourceContract } from "./conformance/annotationSourceContract.ts"
import { type KubeApiServer, startKubeApiServer } from "./support/kubeApiServer.ts"

let dir: string
let server: KubeApiServer
let kubeconfig: string
let broken: string

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "annotation-source-live-"))
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

annotationSourceContract("live (client-node over HTTPS)", (state) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      reset()
      server.load({ pods: state.pods, namespaces: state.namespaces })
      server.setForbid("pods", state.forbid?.pods === true)
      server.setForbid("namespaces", state.forbid?.namespaces === true)
      if (state.unavailable === true) server.setFault({ kind: "status", code: 503 })
      const path = state.kubeconfigMissing
        ? join(dir, "no-such-kubeconfig")
        : state.kubeconfigBroken
          ? broken
          : kubeconfig
      return { layer: AnnotationsKubernetes.layer, kubeconfig: path }
    }),
    () => Effect.sync(reset)
  )
)
