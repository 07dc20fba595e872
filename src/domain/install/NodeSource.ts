/**
 * Where `install` learns this node's pod CIDRs: the Node object of the Kubernetes API. A narrow
 * service so the install program runs over it and tests can stand in for the API.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

/** The Node could not be read; `message` says why in words, never with credentials in it. */
export class NodeReadFailed extends Schema.TaggedError<NodeReadFailed>()("NodeReadFailed", {
  node: Schema.String,
  msg: Schema.String
}) {}

export class NodeSource extends Context.Service<
  NodeSource,
  {
    /** `spec.podCIDRs` (else `spec.podCIDR`) of `node`, read with `kubeconfig` (undefined: in-cluster). */
    readonly podCidrs: (
      node: string,
      kubeconfig: string | undefined
    ) => Effect.Effect<ReadonlyArray<string>, NodeReadFailed>
  }
>()("tenant-routing/install/NodeSource") {}
