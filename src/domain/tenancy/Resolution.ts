/**
 * Which tenant a pod belongs to, given the annotations that could be read (docs/DESIGN.md §3).
 *
 * The pod's own value (from the runtime, else from the API) is checked against its namespace: a
 * namespace that declares a tenant or an allow-list is *pinned*, and then every pod in it is routed
 * with a tenant of the namespace's set or refused, whatever the pod says. Pod annotations are
 * written by anyone who may create pods; namespace annotations by administrators, so the namespace
 * always has the last word. A namespace that declares neither leaves the choice to the pod.
 */

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

export type Resolution = { readonly tenant: Tenant | null } | { readonly error: TenantRejected }

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
    if (podValue === undefined) return { tenant: null }
    const r = tenantOf(tenants, podValue, `pod annotation ${annotationKey}`)
    return "error" in r ? r : { tenant: r.tenant }
  }

  // Pinned: any unknown entry in the namespace's declaration refuses all its pods.
  const allowed: Array<Tenant> = []
  let nsTenant: Tenant | undefined
  if (nsValue !== undefined) {
    const r = tenantOf(tenants, nsValue, `namespace ${nsName} annotation ${annotationKey}`)
    if ("error" in r) return r
    nsTenant = r.tenant
    allowed.push(r.tenant)
  }
  if (nsAllowed !== undefined) {
    for (const item of nsAllowed.split(",")) {
      const r = tenantOf(tenants, item, `namespace ${nsName} annotation ${ALLOWED_TENANTS_KEY}`)
      if ("error" in r) return r
      if (!allowed.includes(r.tenant)) allowed.push(r.tenant)
    }
  }
  const known = tenants.map((t) => t.name)
  if (podValue === undefined) {
    if (nsTenant !== undefined) return { tenant: nsTenant }
    return {
      error: new TenantRejected({
        msg: `namespace ${nsName} requires pods to choose a tenant of: ${setOf(allowed)}; the pod names none`,
        known
      })
    }
  }
  const r = tenantOf(tenants, podValue, `pod annotation ${annotationKey}`)
  if ("error" in r) return r
  if (!allowed.includes(r.tenant)) {
    return {
      error: new TenantRejected({
        msg: `tenant ${r.tenant.name} is not allowed in namespace ${nsName}; allowed: ${setOf(allowed)}`,
        known
      })
    }
  }
  return { tenant: r.tenant }
}
