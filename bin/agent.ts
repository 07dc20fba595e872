/**
 * `tenant-routing agent` (docs/DESIGN.md §8): the warm per-node agent. It serves the shim's CNI calls
 * on a unix socket (src/interpreters/live/AgentServer.ts describes the protocol) with the live
 * interpreters, built once (src/programs/agent.ts), so a pod start no longer pays for starting this
 * program. Its flags are parsed by the CLI (bin/agentCli.ts); this file starts and stops it, and is
 * loaded only when the agent runs: nothing here reaches the CNI path or the other subcommands.
 *
 * Start, in order: the kubeconfig is checked (`--kubeconfig`: a file that is missing or unusable is a
 * usage error, exit 2) and its watch cache starts (with `--node-name`); the HTTP endpoints listen
 * (`--metrics-address`: `/healthz` answers from here on, `/readyz` says 503); the tenants file is applied once (`--tenants`, then kept converged in the
 * background, src/programs/agentTenants.ts); the socket accepts calls; `agent ready` is logged (a JSON
 * line on stderr) and `/readyz` turns 200 — with a kubeconfig, once each cache has synced or has failed
 * once (its reads then go to the API server directly, as without a cache).
 *
 * SIGTERM or SIGINT stop it: the socket is removed at once, calls in progress get up to 4 s to finish,
 * then the tenants loop and the HTTP endpoints stop, and it exits 0; a guard exits 1 if that has not
 * happened within 5 s. A start that fails (another agent serving the socket, a directory others may
 * write, an address in use) exits 1 with the reason on stderr.
 */
import { format } from "node:util"
import { getHeapStatistics } from "node:v8"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as Scope from "effect/Scope"
import { AnnotationSource } from "../src/domain/tenancy/AnnotationSource.ts"
import * as AgentServer from "../src/interpreters/live/AgentServer.ts"
import * as AnnotationsKubernetes from "../src/interpreters/live/AnnotationsKubernetes.ts"
import * as AnnotationsWatchCache from "../src/interpreters/live/AnnotationsWatchCache.ts"
import { WatchCacheStatus } from "../src/interpreters/live/AnnotationsWatchCache.ts"
import * as AttachmentStoreFiles from "../src/interpreters/live/AttachmentStoreFiles.ts"
import * as DelegateExec from "../src/interpreters/live/DelegateExec.ts"
import { loggingFor, stderrLogging } from "../src/interpreters/live/Logging.ts"
import * as MetricsHttp from "../src/interpreters/live/MetricsHttp.ts"
import * as NetfilterLive from "../src/interpreters/live/NetfilterLive.ts"
import * as NodeLockSocket from "../src/interpreters/live/NodeLockSocket.ts"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import { makeCallHandler } from "../src/programs/agent.ts"
import * as metrics from "../src/programs/agentMetrics.ts"
import { keepNodeSetupConverged } from "../src/programs/agentTenants.ts"
import { type CliExit, failed, usageError } from "./cliSupport.ts"

export interface AgentOptions {
  readonly socket: string
  readonly kubeconfig: string | undefined
  /** Required with `kubeconfig` (the CLI checks it): the pods the watch cache keeps. */
  readonly nodeName: string | undefined
  readonly tenants: string | undefined
  readonly metricsAddress: { readonly host: string; readonly port: number } | undefined
}

const NAME = "agent"
const STOP_GUARD_MS = 5_000

/** Exits 1 if stopping takes longer than STOP_GUARD_MS; cleared once the agent has stopped. */
let guard: ReturnType<typeof setTimeout> | undefined

/**
 * Once stopped, the process is done: if a library's handle (a keep-alive socket, a watch) still holds
 * the event loop, exit anyway, with the status the CLI has set by then; otherwise the loop drains first.
 */
const exitSoon = Effect.sync(() => {
  clearTimeout(guard)
  setTimeout(() => process.exit(process.exitCode ?? 0), 250).unref()
})

/**
 * Listens for SIGTERM/SIGINT from the moment it runs until the scope closes, and returns the wait for
 * the first one (later ones are ignored while stopping). It runs before anything else, so a signal
 * that arrives while the agent starts is a clean stop once it has started, never Node's default
 * action (death without removing the socket).
 */
const listenForStop: Effect.Effect<Effect.Effect<NodeJS.Signals>, never, Scope.Scope> = Effect.gen(
  function* () {
    const first = yield* Deferred.make<NodeJS.Signals>()
    const on = (signal: NodeJS.Signals) => {
      if (!Deferred.doneUnsafe(first, Effect.succeed(signal))) return
      guard = setTimeout(() => {
        process.stderr.write(
          `tenant-routing agent: not stopped ${STOP_GUARD_MS} ms after ${signal}; exiting\n`
        )
        process.exit(1)
      }, STOP_GUARD_MS).unref()
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => {
        process.on("SIGTERM", on)
        process.on("SIGINT", on)
      }),
      () =>
        Effect.sync(() => {
          process.off("SIGTERM", on)
          process.off("SIGINT", on)
        })
    )
    return Deferred.await(first)
  }
)

const messageOf = (cause: Cause.Cause<unknown>): string => {
  const error = Cause.squash(cause)
  return typeof error === "object" && error !== null && "msg" in error
    ? String(error.msg)
    : Cause.pretty(cause)
}

/** The agent, from start to stop; fails only with the CLI's exit (1 not started, 2 usage). */
const agent = (options: AgentOptions): Effect.Effect<void, CliExit, Scope.Scope> =>
  Effect.gen(function* () {
    const stopSignal = yield* listenForStop
    if (options.kubeconfig !== undefined) {
      const kubeconfig = options.kubeconfig
      const checked = yield* Effect.exit(
        AnnotationSource.use((source) => source.connect(kubeconfig)).pipe(
          Effect.provide(AnnotationsKubernetes.layer)
        )
      )
      if (Exit.isFailure(checked))
        return yield* usageError(NAME, `--kubeconfig ${kubeconfig}: ${messageOf(checked.cause)}`)
    }

    // With --kubeconfig, the watch cache (AnnotationsWatchCache.ts) answers the calls whose config
    // names the same file; its informers run from here until the agent stops. Without, direct reads.
    let annotations: Layer.Layer<AnnotationSource> = AnnotationsKubernetes.layer
    let cache: metrics.CacheView | undefined
    if (options.kubeconfig !== undefined && options.nodeName !== undefined) {
      const built = yield* Layer.build(
        AnnotationsWatchCache.layer({ kubeconfig: options.kubeconfig, nodeName: options.nodeName })
      )
      cache = Context.get(built, WatchCacheStatus)
      annotations = Layer.succeedContext(built)
    }

    let serving = false
    const ready = () => serving && (cache === undefined || metrics.cacheSettled(cache))

    if (options.metricsAddress !== undefined) {
      const bound = yield* MetricsHttp.serve({
        ...options.metricsAddress,
        ready,
        beforeScrape: Effect.all([
          metrics.refreshEntries.pipe(Effect.provide(NetfilterLive.layer())),
          cache === undefined ? Effect.void : metrics.refreshCache(cache),
          Effect.suspend(() => metrics.refreshMemory(process.memoryUsage()))
        ])
      }).pipe(Effect.mapError((e) => failed(NAME, `not started: ${e.msg}`)))
      yield* Effect.logInfo("agent metrics listening", { host: bound.host, port: bound.port })
    }

    if (options.tenants !== undefined) {
      yield* keepNodeSetupConverged({ file: options.tenants }).pipe(
        Effect.provide(RoutingIproute2.layer().pipe(Layer.provideMerge(NodeServices.layer)))
      )
    }

    const handle = metrics.instrumentCalls(
      yield* makeCallHandler(
        {
          shared: Layer.mergeAll(
            DelegateExec.layer,
            NodeLockSocket.layer(),
            AttachmentStoreFiles.layer,
            annotations,
            NetfilterLive.layer()
          )
        },
        loggingFor
      )
    )
    yield* AgentServer.serve({ path: options.socket }, (env, stdin) =>
      Effect.map(handle(env, stdin), (out) => ({ exit: out.exitCode, stdout: out.stdout }))
    ).pipe(Effect.mapError((e) => failed(NAME, `not started: ${e.msg}`)))
    serving = true
    yield* Metric.update(metrics.ready, 1)
    // The heap cap the executable started with (scripts/build.ts, HEAP_FLAGS): an operator who raised
    // it reads here that it took effect.
    const heapLimitMiB = Math.round(getHeapStatistics().heap_size_limit / 2 ** 20)
    yield* Effect.logInfo("agent ready", { socket: options.socket, pid: process.pid, heapLimitMiB })
    const signal = yield* stopSignal
    serving = false
    yield* Effect.logInfo("agent stopping", { signal })
  })

/** Runs the agent until SIGTERM or SIGINT (the `agent` subcommand's body). */
export const runAgent = (options: AgentOptions): Effect.Effect<void, CliExit> =>
  Effect.gen(function* () {
    // stdout carries nothing of ours; a stray library print must not pretend otherwise.
    const toStderr = (...args: Array<unknown>) => {
      process.stderr.write(`${format(...args)}\n`)
    }
    console.log = toStderr
    console.info = toStderr
    console.debug = toStderr
    yield* Effect.scoped(agent(options)).pipe(
      Effect.catchDefect((defect) =>
        Effect.fail(
          failed(
            NAME,
            `unexpected failure, please report it: ${defect instanceof Error ? defect.message : String(defect)}`
          )
        )
      ),
      Effect.andThen(Effect.logInfo("agent stopped", { socket: options.socket })),
      Effect.andThen(exitSoon),
      Effect.provide(stderrLogging)
    )
  })
