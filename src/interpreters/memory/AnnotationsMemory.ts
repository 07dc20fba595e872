/**
 * A cluster model for AnnotationSource: pods and namespaces with annotations, per-resource 403s,
 * kubeconfigs that are missing or broken, and faults at chosen calls ("api.pods", "api.namespaces":
 * `fail` with reason "401" (unauthorized: unavailable), "403" (forbidden) or anything else (503), `hang`
 * for a read that never answers, `delay` to order concurrent reads). A 404 is an object not in the
 * cluster.
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { InvalidConfig, TryAgainLater } from "../../domain/cni/Errors.ts"
import {
  type AnnotationReader,
  AnnotationSource,
  type Annotations,
  ApiForbidden,
  ApiUnavailable
} from "../../domain/tenancy/AnnotationSource.ts"
import type { FaultPlan } from "./Faults.ts"

export class Cluster {
  readonly pods = new Map<string, Annotations>()
  readonly namespaces = new Map<string, Annotations>()
  readonly forbidden = new Set<"pods" | "namespaces">()
  kubeconfig: "ok" | "missing" | "broken" = "ok"

  setPod(namespace: string, name: string, annotations: Annotations): void {
    this.pods.set(`${namespace}/${name}`, annotations)
  }
  setNamespace(name: string, annotations: Annotations): void {
    this.namespaces.set(name, annotations)
  }
}

export const layer = (cluster: Cluster, faults: FaultPlan): Layer.Layer<AnnotationSource> =>
  Layer.succeed(
    AnnotationSource,
    AnnotationSource.of({
      connect: (path) =>
        faults
          .hit("api.connect", () => new TryAgainLater({ msg: `kubeconfig ${path} not found (injected)` }))
          .pipe(
            Effect.andThen(
              Effect.suspend((): Effect.Effect<AnnotationReader, InvalidConfig | TryAgainLater> => {
                if (cluster.kubeconfig === "missing")
                  return Effect.fail(new TryAgainLater({ msg: `kubeconfig ${path} not found` }))
                if (cluster.kubeconfig === "broken") {
                  return Effect.fail(
                    new InvalidConfig({
                      msg: `invalid network config: kubeconfig ${path} is not a usable kubeconfig`,
                      issues: [{ path: "kubeconfig", message: "no current context" }]
                    })
                  )
                }
                const read = (resource: "pods" | "namespaces", key: string, map: Map<string, Annotations>) =>
                  faults
                    .hit(`api.${resource}`, (f): ApiUnavailable | ApiForbidden =>
                      f.reason === "403"
                        ? new ApiForbidden({ msg: `${resource} "${key}" is forbidden (injected)` })
                        : new ApiUnavailable({
                            msg:
                              f.reason === "401"
                                ? "401 Unauthorized (injected)"
                                : "503 Service Unavailable (injected)"
                          })
                    )
                    .pipe(
                      Effect.andThen(
                        Effect.suspend(() =>
                          cluster.forbidden.has(resource)
                            ? Effect.fail(new ApiForbidden({ msg: `${resource} "${key}" is forbidden` }))
                            : Effect.succeed(map.get(key))
                        )
                      )
                    )
                return Effect.succeed({
                  pod: (ns: string, name: string) => read("pods", `${ns}/${name}`, cluster.pods),
                  namespace: (name: string) => read("namespaces", name, cluster.namespaces)
                })
              })
            )
          )
    })
  )
