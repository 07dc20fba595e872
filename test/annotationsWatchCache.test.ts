/**
 * The agent's watch cache against the HTTPS test API server: which reads are answered from memory (no
 * request reaches the server), which fall back to a direct read, and that it follows the cluster
 * through watch events, broken streams, 410 Gone and RBAC denials. Every wait is for an observable
 * condition (a resourceVersion reached, a sync state), never for a length of time.
 */
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import * as fc from "fast-check"
import {
  type AnnotationReader,
  AnnotationSource,
  type Annotations
} from "../src/domain/tenancy/AnnotationSource.ts"
import * as AnnotationsWatchCache from "../src/interpreters/live/AnnotationsWatchCache.ts"
import { WatchCacheStatus } from "../src/interpreters/live/AnnotationsWatchCache.ts"
import { type KubeApiServer, type RecordedRequest, startKubeApiServer } from "./support/kubeApiServer.ts"

let dir: string
let server: KubeApiServer
let kubeconfig: string

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "watch-cache-"))
  server = await startKubeApiServer()
  kubeconfig = join(dir, "kubeconfig")
  server.writeKubeconfig(kubeconfig)
})

afterAll(async () => {
  await server?.close()
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
})

const KEY = "tenant.routing/fwmark"
const NODE = "n1"

const reset = () => {
  server.setForbid("pods", false)
  server.setForbid("namespaces", false)
  server.setFault(undefined)
  server.setExpiredAs("event")
}

/** The cache for this file's kubeconfig and node, built in the test's scope, with a short backoff. */
const cache = Effect.gen(function* () {
  const context = yield* Layer.build(
    AnnotationsWatchCache.layer({ kubeconfig, nodeName: NODE, retry: { initialMs: 10, maxMs: 100 } })
  )
  const status = Context.get(context, WatchCacheStatus)
  const connect = (path = kubeconfig) =>
    Context.get(context, AnnotationSource).connect(path).pipe(Effect.orDie) as Effect.Effect<AnnotationReader>
  return { status, connect }
})

const waitFor = (what: string, condition: () => boolean): Effect.Effect<void> =>
  Effect.gen(function* () {
    while (!condition()) yield* Effect.sleep("5 millis")
  }).pipe(Effect.withSpan(`waitFor ${what}`))

const synced = (status: WatchCacheStatus["Service"]) =>
  waitFor("sync", () => status.synced().pods && status.synced().namespaces)

/**
 * Waits until a cache has seen the server's latest write (resourceVersions are numbers on this server)
 * and its one watch is open on both ends: the server counts it once the client re-connected, which
 * the client does only after it noticed that the previous stream ended.
 */
const caughtUp = (
  status: WatchCacheStatus["Service"],
  kind: "pods" | "namespaces",
  rv = server.resourceVersion()
) =>
  waitFor(
    `${kind} at ${rv}`,
    () =>
      server.watchCount(kind) === 1 && status.synced()[kind] && Number(status.resourceVersions()[kind]) >= rv
  )

/** A GET of one object: what the direct reader sends. */
const isDirectRead = (r: RecordedRequest) =>
  r.query === undefined && /^\/api\/v1\/namespaces\/[^/]+(\/pods\/[^/]+)?$/.test(r.path)
const directReads = () => server.requests.filter(isDirectRead).map((r) => r.path)
const lists = (resource: "pods" | "namespaces") =>
  server.requests.filter((r) => r.path === `/api/v1/${resource}` && !(r.query ?? "").includes("watch="))
    .length

const setup = (state: Parameters<KubeApiServer["load"]>[0]) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      reset()
      server.load(state)
      server.requests.length = 0
    }),
    () => Effect.sync(reset)
  )

const base = {
  pods: [
    { namespace: "ns1", name: "p1", annotations: { [KEY]: "tenant-a", other: "x" } },
    { namespace: "ns1", name: "bare" }
  ],
  namespaces: [
    { name: "ns1", annotations: { "tenant.routing/allowed-tenants": "tenant-a" } },
    { name: "ns2" }
  ]
}

describe("AnnotationsWatchCache", () => {
  it.live("after sync, reads of cached pods and namespaces send no request to the API server", () =>
    Effect.gen(function* () {
      yield* setup(base)
      const { status, connect } = yield* cache
      yield* synced(status)
      assert.deepStrictEqual(status.counts(), { pods: 2, namespaces: 2 })
      server.requests.length = 0
      const reader = yield* connect()
      assert.deepStrictEqual(yield* reader.pod("ns1", "p1"), { [KEY]: "tenant-a", other: "x" })
      assert.deepStrictEqual(yield* reader.pod("ns1", "bare"), {})
      assert.deepStrictEqual(yield* reader.namespace("ns1"), { "tenant.routing/allowed-tenants": "tenant-a" })
      assert.deepStrictEqual(yield* reader.namespace("ns2"), {})
      assert.deepStrictEqual(server.requests, [])
    })
  )

  it.live("a pod created after sync is answered from the cache once its ADDED event arrived", () =>
    Effect.gen(function* () {
      yield* setup(base)
      const { status, connect } = yield* cache
      yield* synced(status)
      server.setPod("ns2", "late", { [KEY]: "tenant-b" })
      yield* caughtUp(status, "pods")
      server.requests.length = 0
      const reader = yield* connect()
      assert.deepStrictEqual(yield* reader.pod("ns2", "late"), { [KEY]: "tenant-b" })
      assert.deepStrictEqual(server.requests, [])
    })
  )

  it.live("a miss falls back to a direct read, which gives the right answer (also 'not found')", () =>
    Effect.gen(function* () {
      yield* setup({
        ...base,
        pods: [...base.pods, { namespace: "ns2", name: "away", annotations: { [KEY]: "t" }, nodeName: "n2" }]
      })
      const { status, connect } = yield* cache
      yield* synced(status)
      server.requests.length = 0
      const reader = yield* connect()
      assert.deepStrictEqual(yield* reader.pod("ns2", "away"), { [KEY]: "t" })
      assert.isUndefined(yield* reader.pod("ns1", "nope"))
      assert.isUndefined(yield* reader.namespace("ns3"))
      assert.deepStrictEqual(directReads(), [
        "/api/v1/namespaces/ns2/pods/away",
        "/api/v1/namespaces/ns1/pods/nope",
        "/api/v1/namespaces/ns3"
      ])
    })
  )

  it.live(
    "a namespace whose annotation changes (added, changed, removed) is read changed after each event",
    () =>
      Effect.gen(function* () {
        yield* setup(base)
        const { status, connect } = yield* cache
        yield* synced(status)
        const reader = yield* connect()
        for (const annotations of [{ [KEY]: "tenant-a" }, { [KEY]: "tenant-b", x: "" }, undefined]) {
          server.setNamespace("ns2", annotations)
          yield* caughtUp(status, "namespaces")
          server.requests.length = 0
          assert.deepStrictEqual(yield* reader.namespace("ns2"), annotations ?? {})
          assert.deepStrictEqual(server.requests, [])
        }
        server.deleteNamespace("ns2")
        yield* caughtUp(status, "namespaces")
        server.requests.length = 0
        // Gone from the cache: a miss, so the direct read says whether it exists.
        assert.isUndefined(yield* reader.namespace("ns2"))
        assert.deepStrictEqual(directReads(), ["/api/v1/namespaces/ns2"])
      })
  )

  it.live(
    "a watch stream that ends and cannot be re-opened: direct reads until it re-syncs, then the cache again",
    () =>
      Effect.gen(function* () {
        yield* setup(base)
        const { status, connect } = yield* cache
        yield* synced(status)
        const reader = yield* connect()
        server.setFault({ kind: "status", code: 503, resource: "namespaces", verb: "watch" })
        server.closeWatches("namespaces")
        yield* waitFor("namespaces stopped", () => status.lastErrors().namespaces === "HTTP 503")
        assert.isFalse(status.synced().namespaces)
        assert.isTrue(status.synced().pods)
        // A change the cache cannot see while broken: the direct read sees it.
        server.setNamespace("ns1", { [KEY]: "tenant-c" })
        server.requests.length = 0
        assert.deepStrictEqual(yield* reader.namespace("ns1"), { [KEY]: "tenant-c" })
        assert.deepStrictEqual(directReads(), ["/api/v1/namespaces/ns1"])
        server.setFault(undefined)
        yield* caughtUp(status, "namespaces")
        assert.isUndefined(status.lastErrors().namespaces)
        server.requests.length = 0
        assert.deepStrictEqual(yield* reader.namespace("ns1"), { [KEY]: "tenant-c" })
        assert.deepStrictEqual(server.requests, [])
      })
  )

  for (const expiredAs of ["event", "status"] as const) {
    it.live(
      `410 Gone (${expiredAs === "event" ? "an ERROR event" : "HTTP 410"}): direct reads until listed again, then the cache`,
      () =>
        Effect.gen(function* () {
          yield* setup(base)
          const { status, connect } = yield* cache
          yield* synced(status)
          const reader = yield* connect()
          server.setExpiredAs(expiredAs)
          // The list that must follow fails for now, so the unsynced state can be observed.
          server.setFault({ kind: "status", code: 503, resource: "pods", verb: "list" })
          if (expiredAs === "event") server.expireWatches("pods")
          else {
            // A write the pods watch does not see, then history gone and the stream ended: the re-watch
            // from the pods' last version is refused with HTTP 410.
            server.setNamespace("ns2", { unrelated: "write" })
            server.compact()
            server.closeWatches("pods")
          }
          yield* waitFor("pods list failed", () => status.lastErrors().pods === "HTTP 503")
          assert.isFalse(status.synced().pods)
          server.setPod("ns1", "p1", { [KEY]: "tenant-z" })
          server.requests.length = 0
          assert.deepStrictEqual(yield* reader.pod("ns1", "p1"), { [KEY]: "tenant-z" })
          assert.deepStrictEqual(directReads(), ["/api/v1/namespaces/ns1/pods/p1"])
          server.requests.length = 0
          server.setFault(undefined)
          yield* caughtUp(status, "pods")
          assert.isAtLeast(lists("pods"), 1, "listed again, not just re-watched")
          server.requests.length = 0
          assert.deepStrictEqual(yield* reader.pod("ns1", "p1"), { [KEY]: "tenant-z" })
          assert.deepStrictEqual(server.requests, [])
        })
    )
  }

  it.live("a pod on another node is never cached; a pod moved away leaves the cache", () =>
    Effect.gen(function* () {
      yield* setup(base)
      const { status, connect } = yield* cache
      yield* synced(status)
      server.setPod("ns1", "elsewhere", { [KEY]: "tenant-b" }, "n2")
      server.setPod("ns1", "p1", { [KEY]: "tenant-a" }, "n2")
      // Events arrive in order: once this later write is seen, the two before it were too.
      server.setPod("ns1", "marker", {}, NODE)
      yield* caughtUp(status, "pods")
      assert.strictEqual(status.counts().pods, 2) // bare and marker
      const collection = server.requests.filter((r) => r.path === "/api/v1/pods")
      assert.isAtLeast(collection.length, 2) // the list and a watch
      for (const r of collection) assert.include(r.query ?? "", "fieldSelector=spec.nodeName%3Dn1")
      server.requests.length = 0
      const reader = yield* connect()
      assert.deepStrictEqual(yield* reader.pod("ns1", "elsewhere"), { [KEY]: "tenant-b" })
      assert.deepStrictEqual(yield* reader.pod("ns1", "p1"), { [KEY]: "tenant-a" })
      assert.deepStrictEqual(directReads(), [
        "/api/v1/namespaces/ns1/pods/elsewhere",
        "/api/v1/namespaces/ns1/pods/p1"
      ])
    })
  )

  it.live(
    "403 on namespace LIST: namespaces never sync and fall back to direct reads (get allowed: answered)",
    () =>
      Effect.gen(function* () {
        yield* setup(base)
        server.setForbid("namespaces", ["list", "watch"])
        const { status, connect } = yield* cache
        yield* waitFor(
          "pods synced, namespaces retried",
          () => status.synced().pods && lists("namespaces") >= 3
        )
        assert.strictEqual(status.lastErrors().namespaces, "HTTP 403")
        assert.isFalse(status.synced().namespaces)
        assert.strictEqual(status.counts().namespaces, 0)
        server.requests.length = 0
        const reader = yield* connect()
        assert.deepStrictEqual(yield* reader.namespace("ns1"), {
          "tenant.routing/allowed-tenants": "tenant-a"
        })
        assert.deepStrictEqual(yield* reader.pod("ns1", "p1"), { [KEY]: "tenant-a", other: "x" })
        assert.deepStrictEqual(directReads(), ["/api/v1/namespaces/ns1"])
      })
  )

  it.live(
    "settled is false while a first list is held, true once synced, and stays true while a watch is reopened",
    () =>
      Effect.gen(function* () {
        yield* setup(base)
        server.setFault({ kind: "delay", ms: 1000, resource: "namespaces", verb: "list", times: 1 })
        const { status } = yield* cache
        yield* waitFor("pods synced", () => status.synced().pods)
        assert.deepStrictEqual(status.settled(), { pods: true, namespaces: false })
        yield* synced(status)
        assert.deepStrictEqual(status.settled(), { pods: true, namespaces: true })
        // Ended streams that cannot be reopened for a while: unsynced, still settled.
        server.setFault({ kind: "status", code: 503, resource: "namespaces", verb: "watch" })
        server.closeWatches("namespaces")
        yield* waitFor("namespaces stopped", () => status.lastErrors().namespaces === "HTTP 503")
        assert.isFalse(status.synced().namespaces)
        assert.deepStrictEqual(status.settled(), { pods: true, namespaces: true })
      })
  )

  it.live("settled is true after a first attempt that failed (403 on LIST): its reads go directly", () =>
    Effect.gen(function* () {
      yield* setup(base)
      server.setForbid("pods", ["list", "watch"])
      const { status } = yield* cache
      yield* waitFor("pods refused", () => status.lastErrors().pods === "HTTP 403")
      assert.isFalse(status.synced().pods)
      assert.isTrue(status.settled().pods)
    })
  )

  it.live(
    "403 on every namespace verb: namespace reads fail with ApiForbidden, as the direct reader's do",
    () =>
      Effect.gen(function* () {
        yield* setup(base)
        server.setForbid("namespaces", true)
        const { status, connect } = yield* cache
        yield* waitFor(
          "pods synced, namespaces refused",
          () => status.synced().pods && status.lastErrors().namespaces === "HTTP 403"
        )
        const reader = yield* connect()
        const error = yield* Effect.flip(reader.namespace("ns1"))
        assert.strictEqual(error._tag, "ApiForbidden")
        assert.include(error.msg, "HTTP 403")
        assert.isFalse(status.synced().namespaces)
      })
  )

  it.live(
    "a call naming another kubeconfig is served by the direct reader for it, even for cached objects",
    () =>
      Effect.gen(function* () {
        yield* setup(base)
        const { status, connect } = yield* cache
        yield* synced(status)
        const other = join(dir, "other-kubeconfig")
        server.writeKubeconfig(other, { auth: "cert" })
        server.requests.length = 0
        const reader = yield* connect(other)
        assert.deepStrictEqual(yield* reader.pod("ns1", "p1"), { [KEY]: "tenant-a", other: "x" })
        assert.deepStrictEqual(
          server.requests.map((r) => [r.path, r.auth]),
          [["/api/v1/namespaces/ns1/pods/p1", "cert"]]
        )
      })
  )

  it.live(
    "before the kubeconfig exists, reads fail as standalone does (TryAgainLater); once written, the cache syncs",
    () =>
      Effect.gen(function* () {
        yield* setup(base)
        const late = join(dir, "late-kubeconfig")
        const context = yield* Layer.build(
          AnnotationsWatchCache.layer({
            kubeconfig: late,
            nodeName: NODE,
            retry: { initialMs: 10, maxMs: 50 }
          })
        )
        const status = Context.get(context, WatchCacheStatus)
        const source = Context.get(context, AnnotationSource)
        yield* waitFor("kubeconfig error", () => status.lastErrors().pods === "kubeconfig: ENOENT")
        const error = yield* Effect.flip(source.connect(late))
        assert.strictEqual(error._tag, "TryAgainLater")
        server.writeKubeconfig(late)
        yield* synced(status)
        server.requests.length = 0
        const reader = yield* source.connect(late).pipe(Effect.orDie)
        assert.deepStrictEqual(yield* reader.namespace("ns2"), {})
        assert.deepStrictEqual(server.requests, [])
      })
  )
})

// --- The law: once synced and quiescent, the cache answers exactly like a direct read. ---

const NAMESPACES = ["a", "b", "c"] as const
const PODS = ["p", "q"] as const
const annotationsArb: fc.Arbitrary<Annotations | undefined> = fc.option(
  fc.dictionary(
    fc.constantFrom(KEY, "tenant.routing/allowed-tenants", "x"),
    fc.string({ maxLength: 40, unit: "binary" }),
    {
      maxKeys: 3
    }
  ),
  { nil: undefined }
)
type Op =
  | {
      readonly op: "setPod"
      readonly ns: string
      readonly name: string
      readonly node: string
      readonly annotations: Annotations | undefined
    }
  | { readonly op: "deletePod"; readonly ns: string; readonly name: string }
  | { readonly op: "setNamespace"; readonly name: string; readonly annotations: Annotations | undefined }
  | { readonly op: "deleteNamespace"; readonly name: string }
  | { readonly op: "read"; readonly ns: string; readonly name: string }
  | { readonly op: "closeWatches" | "expireWatches" }
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant("setPod" as const),
    ns: fc.constantFrom(...NAMESPACES),
    name: fc.constantFrom(...PODS),
    node: fc.constantFrom(NODE, NODE, "n2"),
    annotations: annotationsArb
  }),
  fc.record({
    op: fc.constant("deletePod" as const),
    ns: fc.constantFrom(...NAMESPACES),
    name: fc.constantFrom(...PODS)
  }),
  fc.record({
    op: fc.constant("setNamespace" as const),
    name: fc.constantFrom(...NAMESPACES),
    annotations: annotationsArb
  }),
  fc.record({ op: fc.constant("deleteNamespace" as const), name: fc.constantFrom(...NAMESPACES) }),
  fc.record({
    op: fc.constant("read" as const),
    ns: fc.constantFrom(...NAMESPACES),
    name: fc.constantFrom(...PODS)
  }),
  fc.record({ op: fc.constantFrom("closeWatches" as const, "expireWatches" as const) })
)

describe("AnnotationsWatchCache law", () => {
  it.live(
    "for any sequence of pod and namespace writes, watch breaks and reads: every read once synced and quiescent equals the direct read, and hits send no request",
    () =>
      Effect.gen(function* () {
        yield* setup({})
        const { status, connect } = yield* cache
        yield* synced(status)
        const reader = yield* connect()
        const other = join(dir, "direct-kubeconfig")
        server.writeKubeconfig(other)
        const direct = yield* connect(other)
        /** Every state each object has had (JSON, "none" for absent): an interleaved read must be one of them. */
        const seen = new Map<string, Set<string>>()
        const note = (key: string, annotations: Annotations | undefined) => {
          const set = seen.get(key) ?? new Set(["none"])
          set.add(annotations === undefined ? "none" : JSON.stringify(annotations))
          seen.set(key, set)
        }
        const podNode = new Map<string, string>()
        let podRv = server.resourceVersion()
        let nsRv = server.resourceVersion()
        const run = (ops: ReadonlyArray<Op>) =>
          Effect.gen(function* () {
            for (const o of ops) {
              switch (o.op) {
                case "setPod": {
                  const key = `${o.ns}/${o.name}`
                  const wasHere = podNode.get(key) === NODE
                  server.setPod(o.ns, o.name, o.annotations, o.node)
                  podNode.set(key, o.node)
                  note(`pod/${key}`, o.annotations ?? {})
                  if (wasHere || o.node === NODE) podRv = server.resourceVersion()
                  break
                }
                case "deletePod": {
                  const key = `${o.ns}/${o.name}`
                  if (podNode.get(key) === NODE) {
                    server.deletePod(o.ns, o.name)
                    podRv = server.resourceVersion()
                  } else server.deletePod(o.ns, o.name)
                  podNode.delete(key)
                  break
                }
                case "setNamespace":
                  server.setNamespace(o.name, o.annotations)
                  note(`ns/${o.name}`, o.annotations ?? {})
                  nsRv = server.resourceVersion()
                  break
                case "deleteNamespace": {
                  const before = server.resourceVersion()
                  server.deleteNamespace(o.name)
                  // Deleting a namespace that is not there writes nothing: no event to wait for.
                  if (server.resourceVersion() !== before) nsRv = server.resourceVersion()
                  break
                }
                case "read": {
                  const pod = yield* reader.pod(o.ns, o.name)
                  const ns = yield* reader.namespace(o.ns)
                  const podStates = seen.get(`pod/${o.ns}/${o.name}`) ?? new Set(["none"])
                  const nsStates = seen.get(`ns/${o.ns}`) ?? new Set(["none"])
                  assert.isTrue(
                    podStates.has(pod === undefined ? "none" : JSON.stringify(pod)),
                    "a pod state that existed"
                  )
                  assert.isTrue(
                    nsStates.has(ns === undefined ? "none" : JSON.stringify(ns)),
                    "a namespace state that existed"
                  )
                  break
                }
                case "closeWatches":
                  server.closeWatches()
                  break
                case "expireWatches":
                  server.expireWatches()
                  break
              }
            }
            yield* caughtUp(status, "pods", podRv)
            yield* caughtUp(status, "namespaces", nsRv)
            assert.strictEqual(status.counts().pods, [...podNode.values()].filter((n) => n === NODE).length)
            for (const ns of NAMESPACES) {
              for (const name of PODS) {
                server.requests.length = 0
                const cached = yield* reader.pod(ns, name)
                const cachedHit = server.requests.length === 0
                assert.deepStrictEqual(cached, yield* direct.pod(ns, name))
                assert.strictEqual(
                  cachedHit,
                  podNode.get(`${ns}/${name}`) === NODE,
                  `pod ${ns}/${name} from the cache iff on ${NODE}`
                )
              }
              server.requests.length = 0
              const cached = yield* reader.namespace(ns)
              assert.strictEqual(
                server.requests.length === 0,
                cached !== undefined,
                `namespace ${ns}: hit iff it exists`
              )
              assert.deepStrictEqual(cached, yield* direct.namespace(ns))
            }
          })
        yield* Effect.promise(() =>
          fc.assert(
            fc.asyncProperty(fc.array(opArb, { maxLength: 25 }), (ops) => Effect.runPromise(run(ops))),
            { numRuns: 40 }
          )
        )
      }),
    120_000
  )
})

describe("AnnotationsWatchCache memory", () => {
  it.live(
    "prints the resident memory of a process holding 250 pods and 2000 namespaces (measured, not asserted)",
    () =>
      Effect.gen(function* () {
        const long = "x".repeat(200)
        yield* setup({
          pods: Array.from({ length: 300 }, (_, i) => ({
            namespace: `ns-${i % 2000}`,
            name: `pod-${i}`,
            annotations: { [KEY]: `tenant-${i % 7}`, "example.com/note": long },
            // 250 on this node, 50 elsewhere (never cached).
            nodeName: i < 250 ? NODE : "n2"
          })),
          namespaces: Array.from({ length: 2000 }, (_, i) => ({
            name: `ns-${i}`,
            annotations: {
              "tenant.routing/allowed-tenants": `tenant-${i % 7},tenant-${(i + 1) % 7}`,
              "example.com/note": long
            }
          }))
        })
        const script = new URL("./support/watchCacheMemory.ts", import.meta.url).pathname
        // Asynchronously: the API server it talks to runs in this process.
        const { stdout: output } = yield* Effect.promise(() =>
          promisify(execFile)(process.execPath, [
            "--expose-gc",
            script,
            "--kubeconfig",
            kubeconfig,
            "--pods",
            "250",
            "--namespaces",
            "2000"
          ])
        )
        const report = JSON.parse(output) as { counts: { pods: number; namespaces: number }; rssMiB: number }
        console.log(`watch cache memory: ${output.trim()}`)
        assert.deepStrictEqual(report.counts, { pods: 250, namespaces: 2000 })
      }),
    120_000
  )
})
