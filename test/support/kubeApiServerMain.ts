/**
 * Command-line front of the test Kubernetes API server, for the demo, which runs it inside a network
 * namespace: `ip netns exec NS node test/support/kubeApiServerMain.ts --state STATE.json --kubeconfig OUT
 * [--host 127.0.0.1] [--port 0] [--auth token|cert] [--ca-file] [--log-requests]`.
 * STATE.json is `{"pods":[{"namespace","name","annotations"}],"namespaces":[{"name","annotations"}],
 * "nodes":[{"name","podCIDRs"}],"forbid":{"namespaces":true}}` (all optional). When the server listens and
 * the kubeconfig is written, one line `{"url":...,"pid":...}` is printed on stdout. SIGHUP reloads the pods,
 * namespaces and nodes from the state file; SIGTERM or SIGINT closes the server (removing its certificates) and exits 0.
 */
import { readFileSync } from "node:fs"
import { parseArgs } from "node:util"
import { type KubeApiServer, type KubeApiServerOptions, startKubeApiServer } from "./kubeApiServer.ts"

const { values } = parseArgs({
  options: {
    state: { type: "string" },
    kubeconfig: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
    auth: { type: "string", default: "token" },
    "ca-file": { type: "boolean", default: false },
    "log-requests": { type: "boolean", default: false }
  }
})

const fail = (message: string): never => {
  process.stderr.write(`kubeApiServerMain: ${message}\n`)
  process.exit(2)
}

const kubeconfig = values.kubeconfig ?? fail("--kubeconfig OUT is required")
const port = Number(values.port)
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`invalid --port ${values.port}`)
if (values.auth !== "token" && values.auth !== "cert")
  fail(`--auth must be token or cert, not ${values.auth}`)
const auth = values.auth === "cert" ? "cert" : "token"

const readState = (): KubeApiServerOptions =>
  values.state === undefined ? {} : (JSON.parse(readFileSync(values.state, "utf8")) as KubeApiServerOptions)

// Handlers go in first, so a SIGTERM during start-up still removes the certificates.
let server: KubeApiServer | undefined
let stopping = false
const shutdown = () => {
  if (stopping) return
  stopping = true
  if (server !== undefined) void server.close().then(() => process.exit(0))
}
process.on("SIGTERM", shutdown)
process.on("SIGINT", shutdown)
process.on("SIGHUP", () => {
  try {
    server?.load(readState())
  } catch (error) {
    process.stderr.write(`kubeApiServerMain: reload failed: ${String(error)}\n`)
  }
})

server = await startKubeApiServer({
  ...readState(),
  host: values.host,
  port,
  ...(values["log-requests"]
    ? { onRequest: (request) => process.stderr.write(`${JSON.stringify(request)}\n`) }
    : {})
})
if (stopping) {
  await server.close()
  process.exit(0)
}
server.writeKubeconfig(kubeconfig, { auth, inlineCa: !values["ca-file"] })
process.stdout.write(`${JSON.stringify({ url: server.url, pid: process.pid })}\n`)
