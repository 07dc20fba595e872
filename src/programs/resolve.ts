/**
 * Reading the annotations a pod's tenant depends on, and mapping read failures to CNI codes per
 * docs/DESIGN.md §3: pod read failures are "try again later" (11); namespace read failures are 11 too,
 * except a 403 under `pinning: best-effort`, which means "no pinning" with a warning, and any failure
 * under `pinning: strict`, which is NamespaceUnreadable (never covered by failurePolicy open).
 */
import * as Effect from "effect/Effect"
import * as Result from "effect/Result"
import {
  NamespaceUnreadable,
  PinnedPodUnreadable,
  type TenantRejected,
  TryAgainLater
} from "../domain/cni/Errors.ts"
import {
  type AnnotationReader,
  AnnotationSource,
  type Annotations
} from "../domain/tenancy/AnnotationSource.ts"
import { isPinned, resolveTenant } from "../domain/tenancy/Resolution.ts"
import type { Tenant } from "../domain/tenancy/Tenant.ts"
import type { Call } from "./Call.ts"

/** Loads the kubeconfig, if one is configured; done before the delegate runs (docs/DESIGN.md §2). */
export const connectApi = (call: Call) => {
  const kubeconfig = call.config.kubeconfig
  if (kubeconfig === undefined) return Effect.succeed(undefined)
  return AnnotationSource.use((s) => s.connect(kubeconfig)).pipe(
    Effect.catchTag(
      "TryAgainLater",
      (e): Effect.Effect<never, TryAgainLater | NamespaceUnreadable> =>
        call.config.pinning === "strict"
          ? Effect.fail(new NamespaceUnreadable({ msg: e.msg }))
          : Effect.fail(e)
    )
  )
}

const deadline = <A, E>(call: Call, what: string, eff: Effect.Effect<A, E>) =>
  eff.pipe(
    Effect.timeoutOrElse({
      duration: call.config.apiTimeoutMs,
      orElse: () =>
        Effect.fail(
          new TryAgainLater({
            msg: `${what}: no answer from the Kubernetes API within ${call.config.apiTimeoutMs}ms`
          })
        )
    })
  )

const readPod = (
  call: Call,
  reader: AnnotationReader | undefined
): Effect.Effect<Annotations | undefined, TryAgainLater> => {
  if (call.config.podAnnotations !== undefined) return Effect.succeed(call.config.podAnnotations)
  const { podNamespace, podName } = call.env
  if (reader === undefined || podNamespace === undefined || podName === undefined)
    return Effect.succeed(undefined)
  const what = `reading pod ${podNamespace}/${podName}`
  return deadline(
    call,
    what,
    reader
      .pod(podNamespace, podName)
      .pipe(Effect.mapError((e) => new TryAgainLater({ msg: `${what}: ${e.msg}` })))
  )
}

const readNamespace = (
  call: Call,
  reader: AnnotationReader | undefined
): Effect.Effect<Annotations | undefined, TryAgainLater | NamespaceUnreadable> => {
  const ns = call.env.podNamespace
  if (reader === undefined || ns === undefined) return Effect.succeed(undefined)
  const what = `reading namespace ${ns}`
  const strict = call.config.pinning === "strict"
  return deadline(call, what, reader.namespace(ns)).pipe(
    Effect.catch((e): Effect.Effect<undefined, TryAgainLater | NamespaceUnreadable> => {
      if (strict) return Effect.fail(new NamespaceUnreadable({ msg: `${what} (pinning: strict): ${e.msg}` }))
      if (e._tag === "ApiForbidden") {
        return Effect.logWarning(`${what} is forbidden; namespace pinning is off for this pod`, {
          error: e.msg
        }).pipe(Effect.as(undefined))
      }
      return Effect.fail(e._tag === "TryAgainLater" ? e : new TryAgainLater({ msg: `${what}: ${e.msg}` }))
    })
  )
}

/**
 * The pod's tenant (null: not tenant-routed), reading pod and namespace concurrently. Both reads are
 * always waited for: under `pinning: strict` an unreadable namespace must end the ADD with
 * NamespaceUnreadable even when the pod read failed first, since a pod-read TryAgainLater is one
 * failurePolicy open lets through untagged. Likewise a pod that cannot be read in a namespace that
 * was read and is pinned ends with PinnedPodUnreadable, never untagged. The wait is bounded by
 * apiTimeout, and the delegate runs meanwhile.
 */
export const resolveForCall = (
  call: Call,
  reader: AnnotationReader | undefined
): Effect.Effect<Tenant | null, TryAgainLater | NamespaceUnreadable | PinnedPodUnreadable | TenantRejected> =>
  Effect.all([Effect.result(readPod(call, reader)), Effect.result(readNamespace(call, reader))], {
    concurrency: 2
  }).pipe(
    Effect.flatMap(
      ([pod, namespace]): Effect.Effect<
        Tenant | null,
        TryAgainLater | NamespaceUnreadable | PinnedPodUnreadable | TenantRejected
      > => {
        if (Result.isFailure(namespace) && namespace.failure._tag === "NamespaceUnreadable")
          return Effect.fail(namespace.failure)
        if (Result.isFailure(pod)) {
          if (Result.isSuccess(namespace) && isPinned(namespace.success, call.config.annotationKey))
            return Effect.fail(
              new PinnedPodUnreadable({
                msg: `${pod.failure.msg}; namespace ${call.env.podNamespace} is pinned, so the pod cannot start untagged`
              })
            )
          return Effect.fail(pod.failure)
        }
        if (Result.isFailure(namespace)) return Effect.fail(namespace.failure)
        const r = resolveTenant({
          tenants: call.config.tenants,
          annotationKey: call.config.annotationKey,
          pod: pod.success,
          namespace: namespace.success,
          namespaceName: call.env.podNamespace
        })
        return Result.isFailure(r) ? Effect.fail(r.failure) : Effect.succeed(r.success)
      }
    )
  )
