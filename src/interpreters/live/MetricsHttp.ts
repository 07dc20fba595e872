/**
 * The agent's HTTP endpoints (`--metrics-address HOST:PORT`, docs/DESIGN.md §8), on plain `node:http`:
 * three fixed paths need no router, and nothing else is loaded.
 *
 * - `GET /metrics`: every Effect metric of the agent in the Prometheus text format, rendered by
 *   Effect's own formatter (`PrometheusMetrics.format`) from the registry of the context the server
 *   was started in. Gauges that are read rather than counted (entries, cache state) are refreshed by
 *   `beforeScrape` first; a refresh that fails or hangs past 5 s leaves them as they were.
 * - `GET /healthz`: 200 while the process serves HTTP at all (liveness).
 * - `GET /readyz`: 200 when `ready()` says so, else 503 (readiness: the socket accepts calls and the
 *   annotation source is usable).
 * Anything else is 404; a method other than GET or HEAD is 405.
 *
 * It binds exactly the address given (a port of 0 picks a free one; the bound one is returned). The
 * scope's end closes the listener and every connection, so a scraper's keep-alive connection cannot
 * hold the process open after SIGTERM.
 */
import * as http from "node:http"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { PrometheusMetrics } from "effect/observability"
import type * as Scope from "effect/Scope"
import { ready as readyGauge } from "../../programs/agentMetrics.ts"

export class MetricsHttpFailed extends Data.TaggedError("MetricsHttpFailed")<{ readonly msg: string }> {}

export interface MetricsHttpOptions {
  readonly host: string
  readonly port: number
  /** Refreshes the gauges that are read, not counted; run before each `/metrics`. */
  readonly beforeScrape: Effect.Effect<void>
  /** What `/readyz` answers. */
  readonly ready: () => boolean
}

export interface MetricsHttpAddress {
  readonly host: string
  readonly port: number
}

/** Text/plain in Prometheus's exposition format version 0.0.4. */
const PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"

export const serve = Effect.fn("MetricsHttp.serve")(function* (
  options: MetricsHttpOptions
): Effect.fn.Return<MetricsHttpAddress, MetricsHttpFailed, Scope.Scope> {
  // Requests arrive outside any fiber: they run in the context the server was started in, so they
  // read the same metric registry the agent's calls update.
  const context = yield* Effect.context<never>()
  const runPromise = Effect.runPromiseWith(context)

  const scrape = Effect.gen(function* () {
    yield* options.beforeScrape.pipe(Effect.timeoutOption("5 seconds"), Effect.ignore)
    yield* Metric.update(readyGauge, options.ready() ? 1 : 0)
    return yield* PrometheusMetrics.format()
  })

  const answer = (res: http.ServerResponse, status: number, type: string, body: string) => {
    res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body) })
    res.end(res.req.method === "HEAD" ? undefined : body)
  }

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0]
    if (req.method !== "GET" && req.method !== "HEAD") return answer(res, 405, "text/plain", "GET only\n")
    switch (path) {
      case "/healthz":
        return answer(res, 200, "text/plain", "ok\n")
      case "/readyz":
        return options.ready()
          ? answer(res, 200, "text/plain", "ready\n")
          : answer(res, 503, "text/plain", "not ready\n")
      case "/metrics":
        return void runPromise(scrape).then(
          (text) => answer(res, 200, PROMETHEUS_TYPE, text),
          () => answer(res, 500, "text/plain", "metrics unavailable\n")
        )
      default:
        return answer(res, 404, "text/plain", "not found: /metrics, /healthz, /readyz\n")
    }
  }

  const server = yield* Effect.acquireRelease(
    Effect.callback<http.Server, MetricsHttpFailed>((resume) => {
      const server = http.createServer(onRequest)
      server.once("error", (e) => {
        server.close()
        resume(
          Effect.fail(
            new MetricsHttpFailed({ msg: `cannot listen on ${options.host}:${options.port}: ${e.message}` })
          )
        )
      })
      server.listen({ host: options.host, port: options.port }, () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.sync(() => {
        server.close()
        server.closeAllConnections()
      })
  )
  const bound = server.address()
  return typeof bound === "object" && bound !== null
    ? { host: bound.address, port: bound.port }
    : { host: options.host, port: options.port }
})
