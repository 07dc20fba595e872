/**
 * The live `AnnotationSource`: reads pods and namespaces from the Kubernetes API, authenticated the
 * way the kubeconfig says (bearer `token`, ServiceAccount style `token-file`, kubeadm-style client
 * certificate files or inline data; CA inline or as a file). The kubeconfig is loaded and interpreted
 * by the unmodified `KubeConfig` of `@kubernetes/client-node`; the two GETs are made with `node:https`.
 *
 * What it decides (docs/DESIGN.md §2, §3):
 * - `connect`: a kubeconfig file that does not exist is TryAgainLater (11) — a DaemonSet may not have
 *   written it yet — and so is a `token-file` it names that does not exist. A file that is not YAML, or
 *   has no current context naming a defined cluster (with an https server) and user, is InvalidConfig (7).
 * - reads: 404 → `undefined`; 403 → ApiForbidden; everything else (401, 5xx, 429, an aborted request,
 *   refused or reset connections, TLS failures, a certificate or CA file that cannot be read, a
 *   malformed response) → ApiUnavailable. A found object without annotations reads as `{}`.
 *
 * Start-up cost: every pod start runs a fresh process, and most of what a call with a kubeconfig used
 * to spend was loading client-node (its index drags in 3 MB of generated API models and undici) and
 * making a TLS connection per read. So:
 * - only `KubeConfig` is loaded (`@kubernetes/client-node/dist/config.js`; the package has no
 *   "exports" map, so the deep import is allowed), and only inside `connect`, after the kubeconfig is
 *   known to exist; calls without a kubeconfig never load it. The executable ships it as a SEA asset of
 *   its own, with a V8 code cache (scripts/build.ts).
 * - each read asks `kc.applyToHTTPSOptions` for the TLS options and headers (as client-node does per
 *   request: CA and client certificate files are read then), and sends a plain `GET` through ONE
 *   keep-alive agent per reader, limited to one socket: the pod and namespace reads of a call share one
 *   TLS handshake instead of making two, and a reconnect resumes the TLS session. (A cluster with a
 *   `proxy-url` uses client-node's own proxy agent instead.)
 * - only `metadata.annotations` of the response is decoded.
 * Interrupting a read (the caller's `apiTimeout` deadline) aborts its HTTP request through the fiber's
 * AbortSignal, which destroys the socket.
 *
 * Secrets: messages are built only from HTTP status codes, the API server's own `Status` text, error
 * codes and file paths — never from raw exception messages (js-yaml quotes the offending lines; Node
 * quotes host names and header names) and never from kubeconfig content.
 */
import { statSync } from "node:fs"
import type * as Http from "node:http"
import type * as Https from "node:https"
import type { KubeConfig } from "@kubernetes/client-node/dist/config.js"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { InvalidConfig, TryAgainLater } from "../../domain/cni/Errors.ts"
import {
  type AnnotationReader,
  AnnotationSource,
  type Annotations,
  ApiForbidden,
  ApiUnavailable
} from "../../domain/tenancy/AnnotationSource.ts"

type ConfigModule = typeof import("@kubernetes/client-node/dist/config.js")

/** The one place the client library is loaded; a failure is a broken installation, hence a defect. */
const loadConfigModule: Effect.Effect<ConfigModule> = Effect.promise(
  () => import("@kubernetes/client-node/dist/config.js")
)

/**
 * `node:http(s)` are fetched when a reader is made, not imported: this module is evaluated while the
 * executable's start-up snapshot is built, and the HTTP parser binding cannot be in a snapshot.
 */
const httpModules = (): { readonly http: typeof Http; readonly https: typeof Https } => ({
  http: process.getBuiltinModule("node:http"),
  https: process.getBuiltinModule("node:https")
})

const invalid = (kubeconfig: string, message: string) =>
  new InvalidConfig({
    msg: `kubeconfig ${kubeconfig}: ${message}`,
    issues: [{ path: "kubeconfig", message }]
  })

/** A `node:fs` style error: `code` (ENOENT, EACCES, ...) and the `path` it concerns. */
const errnoOf = (error: unknown): { readonly code: string; readonly path?: string } | undefined => {
  if (typeof error !== "object" || error === null) return undefined
  const { code, path } = error as { code?: unknown; path?: unknown }
  if (typeof code !== "string") return undefined
  return typeof path === "string" ? { code, path } : { code }
}

/** client-node's own validation messages name only list positions and entry names. */
const safeConfigMessage =
  /^(?:(?:clusters|users|contexts)\[\d+\]\.[\w.]+ is missing|Duplicate (?:cluster|user|context): .{0,253})$/

/** Why `KubeConfig.loadFromFile` threw, without quoting the file. */
const loadFailure = (kubeconfig: string, error: unknown): InvalidConfig | TryAgainLater => {
  const errno = errnoOf(error)
  if (errno?.code === "ENOENT" || errno?.code === "ENOTDIR") {
    // The kubeconfig itself (removed since we looked) or a `token-file` it names: not there *yet*.
    return errno.path === undefined || errno.path === kubeconfig
      ? new TryAgainLater({ msg: `kubeconfig ${kubeconfig} not found` })
      : new TryAgainLater({ msg: `kubeconfig ${kubeconfig}: ${errno.path} not found` })
  }
  if (errno !== undefined) {
    return invalid(kubeconfig, `cannot read ${errno.path ?? "it"} (${errno.code})`)
  }
  if (error instanceof Error && error.name === "YAMLException") {
    const { reason, mark } = error as Error & {
      reason?: unknown
      mark?: { line?: unknown; column?: unknown }
    }
    const where =
      typeof mark?.line === "number" && typeof mark.column === "number"
        ? ` at line ${mark.line + 1}, column ${mark.column + 1}`
        : ""
    return invalid(
      kubeconfig,
      `not valid YAML (${typeof reason === "string" ? reason : "syntax error"}${where})`
    )
  }
  if (error instanceof TypeError) {
    // `yaml.load` of an empty file or of `null` gives no object to read `clusters` from.
    return invalid(kubeconfig, "not a kubeconfig (the document is empty or not a mapping)")
  }
  if (error instanceof Error && safeConfigMessage.test(error.message)) {
    return invalid(kubeconfig, error.message)
  }
  return invalid(kubeconfig, "cannot be loaded")
}

/** Where requests go: the cluster's server URL, which may carry a path prefix (e.g. a proxying gateway). */
interface Server {
  readonly secure: boolean
  readonly hostname: string
  readonly port: number | undefined
  readonly pathPrefix: string
  /** client-node's proxy agent is used instead of ours. */
  readonly proxied: boolean
}

/** The current context must name a defined cluster with a usable server URL, and a defined user. */
const checkCurrentContext = (kc: KubeConfig, kubeconfig: string): Effect.Effect<Server, InvalidConfig> => {
  const name = kc.getCurrentContext()
  if (typeof name !== "string" || name === "") return Effect.fail(invalid(kubeconfig, "no current-context"))
  const context = kc.getContextObject(name)
  if (context === null) {
    return Effect.fail(invalid(kubeconfig, `current-context ${JSON.stringify(name)} is not defined`))
  }
  const cluster = kc.getCurrentCluster()
  if (cluster === null) {
    return Effect.fail(
      invalid(
        kubeconfig,
        `context ${JSON.stringify(name)}: cluster ${JSON.stringify(context.cluster)} is not defined`
      )
    )
  }
  if (typeof context.user !== "string" || context.user === "") {
    return Effect.fail(invalid(kubeconfig, `context ${JSON.stringify(name)} names no user`))
  }
  if (kc.getCurrentUser() === null) {
    return Effect.fail(
      invalid(
        kubeconfig,
        `context ${JSON.stringify(name)}: user ${JSON.stringify(context.user)} is not defined`
      )
    )
  }
  // The server URL is not quoted: it may carry credentials (`https://user:password@host`).
  const server = URL.parse(cluster.server)
  const usable =
    server !== null &&
    server.hostname !== "" &&
    (server.protocol === "https:" || (server.protocol === "http:" && cluster.skipTLSVerify))
  if (!usable) {
    return Effect.fail(
      invalid(kubeconfig, `cluster ${JSON.stringify(cluster.name)}: server is not an https URL`)
    )
  }
  return Effect.succeed({
    secure: server.protocol === "https:",
    // `[::1]` → `::1`: node:http wants the bare address.
    hostname: server.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: server.port === "" ? undefined : Number(server.port),
    pathPrefix: server.pathname.replace(/\/+$/, ""),
    proxied: typeof cluster.proxyUrl === "string" && cluster.proxyUrl !== ""
  })
}

/** A kube-apiserver error body (`v1 Status`); only its reason and message are shown. */
const decodeStatus = Schema.decodeUnknownOption(
  Schema.fromJsonString(
    Schema.Struct({ reason: Schema.optionalKey(Schema.String), message: Schema.optionalKey(Schema.String) })
  )
)

/** Of a Pod or Namespace only `metadata.annotations` is decoded; everything else is ignored. */
const decodeObject = Schema.decodeUnknownOption(
  Schema.fromJsonString(
    Schema.Struct({
      metadata: Schema.optionalKey(
        Schema.Struct({
          annotations: Schema.optionalKey(Schema.NullOr(Schema.Record(Schema.String, Schema.String)))
        })
      )
    })
  )
)

const MAX_STATUS_CHARS = 300
/** Far above any object the API server stores (etcd's limit is 1.5 MiB). */
const MAX_BODY_BYTES = 8 * 1024 * 1024

const httpFailure = (code: number, body: string): string => {
  // A 401 says nothing but "Unauthorized" (wrong or expired credentials): name it ourselves.
  if (code === 401) return "HTTP 401 Unauthorized"
  const status = Option.getOrUndefined(decodeStatus(body))
  const text = [status?.reason, status?.message].filter((s) => s !== undefined && s !== "").join(": ")
  const shown = text.length > MAX_STATUS_CHARS ? `${text.slice(0, MAX_STATUS_CHARS)}…` : text
  return shown === "" ? `HTTP ${code}` : `HTTP ${code} ${shown}`
}

/** Why preparing a request (reading CA and certificate files, running an auth plugin) failed. */
const prepareFailure = (error: unknown): ApiUnavailable => {
  const errno = errnoOf(error)
  if (errno !== undefined) {
    // e.g. a `certificate-authority` or `client-certificate` file, read per request, is missing.
    return new ApiUnavailable({
      msg:
        errno.path === undefined
          ? `request failed (${errno.code})`
          : `cannot read ${errno.path} (${errno.code})`
    })
  }
  return new ApiUnavailable({ msg: `request failed (${error instanceof Error ? error.name : typeof error})` })
}

/** Why the request itself failed: only the error's code (ECONNREFUSED, ECONNRESET, TLS codes) is shown. */
const transportFailure = (error: unknown): ApiUnavailable => {
  if (error instanceof Error && error.name === "AbortError") {
    return new ApiUnavailable({ msg: "request aborted (AbortError)" })
  }
  const code = errnoOf(error)?.code
  return new ApiUnavailable({ msg: `cannot reach the API server${code === undefined ? "" : ` (${code})`}` })
}

interface Response {
  readonly status: number
  readonly body: string
}

/** A failure that is not the transport's: a response larger than MAX_BODY_BYTES, or a request Node refused to make. */
class RequestFailed extends Error {
  readonly reason: string
  constructor(reason: string) {
    super(reason)
    this.reason = reason
  }
}

/** One GET; resolves with the status and body text, rejects with the transport's error. */
const get = (
  client: typeof Http | typeof Https,
  options: Https.RequestOptions,
  signal: AbortSignal
): Promise<Response> =>
  new Promise((resolve, reject) => {
    let request: Http.ClientRequest
    try {
      request = client.request({ ...options, method: "GET", signal }, (response) => {
        const chunks: Array<Buffer> = []
        let size = 0
        response.on("data", (chunk: Buffer) => {
          size += chunk.length
          if (size > MAX_BODY_BYTES) {
            reject(new RequestFailed("response too large"))
            request.destroy()
            return
          }
          chunks.push(chunk)
        })
        response.on("error", reject)
        response.on("close", () => {
          if (!response.complete)
            reject(Object.assign(new Error("response cut short"), { code: "ECONNRESET" }))
        })
        response.on("end", () =>
          resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") })
        )
      })
    } catch (error) {
      // Invalid options, e.g. a header value with a newline (a `token-file` ending in one): only the code.
      const code = errnoOf(error)?.code
      reject(
        new RequestFailed(`request failed (${code ?? (error instanceof Error ? error.name : "unknown")})`)
      )
      return
    }
    request.on("error", reject)
    request.end()
  })

/** What a response means to the reader: 404 is `undefined`, 403 ApiForbidden, other non-2xx ApiUnavailable. */
const interpret = (
  response: Response
): Effect.Effect<Annotations | undefined, ApiForbidden | ApiUnavailable> => {
  const { status, body } = response
  if (status === 404) return Effect.succeed(undefined)
  if (status === 403) return Effect.fail(new ApiForbidden({ msg: httpFailure(status, body) }))
  if (status < 200 || status > 299) return Effect.fail(new ApiUnavailable({ msg: httpFailure(status, body) }))
  return Option.match(decodeObject(body), {
    onNone: () => Effect.fail(new ApiUnavailable({ msg: "malformed object in the response" })),
    onSome: (object) => Effect.succeed<Annotations | undefined>(object.metadata?.annotations ?? {})
  })
}

const makeReader = (kc: KubeConfig, server: Server): AnnotationReader => {
  const { http, https } = httpModules()
  const client = server.secure ? https : http
  // One socket, kept alive: the concurrent pod and namespace reads queue for it, so a call makes one
  // TLS handshake. Idle sockets are unref'd by the agent and never hold the process open.
  const agent = new client.Agent({ keepAlive: true, maxSockets: 1 })
  const read = (path: string): Effect.Effect<Annotations | undefined, ApiUnavailable | ApiForbidden> =>
    Effect.tryPromise({
      // client-node's own per-request preparation: TLS material, Authorization and impersonation headers.
      try: async () => {
        const options: Https.RequestOptions = {}
        await kc.applyToHTTPSOptions(options)
        return options
      },
      catch: prepareFailure
    }).pipe(
      Effect.flatMap((prepared) =>
        Effect.tryPromise({
          try: (signal) =>
            get(
              client,
              {
                ...prepared,
                agent: server.proxied ? prepared.agent : agent,
                hostname: server.hostname,
                ...(server.port === undefined ? {} : { port: server.port }),
                path: `${server.pathPrefix}${path}`,
                headers: {
                  ...prepared.headers,
                  Accept: "application/json",
                  "User-Agent": "tenant-routing-wrapper"
                }
              },
              signal
            ),
          catch: (error) =>
            error instanceof RequestFailed
              ? new ApiUnavailable({ msg: error.reason })
              : transportFailure(error)
        })
      ),
      Effect.flatMap(interpret)
    )
  const segment = encodeURIComponent
  return {
    pod: (namespace, name) => read(`/api/v1/namespaces/${segment(namespace)}/pods/${segment(name)}`),
    namespace: (name) => read(`/api/v1/namespaces/${segment(name)}`)
  }
}

const connect = Effect.fn("AnnotationsKubernetes.connect")(function* (
  kubeconfig: string
): Effect.fn.Return<AnnotationReader, InvalidConfig | TryAgainLater> {
  // Looked at before loading the client, so a missing file costs no import.
  const stat = yield* Effect.try({
    try: () => statSync(kubeconfig, { throwIfNoEntry: false }),
    catch: (error) => loadFailure(kubeconfig, error)
  })
  if (stat === undefined) return yield* new TryAgainLater({ msg: `kubeconfig ${kubeconfig} not found` })
  const { KubeConfig } = yield* loadConfigModule
  const kc = new KubeConfig()
  // Reads the file and any `token-file` once; CA and client certificate files are read per request.
  yield* Effect.try({
    try: () => kc.loadFromFile(kubeconfig),
    catch: (error) => loadFailure(kubeconfig, error)
  })
  const server = yield* checkCurrentContext(kc, kubeconfig)
  return makeReader(kc, server)
})

export const layer = Layer.succeed(AnnotationSource, AnnotationSource.of({ connect }))
