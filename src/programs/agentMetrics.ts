/**
 * What the agent counts (docs/DESIGN.md §8), as Effect metrics: the `/metrics` endpoint renders them
 * with Effect's Prometheus formatter (MetricsHttp.ts), so every number it serves is one of these.
 *
 * Names are fixed: dashboards and alerts depend on them.
 * - `tenant_routing_agent_calls_total{verb,outcome,code}`: calls answered; `outcome` is `ok` (exit 0)
 *   or `error`, `code` the CNI error code of the answer (`0` for ok).
 * - `tenant_routing_agent_call_duration_seconds{verb}`: from the request decoded to the answer ready.
 * - `tenant_routing_agent_entries{backend}`: marking entries the plugin manages, listed at each scrape.
 * - `tenant_routing_agent_node_setup_runs_total{reason,outcome}` and
 *   `tenant_routing_agent_node_setup_drift_total`: runs of the `--tenants` loop, and the changes a
 *   periodic run had to make although the file had not changed (someone or something edited the
 *   node's routing by hand).
 * - `tenant_routing_agent_cache_synced{resource}` (0/1) and `tenant_routing_agent_cache_objects{resource}`:
 *   the watch cache, when `--kubeconfig` is given.
 * - `tenant_routing_agent_ready` (0/1): what `/readyz` answers.
 * - `tenant_routing_agent_memory_bytes{kind}`: the process's memory at the scrape, by kind: `rss`
 *   (resident), `heap_used` and `heap_total` (the JS heap's live objects and what it holds reserved),
 *   `external` (buffers outside the heap). Resident memory growing while `heap_used` stays flat is
 *   the allocator or the heap's reservation, not objects the agent keeps (BENCHMARKS.md).
 *
 * Verb and code come from the call's env and answer only (bounded sets), never from pod names.
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { BACKENDS } from "../domain/cni/Config.ts"
import { Netfilter } from "../domain/datapath/Netfilter.ts"
import type { CallHandler } from "./agent.ts"

export const callsTotal = Metric.counter("tenant_routing_agent_calls_total", {
  description: "CNI calls the agent answered, by verb, outcome (ok or error) and CNI code (0 when ok)",
  incremental: true
})

export const callDuration = Metric.histogram("tenant_routing_agent_call_duration_seconds", {
  description: "time from a decoded request to its answer, by verb",
  boundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
})

export const entries = Metric.gauge("tenant_routing_agent_entries", {
  description: "marking entries this plugin manages, by backend (listed at each scrape)"
})

export const nodeSetupRuns = Metric.counter("tenant_routing_agent_node_setup_runs_total", {
  description:
    "runs of the --tenants loop, by reason (start, change, periodic) and outcome (applied, invalid, failed)",
  incremental: true
})

export const nodeSetupDrift = Metric.counter("tenant_routing_agent_node_setup_drift_total", {
  description: "routing changes a periodic run made although the tenants file had not changed",
  incremental: true
})

export const cacheSynced = Metric.gauge("tenant_routing_agent_cache_synced", {
  description: "1 when the watch cache of a resource (pods, namespaces) is listed and watching"
})

export const cacheObjects = Metric.gauge("tenant_routing_agent_cache_objects", {
  description: "objects held by the watch cache, by resource"
})

export const ready = Metric.gauge("tenant_routing_agent_ready", {
  description: "1 when the agent serves its socket and its annotation source is usable (/readyz)"
})

export const memoryBytes = Metric.gauge("tenant_routing_agent_memory_bytes", {
  description: "the agent's memory by kind: rss, heap_used, heap_total (reserved by the JS heap), external"
})

/** The process's memory, in bytes (the fields of Node's `process.memoryUsage()` the gauge shows). */
export interface MemoryFigures {
  readonly rss: number
  readonly heapUsed: number
  readonly heapTotal: number
  readonly external: number
}

/** Sets `memoryBytes` from one reading. */
export const refreshMemory = (m: MemoryFigures): Effect.Effect<void> =>
  Effect.forEach(
    [
      ["rss", m.rss],
      ["heap_used", m.heapUsed],
      ["heap_total", m.heapTotal],
      ["external", m.external]
    ] as const,
    ([kind, bytes]) => Metric.update(Metric.withAttributes(memoryBytes, { kind }), bytes),
    { discard: true }
  )

/** The CNI code of an answer: 0 when it succeeded, else its `code` (999 if it has none). */
export const codeOf = (exitCode: number, stdout: string | undefined): number => {
  if (exitCode === 0) return 0
  try {
    const code = (JSON.parse(stdout ?? "") as { code?: unknown }).code
    return typeof code === "number" && Number.isInteger(code) ? code : 999
  } catch {
    return 999
  }
}

const VERBS = new Set(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"])

/** The verb as a label: anything else a caller sends is one value, so labels stay a bounded set. */
export const verbOf = (env: Readonly<Record<string, string | undefined>>): string => {
  const verb = env.CNI_COMMAND
  return verb !== undefined && VERBS.has(verb) ? verb : "other"
}

/** `handler`, counting and timing every call it answers. */
export const instrumentCalls =
  (handler: CallHandler): CallHandler =>
  (env, stdin) =>
    Effect.gen(function* () {
      const verb = verbOf(env)
      const start = yield* Clock.currentTimeMillis
      const out = yield* handler(env, stdin)
      const seconds = ((yield* Clock.currentTimeMillis) - start) / 1000
      const code = codeOf(out.exitCode, out.stdout)
      yield* Metric.update(
        Metric.withAttributes(callsTotal, {
          verb,
          outcome: out.exitCode === 0 ? "ok" : "error",
          code: String(code)
        }),
        1
      )
      yield* Metric.update(Metric.withAttributes(callDuration, { verb }), seconds)
      return out
    })

/**
 * Sets `entries` from a listing of each backend this node can use; a backend that cannot be listed
 * keeps its last value (the scrape must not fail for it). A listing takes no lock: it is a read, and
 * each backend's listing is one consistent kernel snapshot.
 */
export const refreshEntries: Effect.Effect<void, never, Netfilter> = Effect.gen(function* () {
  const netfilter = yield* Netfilter
  for (const backend of BACKENDS) {
    if (!(yield* netfilter.usable(backend))) continue
    const listed = yield* Effect.result(netfilter.list(backend))
    if (listed._tag === "Success")
      yield* Metric.update(Metric.withAttributes(entries, { backend }), listed.success.length)
  }
})

/** What the metrics and readiness read of the watch cache (AnnotationsWatchCache's status). */
export interface CacheView {
  readonly synced: () => { readonly pods: boolean; readonly namespaces: boolean }
  readonly counts: () => { readonly pods: number; readonly namespaces: number }
  readonly settled: () => { readonly pods: boolean; readonly namespaces: boolean }
}

const RESOURCES = ["pods", "namespaces"] as const

/** Sets `cacheSynced` and `cacheObjects` from the cache's status. */
export const refreshCache = (cache: CacheView): Effect.Effect<void> =>
  Effect.gen(function* () {
    const synced = cache.synced()
    const counts = cache.counts()
    for (const resource of RESOURCES) {
      yield* Metric.update(Metric.withAttributes(cacheSynced, { resource }), synced[resource] ? 1 : 0)
      yield* Metric.update(Metric.withAttributes(cacheObjects, { resource }), counts[resource])
    }
  })

/**
 * Whether calls can resolve their tenant: each cache has synced once, or has failed at least once, in
 * which case its reads go directly to the API server (the cache's fallback) — the same as without a
 * cache. Only a cache still making its first attempt holds readiness back; a cache that is unsynced
 * later (a watch reopened) reads directly meanwhile, so readiness does not flap with it.
 */
export const cacheSettled = (cache: CacheView): boolean => {
  const settled = cache.settled()
  return RESOURCES.every((r) => settled[r])
}
