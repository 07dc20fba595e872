/**
 * `tenant-routing-wrapper install`: what the DaemonSet runs on each node, periodically. It copies
 * this executable into the CNI bin dir, refreshes the ServiceAccount token and CA the plugin reads
 * through its own kubeconfig, fills the conflist template with the node's pod CIDRs and writes it.
 * Every file is written atomically (temporary file + rename in the same directory) and only when its
 * content changed, so the runtime never sees a half-written conflist or binary.
 *
 * Paths written into files are host paths; `--host-root` is where the host's filesystem is mounted.
 */
import { randomBytes } from "node:crypto"
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { parseArgs } from "node:util"
import { renderConflist } from "../src/domain/install/Conflist.ts"

export const USAGE = `usage: tenant-routing-wrapper install --node NAME --template FILE [options]
  --node NAME              this node (default: $NODE_NAME)
  --template FILE          conflist template (JSON with "__POD_CIDR__" / "__POD_CIDR_RANGES__")
  --host-root DIR          where the host filesystem is mounted (default /)
  --cni-bin-dir DIR        host CNI bin dir (default /opt/cni/bin)
  --cni-conf-dir DIR       host CNI config dir (default /etc/cni/net.d)
  --conflist-name NAME     file name of the conflist (default 10-tenant-routing.conflist)
  --credentials-dir DIR    host dir for the plugin's kubeconfig, token and CA (default /etc/cni/net.d/tenant-routing)
  --kubeconfig FILE        kubeconfig to read the Node with (default: in-cluster ServiceAccount)
  --sa-dir DIR             ServiceAccount mount (default /var/run/secrets/kubernetes.io/serviceaccount)
  --server URL             API server for the plugin's kubeconfig (default: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)
  --binary FILE            executable to install (default: this executable)`

/** Writes `content` to `path` atomically; false when the file already had it. */
const writeAtomic = (path: string, content: string | Buffer, mode: number): boolean => {
  const bytes = typeof content === "string" ? Buffer.from(content) : content
  if (existsSync(path) && readFileSync(path).equals(bytes)) return false
  mkdirSync(dirname(path), { recursive: true, mode: 0o755 })
  const tmp = join(dirname(path), `.${randomBytes(6).toString("hex")}.tmp`)
  try {
    writeFileSync(tmp, bytes, { mode })
    renameSync(tmp, path)
  } finally {
    rmSync(tmp, { force: true })
  }
  return true
}

const kubeconfigYaml = (server: string, caFile: string, tokenFile: string) =>
  [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: cluster",
    "  cluster:",
    `    server: ${JSON.stringify(server)}`,
    `    certificate-authority: ${JSON.stringify(caFile)}`,
    "users:",
    "- name: tenant-routing-wrapper",
    "  user:",
    // client-go reads tokenFile, @kubernetes/client-node reads token-file: write both.
    `    tokenFile: ${JSON.stringify(tokenFile)}`,
    `    token-file: ${JSON.stringify(tokenFile)}`,
    "contexts:",
    "- name: tenant-routing-wrapper",
    "  context:",
    "    cluster: cluster",
    "    user: tenant-routing-wrapper",
    "current-context: tenant-routing-wrapper",
    ""
  ].join("\n")

const readPodCidrs = async (node: string, kubeconfig: string | undefined): Promise<ReadonlyArray<string>> => {
  const k8s = await import("@kubernetes/client-node")
  const kc = new k8s.KubeConfig()
  if (kubeconfig === undefined) kc.loadFromCluster()
  else kc.loadFromFile(kubeconfig)
  const api = kc.makeApiClient(k8s.CoreV1Api)
  const n = await api.readNode({ name: node })
  return n.spec?.podCIDRs ?? (n.spec?.podCIDR === undefined ? [] : [n.spec.podCIDR])
}

export interface InstallIo {
  readonly out: (line: string) => void
  readonly err: (line: string) => void
}

export const runInstall = async (
  argv: ReadonlyArray<string>,
  io: InstallIo = { out: (l) => console.log(l), err: (l) => console.error(l) }
): Promise<number> => {
  let values: Record<string, string | undefined>
  try {
    values = parseArgs({
      args: [...argv],
      options: Object.fromEntries(
        [
          "node",
          "template",
          "host-root",
          "cni-bin-dir",
          "cni-conf-dir",
          "conflist-name",
          "credentials-dir",
          "kubeconfig",
          "sa-dir",
          "server",
          "binary"
        ].map((k) => [k, { type: "string" as const }])
      )
    }).values as Record<string, string | undefined>
  } catch (e) {
    io.err(`${(e as Error).message}\n${USAGE}`)
    return 2
  }
  const node = values.node ?? process.env.NODE_NAME
  const template = values.template
  if (node === undefined || template === undefined) {
    io.err(USAGE)
    return 2
  }
  const root = values["host-root"] ?? "/"
  const host = (p: string) => join(root, p)
  const binDir = values["cni-bin-dir"] ?? "/opt/cni/bin"
  const confDir = values["cni-conf-dir"] ?? "/etc/cni/net.d"
  const credDir = values["credentials-dir"] ?? "/etc/cni/net.d/tenant-routing"
  const saDir = values["sa-dir"] ?? "/var/run/secrets/kubernetes.io/serviceaccount"
  const server =
    values.server ??
    `https://${process.env.KUBERNETES_SERVICE_HOST ?? "kubernetes.default.svc"}:${process.env.KUBERNETES_SERVICE_PORT ?? "443"}`

  try {
    const podCidrs = await readPodCidrs(node, values.kubeconfig)
    const rendered = renderConflist(JSON.parse(readFileSync(template, "utf8")), podCidrs)
    if ("issues" in rendered) {
      io.err(`install: the conflist template cannot be installed on ${node}:`)
      for (const i of rendered.issues) io.err(`  ${i.path}: ${i.message}`)
      return 1
    }
    const changed: Array<string> = []
    const note = (path: string, did: boolean) => did && changed.push(path)
    const binary = values.binary ?? process.execPath
    note(
      join(binDir, "tenant-routing-wrapper"),
      writeAtomic(host(join(binDir, "tenant-routing-wrapper")), readFileSync(binary), 0o755)
    )
    note(
      join(credDir, "token"),
      writeAtomic(host(join(credDir, "token")), readFileSync(join(saDir, "token")), 0o600)
    )
    note(
      join(credDir, "ca.crt"),
      writeAtomic(host(join(credDir, "ca.crt")), readFileSync(join(saDir, "ca.crt")), 0o644)
    )
    const kubeconfig = kubeconfigYaml(server, join(credDir, "ca.crt"), join(credDir, "token"))
    note(join(credDir, "kubeconfig"), writeAtomic(host(join(credDir, "kubeconfig")), kubeconfig, 0o600))
    // The conflist last: the runtime may start using the plugin as soon as it appears.
    const conflistPath = join(confDir, values["conflist-name"] ?? "10-tenant-routing.conflist")
    note(
      conflistPath,
      writeAtomic(host(conflistPath), `${JSON.stringify(rendered.conflist, null, 2)}\n`, 0o644)
    )
    io.out(
      `install: ${node} pod CIDRs ${podCidrs.join(", ")}; ${changed.length} files changed${changed.length ? `: ${changed.join(", ")}` : ""}`
    )
    return 0
  } catch (e) {
    io.err(`install: ${(e as Error).message}`)
    return 1
  }
}
