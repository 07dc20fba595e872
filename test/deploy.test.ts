/**
 * The deployment as shipped: every manifest parses, RBAC only reads, the DaemonSet installs then runs
 * the agent the way docs/DESIGN.md §7 says, the ConfigMap's template rendered with its tenants file is
 * a conflist the binary and cilium-cni both accept (chaining mode named, a default route per family),
 * and `install` (run against the test API server) writes the executables, credentials, a loadable
 * kubeconfig and the conflist; refuses a bare cilium-cni; warns about configs sorting before ours;
 * skips unchanged executables and streams them. `uninstall` keeps the executables while attachments
 * hold them, names the pods, and removes them with --force, saying what it left.
 */
import { execFile, spawnSync } from "node:child_process"
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, describe, it } from "@effect/vitest"
import { loadAllYaml } from "@kubernetes/client-node"
import { Effect, Result } from "effect"
import { assert } from "vitest"
import { runCli } from "../bin/cli.ts"
import { decodeConfig } from "../src/domain/cni/Config.ts"
import { makeRecord } from "../src/domain/datapath/AttachmentRecord.ts"
import { cniChainingIssue, conflistsBefore } from "../src/domain/install/CiliumChaining.ts"
import { renderConflist, withTenants } from "../src/domain/install/Conflist.ts"
import { podOfCacheEntry } from "../src/domain/install/Holders.ts"
import { decodeNodeSetupConfig } from "../src/domain/node-setup/NodeSetupConfig.ts"
import { desired } from "../src/domain/node-setup/RoutingPlan.ts"
import { AnnotationSource } from "../src/domain/tenancy/AnnotationSource.ts"
import * as AnnotationsKubernetes from "../src/interpreters/live/AnnotationsKubernetes.ts"
import * as RoutingMemory from "../src/interpreters/memory/RoutingMemory.ts"
import { type KubeApiServer, startKubeApiServer } from "./support/kubeApiServer.ts"

const root = join(import.meta.dirname, "..")
const manifests = (file: string) =>
  loadAllYaml(readFileSync(join(root, "deploy", file), "utf8")) as Array<Record<string, any>>
const configMap = () => manifests("configmap.yaml").find((m) => m.kind === "ConfigMap")!
const tenantsFile = () => {
  const decoded = decodeNodeSetupConfig(JSON.parse(configMap().data["tenants.json"]))
  if (Result.isFailure(decoded)) throw new Error(JSON.stringify(decoded.failure))
  return decoded.success
}
/** The shipped template as install renders it on a node with these pod CIDRs. */
const rendered = (cidrs: ReadonlyArray<string>) => {
  const r = renderConflist(
    withTenants(JSON.parse(configMap().data["conflist.template"]), tenantsFile()),
    cidrs
  )
  if (!("conflist" in r)) throw new Error(JSON.stringify(r.issues))
  return r.conflist as { name: string; plugins: Array<Record<string, any>> }
}

describe("deploy manifests", () => {
  it("every manifest parses and has a kind, apiVersion and name", () => {
    for (const file of ["rbac.yaml", "configmap.yaml", "daemonset.yaml", "uninstall.yaml"]) {
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

  it("RBAC only reads: get on nodes; get, list and watch (the agent's cache) on pods and namespaces", () => {
    const role = manifests("rbac.yaml").find((m) => m.kind === "ClusterRole")!
    assert.deepStrictEqual(role.rules, [
      { apiGroups: [""], resources: ["pods", "namespaces"], verbs: ["get", "list", "watch"] },
      { apiGroups: [""], resources: ["nodes"], verbs: ["get"] }
    ])
    // The token install copies is the Secret's (survives the pod), and it is the one mounted.
    const secret = manifests("rbac.yaml").find((m) => m.kind === "Secret")!
    assert.strictEqual(secret.type, "kubernetes.io/service-account-token")
    assert.strictEqual(
      secret.metadata.annotations["kubernetes.io/service-account.name"],
      "tenant-routing-wrapper"
    )
    const ds = manifests("daemonset.yaml")[0]!
    assert.deepInclude(ds.spec.template.spec.volumes, {
      name: "token",
      secret: { secretName: secret.metadata.name }
    })
  })

  it("the DaemonSet installs in an init container, then runs the agent with probes, limits and a rolling update", () => {
    const ds = manifests("daemonset.yaml")[0]!
    assert.strictEqual(ds.metadata.name, "tenant-routing")
    assert.deepStrictEqual(ds.spec.updateStrategy, {
      type: "RollingUpdate",
      rollingUpdate: { maxUnavailable: 1 }
    })
    const pod = ds.spec.template.spec
    assert.isTrue(pod.hostNetwork)
    assert.isFalse(pod.hostPID)
    assert.isAtLeast(pod.terminationGracePeriodSeconds, 10)
    const [init] = pod.initContainers
    assert.deepStrictEqual(init.command.slice(0, 2), ["tenant-routing", "install"])
    assert.include(init.command, "--tenants=/config/tenants.json")
    const [agent] = pod.containers
    assert.deepStrictEqual(agent.command.slice(0, 2), ["tenant-routing", "agent"])
    assert.include(agent.command, "--tenants=/etc/tenant-routing/tenants.json")
    assert.include(agent.command, "--metrics-address=127.0.0.1:9465")
    assert.deepStrictEqual(agent.readinessProbe.httpGet, { host: "127.0.0.1", port: 9465, path: "/readyz" })
    assert.deepStrictEqual(agent.livenessProbe.httpGet, { host: "127.0.0.1", port: 9465, path: "/healthz" })
    assert.strictEqual(agent.resources.limits.memory, "512Mi")
    const hostPaths = Object.fromEntries(
      pod.volumes.filter((v: any) => v.hostPath !== undefined).map((v: any) => [v.name, v.hostPath.path])
    )
    const mounted = (c: any) =>
      c.volumeMounts.filter((m: any) => hostPaths[m.name] !== undefined).map((m: any) => hostPaths[m.name])
    for (const path of [
      "/run/tenant-routing",
      "/opt/cni/bin",
      "/etc/cni/net.d",
      "/var/lib/cni",
      "/etc/tenant-routing"
    ])
      assert.include(mounted(agent), path)
    // Same paths inside as on the host, so the kubeconfig's host paths work in the container.
    for (const m of agent.volumeMounts.filter((m: any) => hostPaths[m.name] !== undefined))
      assert.strictEqual(m.mountPath, hostPaths[m.name])
  })

  it("the template, rendered with tenants.json, is a valid config with the file's tenants", () => {
    for (const cidrs of [["10.244.1.0/24"], ["10.244.1.0/24", "fd00:10:244:1::/64"]]) {
      const conf = rendered(cidrs)
      assert.deepStrictEqual(
        conf.plugins[0]!.delegate.ipam.ranges,
        cidrs.map((subnet) => [{ subnet }])
      )
      const plugin = decodeConfig({ ...conf.plugins[0], name: conf.name, cniVersion: "1.0.0" })
      assert.isTrue(Result.isSuccess(plugin), JSON.stringify(plugin))
      if (Result.isSuccess(plugin)) {
        const fromConflist = Object.fromEntries(plugin.success.tenants.map((t) => [t.name, t.mark]))
        const fromFile = Object.fromEntries(tenantsFile().tenants.map((t) => [t.name, t.mark]))
        assert.deepStrictEqual(fromConflist, fromFile)
        assert.strictEqual(plugin.success.markMask, tenantsFile().markMask)
      }
    }
  })

  it("a default route per family the node has a pod CIDR of: ::/0 only with an IPv6 one", () => {
    const routes = (cidrs: ReadonlyArray<string>) => rendered(cidrs).plugins[0]!.delegate.ipam.routes
    assert.deepStrictEqual(routes(["10.244.1.0/24"]), [{ dst: "0.0.0.0/0" }])
    assert.deepStrictEqual(routes(["10.244.1.0/24", "fd00:10:244:1::/64"]), [
      { dst: "0.0.0.0/0" },
      { dst: "::/0" }
    ])
    assert.deepStrictEqual(routes(["fd00:10:244:1::/64"]), [{ dst: "::/0" }])
  })

  it("the rendered conflist chains cilium-cni with a chaining mode it accepts", () => {
    const conf = rendered(["10.244.1.0/24"])
    assert.deepStrictEqual(conf.plugins[1], { type: "cilium-cni", "chaining-mode": "generic-veth" })
    assert.strictEqual(cniChainingIssue(conf), undefined)
  })

  it("cilium-cni without a chaining mode is refused unless the conflist's name is one; unknown modes too", () => {
    const conf = (name: string, cilium: Record<string, unknown>) => ({
      name,
      plugins: [{ type: "tenant-routing-wrapper" }, { type: "cilium-cni", ...cilium }]
    })
    assert.match(cniChainingIssue(conf("tenant-routing", {}))!, /not in chaining mode/)
    assert.strictEqual(cniChainingIssue(conf("generic-veth", {})), undefined)
    assert.strictEqual(cniChainingIssue(conf("portmap", {})), undefined)
    assert.match(cniChainingIssue(conf("generic-veth", { "chaining-mode": "none" }))!, /no chainer/)
    assert.strictEqual(cniChainingIssue(conf("x", { "chaining-mode": "aws-cni" })), undefined)
    assert.strictEqual(
      cniChainingIssue({ name: "x", plugins: [{ type: "tenant-routing-wrapper" }] }),
      undefined
    )
  })

  it("configs that sort before ours are the runtime's .conflist, .conf and .json files only", () => {
    assert.deepStrictEqual(
      conflistsBefore(
        [
          "05-cilium.conflist",
          "00-a.conf",
          "01-b.json",
          "00-tenant-routing.conflist",
          "000-notes.txt",
          "99-z.conflist"
        ],
        "00-tenant-routing.conflist"
      ),
      ["00-a.conf"]
    )
    assert.deepStrictEqual(conflistsBefore(["05-cilium.conflist"], "10-tenant-routing.conflist"), [
      "05-cilium.conflist"
    ])
    assert.deepStrictEqual(conflistsBefore([], "00-tenant-routing.conflist"), [])
  })

  it("libcni's cache names the pod: namespace/name from cniArgs", () => {
    const args = [
      ["K8S_POD_NAMESPACE", "team"],
      ["K8S_POD_NAME", "web-0"]
    ]
    assert.strictEqual(podOfCacheEntry({ cniArgs: args }), "team/web-0")
    assert.strictEqual(podOfCacheEntry({ cniArgs: [["K8S_POD_NAME", "web-0"]] }), "web-0")
    assert.strictEqual(podOfCacheEntry({ cniArgs: [] }), undefined)
    assert.strictEqual(podOfCacheEntry(null), undefined)
  })

  it("a template that would not work is refused with the field named", () => {
    const bad = {
      cniVersion: "1.0.0",
      name: "x",
      plugins: [{ type: "tenant-routing-wrapper", tenants: { a: { mark: "0x4000" } } }]
    }
    const r = renderConflist(bad, ["10.0.0.0/24"])
    assert.isTrue("issues" in r)
    if ("issues" in r) assert.strictEqual(r.issues[0]?.path, "plugins[0].tenants.a.mark")
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
    writeFileSync(join(dir, "fake-shim"), "#!/bin/sh\necho shim\n")
    writeFileSync(join(dir, "tenants.json"), configMap().data["tenants.json"])
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
      join(dir, "fake-binary"),
      "--shim",
      join(dir, "fake-shim"),
      "--tenants",
      join(dir, "tenants.json"),
      "--tenants-dest",
      "/etc/tenant-routing/tenants.json"
    ]
    assert.strictEqual(await runCli(["install", ...args], io), 0, out.join("\n"))
    const host = (p: string) => join(dir, "host", p)
    const conflist = JSON.parse(readFileSync(host("etc/cni/net.d/00-tenant-routing.conflist"), "utf8"))
    assert.deepStrictEqual(conflist.plugins[0].delegate.ipam.ranges, [
      [{ subnet: "10.244.7.0/24" }],
      [{ subnet: "fd00:10:244:7::/64" }]
    ])
    assert.deepStrictEqual(conflist.plugins[0].delegate.ipam.routes, [{ dst: "0.0.0.0/0" }, { dst: "::/0" }])
    assert.deepStrictEqual(conflist.plugins[0].tenants, {
      "tenant-a": { mark: "0x10" },
      "tenant-b": { mark: "0x20" }
    })
    // Both executables, each under its own name, each a copy of its source.
    assert.strictEqual(statSync(host("opt/cni/bin/tenant-routing-wrapper")).mode & 0o777, 0o755)
    assert.strictEqual(statSync(host("opt/cni/bin/tenant-routing")).mode & 0o777, 0o755)
    assert.strictEqual(
      readFileSync(host("opt/cni/bin/tenant-routing-wrapper"), "utf8"),
      "#!/bin/sh\necho shim\n"
    )
    assert.strictEqual(readFileSync(host("opt/cni/bin/tenant-routing"), "utf8"), "#!/bin/sh\n")
    assert.strictEqual(
      readFileSync(host("etc/tenant-routing/tenants.json"), "utf8"),
      configMap().data["tenants.json"]
    )
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

  /** A fresh host root with the shared inputs; `run` installs into it. */
  const fresh = async (name: string) => {
    const base = join(dir, name)
    const sa = join(base, "sa")
    mkdirSync(sa, { recursive: true })
    writeFileSync(join(sa, "token"), server.token)
    writeFileSync(join(sa, "ca.crt"), server.caPem)
    await server.writeKubeconfig(join(base, "admin.conf"), { auth: "token", inlineCa: true })
    writeFileSync(join(base, "template.json"), configMap().data["conflist.template"])
    writeFileSync(join(base, "tenants.json"), configMap().data["tenants.json"])
    writeFileSync(join(base, "program"), "#!/bin/sh\necho program v1\n")
    writeFileSync(join(base, "shim"), "#!/bin/sh\necho shim v1\n")
    const host = join(base, "host")
    const args = (extra: ReadonlyArray<string> = [], over: { host?: string; binary?: string } = {}) => [
      "install",
      "--node=n1",
      `--template=${join(base, "template.json")}`,
      `--tenants=${join(base, "tenants.json")}`,
      `--host-root=${over.host ?? host}`,
      `--kubeconfig=${join(base, "admin.conf")}`,
      `--sa-dir=${sa}`,
      `--server=${server.url}`,
      `--binary=${over.binary ?? join(base, "program")}`,
      `--shim=${join(base, "shim")}`,
      ...extra
    ]
    const run = async (extra: ReadonlyArray<string> = []) => {
      const out: Array<string> = []
      const err: Array<string> = []
      const code = await runCli(args(extra), {
        stdout: (l) => void out.push(l),
        stderr: (l) => void err.push(l)
      })
      return { code, out: out.join(""), err: err.join("") }
    }
    return { base, host, run, args }
  }

  it("refuses a template whose cilium-cni has no chaining mode (exit 2) and writes nothing", async () => {
    const { base, host, run } = await fresh("bare-cilium")
    const template = JSON.parse(configMap().data["conflist.template"])
    template.plugins[1] = { type: "cilium-cni" }
    writeFileSync(join(base, "template.json"), JSON.stringify(template))
    const r = await run()
    assert.strictEqual(r.code, 2, r.err)
    assert.include(r.err, "cilium-cni")
    assert.include(r.err, '"chaining-mode": "generic-veth"')
    assert.isFalse(existsSync(join(host, "etc/cni/net.d/00-tenant-routing.conflist")))
    assert.isFalse(existsSync(join(host, "opt/cni/bin/tenant-routing")))
  })

  it("warns about a CNI config that sorts before ours, and not about later ones", async () => {
    const { host, run } = await fresh("earlier")
    mkdirSync(join(host, "etc/cni/net.d"), { recursive: true })
    writeFileSync(join(host, "etc/cni/net.d/00-aaa.conf"), "{}")
    writeFileSync(join(host, "etc/cni/net.d/05-cilium.conflist"), "{}")
    const r = await run()
    assert.strictEqual(r.code, 0, r.err)
    const warnings = r.out.split("\n").filter((l) => l.startsWith("warning: "))
    assert.strictEqual(warnings.length, 1, r.out)
    assert.include(warnings[0], "/etc/cni/net.d/00-aaa.conf sorts before 00-tenant-routing.conflist")
    // Under the old name, Cilium's file wins too.
    const old = await run(["--conflist-name=10-tenant-routing.conflist"])
    assert.include(old.out, "/etc/cni/net.d/05-cilium.conflist sorts before 10-tenant-routing.conflist")
  })

  it("skips executables whose bytes are unchanged (mtime kept) and replaces a changed one", async () => {
    const { base, host, run } = await fresh("skip")
    assert.strictEqual((await run()).code, 0)
    const program = join(host, "opt/cni/bin/tenant-routing")
    const shim = join(host, "opt/cni/bin/tenant-routing-wrapper")
    const past = new Date("2020-01-01T00:00:00Z")
    utimesSync(program, past, past)
    utimesSync(shim, past, past)
    const again = await run()
    assert.strictEqual(again.code, 0)
    assert.match(again.out, /0 files changed/)
    assert.strictEqual(statSync(program).mtimeMs, past.getTime())
    assert.strictEqual(statSync(shim).mtimeMs, past.getTime())
    // Same size, one byte different: compared by content, not by size.
    writeFileSync(join(base, "program"), "#!/bin/sh\necho program v2\n")
    const changed = await run()
    assert.strictEqual(changed.code, 0)
    assert.include(changed.out, "1 files changed: /opt/cni/bin/tenant-routing")
    assert.strictEqual(readFileSync(program, "utf8"), "#!/bin/sh\necho program v2\n")
    assert.strictEqual(statSync(shim).mtimeMs, past.getTime())
    // No temporary file is left behind.
    assert.deepStrictEqual(
      spawnSync("ls", ["-A", join(host, "opt/cni/bin")], { encoding: "utf8" })
        .stdout.trim()
        .split("\n"),
      ["tenant-routing", "tenant-routing-wrapper"]
    )
  })

  it("streams the executable: installing a 120 MB file raises peak RSS far less than its size", async () => {
    const { base, args } = await fresh("stream")
    const size = 120 * 1024 * 1024
    const big = Buffer.alloc(size)
    for (let i = 0; i < size; i += 4096) big[i] = i & 0xff
    writeFileSync(join(base, "program"), big)
    // A child process, so its high-water mark is the install's alone: maxRSS before and after.
    const script = [
      `const { runCli } = await import(${JSON.stringify(join(root, "bin/cli.ts"))})`,
      "const quiet = { stdout: () => {}, stderr: (t) => process.stderr.write(t) }",
      // A whole install of a small executable first, so every module (the Kubernetes client too)
      // is loaded and the delta is the big copy alone.
      `await runCli(${JSON.stringify(args([], { host: join(base, "warm"), binary: join(base, "shim") }))}, quiet)`,
      "const before = process.resourceUsage().maxRSS",
      `const code = await runCli(${JSON.stringify(args())}, quiet)`,
      "const after = process.resourceUsage().maxRSS",
      "process.stdout.write(JSON.stringify({ code, before, after }))"
    ].join("\n")
    for (const round of ["first copy", "unchanged (compare only)"]) {
      // Asynchronously: the test API server answering the child runs in this process.
      const r = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
        encoding: "utf8",
        cwd: root
      })
      const { code, before, after } = JSON.parse(r.stdout) as { code: number; before: number; after: number }
      assert.strictEqual(code, 0, r.stderr)
      const grownMiB = (after - before) / 1024
      console.log(
        `install of a ${size / 1024 / 1024} MiB executable (${round}): peak RSS ${(after / 1024).toFixed(1)} MiB, grew ${grownMiB.toFixed(1)} MiB during the install`
      )
      assert.isBelow(grownMiB, 100)
    }
    assert.isTrue(readFileSync(join(base, "host/opt/cni/bin/tenant-routing")).equals(big))
  })
})

describe("uninstall", () => {
  let dir: string
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "trw-uninstall-"))
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  const tenantsText = () => configMap().data["tenants.json"] as string

  /** A node as install leaves it (no API needed): files at their host paths under `host`. */
  const installed = (name: string) => {
    const host = join(dir, name)
    const put = (p: string, text: string) => {
      mkdirSync(join(host, p, ".."), { recursive: true })
      writeFileSync(join(host, p), text)
    }
    put("opt/cni/bin/tenant-routing", "program")
    put("opt/cni/bin/tenant-routing-wrapper", "shim")
    put("opt/cni/bin/ptp", "not ours")
    put("etc/cni/net.d/00-tenant-routing.conflist", "{}")
    put("etc/cni/net.d/05-cilium.conflist", "not ours")
    for (const f of ["kubeconfig", "token", "ca.crt"]) put(`etc/cni/net.d/tenant-routing/${f}`, f)
    put("etc/tenant-routing/tenants.json", tenantsText())
    return host
  }
  const hold = (host: string, containerId: string, pod: string | undefined) => {
    const record = makeRecord(
      { network: "tenant-routing", containerId, ifname: "eth0" },
      { name: "tenant-a", mark: 0x10 },
      0x30,
      ["10.244.7.5"],
      "nftables"
    )
    const recordDir = join(host, "var/lib/cni/tenant-routing/tenant-routing", containerId)
    mkdirSync(recordDir, { recursive: true })
    writeFileSync(join(recordDir, "eth0.json"), JSON.stringify(record))
    if (pod !== undefined) {
      const [namespace, name] = pod.split("/")
      mkdirSync(join(host, "var/lib/cni/results"), { recursive: true })
      writeFileSync(
        join(host, "var/lib/cni/results", `tenant-routing-${containerId}-eth0`),
        JSON.stringify({
          kind: "cniCacheV1",
          containerId,
          cniArgs: [
            ["K8S_POD_NAMESPACE", namespace],
            ["K8S_POD_NAME", name]
          ]
        })
      )
    }
  }
  const run = async (host: string, extra: ReadonlyArray<string> = []) => {
    const out: Array<string> = []
    const err: Array<string> = []
    const config = decodeNodeSetupConfig(JSON.parse(tenantsText()))
    if (Result.isFailure(config)) throw new Error("tenants.json")
    const code = await runCli(["uninstall", `--host-root=${host}`, ...extra], {
      stdout: (l) => void out.push(l),
      stderr: (l) => void err.push(l),
      // The node as node-setup left it: uninstall must remove exactly that.
      routing: RoutingMemory.layer({ initial: desired(config.success) })
    })
    return { code, out: out.join(""), err: err.join("") }
  }
  const exists = (host: string, p: string) => existsSync(join(host, p))

  it("no attachment left: removes everything install wrote and node-setup's routing, and nothing else (exit 0)", async () => {
    const host = installed("clean")
    mkdirSync(join(host, "var/lib/cni/tenant-routing/tenant-routing"), { recursive: true })
    const r = await run(host)
    assert.strictEqual(r.code, 0, r.err + r.out)
    assert.include(r.out, "executables removed; the node is back to before the install")
    assert.match(r.out, /^remove: [1-9]\d* changes/m)
    for (const p of [
      "opt/cni/bin/tenant-routing",
      "opt/cni/bin/tenant-routing-wrapper",
      "etc/cni/net.d/00-tenant-routing.conflist",
      "etc/cni/net.d/tenant-routing",
      "etc/tenant-routing/tenants.json",
      "var/lib/cni/tenant-routing"
    ])
      assert.isFalse(exists(host, p), p)
    for (const p of ["opt/cni/bin/ptp", "etc/cni/net.d/05-cilium.conflist"]) assert.isTrue(exists(host, p), p)
    // Run again: nothing left to do, still done.
    const again = await run(host)
    assert.strictEqual(again.code, 0, again.err)
    assert.include(again.out, "uninstall: removed 0 paths")
  })

  it("attachments hold the executables: kept, the pods named, exit 1; the rest is removed", async () => {
    const host = installed("held")
    hold(host, "c0ffee01", "team/web-0")
    hold(host, "c0ffee02", undefined)
    const r = await run(host)
    assert.strictEqual(r.code, 1, r.err)
    assert.strictEqual(r.err, "")
    assert.include(r.out, "executables kept: 2 attachments still hold them")
    assert.include(r.out, "pod team/web-0 (tenant-routing/c0ffee01/eth0, tenant tenant-a, 10.244.7.5)")
    assert.include(r.out, "tenant-routing/c0ffee02/eth0, tenant tenant-a, 10.244.7.5")
    assert.isTrue(exists(host, "opt/cni/bin/tenant-routing"))
    assert.isTrue(exists(host, "opt/cni/bin/tenant-routing-wrapper"))
    assert.isFalse(exists(host, "etc/cni/net.d/00-tenant-routing.conflist"))
    assert.isFalse(exists(host, "etc/cni/net.d/tenant-routing"))
    const json = await run(host, ["--json"])
    assert.strictEqual(json.code, 1)
    const report = JSON.parse(json.out)
    assert.strictEqual(report.executables, "kept")
    assert.strictEqual(report.complete, false)
    assert.deepStrictEqual(
      report.holders.map((h: any) => [h.containerId, h.pod ?? null]),
      [
        ["c0ffee01", "team/web-0"],
        ["c0ffee02", null]
      ]
    )
  })

  it("--force removes the executables anyway and says what it left (the records stay)", async () => {
    const host = installed("forced")
    hold(host, "c0ffee01", "team/web-0")
    const r = await run(host, ["--force"])
    assert.strictEqual(r.code, 0, r.err)
    assert.include(r.out, "executables removed (--force) although 1 attachment still hold them:")
    assert.include(r.out, "pod team/web-0")
    assert.match(r.out, /left: 1 attachment record in \/var\/lib\/cni\/tenant-routing/)
    assert.isFalse(exists(host, "opt/cni/bin/tenant-routing"))
    assert.isFalse(exists(host, "opt/cni/bin/tenant-routing-wrapper"))
    assert.isTrue(exists(host, "var/lib/cni/tenant-routing/tenant-routing/c0ffee01/eth0.json"))
  })
})
