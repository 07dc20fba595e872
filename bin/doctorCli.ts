/**
 * Command line of `tenant-routing-wrapper doctor` (docs/DESIGN.md §7), self-contained so the main
 * executable only dispatches to `runDoctor(argv)` and exits with what it returns.
 *
 *   doctor [--config TENANTS_FILE] [--json]
 *
 * Exit codes: 0 when every check is ok or only warns, 1 when any check fails, 2 for a usage error.
 * The report goes to stdout (doctor is not a CNI verb, so stdout is free), problems of doctor itself
 * to stderr. Nothing here throws: every failure, defects included, ends as a message and exit 1.
 * The live layers are chosen here; tests replace any of them and the paths through `DoctorCliEnv`.
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import { Cause, Effect, Layer } from "effect"
import type { ChildProcessSpawner } from "effect/process"
import type { AttachmentStore } from "../src/domain/datapath/AttachmentStore.ts"
import type { Netfilter } from "../src/domain/datapath/Netfilter.ts"
import { exitCodeOf } from "../src/domain/doctor/CheckResult.ts"
import type { NodeFacts } from "../src/domain/doctor/NodeFacts.ts"
import type { Routing } from "../src/domain/node-setup/Routing.ts"
import type { AnnotationSource } from "../src/domain/tenancy/AnnotationSource.ts"
import { AnnotationsKubernetes } from "../src/interpreters/live/AnnotationsKubernetes.ts"
import { AttachmentStoreFiles } from "../src/interpreters/live/AttachmentStoreFiles.ts"
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
import { parseFlags, processIo } from "./flags.ts"

export const USAGE = `usage: tenant-routing-wrapper doctor [--config TENANTS_FILE] [--json]
  --config FILE   tenants file (default ${DEFAULT_DOCTOR_OPTIONS.defaultTenantsFile} when it exists,
                  else the tenants of the installed conflist in ${DEFAULT_DOCTOR_OPTIONS.cniConfDir}, else the defaults)
  --json          print the results as JSON
exit status: 0 all ok or only warnings, 1 any failure, 2 usage error`

/** Replaceable parts, for tests: the services, the paths, where text goes. */
export interface DoctorCliEnv {
  readonly options?: Partial<Omit<DoctorOptions, "tenantsFile">>
  readonly routing?: Layer.Layer<Routing, never, ChildProcessSpawner.ChildProcessSpawner>
  readonly netfilter?: Layer.Layer<Netfilter>
  readonly nodeFacts?: Layer.Layer<NodeFacts>
  readonly attachmentStore?: Layer.Layer<AttachmentStore>
  readonly annotationSource?: Layer.Layer<AnnotationSource>
  readonly stdout?: (text: string) => void
  readonly stderr?: (text: string) => void
}

/** Run doctor with `argv` (the arguments after `doctor`); resolves to the exit code. */
export const runDoctor = (argv: ReadonlyArray<string>, env: DoctorCliEnv = {}): Promise<number> => {
  const { out, err } = processIo(env)
  const flags = parseFlags(
    "doctor",
    USAGE,
    argv,
    { config: { type: "string" }, json: { type: "boolean" } },
    { out, err }
  )
  if ("exit" in flags) return Promise.resolve(flags.exit)
  const args = { config: flags.values.config, json: flags.values.json === true }

  const options: DoctorOptions = { ...DEFAULT_DOCTOR_OPTIONS, ...env.options, tenantsFile: args.config }
  const services = Layer.mergeAll(
    env.routing ?? RoutingIproute2.layer(),
    env.netfilter ?? NetfilterLive.layer(),
    env.nodeFacts ?? NodeFactsLinux.layer(),
    env.attachmentStore ?? AttachmentStoreFiles.layer,
    env.annotationSource ?? AnnotationsKubernetes.layer
  )

  const program = Effect.gen(function* () {
    const report = yield* doctor(options)
    out(args.json ? JSON.stringify(doctorJson(report), null, 2) + "\n" : formatDoctor(report) + "\n")
    return exitCodeOf(report.results)
  })

  return Effect.runPromise(
    program.pipe(
      Effect.provide(Layer.provideMerge(services, NodeServices.layer)),
      Effect.catchCause((cause) =>
        Effect.sync(() => {
          err(`doctor: unexpected failure: ${Cause.pretty(cause)}\n`)
          return 1
        })
      )
    )
  )
}
