/**
 * `tenant-routing uninstall` as a command of the CLI: what deploy/uninstall.yaml runs on each node
 * (src/programs/uninstall.ts does the work). Exit 0 the node is back to before the install; 1 not yet
 * (pods still hold the executables, named in the output: delete them and run it again, or pass
 * --force) or removing failed; 2 usage — a bad flag, or a tenants file that is missing or invalid.
 */
import { join } from "node:path"
import { Command, Flag } from "effect/cli"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import type { ChildProcessSpawner } from "effect/process"
import * as Result from "effect/Result"
import { DEFAULT_STATE_DIR } from "../src/domain/cni/Config.ts"
import type { AttachmentStore } from "../src/domain/datapath/AttachmentStore.ts"
import { formatIssues } from "../src/domain/decode/Issue.ts"
import { DEFAULT_TENANTS_FILE, decodeNodeSetupConfigJson } from "../src/domain/node-setup/NodeSetupConfig.ts"
import type { Routing } from "../src/domain/node-setup/Routing.ts"
import * as AttachmentStoreFiles from "../src/interpreters/live/AttachmentStoreFiles.ts"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import { describeFileError } from "../src/programs/fileError.ts"
import { formatUninstall, UNINSTALL_DEFAULTS, uninstall } from "../src/programs/uninstall.ts"
import { CliExit, jsonFlag, printResult, stringFlag, switchFlag, usageError } from "./cliSupport.ts"
import { nodePathFlags } from "./installCli.ts"

/** Replaceable parts, for tests. */
export interface UninstallCliEnv {
  readonly routing?: Layer.Layer<Routing, never, ChildProcessSpawner.ChildProcessSpawner>
  readonly attachmentStore?: Layer.Layer<AttachmentStore>
}

const NAME = "uninstall"

export const uninstallCommand = (env: UninstallCliEnv) =>
  Command.make(
    NAME,
    {
      ...nodePathFlags,
      stateDir: stringFlag(
        "state-dir",
        "DIR",
        "the plugin's stateDir, whose records name the pods that still hold the executables",
        DEFAULT_STATE_DIR
      ),
      cniCacheDir: stringFlag(
        "cni-cache-dir",
        "DIR",
        "libcni's result cache, where pod names are looked up",
        UNINSTALL_DEFAULTS.cniCacheDir
      ),
      tenants: Flag.String("tenants").pipe(
        Flag.withMetavar("FILE"),
        Flag.optional,
        Flag.withDescription(
          `tenants file whose rules and routes node-setup installed, to remove them (default: the copy install wrote, ${DEFAULT_TENANTS_FILE} under --host-root, if it exists)`
        )
      ),
      force: switchFlag(
        "force",
        "remove the executables even while pods still hold them, and say what is left"
      ),
      json: jsonFlag
    },
    (flags) =>
      Effect.gen(function* () {
        const fs = yield* FileSystem.FileSystem
        let tenants: Parameters<typeof uninstall>[0]["tenants"]
        const tenantsCopy = join(flags.hostRoot, DEFAULT_TENANTS_FILE)
        const file =
          flags.tenants._tag === "Some"
            ? flags.tenants.value
            : (yield* fs.exists(tenantsCopy).pipe(Effect.orElseSucceed(() => false)))
              ? tenantsCopy
              : undefined
        if (file !== undefined) {
          const text = yield* fs
            .readFileString(file)
            .pipe(
              Effect.mapError((e) =>
                usageError(
                  NAME,
                  describeFileError(e, "tenants file", file, "pass --tenants FILE or leave it out")
                )
              )
            )
          const decoded = decodeNodeSetupConfigJson(text)
          if (Result.isFailure(decoded)) {
            const lines = formatIssues(decoded.failure)
              .split("\n")
              .map((l) => `  ${l}`)
            return yield* usageError(NAME, `invalid tenants file ${file}:\n${lines.join("\n")}`)
          }
          tenants = decoded.success
        }
        const report = yield* uninstall({
          hostRoot: flags.hostRoot,
          cniBinDir: flags.cniBinDir,
          cniConfDir: flags.cniConfDir,
          conflistName: flags.conflistName,
          credentialsDir: flags.credentialsDir,
          stateDir: flags.stateDir,
          cniCacheDir: flags.cniCacheDir,
          tenants,
          tenantsCopy: DEFAULT_TENANTS_FILE,
          force: flags.force
        }).pipe(Effect.mapError((e) => new CliExit({ command: NAME, code: 1, message: e.msg })))
        yield* printResult(flags.json, report, formatUninstall)
        // Not done yet: the output says who holds the executables. A retry loop (the uninstall
        // DaemonSet's init container) runs it again until they are gone.
        if (report.executables === "kept")
          return yield* new CliExit({ command: NAME, code: 1, message: undefined })
      }).pipe(
        Effect.provide(
          Layer.mergeAll(
            env.routing ?? RoutingIproute2.layer(),
            env.attachmentStore ?? AttachmentStoreFiles.layer
          )
        )
      )
  ).pipe(
    Command.withDescription(
      "Bring this node back to before install: remove the conflist, the plugin's credentials, node-setup's rules and routes (with --tenants), and the executables once no pod holds them (a pod's DEL runs them; --force removes them anyway and says what is left). Run it after deleting the DaemonSet. Exit 0 done, 1 not yet (pods hold the executables; they are named) or failed, 2 usage."
    ),
    Command.withShortDescription("remove the plugin from this node (deploy/uninstall.yaml runs it)")
  )
