/**
 * The live AnnotationSource against the test API server, with the kubeconfig interpreted by the real
 * `@kubernetes/client-node` KubeConfig: every kubeconfig form a node has (ServiceAccount token inline or
 * as `token-file`, kubeadm's kubelet.conf with certificate files, inline client certificate data; CA
 * inline or as a file), the mapping of every API and transport outcome to the reader's vocabulary, that
 * an interrupted read aborts its request, that a reader's reads share one connection, that no message
 * quotes a credential or the kubeconfig, and that only client-node's KubeConfig module is loaded, and
 * only when a kubeconfig exists.
 */
import { execFile } from "node:child_process"
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from "node:fs"
import { createServer as createHttpServer } from "node:http"
import { createConnection, createServer, type Socket } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type AnnotationReader, AnnotationSource } from "../src/domain/tenancy/AnnotationSource.ts"
import * as AnnotationsKubernetes from "../src/interpreters/live/AnnotationsKubernetes.ts"
import { type KubeApiServer, type KubeconfigOptions, startKubeApiServer } from "./support/kubeApiServer.ts"

const fwmark = "tenant.routing/fwmark"
const allowed = "tenant.routing/allowed-tenants"

let dir: string
let server: KubeApiServer
let count = 0

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "annotations-kubernetes-"))
  server = await startKubeApiServer({
    pods: [
      { namespace: "ns1", name: "p1", annotations: { [fwmark]: "tenant-a" } },
      { namespace: "ns1", name: "bare" }
    ],
    namespaces: [{ name: "ns1", annotations: { [allowed]: "tenant-a,tenant-b" } }, { name: "ns2" }]
  })
})

afterAll(async () => {
  await server?.close()
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
})

const fresh = (name: string) => join(dir, `${++count}-${name}`)

const kubeconfigFor = (s: KubeApiServer, options?: KubeconfigOptions) => {
  const path = fresh("kubeconfig")
  s.writeKubeconfig(path, options)
  return path
}

/** A kubeconfig written by hand (kubeadm's layout), for forms the server's writer does not produce. */
const writeYaml = (lines: ReadonlyArray<string>) => {
  const path = fresh("kubeconfig")
  writeFileSync(path, `${lines.join("\n")}\n`, { mode: 0o600 })
  return path
}

const b64 = (text: string) => Buffer.from(text).toString("base64")

const connect = (kubeconfig: string) =>
  AnnotationSource.use((s) => s.connect(kubeconfig)).pipe(Effect.provide(AnnotationsKubernetes.layer))

const reader = (options?: KubeconfigOptions) => connect(kubeconfigFor(server, options)).pipe(Effect.orDie)

/** Runs `f` with `fault` set on the shared server, clearing it afterwards whatever happens. */
const withFault = <A, E, R>(fault: Parameters<KubeApiServer["setFault"]>[0], f: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => server.setFault(fault)),
    () => f,
    () => Effect.sync(() => server.setFault(undefined))
  )

const lastAuth = () => server.requests.at(-1)?.auth

describe("AnnotationsKubernetes: reads", () => {
  it.effect("reads a pod's annotations (token inline, CA inline)", () =>
    Effect.gen(function* () {
      const r = yield* reader()
      server.requests.length = 0
      assert.deepStrictEqual(yield* r.pod("ns1", "p1"), { [fwmark]: "tenant-a" })
      assert.deepStrictEqual(server.requests, [
        { method: "GET", path: "/api/v1/namespaces/ns1/pods/p1", auth: "token" }
      ])
    })
  )

  it.effect("reads a namespace's annotations", () =>
    Effect.gen(function* () {
      const r = yield* reader()
      server.requests.length = 0
      assert.deepStrictEqual(yield* r.namespace("ns1"), { [allowed]: "tenant-a,tenant-b" })
      assert.deepStrictEqual(server.requests, [
        { method: "GET", path: "/api/v1/namespaces/ns1", auth: "token" }
      ])
    })
  )

  it.effect("an object without annotations reads as {}", () =>
    Effect.gen(function* () {
      const r = yield* reader()
      assert.deepStrictEqual(yield* r.pod("ns1", "bare"), {})
      assert.deepStrictEqual(yield* r.namespace("ns2"), {})
    })
  )

  it.effect("404: a missing pod and a missing namespace read as undefined", () =>
    Effect.gen(function* () {
      const r = yield* reader()
      assert.isUndefined(yield* r.pod("ns1", "nope"))
      assert.isUndefined(yield* r.pod("ns9", "p1"))
      assert.isUndefined(yield* r.namespace("ns9"))
    })
  )

  it.effect("403: ApiForbidden carrying the API server's message; the other resource still reads", () =>
    Effect.gen(function* () {
      const r = yield* reader()
      for (const resource of ["pods", "namespaces"] as const) {
        server.setForbid(resource, true)
        const result = yield* Effect.gen(function* () {
          const error = yield* Effect.flip(resource === "pods" ? r.pod("ns1", "p1") : r.namespace("ns1"))
          const other = yield* resource === "pods" ? r.namespace("ns1") : r.pod("ns1", "p1")
          return { error, other }
        }).pipe(Effect.ensuring(Effect.sync(() => server.setForbid(resource, false))))
        assert.strictEqual(result.error._tag, "ApiForbidden")
        assert.include(result.error.msg, "HTTP 403 Forbidden")
        assert.include(result.error.msg, `cannot get resource "${resource}"`)
        assert.isDefined(result.other)
      }
    })
  )

  it.effect("401 (a token the server does not know): ApiUnavailable, the token never quoted", () =>
    Effect.gen(function* () {
      const token = "not-the-servers-token-0123456789"
      const r = yield* reader({ token })
      for (const read of [r.pod("ns1", "p1"), r.namespace("ns1")]) {
        const error = yield* Effect.flip(read)
        assert.strictEqual(error._tag, "ApiUnavailable")
        assert.strictEqual(error.msg, "HTTP 401 Unauthorized")
        assert.notInclude(JSON.stringify(error), token)
      }
      assert.strictEqual(lastAuth(), "invalid")
    })
  )

  it.effect.each([500, 503, 429, 504])("HTTP %s: ApiUnavailable", (code) =>
    Effect.gen(function* () {
      const r = yield* reader()
      const error = yield* withFault({ kind: "status", code }, Effect.flip(r.namespace("ns1")))
      assert.strictEqual(error._tag, "ApiUnavailable")
      assert.match(error.msg, new RegExp(`^HTTP ${code} \\w+: `))
      assert.deepStrictEqual(yield* r.namespace("ns1"), { [allowed]: "tenant-a,tenant-b" })
    })
  )

  it.effect("connection reset mid-request: ApiUnavailable", () =>
    Effect.gen(function* () {
      const r = yield* reader()
      const error = yield* withFault({ kind: "reset", times: 1 }, Effect.flip(r.pod("ns1", "p1")))
      assert.strictEqual(error._tag, "ApiUnavailable")
      assert.strictEqual(error.msg, "cannot reach the API server (ECONNRESET)")
    })
  )

  it.effect("connection refused (server closed): ApiUnavailable", () =>
    Effect.gen(function* () {
      const s = yield* Effect.promise(() => startKubeApiServer({ namespaces: [{ name: "ns1" }] }))
      const path = kubeconfigFor(s)
      yield* Effect.promise(() => s.close())
      const r = yield* connect(path).pipe(Effect.orDie)
      const error = yield* Effect.flip(r.namespace("ns1"))
      assert.strictEqual(error._tag, "ApiUnavailable")
      assert.strictEqual(error.msg, "cannot reach the API server (ECONNREFUSED)")
    })
  )

  it.effect("a server certificate from another CA: ApiUnavailable (TLS)", () =>
    Effect.gen(function* () {
      const other = yield* Effect.acquireRelease(
        Effect.promise(() => startKubeApiServer()),
        (s) => Effect.promise(() => s.close())
      )
      const r = yield* connect(kubeconfigFor(other, { server: server.url })).pipe(Effect.orDie)
      const error = yield* Effect.flip(r.namespace("ns1"))
      assert.strictEqual(error._tag, "ApiUnavailable")
      assert.strictEqual(error.msg, "cannot reach the API server (SELF_SIGNED_CERT_IN_CHAIN)")
    })
  )

  it.effect("a certificate-authority file removed after connect: ApiUnavailable naming the file", () =>
    Effect.gen(function* () {
      const ca = fresh("ca.crt")
      writeFileSync(ca, server.caPem)
      const r = yield* connect(
        writeYaml([
          "apiVersion: v1",
          "kind: Config",
          "clusters:",
          `- cluster: {certificate-authority: ${JSON.stringify(ca)}, server: ${JSON.stringify(server.url)}}`,
          "  name: c",
          "contexts:",
          "- context: {cluster: c, user: u}",
          "  name: x",
          "current-context: x",
          "users:",
          `- name: u`,
          `  user: {token: ${JSON.stringify(server.token)}}`
        ])
      ).pipe(Effect.orDie)
      assert.deepStrictEqual(yield* r.namespace("ns2"), {})
      unlinkSync(ca)
      const error = yield* Effect.flip(r.namespace("ns2"))
      assert.strictEqual(error._tag, "ApiUnavailable")
      assert.strictEqual(error.msg, `cannot read ${ca} (ENOENT)`)
    })
  )
})

/**
 * A TCP relay in front of the API server that counts client connections and records when each one
 * closes: the proof that an interrupted read really aborts its HTTP request instead of leaving it
 * running, and that a reader's reads share one connection (one TLS handshake).
 */
const relay = (target: number) =>
  Effect.acquireRelease(
    Effect.callback<{ port: number; opened: () => number; closedAt: Array<number>; close: () => void }>(
      (resume) => {
        const closedAt: Array<number> = []
        let opened = 0
        const sockets = new Set<Socket>()
        const listener = createServer((client) => {
          opened++
          sockets.add(client)
          const upstream = createConnection(target)
          sockets.add(upstream)
          client.pipe(upstream).pipe(client)
          client.on("error", () => upstream.destroy())
          upstream.on("error", () => client.destroy())
          client.on("close", () => {
            closedAt.push(Date.now())
            upstream.destroy()
          })
        })
        listener.listen(0, "127.0.0.1", () => {
          const address = listener.address()
          const port = typeof address === "object" && address !== null ? address.port : 0
          resume(
            Effect.succeed({
              port,
              opened: () => opened,
              closedAt,
              close: () => {
                listener.close()
                for (const s of sockets) s.destroy()
              }
            })
          )
        })
      }
    ),
    (r) => Effect.sync(r.close)
  )

describe("AnnotationsKubernetes: connections", () => {
  it.live("a reader's concurrent pod and namespace reads, and later ones, share one connection", () =>
    Effect.gen(function* () {
      const proxy = yield* relay(server.port)
      const r = yield* connect(kubeconfigFor(server, { server: `https://127.0.0.1:${proxy.port}` })).pipe(
        Effect.orDie
      )
      server.requests.length = 0
      const [pod, namespace] = yield* Effect.all([r.pod("ns1", "p1"), r.namespace("ns1")], {
        concurrency: 2
      })
      assert.deepStrictEqual(pod, { [fwmark]: "tenant-a" })
      assert.deepStrictEqual(namespace, { [allowed]: "tenant-a,tenant-b" })
      assert.isUndefined(yield* r.pod("ns1", "nope"))
      assert.deepStrictEqual(server.requests.map((q) => q.path).sort(), [
        "/api/v1/namespaces/ns1",
        "/api/v1/namespaces/ns1/pods/nope",
        "/api/v1/namespaces/ns1/pods/p1"
      ])
      assert.strictEqual(proxy.opened(), 1)
      assert.deepStrictEqual(proxy.closedAt, [])
    })
  )
})

/**
 * A plain-HTTP stand-in for odd API servers (kubeconfigs may name an `http:` server together with
 * `insecure-skip-tls-verify`): it answers by path and records the paths it was asked for.
 */
const oddServer = (answers: Record<string, { status: number; body: string }>) =>
  Effect.acquireRelease(
    Effect.callback<{ url: string; paths: Array<string>; close: () => void }>((resume) => {
      const paths: Array<string> = []
      const listener = createHttpServer((req, res) => {
        paths.push(req.url ?? "")
        const answer = answers[req.url ?? ""] ?? { status: 404, body: "{}" }
        res.writeHead(answer.status, { "Content-Type": "application/json" })
        res.end(answer.body)
      })
      listener.listen(0, "127.0.0.1", () => {
        const address = listener.address()
        const port = typeof address === "object" && address !== null ? address.port : 0
        resume(
          Effect.succeed({
            url: `http://127.0.0.1:${port}`,
            paths,
            close: () => {
              listener.closeAllConnections()
              listener.close()
            }
          })
        )
      })
    }),
    (s) => Effect.sync(s.close)
  )

const insecureKubeconfig = (server: string) =>
  writeYaml([
    "apiVersion: v1",
    "kind: Config",
    `clusters: [{name: c, cluster: {insecure-skip-tls-verify: true, server: ${JSON.stringify(server)}}}]`,
    "contexts: [{name: x, context: {cluster: c, user: u}}]",
    "current-context: x",
    "users: [{name: u, user: {token: t}}]"
  ])

describe("AnnotationsKubernetes: responses", () => {
  it.effect("a server URL with a path prefix: requests go below it", () =>
    Effect.gen(function* () {
      const odd = yield* oddServer({
        "/k8s/clusters/c-1/api/v1/namespaces/ns1": {
          status: 200,
          body: JSON.stringify({ kind: "Namespace", metadata: { name: "ns1", annotations: { a: "b" } } })
        }
      })
      const r = yield* connect(insecureKubeconfig(`${odd.url}/k8s/clusters/c-1/`)).pipe(Effect.orDie)
      assert.deepStrictEqual(yield* r.namespace("ns1"), { a: "b" })
      assert.isUndefined(yield* r.pod("ns1", "p1"))
      assert.deepStrictEqual(odd.paths, [
        "/k8s/clusters/c-1/api/v1/namespaces/ns1",
        "/k8s/clusters/c-1/api/v1/namespaces/ns1/pods/p1"
      ])
    })
  )

  it.effect("a body that is not an object, or annotations that are not strings: ApiUnavailable", () =>
    Effect.gen(function* () {
      const odd = yield* oddServer({
        "/api/v1/namespaces/text": { status: 200, body: "<html>proxy error</html>" },
        "/api/v1/namespaces/numbers": { status: 200, body: '{"metadata":{"annotations":{"a":1}}}' }
      })
      const r = yield* connect(insecureKubeconfig(odd.url)).pipe(Effect.orDie)
      for (const name of ["text", "numbers"]) {
        const error = yield* Effect.flip(r.namespace(name))
        assert.strictEqual(error._tag, "ApiUnavailable")
        assert.strictEqual(error.msg, "malformed object in the response")
      }
    })
  )

  it.effect("a response larger than any object the API stores: ApiUnavailable", () =>
    Effect.gen(function* () {
      const huge = JSON.stringify({ metadata: { annotations: { a: "x".repeat(9 * 1024 * 1024) } } })
      const odd = yield* oddServer({ "/api/v1/namespaces/huge": { status: 200, body: huge } })
      const r = yield* connect(insecureKubeconfig(odd.url)).pipe(Effect.orDie)
      const error = yield* Effect.flip(r.namespace("huge"))
      assert.strictEqual(error._tag, "ApiUnavailable")
      assert.strictEqual(error.msg, "response too large")
    })
  )

  it.effect("a token-file ending in a newline (an invalid header value): ApiUnavailable, not quoted", () =>
    Effect.gen(function* () {
      const token = `${server.token}\n`
      const r = yield* reader({ tokenFile: fresh("token"), token })
      const error = yield* Effect.flip(r.namespace("ns1"))
      assert.strictEqual(error._tag, "ApiUnavailable")
      assert.strictEqual(error.msg, "request failed (ERR_INVALID_CHAR)")
      assert.notInclude(JSON.stringify(error), server.token)
    })
  )
})

describe("AnnotationsKubernetes: deadlines", () => {
  it.live("interrupting a read (Effect.timeout) aborts the HTTP request at once", () =>
    Effect.gen(function* () {
      const proxy = yield* relay(server.port)
      const r = yield* connect(kubeconfigFor(server, { server: `https://127.0.0.1:${proxy.port}` })).pipe(
        Effect.orDie
      )
      const outcome = yield* withFault(
        { kind: "delay", ms: 30_000 },
        r.pod("ns1", "p1").pipe(Effect.timeout("300 millis"), Effect.flip)
      )
      assert.strictEqual(outcome._tag, "TimeoutError")
      // The client closes its connection (undici destroys the socket of an aborted request); had the
      // abort not reached it, the connection would stay open for the 30 s delay and the test's own
      // timeout would end this wait.
      while (proxy.closedAt.length === 0) yield* Effect.sleep("10 millis")
      assert.strictEqual(proxy.closedAt.length, 1)
      // The reader is still usable afterwards.
      assert.deepStrictEqual(yield* r.pod("ns1", "p1"), { [fwmark]: "tenant-a" })
    })
  )
})

describe("AnnotationsKubernetes: kubeconfig forms", () => {
  it.effect("token-file (ServiceAccount style), read when connecting", () =>
    Effect.gen(function* () {
      const r = yield* reader({ tokenFile: fresh("token") })
      assert.deepStrictEqual(yield* r.pod("ns1", "p1"), { [fwmark]: "tenant-a" })
      assert.strictEqual(lastAuth(), "token")
    })
  )

  it.effect("client certificate data inline, CA as a file", () =>
    Effect.gen(function* () {
      const r = yield* reader({ auth: "cert", inlineCa: false })
      assert.deepStrictEqual(yield* r.namespace("ns1"), { [allowed]: "tenant-a,tenant-b" })
      assert.strictEqual(lastAuth(), "cert")
    })
  )

  it.effect(
    "kubeadm kubelet.conf: client-certificate and client-key naming one PEM file, CA data inline",
    () =>
      Effect.gen(function* () {
        // kubelet's rotated credential: certificate and key in one file, like kubelet-client-current.pem.
        const pem = fresh("kubelet-client-current.pem")
        writeFileSync(pem, server.clientCertPem + server.clientKeyPem, { mode: 0o600 })
        const path = writeYaml([
          "apiVersion: v1",
          "clusters:",
          "- cluster:",
          `    certificate-authority-data: ${b64(server.caPem)}`,
          `    server: ${server.url}`,
          "  name: default-cluster",
          "contexts:",
          "- context:",
          "    cluster: default-cluster",
          "    namespace: default",
          "    user: default-auth",
          "  name: default-context",
          "current-context: default-context",
          "kind: Config",
          "preferences: {}",
          "users:",
          "- name: default-auth",
          "  user:",
          `    client-certificate: ${pem}`,
          `    client-key: ${pem}`
        ])
        const r = yield* connect(path).pipe(Effect.orDie)
        assert.deepStrictEqual(yield* r.pod("ns1", "p1"), { [fwmark]: "tenant-a" })
        assert.strictEqual(lastAuth(), "cert")
      })
  )

  it.effect("relative certificate paths resolve against the kubeconfig's directory", () =>
    Effect.gen(function* () {
      const sub = mkdtempSync(join(dir, "rel-"))
      writeFileSync(join(sub, "client.crt"), server.clientCertPem)
      writeFileSync(join(sub, "client.key"), server.clientKeyPem, { mode: 0o600 })
      writeFileSync(join(sub, "ca.crt"), server.caPem)
      const path = join(sub, "kubeconfig")
      writeFileSync(
        path,
        [
          "apiVersion: v1",
          "kind: Config",
          `clusters: [{name: c, cluster: {certificate-authority: ca.crt, server: ${JSON.stringify(server.url)}}}]`,
          "contexts: [{name: x, context: {cluster: c, user: u}}]",
          "current-context: x",
          "users: [{name: u, user: {client-certificate: client.crt, client-key: client.key}}]",
          ""
        ].join("\n")
      )
      const r = yield* connect(path).pipe(Effect.orDie)
      assert.deepStrictEqual(yield* r.namespace("ns2"), {})
      assert.strictEqual(lastAuth(), "cert")
    })
  )
})

describe("AnnotationsKubernetes: connect", () => {
  const badKubeconfig = (text: string) => {
    const path = fresh("kubeconfig")
    writeFileSync(path, text, { mode: 0o600 })
    return path
  }
  const secret = "s3cret-token-value"
  const failure = (path: string) => Effect.flip(connect(path))

  it.effect("a missing kubeconfig file: TryAgainLater (11)", () =>
    Effect.gen(function* () {
      const path = join(dir, "does-not-exist.conf")
      const error = yield* failure(path)
      assert.strictEqual(error._tag, "TryAgainLater")
      assert.strictEqual(error.code, 11)
      assert.strictEqual(error.msg, `kubeconfig ${path} not found`)
    })
  )

  it.effect("a missing token-file: TryAgainLater (11), like a missing kubeconfig", () =>
    Effect.gen(function* () {
      const token = fresh("token")
      const path = kubeconfigFor(server, { tokenFile: token })
      unlinkSync(token)
      const error = yield* failure(path)
      assert.strictEqual(error._tag, "TryAgainLater")
      assert.strictEqual(error.msg, `kubeconfig ${path}: ${token} not found`)
    })
  )

  const invalidCases: ReadonlyArray<{
    readonly name: string
    readonly text: string
    readonly message: RegExp
  }> = [
    {
      name: "not YAML",
      text: `users:\n- name: u\n  user: {token: ${secret}\n    oops: [\n`,
      message: /^not valid YAML \(.+ at line \d+, column \d+\)$/
    },
    {
      name: "a tab-indented YAML document",
      text: `current-context: x\nusers:\n\t- token: ${secret}\n`,
      message: /^not valid YAML/
    },
    { name: "an empty file", text: "", message: /^not valid YAML \(expected a document/ },
    { name: "a null document", text: "~\n", message: /^not a kubeconfig/ },
    { name: "a YAML scalar", text: `${secret}\n`, message: /^no current-context$/ },
    {
      name: "no current-context",
      text: `clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: ${secret}}}]\n`,
      message: /^no current-context$/
    },
    {
      name: "a current-context that is not defined",
      text: `current-context: y\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: ${secret}}}]\n`,
      message: /^current-context "y" is not defined$/
    },
    {
      name: "a context naming an undefined cluster",
      text: `current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: ${secret}}}]\n`,
      message: /^context "x": cluster "c" is not defined$/
    },
    {
      name: "a context without a user",
      text: `current-context: x\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\ncontexts: [{name: x, context: {cluster: c}}]\n`,
      message: /^context "x" names no user$/
    },
    {
      name: "a context naming an undefined user",
      text: `current-context: x\nclusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\n`,
      message: /^context "x": user "u" is not defined$/
    },
    {
      name: "a cluster without a server",
      text: `current-context: x\nclusters: [{name: c, cluster: {insecure-skip-tls-verify: false}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: ${secret}}}]\n`,
      message: /^clusters\[0\]\.cluster\.server is missing$/
    },
    {
      name: "a plain-http server (credentials in clear text)",
      text: `current-context: x\nclusters: [{name: c, cluster: {server: "http://${secret}:pw@127.0.0.1:8080"}}]\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {token: ${secret}}}]\n`,
      message: /^cluster "c": server is not an https URL$/
    }
  ]

  it.effect.each(invalidCases)("$name: InvalidConfig (7) with a kubeconfig issue, quoting nothing", (c) =>
    Effect.gen(function* () {
      const path = badKubeconfig(c.text)
      const error = yield* failure(path)
      assert.strictEqual(error._tag, "InvalidConfig")
      if (error._tag !== "InvalidConfig") return
      assert.strictEqual(error.code, 7)
      assert.strictEqual(error.issues.length, 1)
      assert.strictEqual(error.issues[0]!.path, "kubeconfig")
      assert.match(error.issues[0]!.message, c.message)
      assert.strictEqual(error.msg, `kubeconfig ${path}: ${error.issues[0]!.message}`)
      assert.notInclude(JSON.stringify(error), secret)
    })
  )

  it.effect("an unreadable kubeconfig (a directory): InvalidConfig", () =>
    Effect.gen(function* () {
      const path = mkdtempSync(join(dir, "dir-"))
      const error = yield* failure(path)
      assert.strictEqual(error._tag, "InvalidConfig")
      assert.include(error.msg, "EISDIR")
    })
  )

  it.effect("connect needs no request to the API server", () =>
    Effect.gen(function* () {
      server.requests.length = 0
      const r: AnnotationReader = yield* reader()
      assert.deepStrictEqual(server.requests, [])
      assert.isDefined(r)
    })
  )
})

describe("AnnotationsKubernetes: start-up cost", () => {
  /** Runs connect in a fresh process and reports which `@kubernetes/client-node` modules it imported. */
  const probe = (kubeconfig: string) =>
    Effect.callback<{ loaded: Array<string>; outcome: string }>((resume) => {
      const script = `
        import { registerHooks } from "node:module"
        const loaded = []
        registerHooks({ resolve(specifier, context, next) {
          if (specifier.startsWith("@kubernetes/client-node")) loaded.push(specifier)
          return next(specifier, context)
        } })
        const { Effect } = await import("effect")
        const { AnnotationSource } = await import(${JSON.stringify(new URL("../src/domain/tenancy/AnnotationSource.ts", import.meta.url).pathname)})
        const AnnotationsKubernetes = await import(${JSON.stringify(new URL("../src/interpreters/live/AnnotationsKubernetes.ts", import.meta.url).pathname)})
        const exit = await Effect.runPromiseExit(
          AnnotationSource.use((s) => s.connect(process.argv[1])).pipe(Effect.provide(AnnotationsKubernetes.layer)))
        const outcome = exit._tag === "Success" ? "connected" : exit.cause.reasons[0]?.error?._tag ?? "defect"
        process.stdout.write(JSON.stringify({ loaded, outcome }))
      `
      execFile(
        process.execPath,
        ["--input-type=module", "-e", script, kubeconfig],
        { cwd: new URL("..", import.meta.url).pathname },
        (error, stdout, stderr) =>
          resume(
            error === null
              ? Effect.succeed(JSON.parse(stdout))
              : Effect.die(new Error(`probe failed: ${error.message}\n${stderr}`))
          )
      )
    })

  it.live("only client-node's KubeConfig module is loaded, and only once a kubeconfig exists", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* probe(join(dir, "absent.conf")), {
        loaded: [],
        outcome: "TryAgainLater"
      })
      const path = kubeconfigFor(server)
      // Not the package's index (its generated API models and undici cost a third of a second).
      assert.deepStrictEqual(yield* probe(path), {
        loaded: ["@kubernetes/client-node/dist/config.js"],
        outcome: "connected"
      })
    })
  )
})
