/**
 * The live `NodeSource`: reads the Node with `@kubernetes/client-node`'s `CoreV1Api`, authenticated
 * by the given kubeconfig or, without one, by the pod's in-cluster ServiceAccount. Only `install`
 * uses it, so the whole client is loaded here, lazily, and never by a CNI call.
 *
 * Messages are built from HTTP status codes, error codes and file paths only — never from raw
 * exception text, which can quote kubeconfig content or headers.
 */
import { existsSync } from "node:fs"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { NodeReadFailed, NodeSource } from "../../domain/install/NodeSource.ts"

const describe = (node: string, e: unknown): string => {
  const code = (e as { code?: unknown } | null)?.code
  if (code === 404) return `node ${node} does not exist in the cluster; pass --node NAME (default $NODE_NAME)`
  if (code === 401) return "the API server refused the credentials (401); check the ServiceAccount token"
  if (code === 403)
    return `the credentials may not read node ${node} (403); grant "get" on nodes to the DaemonSet's ServiceAccount`
  if (typeof code === "number") return `the API server answered ${code} reading node ${node}`
  if (typeof code === "string") return `cannot reach the API server (${code})`
  const cause = (e as { cause?: { code?: unknown } } | null)?.cause?.code
  if (typeof cause === "string") return `cannot reach the API server (${cause})`
  return `cannot read node ${node} from the API server`
}

const podCidrs = (node: string, kubeconfig: string | undefined) =>
  Effect.gen(function* () {
    if (kubeconfig !== undefined && !existsSync(kubeconfig)) {
      return yield* new NodeReadFailed({
        node,
        msg: `kubeconfig ${kubeconfig} does not exist; pass --kubeconfig FILE, or leave it out to use the in-cluster ServiceAccount`
      })
    }
    const k8s = yield* Effect.promise(() => import("@kubernetes/client-node"))
    const api = yield* Effect.try({
      try: () => {
        const kc = new k8s.KubeConfig()
        if (kubeconfig === undefined) kc.loadFromCluster()
        else kc.loadFromFile(kubeconfig)
        return kc.makeApiClient(k8s.CoreV1Api)
      },
      catch: () =>
        new NodeReadFailed({
          node,
          msg:
            kubeconfig === undefined
              ? "no in-cluster ServiceAccount to read the node with; pass --kubeconfig FILE"
              : `kubeconfig ${kubeconfig} cannot be loaded; check that it is a valid kubeconfig`
        })
    })
    const n = yield* Effect.tryPromise({
      try: () => api.readNode({ name: node }),
      catch: (e) => new NodeReadFailed({ node, msg: describe(node, e) })
    })
    return n.spec?.podCIDRs ?? (n.spec?.podCIDR === undefined ? [] : [n.spec.podCIDR])
  })

export const layer: Layer.Layer<NodeSource> = Layer.succeed(NodeSource, NodeSource.of({ podCidrs }))
