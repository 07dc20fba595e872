/**
 * The AnnotationSource contract against the in-memory cluster model the program tests use, so it
 * answers like the live interpreter (see annotationSource.live.test.ts) and a kube-apiserver do.
 */
import { Effect } from "effect"
import * as AnnotationsMemory from "../src/interpreters/memory/AnnotationsMemory.ts"
import { Cluster } from "../src/interpreters/memory/AnnotationsMemory.ts"
import { FaultPlan } from "../src/interpreters/memory/Faults.ts"
import { annotationSourceContract } from "./conformance/annotationSourceContract.ts"

/** More reads than any contract test makes: "unavailable" means every one of them fails. */
const EVERY_CALL = Array.from({ length: 64 }, (_, i) => i + 1)

annotationSourceContract("memory", (state) =>
  Effect.sync(() => {
    const cluster = new Cluster()
    for (const p of state.pods) cluster.setPod(p.namespace, p.name, p.annotations ?? {})
    for (const n of state.namespaces) cluster.setNamespace(n.name, n.annotations ?? {})
    if (state.forbid?.pods === true) cluster.forbidden.add("pods")
    if (state.forbid?.namespaces === true) cluster.forbidden.add("namespaces")
    cluster.kubeconfig = state.kubeconfigMissing ? "missing" : state.kubeconfigBroken ? "broken" : "ok"
    const faults = new FaultPlan(
      state.unavailable === true
        ? ["api.pods", "api.namespaces"].flatMap((op) =>
            EVERY_CALL.map((nth) => ({ op, nth, kind: "fail" as const }))
          )
        : []
    )
    return {
      layer: AnnotationsMemory.layer(cluster, faults),
      kubeconfig: "/etc/kubernetes/tenant-routing.conf"
    }
  })
)
