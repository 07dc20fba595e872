/**
 * `tenant-routing install` as a command of the CLI: what the DaemonSet runs on each node
 * (src/programs/install.ts does the work). Exit 0 installed (or nothing to change), 1 failed, 2 usage —
 * a bad flag, no node name, a template, tenants file, executable or ServiceAccount file that is missing
 * or invalid, or a conflist `cilium-cni` would refuse.
 */
import { dirname, join } from "node:path"
import { Command, Flag } from "effect/cli"
import * as Effect from "effect/Effect"
import type * as Layer from "effect/Layer"
import type { NodeSource } from "../src/domain/install/NodeSource.ts"
import * as NodesKubernetes from "../src/interpreters/live/NodesKubernetes.ts"
import { formatInstall, INSTALL_DEFAULTS, install, SHIM_NAME } from "../src/programs/install.ts"
import { CliExit, jsonFlag, optionalString, printResult, stringFlag, usageError } from "./cliSupport.ts"

/** Replaceable parts, for tests: where the node's pod CIDRs come from, the environment. */
export interface InstallCliEnv {
  readonly nodeSource?: Layer.Layer<NodeSource>
  readonly environment?: Readonly<Record<string, string | undefined>>
}

const NAME = "install"

/** Where on the host install writes, and so where uninstall removes: one set of flags for both. */
export const nodePathFlags = {
  hostRoot: stringFlag("host-root", "DIR", "where the host filesystem is mounted", INSTALL_DEFAULTS.hostRoot),
  cniBinDir: stringFlag("cni-bin-dir", "DIR", "host CNI bin dir", INSTALL_DEFAULTS.cniBinDir),
  cniConfDir: stringFlag("cni-conf-dir", "DIR", "host CNI config dir", INSTALL_DEFAULTS.cniConfDir),
  conflistName: stringFlag(
    "conflist-name",
    "NAME",
    "file name of the conflist",
    INSTALL_DEFAULTS.conflistName
  ),
  credentialsDir: stringFlag(
    "credentials-dir",
    "DIR",
    "host dir of the plugin's kubeconfig, token and CA",
    INSTALL_DEFAULTS.credentialsDir
  )
}

export const installCommand = (env: InstallCliEnv) =>
  Command.make(
    NAME,
    {
      node: optionalString("node", "NAME", "this node's name (default $NODE_NAME)"),
      template: Flag.String("template").pipe(
        Flag.withMetavar("FILE"),
        Flag.withDescription(
          'conflist template, JSON with "__POD_CIDR__" / "__POD_CIDR_RANGES__" placeholders (required)'
        )
      ),
      ...nodePathFlags,
      kubeconfig: optionalString(
        "kubeconfig",
        "FILE",
        "kubeconfig to read the Node with (default: the in-cluster ServiceAccount)"
      ),
      saDir: stringFlag("sa-dir", "DIR", "ServiceAccount mount", INSTALL_DEFAULTS.saDir),
      server: optionalString(
        "server",
        "URL",
        "API server for the plugin's kubeconfig (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)"
      ),
      tenants: optionalString(
        "tenants",
        "FILE",
        "tenants file (node-setup's format) whose tenants and markMask replace the template's"
      ),
      tenantsDest: stringFlag(
        "tenants-dest",
        "FILE",
        "host path the tenants file is copied to (for the agent's --tenants and doctor)",
        INSTALL_DEFAULTS.tenantsDest
      ),
      binary: optionalString(
        "binary",
        "FILE",
        "the full program to install as tenant-routing (default: this executable)"
      ),
      shim: optionalString(
        "shim",
        "FILE",
        "the shim to install as tenant-routing-wrapper (default: tenant-routing-wrapper next to this executable)"
      ),
      json: jsonFlag
    },
    (flags) =>
      Effect.gen(function* () {
        const environment = env.environment ?? process.env
        const node = flags.node._tag === "Some" ? flags.node.value : environment.NODE_NAME
        if (node === undefined || node === "")
          return yield* usageError(NAME, "no node name: pass --node NAME or set NODE_NAME")
        const server =
          flags.server._tag === "Some"
            ? flags.server.value
            : `https://${environment.KUBERNETES_SERVICE_HOST ?? "kubernetes.default.svc"}:${environment.KUBERNETES_SERVICE_PORT ?? "443"}`
        const binary = flags.binary._tag === "Some" ? flags.binary.value : process.execPath
        const report = yield* install({
          node,
          template: flags.template,
          hostRoot: flags.hostRoot,
          cniBinDir: flags.cniBinDir,
          cniConfDir: flags.cniConfDir,
          conflistName: flags.conflistName,
          credentialsDir: flags.credentialsDir,
          kubeconfig: flags.kubeconfig._tag === "Some" ? flags.kubeconfig.value : undefined,
          saDir: flags.saDir,
          server,
          tenantsFile: flags.tenants._tag === "Some" ? flags.tenants.value : undefined,
          tenantsDest: flags.tenantsDest,
          binary,
          shim: flags.shim._tag === "Some" ? flags.shim.value : join(dirname(binary), SHIM_NAME)
        }).pipe(Effect.mapError((e) => new CliExit({ command: NAME, code: e.usage ? 2 : 1, message: e.msg })))
        yield* printResult(flags.json, report, formatInstall)
      }).pipe(Effect.provide(env.nodeSource ?? NodesKubernetes.layer))
  ).pipe(
    Command.withDescription(
      "Install the plugin on this node: copy both executables (tenant-routing and the shim tenant-routing-wrapper) into the CNI bin dir, copy the ServiceAccount token and CA and write the plugin's kubeconfig, and write the conflist filled with the node's pod CIDRs (and the tenants file's tenants). Files are written atomically and only when they change; a conflist cilium-cni would refuse is not written. Warns about CNI configs that sort before ours. Exit 0 installed, 1 failed, 2 usage."
    ),
    Command.withShortDescription("install the plugin on this node (what the DaemonSet runs)")
  )
