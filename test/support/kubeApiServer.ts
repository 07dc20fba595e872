/**
 * A small, real HTTPS Kubernetes API server for tests and the demo.
 *
 * It serves just what the plugin reads — `GET` of a v1 Pod, Namespace or Node — with the REST paths,
 * JSON shapes, `v1 Status` error bodies and authentication (bearer token or client certificate) of a real
 * kube-apiserver, so the plugin's code is exercised through the unmodified `@kubernetes/client-node` and a
 * kubeconfig written the way kubeadm or a ServiceAccount would. A throwaway CA, server certificate and
 * client certificate are generated with the `openssl` CLI into a temporary directory removed by `close()`.
 * Tests can deny a resource (RBAC), inject faults (error status, delay, connection reset) and read the
 * log of every request to assert which calls were, or were not, made.
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

/** Which credential a request authenticated with ("invalid": a bearer token that is not the server's). */
export type AuthUsed = "token" | "cert" | "none" | "invalid"

export interface RecordedRequest {
  readonly method: string
  /** The URL path without its query string, e.g. `/api/v1/namespaces/ns1/pods/p1`. */
  readonly path: string
  readonly auth: AuthUsed
}

/** A fault applies to the next `times` matching requests (default: until replaced or cleared). */
export type Fault = (
  | { readonly kind: "status"; readonly code: number }
  | { readonly kind: "delay"; readonly ms: number }
  | { readonly kind: "reset" }
) & { readonly resource?: Resource; readonly times?: number }

export interface KubeState {
  readonly pods?: ReadonlyArray<{ namespace: string; name: string; annotations?: Annotations }>
  readonly namespaces?: ReadonlyArray<{ name: string; annotations?: Annotations }>
  readonly nodes?: ReadonlyArray<{ name: string; podCIDRs: ReadonlyArray<string> }>
}

export interface KubeApiServerOptions extends KubeState {
  /** Address to bind (default 127.0.0.1); it is added to the server certificate's SANs. */
  readonly host?: string
  /** 0 (default) picks an ephemeral port. */
  readonly port?: number
  /** Resources the caller may not `get` (403 Forbidden). */
  readonly forbid?: Partial<Record<Resource, boolean>>
  /** Common name of the client certificate, i.e. the user it authenticates as (default `system:node:n1`). */
  readonly certUser?: string
  /** The user a valid bearer token authenticates as (default a ServiceAccount). */
  readonly tokenUser?: string
  /** Called for every request as it arrives (the CLI logs them). */
  readonly onRequest?: (request: RecordedRequest) => void
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
  setPod(namespace: string, name: string, annotations?: Annotations): void
  deletePod(namespace: string, name: string): void
  setNamespace(name: string, annotations?: Annotations): void
  deleteNamespace(name: string): void
  setNode(name: string, podCIDRs: ReadonlyArray<string>): void
  /** Replaces all pods, namespaces and nodes. */
  load(state: KubeState): void
  setForbid(resource: Resource, forbidden: boolean): void
  /** Replaces the current fault; `undefined` clears it. */
  setFault(fault: Fault | undefined): void
  /** Stops listening, drops every open connection (also delayed requests) and removes the temp dir. */
  close(): Promise<void>
}

type Fields = {
  name: string
  namespace?: string
  annotations?: Annotations
  podCIDRs?: ReadonlyArray<string>
}
type Stored = Fields & { uid: string; rv: number; created: string }

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

/** The object a GET path names (names are DNS labels/subdomains, so no percent-decoding is needed). */
const route = (path: string): { resource: Resource; namespace?: string; name: string } | undefined => {
  const pod = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(path)
  if (pod !== null) return { resource: "pods", namespace: pod[1]!, name: pod[2]! }
  const other = /^\/api\/v1\/(namespaces|nodes)\/([^/]+)$/.exec(path)
  if (other !== null) return { resource: other[1] as "namespaces" | "nodes", name: other[2]! }
  return undefined
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
  let resourceVersion = 1000
  const put = (resource: Resource, fields: Fields) => {
    const key = `${resource}/${fields.namespace ?? ""}/${fields.name}`
    const old = objects.get(key)
    objects.set(key, {
      ...fields,
      uid: old?.uid ?? randomUUID(),
      rv: ++resourceVersion,
      created: old?.created ?? new Date().toISOString().replace(/\.\d+Z$/, "Z")
    })
  }
  const load = (state: KubeState) => {
    objects.clear()
    for (const p of state.pods ?? []) put("pods", p)
    for (const n of state.namespaces ?? []) put("namespaces", n)
    for (const n of state.nodes ?? []) put("nodes", n)
  }
  load(options)
  const forbid: Partial<Record<Resource, boolean>> = { ...options.forbid }
  let fault: Fault | undefined
  const requests: Array<RecordedRequest> = []
  const sockets = new Set<Socket>()
  const timers = new Set<NodeJS.Timeout>()

  const render = (resource: Resource, o: Stored) => {
    const metadata = {
      name: o.name,
      ...(o.namespace === undefined ? {} : { namespace: o.namespace }),
      uid: o.uid,
      resourceVersion: String(o.rv),
      creationTimestamp: o.created,
      ...(resource === "namespaces" ? { labels: { "kubernetes.io/metadata.name": o.name } } : {}),
      ...(o.annotations === undefined ? {} : { annotations: o.annotations })
    }
    switch (resource) {
      case "pods":
        return {
          kind: "Pod",
          apiVersion: "v1",
          metadata,
          spec: { containers: [{ name: "app", image: "registry.k8s.io/pause:3.10" }], nodeName: "n1" },
          status: { phase: "Pending" }
        }
      case "namespaces":
        return {
          kind: "Namespace",
          apiVersion: "v1",
          metadata,
          spec: { finalizers: ["kubernetes"] },
          status: { phase: "Active" }
        }
      case "nodes":
        return {
          kind: "Node",
          apiVersion: "v1",
          metadata,
          spec: { podCIDR: o.podCIDRs?.[0], podCIDRs: o.podCIDRs },
          status: {}
        }
    }
  }

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/"
    const socket = req.socket as TLSSocket
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? "")?.[1]
    const auth: AuthUsed = socket.authorized
      ? "cert"
      : bearer === undefined
        ? "none"
        : bearer === token
          ? "token"
          : "invalid"
    const request = { method: req.method ?? "", path, auth }
    requests.push(request)
    options.onRequest?.(request)
    const target = route(path)
    const reply = (code: number, body: object, headers: Record<string, string> = {}) => {
      if (res.destroyed) return
      res.writeHead(code, { "Content-Type": "application/json", ...headers })
      res.end(JSON.stringify(body))
    }
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
      if (forbid[resource]) {
        const message = `${resource} "${name}" is forbidden: User "${user}" cannot get resource "${resource}" in API group "" ${where}`
        return reply(403, status(403, "Forbidden", message, { name, kind: resource }))
      }
      const object = objects.get(`${resource}/${namespace ?? ""}/${name}`)
      if (object === undefined) {
        return reply(
          404,
          status(404, "NotFound", `${resource} "${name}" not found`, { name, kind: resource })
        )
      }
      reply(200, render(resource, object))
    }

    const f = fault
    if (f !== undefined && (f.resource === undefined || f.resource === target?.resource)) {
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
    setPod: (namespace, name, annotations) =>
      put("pods", { namespace, name, ...(annotations === undefined ? {} : { annotations }) }),
    deletePod: (namespace, name) => void objects.delete(`pods/${namespace}/${name}`),
    setNamespace: (name, annotations) =>
      put("namespaces", { name, ...(annotations === undefined ? {} : { annotations }) }),
    deleteNamespace: (name) => void objects.delete(`namespaces//${name}`),
    setNode: (name, podCIDRs) => put("nodes", { name, podCIDRs }),
    load,
    setForbid: (resource, forbidden) => {
      forbid[resource] = forbidden
    },
    setFault: (f) => {
      fault = f
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
