/**
 * The laws every `AnnotationSource` interpreter obeys, run against the live one (a real HTTPS API
 * server and client-node) and the in-memory one, so the model the property tests of the programs use
 * answers like a kube-apiserver does.
 *
 * An interpreter takes part through a `ContractSetup`: given the cluster a test wants (objects, RBAC
 * denials, an unavailable API), it returns a layer and the kubeconfig paths to connect with. Setup runs
 * once per test (and per property run) inside that test's Scope, so it may start or reset a server and
 * undo it in a finalizer.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Layer, Schema, type Scope } from "effect"
import {
  type AnnotationReader,
  AnnotationSource,
  type Annotations
} from "../../src/domain/tenancy/AnnotationSource.ts"

export interface ContractState {
  readonly pods: ReadonlyArray<{
    readonly namespace: string
    readonly name: string
    readonly annotations?: Annotations
  }>
  readonly namespaces: ReadonlyArray<{ readonly name: string; readonly annotations?: Annotations }>
  /** Resources this identity may not `get` (RBAC): reads answer 403. */
  readonly forbid?: { readonly pods?: boolean; readonly namespaces?: boolean }
  /** The API cannot answer (e.g. 503 from every request). */
  readonly unavailable?: boolean
  /** The kubeconfig `connect` is given does not exist: TryAgainLater. */
  readonly kubeconfigMissing?: boolean
  /** The kubeconfig exists but is unusable (not YAML, or no current context): InvalidConfig. */
  readonly kubeconfigBroken?: boolean
}

export interface ContractFixture {
  readonly layer: Layer.Layer<AnnotationSource>
  /** The kubeconfig path to `connect` with: one naming the cluster of the state, unless told otherwise. */
  readonly kubeconfig: string
}

export type ContractSetup = (state: ContractState) => Effect.Effect<ContractFixture, never, Scope.Scope>

const fwmark = "tenant.routing/fwmark"
const allowed = "tenant.routing/allowed-tenants"

const baseState: ContractState = {
  pods: [
    { namespace: "ns1", name: "p1", annotations: { [fwmark]: "tenant-a", other: "x" } },
    { namespace: "ns1", name: "bare" },
    { namespace: "ns2", name: "p1", annotations: { [fwmark]: "0x20" } }
  ],
  namespaces: [{ name: "ns1", annotations: { [allowed]: "tenant-a,tenant-b" } }, { name: "ns2" }]
}

export const annotationSourceContract = (name: string, setup: ContractSetup) => {
  const connected = (state: ContractState): Effect.Effect<AnnotationReader, never, Scope.Scope> =>
    Effect.gen(function* () {
      const fixture = yield* setup(state)
      return yield* AnnotationSource.use((s) => s.connect(fixture.kubeconfig)).pipe(
        Effect.provide(fixture.layer),
        Effect.orDie
      )
    })

  describe(`AnnotationSource contract: ${name}`, () => {
    it.effect("a pod's and a namespace's annotations read back as stored", () =>
      Effect.gen(function* () {
        const reader = yield* connected(baseState)
        assert.deepStrictEqual(yield* reader.pod("ns1", "p1"), { [fwmark]: "tenant-a", other: "x" })
        assert.deepStrictEqual(yield* reader.namespace("ns1"), { [allowed]: "tenant-a,tenant-b" })
      })
    )

    it.effect("pods are keyed by namespace and name", () =>
      Effect.gen(function* () {
        const reader = yield* connected(baseState)
        assert.deepStrictEqual(yield* reader.pod("ns2", "p1"), { [fwmark]: "0x20" })
        assert.deepStrictEqual(yield* reader.pod("ns1", "p1"), { [fwmark]: "tenant-a", other: "x" })
      })
    )

    it.effect("an object that exists without annotations reads as {}", () =>
      Effect.gen(function* () {
        const reader = yield* connected(baseState)
        assert.deepStrictEqual(yield* reader.pod("ns1", "bare"), {})
        assert.deepStrictEqual(yield* reader.namespace("ns2"), {})
      })
    )

    it.effect("a missing pod, a pod of a missing namespace and a missing namespace read as undefined", () =>
      Effect.gen(function* () {
        const reader = yield* connected(baseState)
        assert.isUndefined(yield* reader.pod("ns1", "nope"))
        assert.isUndefined(yield* reader.pod("ns3", "p1"))
        assert.isUndefined(yield* reader.namespace("ns3"))
      })
    )

    it.effect("pods forbidden: pod reads fail with ApiForbidden, namespace reads still work", () =>
      Effect.gen(function* () {
        const reader = yield* connected({ ...baseState, forbid: { pods: true } })
        const error = yield* Effect.flip(reader.pod("ns1", "p1"))
        assert.strictEqual(error._tag, "ApiForbidden")
        assert.deepStrictEqual(yield* reader.namespace("ns1"), { [allowed]: "tenant-a,tenant-b" })
      })
    )

    it.effect("namespaces forbidden: namespace reads fail with ApiForbidden, pod reads still work", () =>
      Effect.gen(function* () {
        const reader = yield* connected({ ...baseState, forbid: { namespaces: true } })
        const error = yield* Effect.flip(reader.namespace("ns1"))
        assert.strictEqual(error._tag, "ApiForbidden")
        assert.deepStrictEqual(yield* reader.pod("ns2", "p1"), { [fwmark]: "0x20" })
      })
    )

    it.effect("an unavailable API fails every read with ApiUnavailable, existing or not", () =>
      Effect.gen(function* () {
        const reader = yield* connected({ ...baseState, unavailable: true })
        for (const read of [reader.pod("ns1", "p1"), reader.pod("ns1", "nope"), reader.namespace("ns1")]) {
          const error = yield* Effect.flip(read)
          assert.strictEqual(error._tag, "ApiUnavailable")
        }
      })
    )

    it.effect("a kubeconfig that does not exist: connect fails with TryAgainLater (11)", () =>
      Effect.gen(function* () {
        const fixture = yield* setup({ ...baseState, kubeconfigMissing: true })
        const error = yield* AnnotationSource.use((s) => s.connect(fixture.kubeconfig)).pipe(
          Effect.provide(fixture.layer),
          Effect.flip
        )
        assert.strictEqual(error._tag, "TryAgainLater")
        assert.strictEqual(error.code, 11)
      })
    )

    it.effect("an unusable kubeconfig: connect fails with InvalidConfig (7) and a kubeconfig issue", () =>
      Effect.gen(function* () {
        const fixture = yield* setup({ ...baseState, kubeconfigBroken: true })
        const error = yield* AnnotationSource.use((s) => s.connect(fixture.kubeconfig)).pipe(
          Effect.provide(fixture.layer),
          Effect.flip
        )
        assert.strictEqual(error._tag, "InvalidConfig")
        assert.strictEqual(error.code, 7)
        if (error._tag === "InvalidConfig") assert.strictEqual(error.issues[0]?.path, "kubeconfig")
      })
    )

    // Annotation values are written by whoever may create pods: any text must come back unchanged.
    const Key = Schema.Literals([fwmark, allowed, "example.com/x-y", "a"])
    it.effect.prop(
      "annotation values of any text read back verbatim, on pods and namespaces",
      { entries: Schema.Array(Schema.Tuple([Key, Schema.String])) },
      ({ entries }) =>
        Effect.scoped(
          Effect.gen(function* () {
            const annotations: Annotations = Object.fromEntries(entries)
            const reader = yield* connected({
              pods: [{ namespace: "ns1", name: "p1", annotations }],
              namespaces: [{ name: "ns1", annotations }]
            })
            assert.deepStrictEqual(yield* reader.pod("ns1", "p1"), annotations)
            assert.deepStrictEqual(yield* reader.namespace("ns1"), annotations)
          })
        ),
      { arbitrary: { runs: 25 } }
    )
  })
}
