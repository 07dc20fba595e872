/**
 * Proves the test Kubernetes API server against the real `@kubernetes/client-node` 2.0.1, and pins down how
 * that client reports each outcome, since the plugin's API reader classifies failures by these shapes:
 *
 * - HTTP error status: the promise rejects with `ApiException` (exported by the package); `.code` is the HTTP
 *   status as a number, `.body` the raw response text (the JSON `v1 Status`, parse it yourself) — except 401,
 *   where the generated code drops the body (`undefined`). `.headers` holds the lower-cased response headers.
 * - Transport failures reject with undici's `TypeError("fetch failed")` whose `.cause` carries the detail:
 *   refused connection `cause.code === "ECONNREFUSED"`, connection reset/closed mid-request
 *   `cause.code === "UND_ERR_SOCKET"`, untrusted server certificate e.g. `"SELF_SIGNED_CERT_IN_CHAIN"`.
 * - Timeout/abort: there is no timeout setting; pass an `AbortSignal` per call through an observable
 *   middleware that calls `ctx.setSignal(signal)` (see `withSignal` below). `AbortSignal.timeout(ms)` rejects
 *   with a `DOMException` named `"TimeoutError"`, `controller.abort()` with one named `"AbortError"`, and
 *   `controller.abort(reason)` with `reason` itself. Beware: `DOMException` also has a numeric `.code`
 *   (23, 20), so test `instanceof ApiException` before reading `.code` as an HTTP status.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import {
  ApiException,
  type ConfigurationOptions,
  CoreV1Api,
  KubeConfig,
  Observable
} from "@kubernetes/client-node"
import { type KubeApiServer, type KubeconfigOptions, startKubeApiServer } from "./kubeApiServer.ts"

/**
 * The working way to bound one call: per-call `ConfigurationOptions` whose middleware sets the signal on the
 * request context. The generated `CoreV1Api` (the "ObjectParamAPI") passes these options straight to the
 * observable layer, so the middleware must return client-node's `Observable`, not a Promise; and
 * `middlewareMergeStrategy: "append"` keeps the client's own middleware (the default "replace" drops it).
 */
const withSignal = (signal: AbortSignal): ConfigurationOptions => ({
  middleware: [
    {
      pre: (context) => {
        context.setSignal(signal)
        return new Observable(Promise.resolve(context))
      },
      post: (response) => new Observable(Promise.resolve(response))
    }
  ],
  middlewareMergeStrategy: "append"
})

const rejection = async (promise: Promise<unknown>): Promise<unknown> => {
  try {
    await promise
  } catch (error) {
    return error
  }
  return assert.fail("expected the call to fail")
}

const apiStatus = (error: unknown) => {
  assert.instanceOf(error, ApiException)
  const e = error as ApiException<unknown>
  return { code: e.code, status: typeof e.body === "string" ? JSON.parse(e.body) : e.body }
}

const causeCode = (error: unknown) => {
  assert.instanceOf(error, TypeError)
  assert.strictEqual((error as Error).message, "fetch failed")
  return ((error as Error).cause as { code?: string } | undefined)?.code
}

let dir: string
let server: KubeApiServer
let count = 0
const client = (s: KubeApiServer, options?: KubeconfigOptions) => {
  const path = join(dir, `kubeconfig-${++count}`)
  s.writeKubeconfig(path, options)
  const kc = new KubeConfig()
  kc.loadFromFile(path)
  return kc.makeApiClient(CoreV1Api)
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "kube-api-test-"))
  server = await startKubeApiServer({
    pods: [{ namespace: "ns1", name: "p1", annotations: { "tenant.routing/fwmark": "tenant-a" } }],
    namespaces: [{ name: "ns1", annotations: { "tenant.routing/allowed-tenants": "tenant-a" } }],
    nodes: [{ name: "n1", podCIDRs: ["10.200.1.0/24", "fd00:200:1::/64"] }]
  })
})

afterAll(async () => {
  await server?.close()
  rmSync(dir, { recursive: true, force: true })
})

describe("kubeApiServer with @kubernetes/client-node", () => {
  it("serves pods, namespaces and nodes to a token kubeconfig with inline CA", async () => {
    server.requests.length = 0
    const path = join(dir, "sa.kubeconfig")
    server.writeKubeconfig(path)
    assert.strictEqual(statSync(path).mode & 0o777, 0o600)
    const text = readFileSync(path, "utf8")
    assert.include(text, "kind: Config")
    assert.include(text, "certificate-authority-data: ")
    const api = client(server)
    const pod = await api.readNamespacedPod({ name: "p1", namespace: "ns1" })
    assert.deepStrictEqual(pod.metadata?.annotations, { "tenant.routing/fwmark": "tenant-a" })
    assert.strictEqual(pod.kind, "Pod")
    const ns = await api.readNamespace({ name: "ns1" })
    assert.deepStrictEqual(ns.metadata?.annotations, { "tenant.routing/allowed-tenants": "tenant-a" })
    const node = await api.readNode({ name: "n1" })
    assert.deepStrictEqual(node.spec?.podCIDRs, ["10.200.1.0/24", "fd00:200:1::/64"])
    assert.deepStrictEqual(server.requests, [
      { method: "GET", path: "/api/v1/namespaces/ns1/pods/p1", auth: "token" },
      { method: "GET", path: "/api/v1/namespaces/ns1", auth: "token" },
      { method: "GET", path: "/api/v1/nodes/n1", auth: "token" }
    ])
  })

  it("authenticates a kubelet-style client certificate, with a CA file", async () => {
    server.requests.length = 0
    const api = client(server, { auth: "cert", inlineCa: false })
    const pod = await api.readNamespacedPod({ name: "p1", namespace: "ns1" })
    assert.strictEqual(pod.metadata?.name, "p1")
    assert.deepStrictEqual(server.requests, [
      { method: "GET", path: "/api/v1/namespaces/ns1/pods/p1", auth: "cert" }
    ])
  })

  it("reads the token from token-file (when the kubeconfig is loaded)", async () => {
    const tokenFile = join(dir, "token")
    const path = join(dir, "token-file.kubeconfig")
    server.writeKubeconfig(path, { tokenFile })
    assert.include(readFileSync(path, "utf8"), `token-file: ${JSON.stringify(tokenFile)}`)
    writeFileSync(tokenFile, `${server.token}\n`) // a trailing newline is tolerated (fetch trims header values)
    const kc = new KubeConfig()
    kc.loadFromFile(path)
    const ns = await kc.makeApiClient(CoreV1Api).readNamespace({ name: "ns1" })
    assert.strictEqual(ns.metadata?.name, "ns1")
  })

  it("reflects changes made at run time", async () => {
    const api = client(server)
    server.setPod("ns2", "p2", { a: "1" })
    assert.deepStrictEqual(
      (await api.readNamespacedPod({ name: "p2", namespace: "ns2" })).metadata?.annotations,
      {
        a: "1"
      }
    )
    server.setPod("ns2", "p2")
    assert.isUndefined((await api.readNamespacedPod({ name: "p2", namespace: "ns2" })).metadata?.annotations)
    server.deletePod("ns2", "p2")
    assert.strictEqual(
      apiStatus(await rejection(api.readNamespacedPod({ name: "p2", namespace: "ns2" }))).code,
      404
    )
    server.setNamespace("ns2", { b: "2" })
    assert.deepStrictEqual((await api.readNamespace({ name: "ns2" })).metadata?.annotations, { b: "2" })
    server.deleteNamespace("ns2")
    assert.strictEqual(apiStatus(await rejection(api.readNamespace({ name: "ns2" }))).code, 404)
  })

  it("404: ApiException with code 404 and the v1 Status text as body", async () => {
    const error = await rejection(client(server).readNamespacedPod({ name: "x", namespace: "ns1" }))
    assert.deepStrictEqual(apiStatus(error), {
      code: 404,
      status: {
        kind: "Status",
        apiVersion: "v1",
        metadata: {},
        status: "Failure",
        message: 'pods "x" not found',
        reason: "NotFound",
        details: { name: "x", kind: "pods" },
        code: 404
      }
    })
  })

  it("401 for a wrong or missing token: ApiException code 401, body undefined", async () => {
    server.requests.length = 0
    const error = await rejection(client(server, { token: "wrong" }).readNamespace({ name: "ns1" }))
    assert.deepStrictEqual(apiStatus(error), { code: 401, status: undefined })
    assert.strictEqual(server.requests[0]?.auth, "invalid")
  })

  it("403 for a forbidden resource, naming the user", async () => {
    server.setForbid("namespaces", true)
    try {
      const api = client(server, { auth: "cert" })
      const { code, status } = apiStatus(await rejection(api.readNamespace({ name: "ns1" })))
      assert.strictEqual(code, 403)
      assert.strictEqual(status.reason, "Forbidden")
      assert.strictEqual(
        status.message,
        'namespaces "ns1" is forbidden: User "system:node:n1" cannot get resource "namespaces" in API group "" at the cluster scope'
      )
      assert.strictEqual((await api.readNamespacedPod({ name: "p1", namespace: "ns1" })).metadata?.name, "p1")
    } finally {
      server.setForbid("namespaces", false)
    }
  })

  it("injects 500, 503 and 429 for a matching resource, `times` times", async () => {
    const api = client(server)
    for (const code of [500, 503, 429]) {
      server.setFault({ kind: "status", code, resource: "namespaces", times: 1 })
      assert.strictEqual((await api.readNamespacedPod({ name: "p1", namespace: "ns1" })).metadata?.name, "p1")
      const error = await rejection(api.readNamespace({ name: "ns1" }))
      assert.strictEqual(apiStatus(error).code, code)
      assert.strictEqual(apiStatus(error).status.code, code)
      if (code === 429) assert.strictEqual((error as ApiException<unknown>).headers["retry-after"], "1")
      assert.strictEqual((await api.readNamespace({ name: "ns1" })).metadata?.name, "ns1")
    }
  })

  it("a delayed response is cut by an AbortSignal passed per call", async () => {
    const api = client(server)
    server.setFault({ kind: "delay", ms: 5000 })
    try {
      const timedOut = await rejection(
        api.readNamespace({ name: "ns1" }, withSignal(AbortSignal.timeout(200)))
      )
      assert.instanceOf(timedOut, DOMException)
      assert.strictEqual((timedOut as DOMException).name, "TimeoutError")
      const controller = new AbortController()
      setTimeout(() => controller.abort(), 50)
      const aborted = await rejection(api.readNamespace({ name: "ns1" }, withSignal(controller.signal)))
      assert.strictEqual((aborted as DOMException).name, "AbortError")
    } finally {
      server.setFault(undefined)
    }
    const ns = await api.readNamespace({ name: "ns1" }, withSignal(AbortSignal.timeout(5000)))
    assert.strictEqual(ns.metadata?.name, "ns1")
  })

  it("reset: fetch failed, cause UND_ERR_SOCKET", async () => {
    const api = client(server)
    server.setFault({ kind: "reset", resource: "pods", times: 1 })
    assert.strictEqual(
      causeCode(await rejection(api.readNamespacedPod({ name: "p1", namespace: "ns1" }))),
      "UND_ERR_SOCKET"
    )
    assert.strictEqual((await api.readNamespacedPod({ name: "p1", namespace: "ns1" })).metadata?.name, "p1")
  })

  it("close() does not wait for delayed requests; then the connection is refused", async () => {
    const s = await startKubeApiServer({ namespaces: [{ name: "ns1" }] })
    const api = client(s)
    s.setFault({ kind: "delay", ms: 30_000 })
    const pending = rejection(api.readNamespace({ name: "ns1" }))
    while (s.requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 10))
    // Were close() to wait for the 30 s delay, the test's own timeout would end it.
    await s.close()
    assert.strictEqual(causeCode(await pending), "UND_ERR_SOCKET")
    assert.strictEqual(causeCode(await rejection(api.readNamespace({ name: "ns1" }))), "ECONNREFUSED")
  })

  it("rejects a server certificate from another CA: fetch failed with the TLS code", async () => {
    const other = await startKubeApiServer()
    try {
      const api = client(other, { server: server.url })
      assert.strictEqual(
        causeCode(await rejection(api.readNamespace({ name: "ns1" }))),
        "SELF_SIGNED_CERT_IN_CHAIN"
      )
    } finally {
      await other.close()
    }
  })
})

describe("kubeApiServerMain", () => {
  it("prints its URL when ready, serves the state file, exits 0 on SIGTERM", async () => {
    const state = join(dir, "state.json")
    const kubeconfig = join(dir, "main.kubeconfig")
    writeFileSync(
      state,
      JSON.stringify({ pods: [{ namespace: "ns1", name: "p1", annotations: { a: "b" } }] })
    )
    const main = new URL("./kubeApiServerMain.ts", import.meta.url).pathname
    const child = spawn(
      process.execPath,
      [main, "--state", state, "--kubeconfig", kubeconfig, "--port", "0"],
      {
        stdio: ["ignore", "pipe", "inherit"]
      }
    )
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve))
    try {
      const lines = createInterface({ input: child.stdout })
      const first = await new Promise<string>((resolve, reject) => {
        lines.once("line", resolve)
        child.once("exit", () => reject(new Error("kubeApiServerMain exited before it was ready")))
      })
      const ready = JSON.parse(first) as { url: string; pid: number }
      assert.match(ready.url, /^https:\/\/127\.0\.0\.1:\d+$/)
      assert.strictEqual(ready.pid, child.pid)
      const kc = new KubeConfig()
      kc.loadFromFile(kubeconfig)
      const pod = await kc.makeApiClient(CoreV1Api).readNamespacedPod({ name: "p1", namespace: "ns1" })
      assert.deepStrictEqual(pod.metadata?.annotations, { a: "b" })
    } finally {
      child.kill("SIGTERM")
    }
    assert.strictEqual(await exited, 0)
  })
})
