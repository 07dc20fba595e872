/**
 * The plugin's entry in the conflist (docs/DESIGN.md §2), decoded and validated before anything is touched.
 *
 * Decoding happens in two steps: a Schema for the JSON shapes (so a wrong type names its path), then
 * `validateConfig` for the rules that span keys (marks inside the mask, reserved bits, unique marks).
 * Both report every problem at once as `{path, message}` issues on an InvalidConfig (code 7); only an
 * unsupported `cniVersion` is code 1.
 */
import * as Result from "effect/Result"
import * as Schema from "effect/Schema"
import { type Issue, schemaIssues } from "../decode/Issue.ts"
import { isDnsLabel } from "../net/DnsNames.ts"
import {
  and32,
  formatMark,
  isMarkValue,
  not32,
  or32,
  parseMarkLiteral,
  reservedBitsProblem
} from "../net/Mark.ts"
import { DEFAULT_TENANTS, type Tenant } from "../tenancy/Tenant.ts"
import { CniResult } from "./CniResult.ts"
import { type CniVersion, isSupportedVersion, SUPPORTED_VERSIONS } from "./CniVersion.ts"
import { IncompatibleVersion, InvalidConfig, issuesSummary } from "./Errors.ts"

export const DEFAULT_ANNOTATION_KEY = "tenant.routing/fwmark"
export const ALLOWED_TENANTS_KEY = "tenant.routing/allowed-tenants"
export const POD_ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations"
export const VALID_ATTACHMENTS_KEY = "cni.dev/valid-attachments"
/** The netfilter backends, in the order DEL, GC and inspect visit them. */
export const BACKENDS = ["iptables", "nftables"] as const
export type Backend = (typeof BACKENDS)[number]

export const DEFAULT_STATE_DIR = "/var/lib/cni/tenant-routing"

const MarkValue = Schema.Union([Schema.String, Schema.Number]).annotate({
  description: 'a mark: "0x10", "16" or the JSON number 16'
})
const Duration = Schema.String.annotate({ description: '"<n>ms", "<n>s" or "<n>m", between 100ms and 10m' })
const Annotations = Schema.Record(Schema.String, Schema.String)

/** The JSON shapes of the plugin's config; unknown keys are allowed, as CNI configs carry many. */
export const NetConfWire = Schema.StructWithRest(
  Schema.Struct({
    cniVersion: Schema.String.annotate({ description: "the CNI version the runtime speaks to us" }),
    name: Schema.String.annotate({ description: "the network name; names the state directory" }),
    type: Schema.String,
    delegate: Schema.optionalKey(
      Schema.StructWithRest(Schema.Struct({ type: Schema.String }), [
        Schema.Record(Schema.String, Schema.Unknown)
      ])
    ).annotate({ description: "a plugin config run as the main plugin; absent: chained mode" }),
    kubeconfig: Schema.optionalKey(Schema.String),
    annotationKey: Schema.optionalKey(Schema.String),
    tenants: Schema.optionalKey(Schema.Record(Schema.String, Schema.Struct({ mark: MarkValue }))),
    markMask: Schema.optionalKey(MarkValue),
    backend: Schema.optionalKey(Schema.Literals([...BACKENDS, "auto"])),
    failurePolicy: Schema.optionalKey(Schema.Literals(["closed", "open"])),
    pinning: Schema.optionalKey(Schema.Literals(["strict", "best-effort"])),
    apiTimeout: Schema.optionalKey(Duration),
    delegateTimeout: Schema.optionalKey(Duration),
    stateDir: Schema.optionalKey(Schema.String),
    agentSocket: Schema.optionalKey(Schema.String).annotate({
      description: "the agent's unix socket; read by the shim, which falls back to standalone without it"
    }),
    logFile: Schema.optionalKey(Schema.String),
    logLevel: Schema.optionalKey(Schema.Literals(["debug", "info", "warn", "error"])),
    logMaxBytes: Schema.optionalKey(
      Schema.Number.check(Schema.isInt(), Schema.isBetween({ minimum: 1024, maximum: 2 ** 40 }))
    ),
    prevResult: Schema.optionalKey(Schema.Unknown),
    [VALID_ATTACHMENTS_KEY]: Schema.optionalKey(
      Schema.Array(Schema.Struct({ containerID: Schema.String, ifname: Schema.String }))
    ).annotate({ description: "GC only: the attachments the runtime still knows" }),
    runtimeConfig: Schema.optionalKey(
      Schema.StructWithRest(
        Schema.Struct({ [POD_ANNOTATIONS_CAPABILITY]: Schema.optionalKey(Annotations) }),
        [Schema.Record(Schema.String, Schema.Unknown)]
      )
    )
  }),
  [Schema.Record(Schema.String, Schema.Unknown)]
)
export type NetConfWire = typeof NetConfWire.Type

export interface PluginConfig {
  readonly cniVersion: CniVersion
  readonly name: string
  readonly delegate: { readonly type: string; readonly conf: Readonly<Record<string, unknown>> } | undefined
  readonly kubeconfig: string | undefined
  readonly annotationKey: string
  readonly tenants: ReadonlyArray<Tenant>
  readonly markMask: number
  readonly backend: Backend | "auto"
  readonly failurePolicy: "closed" | "open"
  readonly pinning: "strict" | "best-effort"
  readonly apiTimeoutMs: number
  readonly delegateTimeoutMs: number
  readonly stateDir: string
  readonly logFile: string | undefined
  readonly logLevel: "debug" | "info" | "warn" | "error"
  readonly logMaxBytes: number
  readonly prevResult: CniResult | undefined
  /** GC: `containerId/ifname` of every attachment still in use. */
  readonly validAttachments:
    | ReadonlyArray<{ readonly containerId: string; readonly ifname: string }>
    | undefined
  /** Pod annotations handed over by the runtime; when present the pod is never fetched. */
  readonly podAnnotations: Readonly<Record<string, string>> | undefined
  /** runtimeConfig as received, passed on to the delegate. */
  readonly runtimeConfig: Readonly<Record<string, unknown>> | undefined
}

/** CNI spec rule for network names; it also keeps the state directory path safe. */
export const isNetworkName = (s: string): boolean => /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(s) && s.length <= 128

/** `<n>ms`, `<n>s`, `<n>m` → milliseconds. */
export const parseDurationMs = (s: string): number | undefined => {
  const m = /^(\d{1,9})(ms|s|m)$/.exec(s)
  if (m === null) return undefined
  return Number(m[1]) * (m[2] === "ms" ? 1 : m[2] === "s" ? 1000 : 60_000)
}

const MIN_TIMEOUT_MS = 100
const MAX_TIMEOUT_MS = 10 * 60_000

/** Turns a Schema issue tree into `{path, message}` lines. */
const markOf = (v: string | number): number | undefined =>
  typeof v === "number" ? (Number.isInteger(v) ? v : undefined) : parseMarkLiteral(v.trim())

const isAbsolute = (p: string) => p.startsWith("/") && !p.includes("\0")

/** Cross-key rules of §2 on a shape-valid config; every problem is reported at once. */
export const validateConfig = (
  wire: NetConfWire
): Result.Result<PluginConfig, InvalidConfig | IncompatibleVersion> => {
  if (!isSupportedVersion(wire.cniVersion)) {
    return Result.fail(
      new IncompatibleVersion({
        msg: `cniVersion ${JSON.stringify(wire.cniVersion)} is not supported; supported: ${SUPPORTED_VERSIONS.join(", ")}`
      })
    )
  }
  const issues: Array<Issue> = []
  const bad = (path: string, message: string) => issues.push({ path, message })

  if (!isNetworkName(wire.name))
    bad("name", "must be letters, digits, _ . - and start with a letter or digit")
  if (wire.delegate !== undefined && !/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(wire.delegate.type)) {
    bad("delegate.type", "must be a plugin binary name, without path separators")
  }

  const tenants: Array<Tenant> = []
  if (wire.tenants === undefined) tenants.push(...DEFAULT_TENANTS)
  else {
    for (const [name, t] of Object.entries(wire.tenants)) {
      if (!isDnsLabel(name)) bad(`tenants.${name}`, "tenant names must be DNS labels (a-z, 0-9, -)")
      const mark = markOf(t.mark)
      if (mark === undefined || !isMarkValue(mark))
        bad(`tenants.${name}.mark`, "must be a mark in 1..0xffffffff")
      else tenants.push({ name, mark })
    }
    if (Object.keys(wire.tenants).length === 0) bad("tenants", "must name at least one tenant")
  }
  const seen = new Map<number, string>()
  for (const t of tenants) {
    const other = seen.get(t.mark)
    if (other !== undefined)
      bad(`tenants.${t.name}.mark`, `${formatMark(t.mark)} is also the mark of ${other}`)
    seen.set(t.mark, t.name)
    const reserved = reservedBitsProblem(t.mark)
    if (reserved !== undefined) bad(`tenants.${t.name}.mark`, reserved)
  }

  const union = tenants.reduce((m, t) => or32(m, t.mark), 0)
  let markMask = union
  if (wire.markMask !== undefined) {
    const m = markOf(wire.markMask)
    if (m === undefined || !isMarkValue(m)) bad("markMask", "must be a mask in 1..0xffffffff")
    else {
      markMask = m
      const reserved = reservedBitsProblem(m)
      if (reserved !== undefined) bad("markMask", reserved)
      for (const t of tenants) {
        if (and32(t.mark, not32(m)) !== 0)
          bad(`tenants.${t.name}.mark`, `${formatMark(t.mark)} has bits outside markMask ${formatMark(m)}`)
      }
    }
  }

  const timeout = (key: "apiTimeout" | "delegateTimeout", dflt: number): number => {
    const raw = wire[key]
    if (raw === undefined) return dflt
    const ms = parseDurationMs(raw)
    if (ms === undefined || ms < MIN_TIMEOUT_MS || ms > MAX_TIMEOUT_MS) {
      bad(key, 'must be "<n>ms", "<n>s" or "<n>m" between 100ms and 10m')
      return dflt
    }
    return ms
  }
  const apiTimeoutMs = timeout("apiTimeout", 5_000)
  const delegateTimeoutMs = timeout("delegateTimeout", 60_000)

  for (const key of ["kubeconfig", "logFile", "stateDir", "agentSocket"] as const) {
    const p = wire[key]
    if (p !== undefined && !isAbsolute(p)) bad(key, "must be an absolute path")
  }
  // A unix socket path must fit sun_path (108 bytes with its NUL); a longer one could never connect.
  if (wire.agentSocket !== undefined && new TextEncoder().encode(wire.agentSocket).length > 107)
    bad("agentSocket", "must be at most 107 bytes (the kernel's limit for a socket path)")
  const annotationKey = wire.annotationKey ?? DEFAULT_ANNOTATION_KEY
  if (annotationKey.length === 0 || annotationKey.length > 317)
    bad("annotationKey", "must be an annotation key")

  let prevResult: CniResult | undefined
  if (wire.prevResult !== undefined) {
    const decoded = Schema.decodeUnknownResult(CniResult)(wire.prevResult, { errors: "all" })
    if (decoded._tag === "Success") prevResult = decoded.success
    else issues.push(...schemaIssues(decoded.failure.issue, ["prevResult"]))
  }

  if (issues.length > 0) return Result.fail(invalidConfig(issues))
  return Result.succeed({
    cniVersion: wire.cniVersion,
    name: wire.name,
    delegate: wire.delegate === undefined ? undefined : { type: wire.delegate.type, conf: wire.delegate },
    kubeconfig: wire.kubeconfig,
    annotationKey,
    tenants,
    markMask,
    backend: wire.backend ?? "auto",
    failurePolicy: wire.failurePolicy ?? "closed",
    pinning: wire.pinning ?? "best-effort",
    apiTimeoutMs,
    delegateTimeoutMs,
    stateDir: wire.stateDir ?? DEFAULT_STATE_DIR,
    logFile: wire.logFile,
    logLevel: wire.logLevel ?? "info",
    logMaxBytes: wire.logMaxBytes ?? 10 * 1024 * 1024,
    prevResult,
    validAttachments: wire[VALID_ATTACHMENTS_KEY]?.map((a) => ({
      containerId: a.containerID,
      ifname: a.ifname
    })),
    podAnnotations: wire.runtimeConfig?.[POD_ANNOTATIONS_CAPABILITY],
    runtimeConfig: wire.runtimeConfig
  })
}

export const invalidConfig = (issues: ReadonlyArray<Issue>): InvalidConfig =>
  new InvalidConfig({
    msg: issuesSummary("invalid network config", issues),
    issues
  })

/** Shape-decodes then validates a parsed JSON value. */
export const decodeConfig = (
  json: unknown
): Result.Result<PluginConfig, InvalidConfig | IncompatibleVersion> => {
  const wire = Schema.decodeUnknownResult(NetConfWire)(json, { errors: "all" })
  if (wire._tag === "Failure") return Result.fail(invalidConfig(schemaIssues(wire.failure.issue)))
  return validateConfig(wire.success)
}
