/**
 * Which tenant a pod belongs to, given the annotations that could be read (docs/DESIGN.md §3).
 *
 * The pod's own value (from the runtime, else from the API) is checked against its namespace: a
 * namespace that declares a tenant or an allow-list is *pinned*, and then every pod in it is routed
 * with a tenant of the namespace's set or refused, whatever the pod says. Pod annotations are
 * written by anyone who may create pods; namespace annotations by administrators, so the namespace
 * always has the last word. A namespace that declares neither leaves the choice to the pod.
 */

import * as Result from "effect/Result"
import { ALLOWED_TENANTS_KEY } from "../cni/Config.ts"
import { TenantRejected } from "../cni/Errors.ts"
import type { Annotations } from "./AnnotationSource.ts"
import { type Tenant, tenantOf } from "./Tenant.ts"

export interface ResolutionInput {
  readonly tenants: ReadonlyArray<Tenant>
  readonly annotationKey: string
  /** The pod's annotations (from the runtime or the API); undefined when there are none to read. */
  readonly pod: Annotations | undefined
  /** The namespace's annotations; undefined when not readable or not there, which pins nothing. */
  readonly namespace: Annotations | undefined
  readonly namespaceName: string | undefined
}

/** The pod's tenant (null: not tenant-routed), or why it is refused. */
export type Resolution = Result.Result<Tenant | null, TenantRejected>

/** A namespace that declares a tenant or an allow-list pins every pod in it. */
export const isPinned = (namespace: Annotations | undefined, annotationKey: string): boolean =>
  namespace?.[annotationKey] !== undefined || namespace?.[ALLOWED_TENANTS_KEY] !== undefined

const setOf = (tenants: ReadonlyArray<Tenant>) => tenants.map((t) => t.name).join(", ")

export const resolveTenant = (input: ResolutionInput): Resolution => {
  const { tenants, annotationKey } = input
  const podValue = input.pod?.[annotationKey]
  const nsValue = input.namespace?.[annotationKey]
  const nsAllowed = input.namespace?.[ALLOWED_TENANTS_KEY]
  const nsName = input.namespaceName ?? "?"

  if (!isPinned(input.namespace, annotationKey)) {
    if (podValue === undefined) return Result.succeed(null)
    return tenantOf(tenants, podValue, `pod annotation ${annotationKey}`)
  }

  // Pinned: any unknown entry in the namespace's declaration refuses all its pods.
  const allowed: Array<Tenant> = []
  let nsTenant: Tenant | undefined
  if (nsValue !== undefined) {
    const r = tenantOf(tenants, nsValue, `namespace ${nsName} annotation ${annotationKey}`)
    if (Result.isFailure(r)) return r
    nsTenant = r.success
    allowed.push(r.success)
  }
  if (nsAllowed !== undefined) {
    for (const item of nsAllowed.split(",")) {
      const r = tenantOf(tenants, item, `namespace ${nsName} annotation ${ALLOWED_TENANTS_KEY}`)
      if (Result.isFailure(r)) return r
      if (!allowed.includes(r.success)) allowed.push(r.success)
    }
  }
  const known = tenants.map((t) => t.name)
  if (podValue === undefined) {
    if (nsTenant !== undefined) return Result.succeed(nsTenant)
    return Result.fail(
      new TenantRejected({
        msg: `namespace ${nsName} requires pods to choose a tenant of: ${setOf(allowed)}; the pod names none`,
        known
      })
    )
  }
  const r = tenantOf(tenants, podValue, `pod annotation ${annotationKey}`)
  if (Result.isFailure(r)) return r
  if (!allowed.includes(r.success)) {
    return Result.fail(
      new TenantRejected({
        msg: `tenant ${r.success.name} is not allowed in namespace ${nsName}; allowed: ${setOf(allowed)}`,
        known
      })
    )
  }
  return r
}
