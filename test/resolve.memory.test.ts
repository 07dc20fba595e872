/**
 * How ADD reads the annotations its tenant depends on (docs/DESIGN.md §3), pinned by the exact
 * messages and by what failurePolicy open lets through: pod and namespace read failures, a 403 on
 * the namespace, pinning strict, a pinned namespace with an unreadable pod, the read deadline, and
 * when the API is not read at all.
 */
import { describe, it } from "@effect/vitest"
import { assert } from "vitest"
import { cniEnv, originalConf, parse, World } from "./support/memoryWorld.ts"

const KEY = "tenant.routing/fwmark"
const pod = { containerId: "c1", namespace: "default", name: "p" }

interface Doc {
  readonly code: number
  readonly msg: string
}

const world = (faults: World["faults"]["faults"] = []) => {
  const w = new World()
  w.cluster.setPod("default", "p", { [KEY]: "tenant-a" })
  w.cluster.setNamespace("default", {})
  w.faults.faults = faults
  return w
}

describe("reading the pod and its namespace", () => {
  it("an unreadable pod is 11 'reading pod <ns>/<name>: <reason>'", async () => {
    const w = world([{ op: "api.pods", nth: 1, kind: "fail" }])
    const doc = parse(await w.run(cniEnv("ADD", pod), originalConf())) as Doc
    assert.strictEqual(doc.code, 11)
    assert.match(doc.msg, /^reading pod default\/p: \S/)
    assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
  })

  it("an unreadable namespace (best-effort) is 11 'reading namespace <ns>: <reason>'", async () => {
    const w = world([{ op: "api.namespaces", nth: 1, kind: "fail" }])
    const doc = parse(await w.run(cniEnv("ADD", pod), originalConf())) as Doc
    assert.strictEqual(doc.code, 11)
    assert.match(doc.msg, /^reading namespace default: \S/)
  })

  it("an unreadable namespace under failurePolicy open starts the pod untagged (best-effort)", async () => {
    const w = world([{ op: "api.namespaces", nth: 1, kind: "fail" }])
    const out = await w.run(cniEnv("ADD", pod), originalConf({ failurePolicy: "open" }))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
  })

  it("a forbidden namespace (best-effort) means no pinning: the pod's own tenant is used", async () => {
    const w = world([{ op: "api.namespaces", nth: 1, kind: "fail", reason: "403" }])
    const out = await w.run(cniEnv("ADD", pod), originalConf())
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.deepStrictEqual(
      w.kernel.entries.nftables.map((e) => e.mark),
      [0x10]
    )
  })

  it("under pinning strict an unreadable namespace fails even under failurePolicy open, naming strict", async () => {
    for (const reason of ["403", "503"]) {
      const w = world([{ op: "api.namespaces", nth: 1, kind: "fail", reason }])
      const out = await w.run(cniEnv("ADD", pod), originalConf({ pinning: "strict", failurePolicy: "open" }))
      assert.strictEqual(out.exitCode, 1, reason)
      const doc = parse(out) as Doc
      assert.strictEqual(doc.code, 11)
      assert.match(doc.msg, /^reading namespace default \(pinning: strict\): \S/)
      assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
    }
  })

  it("an unavailable API under pinning strict fails even under failurePolicy open; best-effort starts untagged", async () => {
    const strict = world([{ op: "api.connect", nth: 1, kind: "fail" }])
    const out = await strict.run(
      cniEnv("ADD", pod),
      originalConf({ pinning: "strict", failurePolicy: "open" })
    )
    assert.strictEqual(out.exitCode, 1)
    const doc = parse(out) as Doc
    assert.strictEqual(doc.code, 11)
    assert.include(doc.msg, "kubeconfig /etc/kubernetes/kubelet.conf not found")
    const loose = world([{ op: "api.connect", nth: 1, kind: "fail" }])
    const ok = await loose.run(cniEnv("ADD", pod), originalConf({ failurePolicy: "open" }))
    assert.strictEqual(ok.exitCode, 0, ok.stdout)
  })

  it("an unreadable pod in a pinned namespace cannot start untagged, even under failurePolicy open", async () => {
    const w = world([{ op: "api.pods", nth: 1, kind: "fail" }])
    w.cluster.setNamespace("default", { [KEY]: "tenant-a" })
    const out = await w.run(cniEnv("ADD", pod), originalConf({ failurePolicy: "open" }))
    assert.strictEqual(out.exitCode, 1)
    const doc = parse(out) as Doc
    assert.match(
      doc.msg,
      /^reading pod default\/p: .*; namespace default is pinned, so the pod cannot start untagged$/
    )
  })

  it("an unreadable pod in an unpinned namespace starts untagged under failurePolicy open", async () => {
    const w = world([{ op: "api.pods", nth: 1, kind: "fail" }])
    const out = await w.run(cniEnv("ADD", pod), originalConf({ failurePolicy: "open" }))
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
  })

  it("a pod read that never answers ends at apiTimeout with 11 naming the read and the deadline", async () => {
    const w = world([{ op: "api.pods", nth: 1, kind: "hang" }])
    const doc = parse(await w.runOnVirtualTime(cniEnv("ADD", pod), originalConf({ apiTimeout: "2s" }))) as Doc
    assert.strictEqual(doc.code, 11)
    assert.strictEqual(doc.msg, "reading pod default/p: no answer from the Kubernetes API within 2000ms")
  })

  it("a namespace read that never answers ends at apiTimeout with 11 naming the namespace", async () => {
    const w = world([{ op: "api.namespaces", nth: 1, kind: "hang" }])
    const doc = parse(await w.runOnVirtualTime(cniEnv("ADD", pod), originalConf({ apiTimeout: "2s" }))) as Doc
    assert.strictEqual(doc.code, 11)
    assert.strictEqual(doc.msg, "reading namespace default: no answer from the Kubernetes API within 2000ms")
  })

  it("without pod namespace and name in CNI_ARGS neither the pod nor the namespace is read", async () => {
    const w = world()
    const out = await w.run(cniEnv("ADD", { containerId: "c1" }), originalConf())
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(w.faults.count("api.pods"), 0)
    assert.strictEqual(w.faults.count("api.namespaces"), 0)
    assert.deepStrictEqual(w.kernel.entries, { iptables: [], nftables: [] })
  })

  it("with only the namespace in CNI_ARGS the pod is not read", async () => {
    const w = world()
    const env = { ...cniEnv("ADD", pod), CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAMESPACE=default" }
    const out = await w.run(env, originalConf())
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(w.faults.count("api.pods"), 0)
  })

  it("with only the pod name in CNI_ARGS the pod is not read", async () => {
    const w = world()
    const env = { ...cniEnv("ADD", pod), CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAME=p" }
    const out = await w.run(env, originalConf())
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(w.faults.count("api.pods"), 0)
  })

  it("without a kubeconfig the API is never used", async () => {
    const w = world()
    const conf = originalConf()
    delete conf.kubeconfig
    const out = await w.run(cniEnv("ADD", pod), conf)
    assert.strictEqual(out.exitCode, 0, out.stdout)
    assert.strictEqual(w.faults.count("api.connect"), 0)
    assert.strictEqual(w.faults.count("api.pods"), 0)
    assert.strictEqual(w.faults.count("api.namespaces"), 0)
  })
})
