/**
 * A small, real HTTPS Kubernetes API server for tests and the demo.
 *
 * It serves what the plugin and the agent's watch cache use — `GET` of a v1 Pod, Namespace or Node, and
 * LIST and WATCH of those collections — with the REST paths, JSON shapes, `v1 Status` error bodies and
 * authentication (bearer token or client certificate) of a real kube-apiserver, so the plugin's code is
 * exercised through the unmodified `@kubernetes/client-node` and a kubeconfig written the way kubeadm or a
 * ServiceAccount would. A throwaway CA, server certificate and client certificate are generated with the
 * `openssl` CLI into a temporary directory removed by `close()`. Tests can deny a resource (RBAC), inject
 * faults (error status, delay, connection reset), end or expire open watches, and read the log of every
 * request to assert which calls were, or were not, made.
 *
 * LIST and WATCH follow the API conventions ("Efficient detection of changes", "Resource versions"):
 * - every write takes the next `resourceVersion` from one cluster-wide counter; a list carries the
 *   counter in `metadata.resourceVersion`; a deletion is an event with a version of its own.
 * - `?watch=true` answers 200 with a chunked stream of JSON lines `{"type","object"}`. Without a
 *   `resourceVersion` (or with "0") it starts with a synthetic ADDED per current object; with `N` it
 *   replays every change after N, then streams live ones. When N is older than the retained history
 *   (after `compact()`, or past `historyLimit` changes) the watch is refused with `410 Gone`
 *   (`reason: Expired`), by default the way kube-apiserver's watch cache does it — status 200 and one
 *   ERROR event carrying the 410 Status, then the end of the stream — or as an HTTP 410 status
 *   (`setExpiredAs("status")`); clients must handle both.
 * - `fieldSelector` supports `metadata.name`, `metadata.namespace` (pods) and `spec.nodeName` (pods)
 *   with `=`, `==` and `!=`; any other field is `400 BadRequest` ("field label not supported"), as
 *   for a real server. An object that starts or stops matching a watch's selector arrives as ADDED or
 *   DELETED on that watch. `labelSelector` is refused (400): nothing here needs labels.
 * - `limit` is ignored (a server may return the whole list, without `continue`); `timeoutSeconds`
 *   ends a watch after that long; bookmarks are not sent (they are best effort).
 */
import { execFileSync } from "node:child_process"
import { randomBytes, randomUUID } from "node:crypto"
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import type { IncomingMessage, ServerResponse } from "node:http"
import { createServer } from "node:https"
import { isIP, type Socket } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { TLSSocket } from "node:tls"

export type Resource = "pods" | "namespaces" | "nodes"
export type Annotations = Readonly<Record<string, string>>
/** The RBAC verb a request needs: `get` one object, `list` or `watch` a collection. */
export type Verb = "get" | "list" | "watch"

/** Which credential a request authenticated with ("invalid": a bearer token that is not the server's). */
export type AuthUsed = "token" | "cert" | "none" | "invalid"

export interface RecordedRequest {
  readonly method: string
  /** The URL path without its query string, e.g. `/api/v1/namespaces/ns1/pods/p1`. */
  readonly path: string
  readonly auth: AuthUsed
  /** The query string without `?` (e.g. `watch=true&resourceVersion=1004`); absent when there is none. */
  readonly query?: string
}

/** A fault applies to the next `times` matching requests (default: until replaced or cleared). */
export type Fault = (
  | { readonly kind: "status"; readonly code: number }
  | { readonly kind: "delay"; readonly ms: number }
  | { readonly kind: "reset" }
) & { readonly resource?: Resource; readonly verb?: Verb; readonly times?: number }

/** Per resource: every verb forbidden (`true`), none (`false`), or just the verbs listed. */
export type Forbid = Partial<Record<Resource, boolean | ReadonlyArray<Verb>>>

export interface KubeState {
  /** `nodeName` (the node the pod is bound to) defaults to `n1`. */
  readonly pods?: ReadonlyArray<{
    namespace: string
    name: string
    annotations?: Annotations
    nodeName?: string
  }>
  readonly namespaces?: ReadonlyArray<{ name: string; annotations?: Annotations }>
  readonly nodes?: ReadonlyArray<{ name: string; podCIDRs: ReadonlyArray<string> }>
}

export interface KubeApiServerOptions extends KubeState {
  /** Address to bind (default 127.0.0.1); it is added to the server certificate's SANs. */
  readonly host?: string
  /** 0 (default) picks an ephemeral port. */
  readonly port?: number
  /** Resources (or some verbs on them) the caller may not use (403 Forbidden). */
  readonly forbid?: Forbid
  /** Common name of the client certificate, i.e. the user it authenticates as (default `system:node:n1`). */
  readonly certUser?: string
  /** The user a valid bearer token authenticates as (default a ServiceAccount). */
  readonly tokenUser?: string
  /** Called for every request as it arrives (the CLI logs them). */
  readonly onRequest?: (request: RecordedRequest) => void
  /** How many changes the watch history keeps before the oldest are compacted away (default 10000). */
  readonly historyLimit?: number
}

export interface KubeconfigOptions {
  /** `token` (default; like a ServiceAccount kubeconfig) or `cert` (like kubeadm's kubelet.conf). */
  readonly auth?: "token" | "cert"
  /** `certificate-authority-data` (default) or `certificate-authority: <file>` (the server's `caFile`). */
  readonly inlineCa?: boolean
  /** Write the token to this file (mode 0600) and reference it with `token-file` instead of `token`. */
  readonly tokenFile?: string
  /** Use this token instead of the server's (e.g. a wrong one). */
  readonly token?: string
  /** Use this server URL instead of the server's own (e.g. a closed port). */
  readonly server?: string
  readonly user?: string
  readonly context?: string
  readonly cluster?: string
}

export interface KubeApiServer {
  /** `https://HOST:PORT`, no trailing slash. */
  readonly url: string
  readonly port: number
  readonly caPem: string
  /** Path of a copy of `caPem`, valid until `close()`. */
  readonly caFile: string
  readonly token: string
  readonly clientCertPem: string
  readonly clientKeyPem: string
  /** Every request received, in order; `requests.length = 0` clears it. */
  readonly requests: Array<RecordedRequest>
  writeKubeconfig(path: string, options?: KubeconfigOptions): void
  /** Creates or replaces a pod, bound to `nodeName` (default `n1`). */
  setPod(namespace: string, name: string, annotations?: Annotations, nodeName?: string): void
  deletePod(namespace: string, name: string): void
  setNamespace(name: string, annotations?: Annotations): void
  deleteNamespace(name: string): void
  setNode(name: string, podCIDRs: ReadonlyArray<string>): void
  /** Replaces all pods, namespaces and nodes (as writes: watchers see the deletions and changes). */
  load(state: KubeState): void
  setForbid(resource: Resource, forbidden: boolean | ReadonlyArray<Verb>): void
  /** Replaces the current fault; `undefined` clears it. */
  setFault(fault: Fault | undefined): void
  /** The cluster-wide resourceVersion: that of the latest write. */
  resourceVersion(): number
  /** Open watch streams (of one resource, or all). */
  watchCount(resource?: Resource): number
  /** Ends every open watch stream (of one resource, or all) cleanly, as an API server's timeout does. */
  closeWatches(resource?: Resource): void
  /** Forgets the change history: a watch from any version before now is refused with 410 Gone. */
  compact(): void
  /**
   * `compact()`, then sends every open watch (of one resource, or all) an ERROR event with a 410 Status
   * and ends it, as a server does to a watcher that fell too far behind: the client must list again.
   */
  expireWatches(resource?: Resource): void
  /** How a watch from a compacted version is refused: an ERROR event in a 200 stream (default) or HTTP 410. */
  setExpiredAs(how: "event" | "status"): void
  /** Stops listening, drops every open connection (also delayed requests) and removes the temp dir. */
  close(): Promise<void>
}

type Fields = {
  name: string
  namespace?: string
  annotations?: Annotations
  podCIDRs?: ReadonlyArray<string>
  nodeName?: string
}
type Stored = Fields & { uid: string; rv: number; created: string }

type EventType = "ADDED" | "MODIFIED" | "DELETED"

/** One write, as the watch history keeps it: the object after it (before it, for a deletion). */
interface Change {
  readonly rv: number
  readonly resource: Resource
  readonly type: EventType
  readonly object: Stored
  readonly previous: Stored | undefined
}

/** An open watch stream. */
interface Watcher {
  readonly resource: Resource
  /** Sends the change's event, if the watch's path and selector see it. */
  readonly offer: (change: Change) => void
  /** Sends an ERROR event with a 410 Status, then ends the stream. */
  readonly expire: () => void
  readonly end: () => void
}

/** One requirement of a field selector: `field=value`, `field==value` or `field!=value`. */
interface Requirement {
  readonly field: string
  readonly value: string
  readonly equal: boolean
}

/** The fields a real API server lets each resource be selected by (of those this server stores). */
const selectable: Record<Resource, ReadonlyArray<string>> = {
  pods: ["metadata.name", "metadata.namespace", "spec.nodeName"],
  namespaces: ["metadata.name"],
  nodes: ["metadata.name"]
}

const fieldOf = (o: Stored, field: string): string => {
  switch (field) {
    case "metadata.name":
      return o.name
    case "metadata.namespace":
      return o.namespace ?? ""
    case "spec.nodeName":
      return o.nodeName ?? ""
    default:
      return ""
  }
}

/** Parses a field selector; a string names the first unsupported field label or a malformed term. */
const parseSelector = (resource: Resource, text: string): ReadonlyArray<Requirement> | string => {
  const requirements: Array<Requirement> = []
  for (const term of text.split(",")) {
    if (term === "") continue
    const m = /^([^=!]+)(==|=|!=)(.*)$/.exec(term)
    if (m === null) return `invalid field selector: ${term}`
    const field = m[1]!.trim()
    if (!selectable[resource].includes(field)) return `field label not supported: ${field}`
    requirements.push({ field, value: m[3]!.trim(), equal: m[2] !== "!=" })
  }
  return requirements
}

const matches = (selector: ReadonlyArray<Requirement>, o: Stored): boolean =>
  selector.every((r) => (fieldOf(o, r.field) === r.value) === r.equal)

const reasons: Record<number, [reason: string, message: string]> = {
  429: ["TooManyRequests", "Too many requests, please try again later."],
  500: ["InternalError", "Internal error occurred: injected fault"],
  503: ["ServiceUnavailable", "the server is currently unable to handle the request"],
  504: ["Timeout", "Timeout: request did not complete within the allotted timeout"]
}

const status = (code: number, reason: string, message: string, details?: object) => ({
  kind: "Status",
  apiVersion: "v1",
  metadata: {},
  status: "Failure",
  message,
  reason,
  ...(details === undefined ? {} : { details }),
  code
})

const openssl = (dir: string, args: ReadonlyArray<string>) =>
  execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"] })

/** Generates a CA, a server certificate for `sans` and a client certificate for `clientCn` in `dir`. */
const makeCertificates = (dir: string, sans: ReadonlyArray<string>, clientCn: string) => {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-config", "req.cnf"]
  writeFileSync(
    join(dir, "req.cnf"),
    "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n" +
      "[ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign,digitalSignature\n"
  )
  const ca = ["-subj", "/CN=tenant-routing-test-ca", "-keyout", "ca.key", "-out", "ca.crt"]
  openssl(dir, ["req", "-x509", ...ec, "-extensions", "ca", "-days", "2", ...ca])
  const leaf = (name: string, subject: string, extensions: string) => {
    writeFileSync(join(dir, `${name}.ext`), `keyUsage = critical,digitalSignature\n${extensions}`)
    openssl(dir, ["req", "-new", ...ec, "-subj", subject, "-keyout", `${name}.key`, "-out", `${name}.csr`])
    const serial = `0x${randomBytes(8).toString("hex")}`
    const signer = ["-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", serial, "-days", "2"]
    const files = ["-in", `${name}.csr`, "-extfile", `${name}.ext`, "-out", `${name}.crt`]
    openssl(dir, ["x509", "-req", ...signer, ...files])
  }
  leaf("server", "/CN=kube-apiserver", `extendedKeyUsage = serverAuth\nsubjectAltName = ${sans.join(",")}\n`)
  leaf("client", `/O=system:nodes/CN=${clientCn}`, "extendedKeyUsage = clientAuth\n")
  const read = (file: string) => readFileSync(join(dir, file), "utf8")
  return {
    ca: read("ca.crt"),
    serverCert: read("server.crt"),
    serverKey: read("server.key"),
    clientCert: read("client.crt"),
    clientKey: read("client.key")
  }
}

/** What a path names: one object, or a collection (all pods, or those of one namespace). */
type Target =
  | { readonly resource: Resource; readonly namespace?: string; readonly name: string }
  | { readonly resource: Resource; readonly namespace?: string; readonly name?: undefined }

/** Names are DNS labels/subdomains, so no percent-decoding is needed. */
const route = (path: string): Target | undefined => {
  const pod = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(path)
  if (pod !== null) return { resource: "pods", namespace: pod[1]!, name: pod[2]! }
  const podsIn = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(path)
  if (podsIn !== null) return { resource: "pods", namespace: podsIn[1]! }
  const other = /^\/api\/v1\/(namespaces|nodes)\/([^/]+)$/.exec(path)
  if (other !== null) return { resource: other[1] as "namespaces" | "nodes", name: other[2]! }
  const all = /^\/api\/v1\/(pods|namespaces|nodes)$/.exec(path)
  if (all !== null) return { resource: all[1] as Resource }
  return undefined
}

const kinds: Record<Resource, string> = { pods: "Pod", namespaces: "Namespace", nodes: "Node" }

/** A `resourceVersion` query parameter: absent, or a non-negative integer; anything else is invalid. */
const parseVersion = (value: string | null): number | undefined | "invalid" => {
  if (value === null || value === "") return undefined
  return /^\d+$/.test(value) ? Number(value) : "invalid"
}

const b64 = (text: string) => Buffer.from(text).toString("base64")
/** JSON strings are valid YAML scalars, so every value is quoted that way. */
const q = (value: string) => JSON.stringify(value)

export const startKubeApiServer = async (options: KubeApiServerOptions = {}): Promise<KubeApiServer> => {
  const host = options.host ?? "127.0.0.1"
  const wildcard = host === "0.0.0.0" || host === "::"
  const urlHost = wildcard ? "127.0.0.1" : host
  const sans = new Set(["IP:127.0.0.1", "DNS:localhost"])
  if (!wildcard) sans.add(isIP(host) ? `IP:${host}` : `DNS:${host}`)
  const certUser = options.certUser ?? "system:node:n1"
  const tokenUser = options.tokenUser ?? "system:serviceaccount:kube-system:tenant-routing"
  const dir = mkdtempSync(join(tmpdir(), "kube-api-"))
  let pems: ReturnType<typeof makeCertificates>
  try {
    pems = makeCertificates(dir, [...sans], certUser)
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
  const caFile = join(dir, "ca.crt")
  const token = `trw-test.${randomBytes(24).toString("hex")}`

  const objects = new Map<string, Stored>()
  const keyOf = (resource: Resource, namespace: string | undefined, name: string) =>
    `${resource}/${namespace ?? ""}/${name}`
  let resourceVersion = 1000
  /** Changes after `compactedRv`, oldest first: a watch may start from any version ≥ compactedRv. */
  const history: Array<Change> = []
  let compactedRv = resourceVersion
  const historyLimit = options.historyLimit ?? 10_000
  let expiredAs: "event" | "status" = "event"
  const watchers = new Set<Watcher>()

  const record = (change: Change) => {
    history.push(change)
    while (history.length > historyLimit) compactedRv = history.shift()!.rv
    for (const w of watchers) w.offer(change)
  }
  const put = (resource: Resource, fields: Fields) => {
    const key = keyOf(resource, fields.namespace, fields.name)
    const old = objects.get(key)
    const stored: Stored = {
      ...fields,
      uid: old?.uid ?? randomUUID(),
      rv: ++resourceVersion,
      created: old?.created ?? new Date().toISOString().replace(/\.\d+Z$/, "Z")
    }
    objects.set(key, stored)
    record({ rv: stored.rv, resource, type: old ? "MODIFIED" : "ADDED", object: stored, previous: old })
  }
  const remove = (resource: Resource, namespace: string | undefined, name: string) => {
    const key = keyOf(resource, namespace, name)
    const old = objects.get(key)
    if (old === undefined) return
    objects.delete(key)
    // A deletion is a write: the DELETED event carries the object's last state at a version of its own.
    const rv = ++resourceVersion
    record({ rv, resource, type: "DELETED", object: { ...old, rv }, previous: old })
  }
  const podFields = (p: NonNullable<KubeState["pods"]>[number]): Fields => ({
    namespace: p.namespace,
    name: p.name,
    nodeName: p.nodeName ?? "n1",
    ...(p.annotations === undefined ? {} : { annotations: p.annotations })
  })
  const load = (state: KubeState) => {
    const wanted = new Map<string, [Resource, Fields]>()
    for (const p of state.pods ?? []) wanted.set(keyOf("pods", p.namespace, p.name), ["pods", podFields(p)])
    for (const n of state.namespaces ?? [])
      wanted.set(keyOf("namespaces", undefined, n.name), ["namespaces", n])
    for (const n of state.nodes ?? []) wanted.set(keyOf("nodes", undefined, n.name), ["nodes", n])
    for (const [key, o] of [...objects]) {
      if (!wanted.has(key)) remove(key.split("/")[0] as Resource, o.namespace, o.name)
    }
    for (const [resource, fields] of wanted.values()) put(resource, fields)
  }
  load(options)
  const forbid: Forbid = { ...options.forbid }
  const forbidden = (resource: Resource, verb: Verb) => {
    const f = forbid[resource]
    return f === true || (Array.isArray(f) && f.includes(verb))
  }
  let fault: Fault | undefined
  const requests: Array<RecordedRequest> = []
  const sockets = new Set<Socket>()
  const timers = new Set<NodeJS.Timeout>()

  const render = (resource: Resource, o: Stored, inList = false) => {
    const metadata = {
      name: o.name,
      ...(o.namespace === undefined ? {} : { namespace: o.namespace }),
      uid: o.uid,
      resourceVersion: String(o.rv),
      creationTimestamp: o.created,
      ...(resource === "namespaces" ? { labels: { "kubernetes.io/metadata.name": o.name } } : {}),
      ...(o.annotations === undefined ? {} : { annotations: o.annotations })
    }
    // The items of a list carry no kind and apiVersion: the list's own say what they are.
    const type = inList ? {} : { kind: kinds[resource], apiVersion: "v1" }
    switch (resource) {
      case "pods":
        return {
          ...type,
          metadata,
          spec: {
            containers: [{ name: "app", image: "registry.k8s.io/pause:3.10" }],
            ...(o.nodeName === undefined || o.nodeName === "" ? {} : { nodeName: o.nodeName })
          },
          status: { phase: "Pending" }
        }
      case "namespaces":
        return { ...type, metadata, spec: { finalizers: ["kubernetes"] }, status: { phase: "Active" } }
      case "nodes":
        return {
          ...type,
          metadata,
          spec: { podCIDR: o.podCIDRs?.[0], podCIDRs: o.podCIDRs },
          status: {}
        }
    }
  }

  const expired = (since: number) =>
    status(410, "Expired", `too old resource version: ${since} (${compactedRv})`)

  /** The events a watch sees for one change: its selector turns entering into ADDED, leaving into DELETED. */
  const eventFor = (
    change: Change,
    target: Target,
    selector: ReadonlyArray<Requirement>
  ): { type: EventType; object: Stored } | undefined => {
    if (change.resource !== target.resource) return undefined
    if (target.namespace !== undefined && change.object.namespace !== target.namespace) return undefined
    const was = change.previous !== undefined && matches(selector, change.previous)
    if (change.type === "DELETED") return was ? { type: "DELETED", object: change.object } : undefined
    const is = matches(selector, change.object)
    if (is) return { type: was ? "MODIFIED" : "ADDED", object: change.object }
    return was ? { type: "DELETED", object: change.object } : undefined
  }

  const startWatch = (
    req: IncomingMessage,
    res: ServerResponse,
    target: Target,
    selector: ReadonlyArray<Requirement>,
    since: number | undefined,
    timeoutSeconds: number | undefined
  ) => {
    if (since !== undefined && since !== 0 && since < compactedRv && expiredAs === "status") {
      res.writeHead(410, { "Content-Type": "application/json" })
      return void res.end(JSON.stringify(expired(since)))
    }
    res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked" })
    // As kube-apiserver does: the client learns the watch is open before any event.
    res.flushHeaders()
    const send = (type: string, object: object) => {
      if (!res.destroyed && !res.writableEnded) res.write(`${JSON.stringify({ type, object })}\n`)
    }
    if (since !== undefined && since !== 0 && since < compactedRv) {
      send("ERROR", expired(since))
      return void res.end()
    }
    let timer: NodeJS.Timeout | undefined
    const watcher: Watcher = {
      resource: target.resource,
      offer: (change) => {
        if (since !== undefined && change.rv <= since) return
        const event = eventFor(change, target, selector)
        if (event !== undefined) send(event.type, render(target.resource, event.object))
      },
      expire: () => {
        send("ERROR", expired(since ?? compactedRv))
        watcher.end()
      },
      end: () => {
        watchers.delete(watcher)
        if (timer !== undefined) {
          clearTimeout(timer)
          timers.delete(timer)
        }
        if (!res.writableEnded) res.end()
      }
    }
    if (since === undefined || since === 0) {
      // No version, or "0" ("any"): the current state as synthetic ADDED events, then live changes.
      for (const [key, o] of [...objects].sort(([a], [b]) => (a < b ? -1 : 1))) {
        if (!key.startsWith(`${target.resource}/`)) continue
        if (target.namespace !== undefined && o.namespace !== target.namespace) continue
        if (matches(selector, o)) send("ADDED", render(target.resource, o))
      }
    } else {
      for (const change of history) if (change.rv > since) watcher.offer(change)
    }
    watchers.add(watcher)
    req.once("close", watcher.end)
    res.once("close", watcher.end)
    if (timeoutSeconds !== undefined) {
      timer = setTimeout(watcher.end, timeoutSeconds * 1000)
      timers.add(timer)
    }
  }

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "https://kube-apiserver.invalid")
    const path = url.pathname
    const query = url.search.slice(1)
    const socket = req.socket as TLSSocket
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1]
    const auth: AuthUsed = socket.authorized
      ? "cert"
      : bearer === undefined
        ? "none"
        : bearer === token
          ? "token"
          : "invalid"
    const request: RecordedRequest = {
      method: req.method ?? "",
      path,
      auth,
      ...(query === "" ? {} : { query })
    }
    requests.push(request)
    options.onRequest?.(request)
    const target = route(path)
    const params = url.searchParams
    const watching = params.get("watch") === "true" || params.get("watch") === "1"
    const verb: Verb = target?.name !== undefined ? "get" : watching ? "watch" : "list"
    const reply = (code: number, body: object, headers: Record<string, string> = {}) => {
      if (res.destroyed) return
      res.writeHead(code, { "Content-Type": "application/json", ...headers })
      res.end(JSON.stringify(body))
    }
    const badRequest = (message: string) => reply(400, status(400, "BadRequest", message))
    const respond = () => {
      if (auth !== "cert" && auth !== "token") return reply(401, status(401, "Unauthorized", "Unauthorized"))
      if (req.method !== "GET") {
        return reply(405, status(405, "MethodNotAllowed", "the server does not allow this method"))
      }
      if (target === undefined) {
        return reply(404, status(404, "NotFound", "the server could not find the requested resource"))
      }
      const { resource, namespace, name } = target
      const where = namespace === undefined ? "at the cluster scope" : `in the namespace "${namespace}"`
      const user = auth === "cert" ? certUser : tokenUser
      if (forbidden(resource, verb)) {
        const subject = name === undefined ? resource : `${resource} "${name}"`
        const message = `${subject} is forbidden: User "${user}" cannot ${verb} resource "${resource}" in API group "" ${where}`
        return reply(
          403,
          status(403, "Forbidden", message, { ...(name === undefined ? {} : { name }), kind: resource })
        )
      }
      if (name !== undefined) {
        const object = objects.get(keyOf(resource, namespace, name))
        if (object === undefined) {
          return reply(
            404,
            status(404, "NotFound", `${resource} "${name}" not found`, { name, kind: resource })
          )
        }
        return reply(200, render(resource, object))
      }
      const selector = parseSelector(resource, params.get("fieldSelector") ?? "")
      if (typeof selector === "string") return badRequest(selector)
      if ((params.get("labelSelector") ?? "") !== "") {
        return badRequest("labelSelector is not supported by this test server")
      }
      const version = parseVersion(params.get("resourceVersion"))
      if (version === "invalid")
        return badRequest(`invalid resource version: ${params.get("resourceVersion")}`)
      if (watching) {
        const timeout = params.get("timeoutSeconds")
        const seconds = timeout === null ? undefined : Number(timeout)
        if (seconds !== undefined && !(Number.isInteger(seconds) && seconds >= 0)) {
          return badRequest(`invalid timeoutSeconds: ${timeout}`)
        }
        return startWatch(req, res, target, selector, version, seconds === 0 ? undefined : seconds)
      }
      if (version !== undefined && version > resourceVersion) {
        // A list "not older than" a version this server has not reached yet.
        return reply(
          504,
          status(504, "Timeout", `Too large resource version: ${version}, current: ${resourceVersion}`, {
            causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
            retryAfterSeconds: 1
          })
        )
      }
      const items = [...objects]
        .filter(
          ([key, o]) =>
            key.startsWith(`${resource}/`) && (namespace === undefined || o.namespace === namespace)
        )
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .filter(([, o]) => matches(selector, o))
        .map(([, o]) => render(resource, o, true))
      return reply(200, {
        kind: `${kinds[resource]}List`,
        apiVersion: "v1",
        metadata: { resourceVersion: String(resourceVersion) },
        items
      })
    }

    const f = fault
    if (
      f !== undefined &&
      (f.resource === undefined || f.resource === target?.resource) &&
      (f.verb === undefined || f.verb === verb)
    ) {
      if (f.times !== undefined) fault = f.times <= 1 ? undefined : { ...f, times: f.times - 1 }
      switch (f.kind) {
        case "reset":
          return void socket.destroy()
        case "status": {
          const [reason, message] = reasons[f.code] ?? ["InternalError", `injected status ${f.code}`]
          return reply(f.code, status(f.code, reason, message), f.code === 429 ? { "Retry-After": "1" } : {})
        }
        case "delay": {
          const timer = setTimeout(() => {
            timers.delete(timer)
            respond()
          }, f.ms)
          timers.add(timer)
          return
        }
      }
    }
    respond()
  }

  const server = createServer(
    {
      ca: pems.ca,
      cert: pems.serverCert,
      key: pems.serverKey,
      requestCert: true,
      rejectUnauthorized: false
    },
    handle
  )
  server.on("connection", (socket: Socket) => {
    sockets.add(socket)
    socket.once("close", () => sockets.delete(socket))
  })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject)
      server.listen(options.port ?? 0, host, () => {
        server.off("error", reject)
        resolve()
      })
    })
  } catch (error) {
    rmSync(dir, { recursive: true, force: true })
    throw error
  }
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  const url = `https://${isIP(urlHost) === 6 ? `[${urlHost}]` : urlHost}:${port}`

  return {
    url,
    port,
    caPem: pems.ca,
    caFile,
    token,
    clientCertPem: pems.clientCert,
    clientKeyPem: pems.clientKey,
    requests,
    writeKubeconfig(path, o = {}) {
      const user = o.user ?? (o.auth === "cert" ? certUser : "tenant-routing")
      const cluster = o.cluster ?? "kubernetes"
      const context = o.context ?? `${user}@${cluster}`
      const ca =
        o.inlineCa === false
          ? `certificate-authority: ${q(caFile)}`
          : `certificate-authority-data: ${b64(pems.ca)}`
      let credentials: string
      if (o.auth === "cert") {
        credentials = `client-certificate-data: ${b64(pems.clientCert)}\n    client-key-data: ${b64(pems.clientKey)}`
      } else if (o.tokenFile !== undefined) {
        writeFileSync(o.tokenFile, o.token ?? token, { mode: 0o600 })
        credentials = `token-file: ${q(o.tokenFile)}`
      } else {
        credentials = `token: ${q(o.token ?? token)}`
      }
      const yaml = [
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- cluster:",
        `    ${ca}`,
        `    server: ${q(o.server ?? url)}`,
        `  name: ${q(cluster)}`,
        "contexts:",
        "- context:",
        `    cluster: ${q(cluster)}`,
        `    user: ${q(user)}`,
        `  name: ${q(context)}`,
        `current-context: ${q(context)}`,
        "preferences: {}",
        "users:",
        `- name: ${q(user)}`,
        "  user:",
        `    ${credentials}`,
        ""
      ].join("\n")
      writeFileSync(path, yaml, { mode: 0o600 })
      chmodSync(path, 0o600)
    },
    setPod: (namespace, name, annotations, nodeName) =>
      put(
        "pods",
        podFields({
          namespace,
          name,
          ...(annotations === undefined ? {} : { annotations }),
          ...(nodeName === undefined ? {} : { nodeName })
        })
      ),
    deletePod: (namespace, name) => remove("pods", namespace, name),
    setNamespace: (name, annotations) =>
      put("namespaces", { name, ...(annotations === undefined ? {} : { annotations }) }),
    deleteNamespace: (name) => remove("namespaces", undefined, name),
    setNode: (name, podCIDRs) => put("nodes", { name, podCIDRs }),
    load,
    setForbid: (resource, forbidden) => {
      forbid[resource] = forbidden
    },
    setFault: (f) => {
      fault = f
    },
    resourceVersion: () => resourceVersion,
    watchCount: (resource) =>
      [...watchers].filter((w) => resource === undefined || w.resource === resource).length,
    closeWatches: (resource) => {
      for (const w of [...watchers]) if (resource === undefined || w.resource === resource) w.end()
    },
    compact: () => {
      history.length = 0
      compactedRv = resourceVersion
    },
    expireWatches: (resource) => {
      history.length = 0
      compactedRv = resourceVersion
      for (const w of [...watchers]) if (resource === undefined || w.resource === resource) w.expire()
    },
    setExpiredAs: (how) => {
      expiredAs = how
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer)
        timers.clear()
        server.close(() => {
          rmSync(dir, { recursive: true, force: true })
          resolve()
        })
        for (const socket of sockets) socket.destroy()
      })
  }
}
