/**
 * The agent's `AnnotationSource` (docs/DESIGN.md §8): a watch cache of the pods bound to this node and
 * of all namespaces, in front of the direct reader (`AnnotationsKubernetes`), so that a warm call
 * resolves its tenant without a round-trip to the API server.
 *
 * How it keeps up: per resource, client-node's `ListWatch` (what `makeInformer` builds; used directly
 * because only its constructor takes the field selector `spec.nodeName=<node>`) lists, then watches
 * from the list's resourceVersion, reconnects from the last version it saw, and lists again when the
 * server answers 410 Gone. When it stops on any other error (403, 5xx, refused connection, a broken
 * kubeconfig) it is started again with an exponential backoff (1 s doubling to 30 s, jittered). The
 * first list asks for resourceVersion "0" (the API server's own cache: cheap when every node of a
 * cluster starts its agent at once); a list after a 410 asks for the latest.
 *
 * What a read does:
 * - `connect` always goes through the direct reader first, so a missing or broken kubeconfig fails
 *   exactly as it does standalone (TryAgainLater, InvalidConfig). A call whose config names another
 *   kubeconfig than the agent's `--kubeconfig` gets that direct reader as it is.
 * - a pod or namespace that is in a SYNCED cache is answered from it (its annotations, `{}` for none).
 * - everything else is a direct read, with its usual 404/403/unavailable semantics: a miss (pods are
 *   created just before their sandbox; a namespace may have been created a moment ago — a miss is never
 *   "not found"), and every read while a cache is not synced: before its first list, while it lists
 *   again, and from the moment its watch stream ends or reports an ERROR event until a new stream is
 *   open. So a 403 on LIST keeps that cache unsynced forever, and its reads keep today's 403 handling.
 * "Synced" means: a complete list has been applied and a watch stream continuing from it is open.
 *
 * Staleness. A hit is as fresh as the last event delivered: normally the watch delivery delay (the API
 * server's watch cache plus the network; milliseconds to about a second). Two longer windows:
 * - a stream that dies silently (no FIN/RST: a partition, a crashed API server host) is noticed only
 *   by client-node's 30 s inactivity timeout; until then hits may be up to ~30 s old. A stream that
 *   ends visibly (or a 410) unsyncs the cache at once, and reads go direct until the re-watch is open.
 * - after a re-watch from the last version, the missed events are replayed right after the stream
 *   opens; reads in that instant may still see the pre-break state (milliseconds).
 * What it means for pinning (docs/DESIGN.md §3): the cache is only used for hits, so it never invents a
 * namespace or hides one; it can only answer with the namespace's annotations as of up to that window
 * ago. A namespace that was just pinned may be read unpinned, letting a pod created in that window
 * choose its own tenant; a namespace that was just un-pinned or re-pinned to another tenant may be read
 * with the old pinning, so a pod created in that window is refused (100, and the runtime retries) or
 * routed as the namespace's previous tenant. The direct read has the same race, only narrower (a pod
 * created a moment before the annotation changed); and pinning is never retroactive: pods already
 * running keep their routing either way. The cache widens "a moment before" to "up to the window
 * after". A pod hit has the same window, and one more case: a pod deleted and re-created under the
 * same name (a StatefulSet) may be answered with the old pod's annotations until the deletion arrives.
 *
 * Memory: objects are cut to `metadata` {name, namespace, resourceVersion, annotations} before the
 * informer stores them (the list items, and every watch event), so spec, status, labels and
 * managedFields are garbage as soon as they are parsed. All annotations are kept: the config's
 * `annotationKey` varies per call, and a hit must equal the direct read.
 *
 * Start-up: the layer is built at once; loading client-node (all of it: `ListWatch`, `Watch` and
 * `CoreV1Api` are not in `dist/config.js`), reading the kubeconfig and the first lists happen in the
 * background, and calls read directly until then.
 */
import { resolve } from "node:path"
import { setTimeout as sleepMs } from "node:timers/promises"
import type {
  ConfigurationOptions,
  KubeConfig,
  KubernetesListObject,
  KubernetesObject,
  ListWatch
} from "@kubernetes/client-node"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import {
  type AnnotationReader,
  AnnotationSource,
  type Annotations
} from "../../domain/tenancy/AnnotationSource.ts"
import * as AnnotationsKubernetes from "./AnnotationsKubernetes.ts"

export interface WatchCacheOptions {
  /** The agent's `--kubeconfig`: calls naming this file are served from the cache. */
  readonly kubeconfig: string
  /** The agent's `--node-name` (non-empty): only pods bound to it are cached. */
  readonly nodeName: string
  /** Backoff of restarts and reconnects (default 1000 → 30000 ms); tests shorten it. */
  readonly retry?: { readonly initialMs: number; readonly maxMs: number }
}

export interface CacheFacts<A> {
  readonly pods: A
  readonly namespaces: A
}

/** What the agent's metrics and readiness read; plain functions, cheap enough for every scrape. */
export class WatchCacheStatus extends Context.Service<
  WatchCacheStatus,
  {
    /** Whether each cache is listed and watching: only then are its hits answered from memory. */
    readonly synced: () => CacheFacts<boolean>
    /** Objects held by each cache (also while not synced). */
    readonly counts: () => CacheFacts<number>
    /** The latest resourceVersion each cache has seen ("" before its first list). */
    readonly resourceVersions: () => CacheFacts<string>
    /** Why each cache last stopped (an HTTP status or error code, never a message); cleared once synced. */
    readonly lastErrors: () => CacheFacts<string | undefined>
    /**
     * Whether each cache has finished its first attempt: synced once, or failed once. It never goes
     * back: a stream that ends later (client-node reopens a quiet one every 30 s) only sends reads
     * directly for a moment, which is what they do without a cache.
     */
    readonly settled: () => CacheFacts<boolean>
  }
>()("tenant-routing/WatchCacheStatus") {}

type ClientModule = typeof import("@kubernetes/client-node")

/** A failed list lasts at most this long, so a hung request cannot stall a cache forever. */
const LIST_TIMEOUT_MS = 60_000

/** The part of an object the cache keeps. */
interface Slim extends KubernetesObject {
  readonly metadata: {
    name?: string
    namespace?: string
    resourceVersion?: string
    annotations?: { [key: string]: string }
  }
}

const slim = (object: unknown): Slim => {
  const m = (object as { metadata?: Slim["metadata"] } | null)?.metadata
  return {
    metadata: {
      ...(m?.name === undefined ? {} : { name: m.name }),
      ...(m?.namespace === undefined ? {} : { namespace: m.namespace }),
      ...(m?.resourceVersion === undefined ? {} : { resourceVersion: m.resourceVersion }),
      ...(m?.annotations == null ? {} : { annotations: m.annotations })
    }
  }
}

/** Only a status or an error code: messages may quote a server URL or a header. */
const describe = (error: unknown): string => {
  if (typeof error !== "object" || error === null) return "unknown error"
  const { code, statusCode, name, cause } = error as {
    code?: unknown
    statusCode?: unknown
    name?: unknown
    cause?: unknown
  }
  if (typeof statusCode === "number") return `HTTP ${statusCode}`
  // client-node's ApiException: `code` is the HTTP status.
  if (typeof code === "number" && code >= 100 && code < 600 && name !== "DOMException") return `HTTP ${code}`
  if (typeof code === "string") return code
  const causeCode = (cause as { code?: unknown } | undefined)?.code
  if (typeof causeCode === "string") return causeCode
  return typeof name === "string" ? name : "unknown error"
}

interface Mirror {
  /** The cached annotations, or undefined: a miss, or the cache is not synced. */
  readonly lookup: (name: string, namespace?: string) => Annotations | undefined
  readonly synced: () => boolean
  readonly count: () => number
  readonly resourceVersion: () => string
  readonly lastError: () => string | undefined
  readonly settled: () => boolean
}

interface MirrorSpec {
  readonly kind: "pods" | "namespaces"
  readonly path: string
  readonly fieldSelector?: string
}

/**
 * One informer kept alive for the layer's lifetime: it reports itself synced only between "a watch
 * continuing from a complete list is open" and the end (or ERROR event) of that stream.
 */
const mirror = (
  spec: MirrorSpec,
  kubeconfigPath: string,
  retry: { readonly initialMs: number; readonly maxMs: number }
) =>
  Effect.gen(function* () {
    let informer: ListWatch<Slim> | undefined
    let streaming = false
    let settled = false
    let closed = false
    let failures = 0
    let lastError: string | undefined
    const stops = yield* Queue.unbounded<unknown>()
    const abort = new AbortController()

    const backoff = (attempt: number) =>
      Math.min(retry.initialMs * 2 ** Math.min(attempt, 30), retry.maxMs) * (0.8 + Math.random() * 0.4)
    const stopped = (error: unknown) => {
      streaming = false
      if (closed) return
      lastError = describe(error)
      settled = true
      Queue.offerUnsafe(stops, error)
    }

    const build = (client: ClientModule, kc: KubeConfig): ListWatch<Slim> => {
      const api = kc.makeApiClient(client.CoreV1Api)
      let listedOnce = false
      /** A deadline and the layer's end, through a middleware (the generated client has no timeout). */
      const bounded = (): ConfigurationOptions => {
        const signal = AbortSignal.any([abort.signal, AbortSignal.timeout(LIST_TIMEOUT_MS)])
        return {
          middleware: [
            {
              pre: (context) => {
                context.setSignal(signal)
                return new client.Observable(Promise.resolve(context))
              },
              post: (response) => new client.Observable(Promise.resolve(response))
            }
          ],
          middlewareMergeStrategy: "append"
        }
      }
      const list = async (): Promise<KubernetesListObject<Slim>> => {
        streaming = false
        // "0": any version the API server has cached (cheap); after a 410, the latest (a consistent read).
        const version = listedOnce ? {} : { resourceVersion: "0" }
        const selector = spec.fieldSelector === undefined ? {} : { fieldSelector: spec.fieldSelector }
        const result =
          spec.kind === "pods"
            ? await api.listPodForAllNamespaces({ ...selector, ...version }, bounded())
            : await api.listNamespace({ ...selector, ...version }, bounded())
        listedOnce = true
        return {
          metadata: { resourceVersion: result.metadata?.resourceVersion ?? "" },
          items: result.items.map(slim)
        }
      }

      /** client-node's Watch, cutting objects before the informer stores them and tracking the stream. */
      class SlimWatch extends client.Watch {
        override async watch(
          path: string,
          queryParams: Record<string, string | number | boolean | undefined>,
          callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
          done: (err: unknown) => void
        ): Promise<AbortController> {
          // ListWatch may call this after `stop()` (its reconnect delay does not look at `stopped`).
          if (closed) return new AbortController()
          let ended = false
          const onEvent = (phase: string, object: unknown) => {
            if (phase === "ADDED" || phase === "MODIFIED" || phase === "DELETED") {
              return callback(phase, slim(object))
            }
            // 410 Expired (ListWatch lists again) or another failure: the stream is not to be trusted.
            if (phase === "ERROR") streaming = false
            callback(phase, object)
          }
          const onDone = (error: unknown) => {
            ended = true
            streaming = false
            done(error)
          }
          let controller: AbortController
          try {
            controller = await super.watch(path, queryParams, onEvent, onDone)
          } catch (error) {
            // Preparing the request failed (e.g. a certificate file is gone): report it like a failed watch.
            queueMicrotask(() => onDone(error))
            return new AbortController()
          }
          if (closed) controller.abort()
          else if (!ended) {
            streaming = true
            settled = true
            failures = 0
            lastError = undefined
          }
          return controller
        }
      }

      const lw = new client.ListWatch<Slim>(
        spec.path,
        new SlimWatch(kc),
        list,
        false,
        undefined,
        spec.fieldSelector,
        // ListWatch's own reconnect delays (1 s doubling to 30 s while streams end without events).
        {
          delayFn: (ms) =>
            sleepMs(Math.min((ms / 1000) * retry.initialMs, retry.maxMs), undefined, { ref: false })
        }
      )
      lw.on("error", stopped)
      return lw
    }

    /** Loads client-node and the kubeconfig (retrying until both work), then keeps the informer running. */
    const supervise = Effect.gen(function* () {
      const client = yield* Effect.promise(() => import("@kubernetes/client-node"))
      let lw: ListWatch<Slim> | undefined
      while (lw === undefined) {
        // The kubeconfig may not be written yet (a DaemonSet starting) or be unusable (no current
        // cluster: the client refuses to make a client): try again later, it may be fixed.
        try {
          const kc = new client.KubeConfig()
          kc.loadFromFile(kubeconfigPath)
          lw = build(client, kc)
        } catch (error) {
          lastError = `kubeconfig: ${describe(error)}`
          settled = true
          yield* Effect.sleep(Duration.millis(backoff(failures++)))
        }
      }
      informer = lw
      while (!closed) {
        // `start` settles once the watch is open or the informer stopped; a stop arrives in `stops`.
        yield* Effect.promise(() => lw.start().catch(stopped))
        yield* Queue.take(stops)
        yield* Effect.sleep(Duration.millis(backoff(failures++)))
      }
    })

    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        closed = true
        streaming = false
        abort.abort()
        await informer?.stop()
      })
    )
    yield* Effect.forkScoped(supervise)

    return {
      lookup: (name, namespace) => {
        if (!streaming || informer === undefined) return undefined
        const object = informer.get(name, namespace)
        return object === undefined ? undefined : (object.metadata.annotations ?? {})
      },
      synced: () => streaming,
      count: () => informer?.list().length ?? 0,
      resourceVersion: () => informer?.latestResourceVersion() ?? "",
      lastError: () => lastError,
      settled: () => settled
    } satisfies Mirror
  })

const readerOver = (direct: AnnotationReader, pods: Mirror, namespaces: Mirror): AnnotationReader => ({
  pod: (namespace, name) =>
    Effect.suspend(() => {
      const hit = pods.lookup(name, namespace)
      return hit === undefined ? direct.pod(namespace, name) : Effect.succeed(hit)
    }),
  namespace: (name) =>
    Effect.suspend(() => {
      const hit = namespaces.lookup(name)
      return hit === undefined ? direct.namespace(name) : Effect.succeed(hit)
    })
})

/** The cache over whatever direct `AnnotationSource` it is given (the live one, in `layer`). */
export const layerOver = (
  options: WatchCacheOptions
): Layer.Layer<AnnotationSource | WatchCacheStatus, never, AnnotationSource> =>
  Layer.effectContext(
    Effect.gen(function* () {
      if (options.nodeName === "")
        return yield* Effect.die(new Error("AnnotationsWatchCache: empty nodeName"))
      const direct = yield* AnnotationSource
      const retry = options.retry ?? { initialMs: 1000, maxMs: 30_000 }
      const agentKubeconfig = resolve(options.kubeconfig)
      const pods = yield* mirror(
        { kind: "pods", path: "/api/v1/pods", fieldSelector: `spec.nodeName=${options.nodeName}` },
        agentKubeconfig,
        retry
      )
      const namespaces = yield* mirror(
        { kind: "namespaces", path: "/api/v1/namespaces" },
        agentKubeconfig,
        retry
      )
      const source = AnnotationSource.of({
        connect: (kubeconfig) =>
          direct
            .connect(kubeconfig)
            .pipe(
              Effect.map((reader) =>
                resolve(kubeconfig) === agentKubeconfig ? readerOver(reader, pods, namespaces) : reader
              )
            )
      })
      const both = <A>(f: (m: Mirror) => A): CacheFacts<A> => ({ pods: f(pods), namespaces: f(namespaces) })
      const status = WatchCacheStatus.of({
        synced: () => both((m) => m.synced()),
        counts: () => both((m) => m.count()),
        resourceVersions: () => both((m) => m.resourceVersion()),
        lastErrors: () => both((m) => m.lastError()),
        settled: () => both((m) => m.settled())
      })
      return Context.make(AnnotationSource, source).pipe(Context.add(WatchCacheStatus, status))
    })
  )

/** The agent's layer: the cache over `AnnotationsKubernetes`, informers running while it is in use. */
export const layer = (options: WatchCacheOptions): Layer.Layer<AnnotationSource | WatchCacheStatus> =>
  layerOver(options).pipe(Layer.provide(AnnotationsKubernetes.layer))
