/**
 * `tenant-routing doctor` (docs/DESIGN.md §7) as a command of the CLI: flags, the live
 * layers, and the report as text or JSON. Exit codes: 0 when every check is ok or only warns, 1 when
 * any check fails, 2 for a usage error. Doctor never changes the node and never stops at a fact it
 * cannot read: that becomes a check result, so the only failures here are doctor's own.
 */

import { Command, Flag } from "effect/cli"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { ChildProcessSpawner } from "effect/process"
import type { AttachmentStore } from "../src/domain/datapath/AttachmentStore.ts"
import type { Netfilter } from "../src/domain/datapath/Netfilter.ts"
import { exitCodeOf } from "../src/domain/doctor/CheckResult.ts"
import type { NodeFacts } from "../src/domain/doctor/NodeFacts.ts"
import type { Routing } from "../src/domain/node-setup/Routing.ts"
import type { AnnotationSource } from "../src/domain/tenancy/AnnotationSource.ts"
import * as AnnotationsKubernetes from "../src/interpreters/live/AnnotationsKubernetes.ts"
import * as AttachmentStoreFiles from "../src/interpreters/live/AttachmentStoreFiles.ts"
import * as NetfilterLive from "../src/interpreters/live/NetfilterLive.ts"
import * as NodeFactsLinux from "../src/interpreters/live/NodeFactsLinux.ts"
import * as RoutingIproute2 from "../src/interpreters/live/RoutingIproute2.ts"
import {
  DEFAULT_DOCTOR_OPTIONS,
  type DoctorOptions,
  doctor,
  doctorJson,
  formatDoctor
} from "../src/programs/doctor.ts"
import { CliExit, jsonFlag, printOut } from "./cliSupport.ts"

/** Replaceable parts, for tests: the services and the paths. */
export interface DoctorCliEnv {
  readonly doctorOptions?: Partial<Omit<DoctorOptions, "tenantsFile">>
  readonly routing?: Layer.Layer<Routing, never, ChildProcessSpawner.ChildProcessSpawner>
  readonly netfilter?: Layer.Layer<Netfilter>
  readonly nodeFacts?: Layer.Layer<NodeFacts>
  readonly attachmentStore?: Layer.Layer<AttachmentStore>
  readonly annotationSource?: Layer.Layer<AnnotationSource>
}

const NAME = "doctor"

export const doctorCommand = (env: DoctorCliEnv) => {
  const defaults = { ...DEFAULT_DOCTOR_OPTIONS, ...env.doctorOptions }
  const services = Layer.mergeAll(
    env.routing ?? RoutingIproute2.layer(),
    env.netfilter ?? NetfilterLive.layer(),
    env.nodeFacts ?? NodeFactsLinux.layer(),
    env.attachmentStore ?? AttachmentStoreFiles.layer,
    env.annotationSource ?? AnnotationsKubernetes.layer
  )
  return Command.make(
    NAME,
    {
      config: Flag.String("config").pipe(
        Flag.withMetavar("FILE"),
        Flag.optional,
        Flag.withDescription(
          `tenants file to check against (default ${defaults.defaultTenantsFile} when it exists, else the tenants of the tenant-routing-wrapper entry of the conflist in ${defaults.cniConfDir}, else the built-in defaults)`
        )
      ),
      json: jsonFlag
    },
    (flags) =>
      Effect.gen(function* () {
        const options: DoctorOptions = {
          ...defaults,
          tenantsFile: flags.config._tag === "Some" ? flags.config.value : undefined
        }
        const report = yield* doctor(options)
        yield* printOut(json(flags.json, report))
        const code = exitCodeOf(report.results)
        // A failing check is reported in the table; the exit status only repeats it.
        if (code !== 0) return yield* new CliExit({ command: NAME, code: 1, message: undefined })
      }).pipe(Effect.provide(services))
  ).pipe(
    Command.withDescription(
      "Check this node against the tenants file and the installed conflist: routing, netfilter entries, attachment records, reverse-path filtering, other mark users, API access (docs/DESIGN.md §7). Changes nothing. Exit 0 all ok or only warnings, 1 any check failed, 2 usage."
    ),
    Command.withShortDescription("check this node and say what is wrong")
  )
}

const json = (asJson: boolean, report: Parameters<typeof formatDoctor>[0]) =>
  asJson ? JSON.stringify(doctorJson(report), null, 2) : formatDoctor(report)
