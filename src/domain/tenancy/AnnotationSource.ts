/**
 * Pod and namespace annotations from the Kubernetes API. `connect` loads the kubeconfig (before the
 * delegate runs, so a broken one costs nothing); reads then report 404 as `undefined` and every
 * other failure as typed data, which the resolver maps to codes per docs/DESIGN.md §3.
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type { InvalidConfig, TryAgainLater } from "../cni/Errors.ts"

export type Annotations = Readonly<Record<string, string>>

/** 401, 5xx, 429, timeouts, refused connections: the API cannot answer now. */
export class ApiUnavailable extends Schema.TaggedError<ApiUnavailable>()("ApiUnavailable", {
  msg: Schema.String
}) {}

/** 403: this identity may not read the object. */
export class ApiForbidden extends Schema.TaggedError<ApiForbidden>()("ApiForbidden", {
  msg: Schema.String
}) {}

export interface AnnotationReader {
  /** The pod's annotations; undefined when the pod does not exist. */
  readonly pod: (
    namespace: string,
    name: string
  ) => Effect.Effect<Annotations | undefined, ApiUnavailable | ApiForbidden>
  /** The namespace's annotations; undefined when it does not exist. */
  readonly namespace: (name: string) => Effect.Effect<Annotations | undefined, ApiUnavailable | ApiForbidden>
}

export class AnnotationSource extends Context.Service<
  AnnotationSource,
  {
    /** A reader for the API a kubeconfig names: unparsable → InvalidConfig, missing file → TryAgainLater. */
    readonly connect: (kubeconfig: string) => Effect.Effect<AnnotationReader, InvalidConfig | TryAgainLater>
  }
>()("tenant-routing/AnnotationSource") {}
