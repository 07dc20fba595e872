/**
 * The kubeconfig `install` writes for the plugin: the cluster's server and CA file, and the
 * ServiceAccount token file the DaemonSet keeps fresh. Paths in it are host paths.
 */

export const kubeconfigYaml = (server: string, caFile: string, tokenFile: string): string =>
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
