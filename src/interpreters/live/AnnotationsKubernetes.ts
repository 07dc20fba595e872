/**
 * The live `AnnotationSource`: reads pods and namespaces from the Kubernetes API with the unmodified
 * `@kubernetes/client-node`, authenticated the way the kubeconfig says (bearer `token`, ServiceAccount
 * style `token-file`, kubeadm-style client certificate files or inline data; CA inline or as a file).
 *
 * What it decides (PRODUCT.md §2, §3):
 * - `connect`: a kubeconfig file that does not exist is TryAgainLater (11) — a DaemonSet may not have
 *   written it yet — and so is a `token-file` it names that does not exist. A file that is not YAML, or
 *   has no current context naming a defined cluster (with an https server) and user, is InvalidConfig (7).
 * - reads: 404 → `undefined`; 403 → ApiForbidden; everything else (401, 5xx, 429, an aborted request,
 *   refused or reset connections, TLS failures, a certificate or CA file that cannot be read, a
 *   malformed response) → ApiUnavailable. A found object without annotations reads as `{}`.
 *
 * Start-up cost: every pod start runs a fresh process, and loading client-node takes most of a second,
 * so the module is imported only inside `connect`, after the kubeconfig is known to exist; calls
 * without a kubeconfig never load it. client-node has no timeout setting: each read passes the fiber's
 * AbortSignal to the request through a per-call middleware, so interrupting the read (the caller's
 * `apiTimeout` deadline) aborts the HTTP request.
 *
 * Secrets: messages are built only from HTTP status codes, the API server's own `Status` text, error
 * codes and file paths — never from raw exception messages (undici quotes invalid header values, i.e.
 * tokens; js-yaml quotes the offending lines) and never from kubeconfig content.
 */
import { statSync } from "node:fs"
import type * as K8s from "@kubernetes/client-node"
import { Data, Effect, Layer, Option, Schema } from "effect"
import {
  type AnnotationReader,
  AnnotationSource,
  type Annotations,
  ApiForbidden,
  ApiUnavailable
} from "../../domain/AnnotationSource.ts"
import { InvalidConfig, TryAgainLater } from "../../domain/Errors.ts"

type Client = typeof K8s

/** The one place the client library is loaded; a failure is a broken installation, hence a defect. */
const loadClient: Effect.Effect<Client> = Effect.promise(() => import("@kubernetes/client-node"))

/** Internal marker for 404, turned into `undefined` before it leaves the reader. */
class NotFound extends Data.TaggedError("NotFound")<{}> {}

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

/** The current context must name a defined cluster with a usable server URL, and a defined user. */
const checkCurrentContext = (kc: K8s.KubeConfig, kubeconfig: string): Effect.Effect<void, InvalidConfig> => {
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
    (server.protocol === "https:" || (server.protocol === "http:" && cluster.skipTLSVerify))
  return usable
    ? Effect.void
    : Effect.fail(invalid(kubeconfig, `cluster ${JSON.stringify(cluster.name)}: server is not an https URL`))
}

/** A kube-apiserver error body (`v1 Status`); only its reason and message are shown. */
const decodeStatus = Schema.decodeUnknownOption(
  Schema.fromJsonString(
    Schema.Struct({ reason: Schema.optionalKey(Schema.String), message: Schema.optionalKey(Schema.String) })
  )
)
const decodeAnnotations = Schema.decodeUnknownOption(Schema.Record(Schema.String, Schema.String))

const MAX_STATUS_CHARS = 300

const httpFailure = (code: number, body: unknown): string => {
  const status = typeof body === "string" ? Option.getOrUndefined(decodeStatus(body)) : undefined
  const text = [status?.reason, status?.message].filter((s) => s !== undefined && s !== "").join(": ")
  const shown = text.length > MAX_STATUS_CHARS ? `${text.slice(0, MAX_STATUS_CHARS)}…` : text
  // client-node drops the body of a 401 (wrong or expired credentials), so name it ourselves.
  if (shown === "") return code === 401 ? "HTTP 401 Unauthorized" : `HTTP ${code}`
  return `HTTP ${code} ${shown}`
}

/** Maps whatever a read rejected with to the reader's vocabulary (see the file comment). */
const classify = (client: Client, error: unknown): NotFound | ApiForbidden | ApiUnavailable => {
  // Before any `.code`: a DOMException (abort, timeout) has a numeric `code` too.
  if (error instanceof client.ApiException) {
    const code = (error as K8s.ApiException<unknown>).code
    if (code === 404) return new NotFound()
    const msg = httpFailure(code, (error as K8s.ApiException<unknown>).body)
    return code === 403 ? new ApiForbidden({ msg }) : new ApiUnavailable({ msg })
  }
  if (error instanceof DOMException) {
    return new ApiUnavailable({ msg: `request aborted (${error.name})` })
  }
  if (error instanceof TypeError && error.message === "fetch failed") {
    // undici's transport failures: the cause carries the code (ECONNREFUSED, UND_ERR_SOCKET, TLS codes).
    const cause = errnoOf(error.cause)?.code
    return new ApiUnavailable({
      msg: `cannot reach the API server${cause === undefined ? "" : ` (${cause})`}`
    })
  }
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

/** Per-call options that hand `signal` to the request; "append" keeps the client's own middleware. */
const withSignal = (client: Client, signal: AbortSignal): K8s.ConfigurationOptions => ({
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
})

type Read = (options: K8s.ConfigurationOptions) => Promise<{ metadata?: { annotations?: unknown } }>

const makeReader = (client: Client, api: K8s.CoreV1Api): AnnotationReader => {
  const read = (call: Read): Effect.Effect<Annotations | undefined, ApiUnavailable | ApiForbidden> =>
    Effect.tryPromise({
      try: (signal) => call(withSignal(client, signal)),
      catch: (error) => classify(client, error)
    }).pipe(
      Effect.flatMap((object) =>
        Option.match(decodeAnnotations(object.metadata?.annotations ?? {}), {
          onNone: () => Effect.fail(new ApiUnavailable({ msg: "malformed annotations in the response" })),
          onSome: (annotations) => Effect.succeed<Annotations | undefined>(annotations)
        })
      ),
      Effect.catchTag("NotFound", () => Effect.succeed(undefined))
    )
  return {
    pod: (namespace, name) => read((options) => api.readNamespacedPod({ namespace, name }, options)),
    namespace: (name) => read((options) => api.readNamespace({ name }, options))
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
  const client = yield* loadClient
  const kc = new client.KubeConfig()
  // Reads the file and any `token-file` once; CA and client certificate files are read per request.
  yield* Effect.try({
    try: () => kc.loadFromFile(kubeconfig),
    catch: (error) => loadFailure(kubeconfig, error)
  })
  yield* checkCurrentContext(kc, kubeconfig)
  const api = yield* Effect.try({
    try: () => kc.makeApiClient(client.CoreV1Api),
    catch: (error) => loadFailure(kubeconfig, error)
  })
  return makeReader(client, api)
})

export const AnnotationsKubernetes: { readonly layer: Layer.Layer<AnnotationSource> } = {
  layer: Layer.succeed(AnnotationSource, AnnotationSource.of({ connect }))
}
