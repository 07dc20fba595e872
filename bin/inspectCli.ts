/**
 * `tenant-routing inspect` as a command of the CLI: every managed netfilter entry of both
 * backends (or one), joined with the attachment records, as a table or JSON. Exit 0 listed, 1 the
 * entries or records could not be read, 2 usage. Read-only; it takes no lock.
 */

import { Command, Flag } from "effect/cli"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { BACKENDS, DEFAULT_STATE_DIR } from "../src/domain/cni/Config.ts"
import type { AttachmentStore } from "../src/domain/datapath/AttachmentStore.ts"
import type { Netfilter } from "../src/domain/datapath/Netfilter.ts"
import * as AttachmentStoreFiles from "../src/interpreters/live/AttachmentStoreFiles.ts"
import * as NetfilterLive from "../src/interpreters/live/NetfilterLive.ts"
import { formatInspect, inspect } from "../src/programs/inspect.ts"
import { failed, jsonFlag, printResult, stringFlag } from "./cliSupport.ts"

/** Replaceable parts, for tests. */
export interface InspectCliEnv {
  readonly netfilter?: Layer.Layer<Netfilter>
  readonly attachmentStore?: Layer.Layer<AttachmentStore>
}

const NAME = "inspect"

export const inspectCommand = (env: InspectCliEnv) =>
  Command.make(
    NAME,
    {
      backend: Flag.Literals("backend", BACKENDS).pipe(
        Flag.withMetavar("iptables|nftables"),
        Flag.optional,
        Flag.withDescription("list only this backend's entries (default both)")
      ),
      stateDir: stringFlag(
        "state-dir",
        "DIR",
        "the plugin's stateDir, where attachment records are",
        DEFAULT_STATE_DIR
      ),
      json: jsonFlag
    },
    (flags) =>
      inspect(flags.stateDir, flags.backend._tag === "Some" ? flags.backend.value : undefined).pipe(
        Effect.mapError((e) => failed(NAME, e.msg)),
        Effect.flatMap((entries) => printResult(flags.json, entries, formatInspect)),
        Effect.provide(
          Layer.mergeAll(
            env.netfilter ?? NetfilterLive.layer(),
            env.attachmentStore ?? AttachmentStoreFiles.layer
          )
        )
      )
  ).pipe(
    Command.withDescription(
      "List every netfilter entry the plugin manages, with the pod attachment each belongs to. Read-only. Exit 0 listed, 1 could not read them, 2 usage."
    ),
    Command.withShortDescription("list the marked pod addresses and their tenants")
  )
