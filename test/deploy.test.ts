/**
 * The deployment as shipped: every manifest parses, RBAC grants only `get` on pods, namespaces and
 * nodes, the ConfigMap's conflist template and tenants file are valid configs for the binary and
 * agree on marks, and `install` (run against the test API server) writes a conflist with the node's
 * pod CIDRs, a kubeconfig the plugin can load, the token and the executable.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, it } from "@effect/vitest"
import { loadAllYaml } from "@kubernetes/client-node"
import { Effect } from "effect"
import { assert } from "vitest"
import { runCli } from "../bin/cli.ts"
import { decodeConfig } from "../src/domain/cni/Config.ts"
import { renderConflist } from "../src/domain/install/Conflist.ts"
import { decodeNodeSetupConfig } from "../src/domain/node-setup/NodeSetupConfig.ts"
import { AnnotationSource } from "../src/domain/tenancy/AnnotationSource.ts"
import { AnnotationsKubernetes } from "../src/interpreters/live/AnnotationsKubernetes.ts"
import { type KubeApiServer, startKubeApiServer } from "./support/kubeApiServer.ts"

const root = join(import.meta.dirname, "..")
const manifests = (file: string) =>
  loadAllYaml(readFileSync(join(root, "deploy", file), "utf8")) as Array<Record<string, any>>
const configMap = () => manifests("configmap.yaml").find((m) => m.kind === "ConfigMap")!

describe("deploy manifests", () => {
  it("every manifest parses and has a kind, apiVersion and name", () => {
    for (const file of ["rbac.yaml", "configmap.yaml", "daemonset.yaml"]) {
      const docs = manifests(file)
      assert.isAbove(docs.length, 0, file)
      for (const d of docs) {
        assert.isString(d.kind, file)
        assert.isString(d.apiVersion, file)
        assert.isString(d.metadata?.name, file)
      }
    }
    for (const file of ["tenant-a-pod.yaml", "tenant-b-pod.yaml", "pinned-namespace.yaml"]) {
      for (const d of loadAllYaml(readFileSync(join(root, "scripts/manifests", file), "utf8")) as Array<
        Record<string, any>
      >) {
        assert.isString(d.kind, file)
      }
    }
  })

  it("RBAC grants only get on pods, namespaces and nodes", () => {
    const role = manifests("rbac.yaml").find((m) => m.kind === "ClusterRole")!
    assert.deepStrictEqual(role.rules, [
      { apiGroups: [""], resources: ["pods", "namespaces", "nodes"], verbs: ["get"] }
    ])
  })

  it("the conflist template renders per node into a valid config, and the tenants file decodes", () => {
    const cm = configMap()
    for (const cidrs of [["10.244.1.0/24"], ["10.244.1.0/24", "fd00:10:244:1::/64"]]) {
      const r = renderConflist(JSON.parse(cm.data["conflist.template"]), cidrs)
      assert.isTrue("conflist" in r, JSON.stringify(r))
      if ("conflist" in r) {
        const plugin = (r.conflist.plugins as Array<any>)[0]
        assert.deepStrictEqual(
          plugin.delegate.ipam.ranges,
          cidrs.map((subnet) => [{ subnet }])
        )
      }
    }
    const tenants = decodeNodeSetupConfig(JSON.parse(cm.data["tenants.json"]))
    assert.strictEqual(tenants._tag, "Success", JSON.stringify(tenants))
  })

  it("the conflist and the tenants file agree on every tenant's mark", () => {
    const cm = configMap()
    const conf = JSON.parse(cm.data["conflist.template"])
    const plugin = decodeConfig({ ...conf.plugins[0], name: conf.name, cniVersion: conf.cniVersion })
    assert.isTrue("config" in plugin)
    const file = JSON.parse(cm.data["tenants.json"]) as { tenants: Record<string, { mark: string }> }
    if ("config" in plugin) {
      const fromConflist = Object.fromEntries(plugin.config.tenants.map((t) => [t.name, t.mark]))
      const fromFile = Object.fromEntries(Object.entries(file.tenants).map(([n, t]) => [n, Number(t.mark)]))
      assert.deepStrictEqual(fromConflist, fromFile)
    }
  })

  it("a template that would not work is refused with the field named", () => {
    const bad = {
      cniVersion: "1.0.0",
      name: "x",
      plugins: [{ type: "tenant-routing-wrapper", tenants: { a: { mark: "0x4000" } } }]
    }
    const r = renderConflist(bad, ["10.0.0.0/24"])
    assert.isTrue("issues" in r)
    if ("issues" in r) assert.strictEqual(r.issues[0]?.path, "plugins.0.tenants.a.mark")
    assert.isTrue("issues" in renderConflist(bad, []))
  })
})

describe("install", () => {
  let server: KubeApiServer
  let dir: string
  beforeAll(async () => {
    server = await startKubeApiServer({
      nodes: [{ name: "n1", podCIDRs: ["10.244.7.0/24", "fd00:10:244:7::/64"] }]
    })
    dir = mkdtempSync(join(tmpdir(), "trw-install-"))
  })
  afterAll(async () => {
    await server?.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it("writes the binary, credentials, a loadable kubeconfig and the node's conflist; a rerun changes nothing", async () => {
    const sa = join(dir, "sa")
    mkdirSync(sa)
    writeFileSync(join(sa, "token"), server.token)
    writeFileSync(join(sa, "ca.crt"), server.caPem)
    await server.writeKubeconfig(join(dir, "admin.conf"), { auth: "token", inlineCa: true })
    writeFileSync(join(dir, "template.json"), configMap().data["conflist.template"])
    writeFileSync(join(dir, "fake-binary"), "#!/bin/sh\n")
    const out: Array<string> = []
    const io = { stdout: (l: string) => void out.push(l), stderr: (l: string) => void out.push(l) }
    const args = [
      "--node",
      "n1",
      "--template",
      join(dir, "template.json"),
      "--host-root",
      join(dir, "host"),
      "--kubeconfig",
      join(dir, "admin.conf"),
      "--sa-dir",
      sa,
      "--server",
      server.url,
      "--binary",
      join(dir, "fake-binary")
    ]
    assert.strictEqual(await runCli(["install", ...args], io), 0, out.join("\n"))
    const host = (p: string) => join(dir, "host", p)
    const conflist = JSON.parse(readFileSync(host("etc/cni/net.d/10-tenant-routing.conflist"), "utf8"))
    assert.deepStrictEqual(conflist.plugins[0].delegate.ipam.ranges, [
      [{ subnet: "10.244.7.0/24" }],
      [{ subnet: "fd00:10:244:7::/64" }]
    ])
    assert.strictEqual(statSync(host("opt/cni/bin/tenant-routing-wrapper")).mode & 0o777, 0o755)
    assert.strictEqual(statSync(host("etc/cni/net.d/tenant-routing/token")).mode & 0o777, 0o600)
    // The written kubeconfig names host paths; point a copy at the test dir and let the plugin use it.
    const kubeconfig = readFileSync(host("etc/cni/net.d/tenant-routing/kubeconfig"), "utf8").replaceAll(
      "/etc/cni/net.d/tenant-routing/",
      `${host("etc/cni/net.d/tenant-routing")}/`
    )
    writeFileSync(join(dir, "plugin.conf"), kubeconfig)
    server.setNamespace("team", { "tenant.routing/fwmark": "tenant-a" })
    const annotations = await Effect.runPromise(
      AnnotationSource.use((s) =>
        Effect.flatMap(s.connect(join(dir, "plugin.conf")), (r) => r.namespace("team"))
      ).pipe(Effect.provide(AnnotationsKubernetes.layer))
    )
    assert.deepStrictEqual(annotations, { "tenant.routing/fwmark": "tenant-a" })
    out.length = 0
    assert.strictEqual(await runCli(["install", ...args], io), 0)
    assert.match(out.join("\n"), /0 files changed/)
  })

  it("says what is wrong in words: unknown node (exit 1), missing template, no node name (exit 2)", async () => {
    await server.writeKubeconfig(join(dir, "admin2.conf"), { auth: "token", inlineCa: true })
    writeFileSync(join(dir, "template2.json"), configMap().data["conflist.template"])
    const run = async (args: ReadonlyArray<string>) => {
      const out: Array<string> = []
      const err: Array<string> = []
      const code = await runCli(["install", ...args], {
        stdout: (l) => void out.push(l),
        stderr: (l) => void err.push(l),
        environment: {}
      })
      return { code, out: out.join(""), err: err.join("") }
    }
    const base = ["--host-root", join(dir, "host2"), "--kubeconfig", join(dir, "admin2.conf")]
    const unknown = await run(["--node", "ghost", "--template", join(dir, "template2.json"), ...base])
    assert.deepStrictEqual(unknown, {
      code: 1,
      out: "",
      err: "tenant-routing install: node ghost does not exist in the cluster; pass --node NAME (default $NODE_NAME)\n"
    })
    const noTemplate = await run(["--node", "n1", "--template", join(dir, "absent.json"), ...base])
    assert.strictEqual(noTemplate.code, 2)
    assert.strictEqual(
      noTemplate.err,
      `tenant-routing install: conflist template ${join(dir, "absent.json")} does not exist; pass --template FILE\n`
    )
    const noKubeconfig = await run([
      "--node",
      "n1",
      "--template",
      join(dir, "template2.json"),
      "--kubeconfig",
      join(dir, "nope.conf")
    ])
    assert.strictEqual(noKubeconfig.code, 1)
    assert.include(
      noKubeconfig.err,
      `kubeconfig ${join(dir, "nope.conf")} does not exist; pass --kubeconfig FILE`
    )
    const noNode = await run(["--template", join(dir, "template2.json"), ...base])
    assert.deepStrictEqual(noNode, {
      code: 2,
      out: "",
      err: "tenant-routing install: no node name: pass --node NAME or set NODE_NAME\n"
    })
  })
})
