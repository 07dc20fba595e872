/**
 * `tenant-routing-wrapper doctor` decided purely (PRODUCT.md §7): facts gathered from the node go in,
 * named check results (ok / warn / fail, a one-line reason, a hint) come out. `programs/doctor.ts`
 * gathers the facts through the services and never judges them; everything a reviewer needs to know
 * about what doctor calls healthy is in this file.
 *
 * Checks:
 * - `config`: the tenants file and the installed conflist decode, and agree with each other.
 * - `backend`: the conflist's backend (`auto`: nftables when usable, else iptables) works here.
 * - `tenant-rule`, `suppress-rule`, `tenant-route`: node-setup's rules and routes (§6) exist. With a
 *   tenants file, exactly: `fwmark MARK/MASK lookup TABLE` and a default route via one of the tenant's
 *   gateways in each family where it has gateways (missing: fail), the rule and the unreachable
 *   default in families where it has none (missing: warn, its marked traffic would leave through the
 *   main table instead of being dropped). From a conflist there are no tables: some rule with the
 *   tenant's mark and mask must exist, and the table it looks up must hold a default route via a
 *   gateway. In both cases `lookup main suppress_prefixlength 0` must come before the tenant rules.
 * - `rp-filter`: reverse-path filtering on the interfaces that lead to the IPv4 gateways (below).
 * - `stale-entries`, `stale-records`, `unknown-marks`: netfilter entries (both backends) without a
 *   state record (warn: harmless until ADD reuses the IP, which then removes them), records of tagged
 *   attachments whose entry is missing (fail: such a pod's egress is not tenant-routed), entries
 *   whose mark no tenant has (fail: no rule routes them).
 * - `mark-clash`: the marks' bits against the bits other installed software uses (below).
 * - `cilium-host-routing`: with Cilium present, its host routing must be `Legacy` (below).
 * - `namespace-read`: with a kubeconfig, the configured identity may read namespaces.
 *
 * Reverse-path filtering, precisely (net/ipv4/fib_frontend.c, `fib_validate_source` and
 * `__fib_validate_source`; include/linux/inetdevice.h). For a packet received on interface D the
 * kernel looks up the route back to the packet's source, with `flowi4_mark = skb->mark` only when
 * `src_valid_mark` is set for D (IN_DEV_ORCONF: `all` OR D), else mark 0. The mode is
 * IN_DEV_MAXCONF(rp_filter) = max(`all`, D); `default` only seeds new interfaces. Strict (1): the
 * lookup must succeed and its next hops must include D, else the packet is dropped (-EXDEV). Loose
 * (2): the lookup must succeed through any interface. Off (0): not checked.
 * What that means for tenant traffic:
 * - Egress, received on the pod's host-side interface with the tenant mark: the route back to the pod
 *   is its /32 in main, which the `suppress_prefixlength 0` rule lets win with or without the mark, so
 *   it passes in every mode (without the suppress rule and with src_valid_mark=1, strict mode would
 *   send the check to the tenant gateway and drop the pod's own packets).
 * - Replies, received on the interface that leads to the tenant gateway (G): the plugin marks only
 *   packets of the original direction, so replies arrive with mark 0 and src_valid_mark changes
 *   nothing for them (it only matters when something restores a mark onto replies, e.g. a CONNMARK
 *   rule, which this plugin does not install). The mark-0 lookup of a remote source skips the tenant
 *   rules and ends at main's default route. Strict mode therefore drops every reply arriving on G
 *   unless main's default route also leaves through G; loose mode passes them when main has a default
 *   route at all. Hence: warn when max(all, G) = 1 and G carries no default route of main, or when
 *   it is 2 and main has no IPv4 default route; the hint sets 2 on whichever of `all` and G is 1.
 *   IPv6 has no rp_filter sysctl (its reverse-path checks are netfilter rules, e.g. firewalld's
 *   IPv6_rpfilter), so it is not checked.
 *
 * Mark bits of other software, from their sources:
 * - Kubernetes: kube-proxy's KUBE-MARK-MASQ sets 0x4000 (`--iptables-masquerade-bit`, default 14) and
 *   kubelet's KUBE-MARK-DROP 0x8000 (bit 15). Present when chains `KUBE-*` or an nft table
 *   `kube-proxy` exist; bits are 0xc000 plus whatever KUBE-MARK-* rules are seen setting.
 * - portmap (containernetworking/plugins plugins/meta/portmap): `markMasqBit` default 13 = 0x2000,
 *   set in CNI-HOSTPORT-SETMARK. Present when /opt/cni/bin/portmap or chains `CNI-HOSTPORT-*` exist.
 * - Cilium: bpf/lib/common.h says "the upper 16 bits plus lower 8 bits (e.g. mask 0XFFFF00FF) contain
 *   the packets security identity", MARK_MAGIC_HOST_MASK 0x0F00 holds the magic values (proxy, host,
 *   encrypt/decrypt, identity, to-proxy, SNAT done, overlay) that its BPF programs and ip rules
 *   (`fwmark 0x200/0xf00 lookup 2004`, ...) test, and 0xF000 carries the IPsec key index
 *   (MARK_MAGIC_KEY_MASK 0xFF00); WireGuard's MagicMarkWireGuardEncrypted is 0x1E00
 *   (pkg/datapath/linux/linux_defaults/mark.go). No bit is unused. Present when chains `CILIUM_*`,
 *   /opt/cni/bin/cilium-cni, or a `cilium-cni` plugin in the conflist exist.
 * - Calico: Felix's `iptablesMarkMask` (and `nftablesMarkMask`) default 0xffff0000. Present when
 *   chains `cali-*` or an nft table `calico` exist.
 * A clash is judged on the bits the plugin rewrites, i.e. the whole markMask (`mark & ~mask | tenant`),
 * not only the tenants' own bits.
 *
 * Cilium's BPF host routing (`bpf.hostLegacyRouting=false`, the default where supported) hands pod
 * egress from the pod's interface straight to the native device with bpf_redirect_neigh, so mangle
 * PREROUTING never sees it and no tenant mark is ever set. Read from `cilium-dbg status`: the line
 * `Host Routing: BPF|Legacy` (older agents) or `Routing: Network: … Host: BPF|Legacy` (newer).
 */
import { Result } from "effect"
import type { AttachmentRecord } from "./AttachmentRecord.ts"
import { type Backend, decodeConfig, type PluginConfig } from "./Config.ts"
import type { MarkEntry } from "./Entries.ts"
import { canonicalIp, type Family } from "./Ip.ts"
import { and32, formatMark, or32 } from "./Mark.ts"
import type { CommandOutput, NetfilterInventory } from "./NodeFacts.ts"
import { decodeNodeSetupConfigJson, formatIssues, ipFamily, type NodeSetupConfig } from "./NodeSetupConfig.ts"
import { FAMILIES, type IpRule, MAIN_TABLE, type Route, UNREACHABLE_METRIC } from "./RoutingPlan.ts"
import { DEFAULT_TENANTS, type Tenant } from "./Tenant.ts"

// ---------------------------------------------------------------------------------------------------
// Results

export type Status = "ok" | "warn" | "fail"

export type CheckName =
  | "config"
  | "backend"
  | "tenant-rule"
  | "suppress-rule"
  | "tenant-route"
  | "rp-filter"
  | "stale-entries"
  | "stale-records"
  | "unknown-marks"
  | "mark-clash"
  | "cilium-host-routing"
  | "namespace-read"

export interface CheckResult {
  readonly check: CheckName
  /** What the result is about: a tenant (`tenant-a/ipv4`), an interface, a mark user; "" for the node. */
  readonly subject: string
  readonly status: Status
  /** One line: what was found. */
  readonly reason: string
  /** One line: what to do about it; "" when ok. */
  readonly hint: string
}

const result = (
  check: CheckName,
  subject: string,
  status: Status,
  reason: string,
  hint = ""
): CheckResult => ({ check, subject, status, reason, hint: status === "ok" ? "" : hint })

/** 1 when any check failed, else 0 (warnings alone do not fail doctor). */
export const exitCodeOf = (results: ReadonlyArray<CheckResult>): number =>
  results.some((r) => r.status === "fail") ? 1 : 0

export const summaryOf = (results: ReadonlyArray<CheckResult>): Readonly<Record<Status, number>> => ({
  ok: results.filter((r) => r.status === "ok").length,
  warn: results.filter((r) => r.status === "warn").length,
  fail: results.filter((r) => r.status === "fail").length
})

// ---------------------------------------------------------------------------------------------------
// Facts

/** A fact that could not be read, and why. */
export interface Unreadable {
  readonly unreadable: string
}
export type Fact<A> = A | Unreadable

export const unreadable = (why: string): Unreadable => ({ unreadable: why })
export const isUnreadable = <A>(f: Fact<A>): f is Unreadable =>
  typeof f === "object" && f !== null && !Array.isArray(f) && "unreadable" in f

export interface TenantRouting {
  readonly table: number
  readonly priority: number
  /** Canonical text. */
  readonly gateways: ReadonlyArray<string>
}

export interface DoctorTenant {
  readonly name: string
  readonly mark: number
  /** Known only from a tenants file. */
  readonly routing: TenantRouting | undefined
}

/** The tenants doctor checks, and where they came from. */
export interface TenantSource {
  readonly kind: "tenants-file" | "conflist" | "defaults"
  readonly path: string | undefined
  readonly markMask: number
  readonly tenants: ReadonlyArray<DoctorTenant>
}

/** The plugin's entry of the installed conflist, as far as doctor needs it. */
export interface PluginSettings {
  readonly conflist: string
  readonly network: string
  readonly backend: Backend | "auto"
  readonly stateDir: string
  readonly kubeconfig: string | undefined
  readonly pinning: "strict" | "best-effort"
  readonly failurePolicy: "closed" | "open"
  readonly apiTimeoutMs: number
  readonly markMask: number
  readonly tenants: ReadonlyArray<Tenant>
  /** Types of the conflist's other plugins and of the delegate (e.g. `cilium-cni`, `portmap`). */
  readonly otherPlugins: ReadonlyArray<string>
}

export interface LoadedConfig {
  readonly source: TenantSource
  readonly plugin: PluginSettings | undefined
  /** Files that exist but cannot be used; each is a failure. */
  readonly problems: ReadonlyArray<string>
}

export interface RpFacts {
  /** Each IPv4 gateway and the interface an unmarked packet to it leaves through. */
  readonly gateways: ReadonlyArray<{ readonly gateway: string; readonly iface: string | undefined }>
  /** `rp_filter` and `src_valid_mark` of `all` and of each of those interfaces; undefined: unreadable. */
  readonly sysctls: Readonly<
    Record<string, { readonly rpFilter: number | undefined; readonly srcValidMark: number | undefined }>
  >
  /** Interfaces of main's IPv4 default route (all next hops). */
  readonly mainDefaultInterfaces: ReadonlyArray<string>
}

export type ApiFact =
  | { readonly kind: "no-kubeconfig" }
  | {
      readonly kind: "connect-failed"
      readonly error: "InvalidConfig" | "TryAgainLater"
      readonly msg: string
    }
  | {
      readonly kind: "read"
      readonly namespace: string
      readonly outcome: "ok" | "not-found" | "forbidden" | "unavailable"
      readonly msg: string
    }

export interface DoctorFacts {
  readonly config: LoadedConfig
  readonly backends: Readonly<Record<Backend, boolean>>
  /** Both families, each in the kernel's order. */
  readonly rules: Fact<ReadonlyArray<IpRule>>
  /** Routes of the tables `tablesToRead` named. */
  readonly routes: Fact<ReadonlyArray<Route>>
  readonly entries: Readonly<Record<Backend, Fact<ReadonlyArray<MarkEntry>>>>
  readonly records: Fact<ReadonlyArray<AttachmentRecord>>
  readonly rp: Fact<RpFacts>
  readonly inventory: Fact<NetfilterInventory>
  readonly files: { readonly portmap: boolean; readonly ciliumCni: boolean }
  /** `cilium-dbg status`; undefined when the binary is absent or Cilium was not detected. */
  readonly cilium: Fact<CommandOutput | undefined>
  readonly api: ApiFact
}

// ---------------------------------------------------------------------------------------------------
// Configuration: tenants file, installed conflist, defaults

export const PLUGIN_TYPE = "tenant-routing-wrapper"

const sourceFromNodeSetup = (config: NodeSetupConfig, path: string): TenantSource => ({
  kind: "tenants-file",
  path,
  markMask: config.markMask,
  tenants: config.tenants.map((t) => ({
    name: t.name,
    mark: t.mark,
    routing: { table: t.table, priority: t.priority, gateways: t.gateways }
  }))
})

const sourceFromPlugin = (p: PluginSettings): TenantSource => ({
  kind: "conflist",
  path: p.conflist,
  markMask: p.markMask,
  tenants: p.tenants.map((t) => ({ name: t.name, mark: t.mark, routing: undefined }))
})

export const DEFAULT_SOURCE: TenantSource = {
  kind: "defaults",
  path: undefined,
  markMask: DEFAULT_TENANTS.reduce((m, t) => or32(m, t.mark), 0),
  tenants: DEFAULT_TENANTS.map((t) => ({ name: t.name, mark: t.mark, routing: undefined }))
}

const isRecord = (u: unknown): u is Readonly<Record<string, unknown>> =>
  typeof u === "object" && u !== null && !Array.isArray(u)

const settingsOf = (path: string, config: PluginConfig, others: ReadonlyArray<string>): PluginSettings => ({
  conflist: path,
  network: config.name,
  backend: config.backend,
  stateDir: config.stateDir,
  kubeconfig: config.kubeconfig,
  pinning: config.pinning,
  failurePolicy: config.failurePolicy,
  apiTimeoutMs: config.apiTimeoutMs,
  markMask: config.markMask,
  tenants: config.tenants,
  otherPlugins: [...others, ...(config.delegate === undefined ? [] : [config.delegate.type])]
})

/**
 * The first conflist, in file-name order as libcni loads them, whose plugins include ours; its entry
 * gets the list's `cniVersion` and `name`, as the runtime injects them. Unparsable files are skipped
 * (they are no conflist the runtime would use either).
 */
export const pickConflist = (
  files: ReadonlyArray<{ readonly path: string; readonly text: string }>
): { readonly plugin: PluginSettings } | { readonly problem: string } | undefined => {
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  for (const file of sorted) {
    const parsed = Result.try({ try: () => JSON.parse(file.text) as unknown, catch: String })
    if (Result.isFailure(parsed) || !isRecord(parsed.success)) continue
    const list = parsed.success
    const plugins = Array.isArray(list.plugins) ? list.plugins.filter(isRecord) : []
    const entry = plugins.find((p) => p.type === PLUGIN_TYPE)
    if (entry === undefined) continue
    const others = plugins.filter((p) => p !== entry && typeof p.type === "string").map((p) => String(p.type))
    const decoded = decodeConfig({ ...entry, cniVersion: list.cniVersion, name: list.name })
    if ("error" in decoded)
      return { problem: `${file.path}: the plugin rejects its entry: ${decoded.error.msg}` }
    return { plugin: settingsOf(file.path, decoded.config, others) }
  }
  return undefined
}

/**
 * Tenants from the tenants file when there is one, else from the installed conflist, else the
 * defaults; plugin settings (backend, state directory, kubeconfig) from the conflist either way.
 */
export const loadConfig = (input: {
  readonly tenantsFile:
    | { readonly path: string; readonly text: string }
    | { readonly path: string; readonly error: string }
    | undefined
  readonly conflists: ReadonlyArray<{ readonly path: string; readonly text: string }>
}): LoadedConfig => {
  const problems: Array<string> = []
  const picked = pickConflist(input.conflists)
  const plugin = picked !== undefined && "plugin" in picked ? picked.plugin : undefined
  if (picked !== undefined && "problem" in picked) problems.push(picked.problem)
  const fallback = plugin === undefined ? DEFAULT_SOURCE : sourceFromPlugin(plugin)
  const file = input.tenantsFile
  if (file === undefined) return { source: fallback, plugin, problems }
  if ("error" in file) {
    problems.push(`tenants file ${file.path}: ${file.error}`)
    return { source: fallback, plugin, problems }
  }
  const decoded = decodeNodeSetupConfigJson(file.text)
  if (Result.isFailure(decoded)) {
    problems.push(
      `tenants file ${file.path} is invalid: ${formatIssues(decoded.failure).split("\n").join("; ")}`
    )
    return { source: fallback, plugin, problems }
  }
  return { source: sourceFromNodeSetup(decoded.success, file.path), plugin, problems }
}

/** Where the tenants file and the conflist disagree (node-setup routes by one, ADD marks by the other). */
export const disagreements = (source: TenantSource, plugin: PluginSettings): ReadonlyArray<string> => {
  if (source.kind !== "tenants-file") return []
  const out: Array<string> = []
  if (source.markMask !== plugin.markMask) {
    out.push(
      `markMask ${formatMark(source.markMask)} in the tenants file, ${formatMark(plugin.markMask)} in the conflist`
    )
  }
  for (const t of source.tenants) {
    const p = plugin.tenants.find((x) => x.name === t.name)
    if (p === undefined) out.push(`${t.name} is not a tenant of the conflist`)
    else if (p.mark !== t.mark)
      out.push(`${t.name} has mark ${formatMark(t.mark)} here, ${formatMark(p.mark)} in the conflist`)
  }
  for (const p of plugin.tenants) {
    if (!source.tenants.some((t) => t.name === p.name))
      out.push(`${p.name} has no routing in the tenants file`)
  }
  return out
}

// ---------------------------------------------------------------------------------------------------
// Routing: what doctor reads, and the rules it looks for

const ipv = (f: Family) => `ipv${f}`

const isSuppressRule = (r: IpRule): boolean =>
  r.fwmark === undefined && r.table === MAIN_TABLE && r.suppressPrefixlength === 0 && r.other === undefined

/** The tenant's rule in a family: exact with a tenants file, any rule with its mark and mask otherwise. */
const tenantRuleIndex = (rules: ReadonlyArray<IpRule>, t: DoctorTenant, mask: number, f: Family): number =>
  rules.findIndex(
    (r) =>
      r.family === f &&
      r.fwmark === t.mark &&
      r.mask === mask &&
      r.other === undefined &&
      (t.routing === undefined ? r.table !== 0 : r.table === t.routing.table)
  )

/** The (family, table) pairs whose routes doctor needs. */
export const tablesToRead = (
  source: TenantSource,
  rules: Fact<ReadonlyArray<IpRule>>
): ReadonlyArray<{ readonly family: Family; readonly table: number }> => {
  // Without a tenants file, the tables the tenant's rules look up, in both families (a table that
  // routes a family whose rule is missing shows that family leaking).
  const tablesOf = (t: DoctorTenant): ReadonlyArray<number> =>
    t.routing !== undefined
      ? [t.routing.table]
      : isUnreadable(rules)
        ? []
        : FAMILIES.flatMap((f) => {
            const i = tenantRuleIndex(rules, t, source.markMask, f)
            return i < 0 ? [] : [rules[i]!.table]
          })
  const pairs = source.tenants.flatMap((t) =>
    tablesOf(t).flatMap((table) => FAMILIES.map((family) => ({ family, table })))
  )
  return pairs.filter((p, i) => pairs.findIndex((q) => q.family === p.family && q.table === p.table) === i)
}

const isDefault = (r: Route): boolean => r.dst === "default"
const gatewayDefaults = (routes: ReadonlyArray<Route>, f: Family, table: number) =>
  routes.filter(
    (r) =>
      r.family === f && r.table === table && isDefault(r) && r.kind === "unicast" && r.gateways.length > 0
  )
const hasUnreachableDefault = (routes: ReadonlyArray<Route>, f: Family, table: number) =>
  routes.some(
    (r) =>
      r.family === f &&
      r.table === table &&
      isDefault(r) &&
      r.kind === "unreachable" &&
      (r.metric ?? 0) === UNREACHABLE_METRIC
  )

/** The IPv4 gateways whose interfaces the rp_filter check looks at. */
export const ipv4GatewaysToProbe = (
  source: TenantSource,
  rules: Fact<ReadonlyArray<IpRule>>,
  routes: Fact<ReadonlyArray<Route>>
): ReadonlyArray<string> => {
  const gateways = source.tenants.flatMap((t) => {
    if (t.routing !== undefined) return t.routing.gateways.filter((g) => ipFamily(g) === 4)
    if (isUnreadable(rules) || isUnreadable(routes)) return []
    const tables = FAMILIES.flatMap((f) => {
      const i = tenantRuleIndex(rules, t, source.markMask, f)
      return i < 0 ? [] : [rules[i]!.table]
    })
    return tables.flatMap((table) => gatewayDefaults(routes, 4, table).flatMap((r) => r.gateways))
  })
  return [...new Set(gateways.map(canonicalIp))]
}

const NODE_SETUP_HINT =
  "run `tenant-routing-wrapper node-setup` with the tenants file (it only adds what is missing)"

const ruleText = (mark: number, mask: number, table: number | undefined) =>
  `fwmark ${formatMark(mark)}/${formatMark(mask)} lookup ${table ?? "<table>"}`

const routingChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const { source } = facts.config
  const { rules, routes } = facts
  if (isUnreadable(rules)) {
    return [
      result("tenant-rule", "", "fail", `cannot read ip rules: ${rules.unreadable}`, "run doctor as root")
    ]
  }
  const out: Array<CheckResult> = []
  const mask = source.markMask
  const viaFile = source.kind === "tenants-file"

  // tenant rules, per family (tenants file) or per tenant (conflist/defaults: any family will do)
  const foundIn = new Map<string, Array<Family>>()
  for (const t of source.tenants) {
    const families = FAMILIES.filter((f) => tenantRuleIndex(rules, t, mask, f) >= 0)
    foundIn.set(t.name, families)
    if (t.routing === undefined) {
      const near = rules.find((r) => r.fwmark === t.mark)
      const tables = [...new Set(families.map((f) => rules[tenantRuleIndex(rules, t, mask, f)]!.table))]
      // A family whose table routes via a gateway but whose rule is missing: that family leaks.
      const unruled = isUnreadable(routes)
        ? []
        : FAMILIES.filter((f) => !families.includes(f)).flatMap((f) =>
            tables.flatMap((table) => gatewayDefaults(routes, f, table).map((r) => ({ f, r })))
          )
      if (families.length === 0) {
        out.push(
          result(
            "tenant-rule",
            t.name,
            "fail",
            `no ip rule "fwmark ${formatMark(t.mark)}/${formatMark(mask)}" in either family${near === undefined ? "" : `; found "${ruleText(near.fwmark!, near.mask ?? 0xffffffff, near.table)}" (IPv${near.family}) instead`}: its marked traffic leaves through the main table`,
            NODE_SETUP_HINT
          )
        )
      } else if (unruled.length > 0) {
        const { f, r } = unruled[0]!
        out.push(
          result(
            "tenant-rule",
            t.name,
            "fail",
            `no IPv${f} rule "fwmark ${formatMark(t.mark)}/${formatMark(mask)}", although table ${r.table} routes IPv${f} via ${r.gateways.join(", ")}: its marked IPv${f} traffic leaves through the main table`,
            NODE_SETUP_HINT
          )
        )
      } else {
        out.push(
          result(
            "tenant-rule",
            t.name,
            "ok",
            `${families.map(ipv).join(", ")}: ${describeRules(rules, t, mask, families)}`
          )
        )
      }
      continue
    }
    for (const f of FAMILIES) {
      const hasGateways = t.routing.gateways.some((g) => ipFamily(g) === f)
      const subject = `${t.name}/${ipv(f)}`
      const want = ruleText(t.mark, mask, t.routing.table)
      const i = tenantRuleIndex(rules, t, mask, f)
      if (i >= 0) {
        const r = rules[i]!
        const where =
          r.priority === t.routing.priority
            ? ""
            : ` at priority ${r.priority} (the tenants file says ${t.routing.priority})`
        out.push(result("tenant-rule", subject, "ok", `${want}${where}`))
        continue
      }
      const near = rules.find((r) => r.family === f && r.fwmark === t.mark)
      const nearText =
        near === undefined
          ? ""
          : `; found "${ruleText(near.fwmark!, near.mask ?? 0xffffffff, near.table)}" instead`
      out.push(
        hasGateways
          ? result(
              "tenant-rule",
              subject,
              "fail",
              `no ip rule "${want}"${nearText}: its marked IPv${f} traffic leaves through the main table`,
              NODE_SETUP_HINT
            )
          : result(
              "tenant-rule",
              subject,
              "warn",
              `no ip rule "${want}"${nearText}: without IPv${f} gateways its IPv${f} traffic should be dropped, but leaves through the main table`,
              NODE_SETUP_HINT
            )
      )
    }
  }

  // the suppress rule, per family where tenant rules exist or are expected
  for (const f of FAMILIES) {
    const tenantIdx = source.tenants
      .map((t) => ({ t, i: tenantRuleIndex(rules, t, mask, f) }))
      .filter((x) => x.i >= 0)
    const expected = viaFile && source.tenants.some((t) => t.routing?.gateways.some((g) => ipFamily(g) === f))
    if (tenantIdx.length === 0 && !expected) continue
    const s = rules.findIndex((r) => r.family === f && isSuppressRule(r))
    const first = tenantIdx.reduce<{ t: DoctorTenant; i: number } | undefined>(
      (m, x) => (m === undefined || x.i < m.i ? x : m),
      undefined
    )
    if (s < 0) {
      out.push(
        result(
          "suppress-rule",
          ipv(f),
          "fail",
          `no "lookup main suppress_prefixlength 0" rule: marked traffic to pod, service and node networks follows the tenant default routes`,
          NODE_SETUP_HINT
        )
      )
    } else if (first !== undefined && first.i < s) {
      out.push(
        result(
          "suppress-rule",
          ipv(f),
          "fail",
          `"lookup main suppress_prefixlength 0" (priority ${rules[s]!.priority}) comes after ${first.t.name}'s rule (priority ${rules[first.i]!.priority}): more specific main routes do not win for marked traffic`,
          "give the suppress rule a priority below every tenant rule (node-setup uses the lowest tenant priority - 1)"
        )
      )
    } else {
      out.push(
        result(
          "suppress-rule",
          ipv(f),
          "ok",
          `"lookup main suppress_prefixlength 0" at priority ${rules[s]!.priority}, before the tenant rules`
        )
      )
    }
  }

  // routes
  if (isUnreadable(routes)) {
    out.push(
      result(
        "tenant-route",
        "",
        "fail",
        `cannot read the tenant tables: ${routes.unreadable}`,
        "run doctor as root"
      )
    )
    return out
  }
  for (const t of source.tenants) {
    if (t.routing === undefined) {
      const families = foundIn.get(t.name) ?? []
      if (families.length === 0) continue // the rule's failure says it all
      // Which families a table should route is unknown without a tenants file: one will do, and a
      // family routed without its rule is the rule check's failure.
      const tables = [...new Set(families.map((f) => rules[tenantRuleIndex(rules, t, mask, f)]!.table))]
      const withGateway = FAMILIES.flatMap((f) =>
        tables.flatMap((table) => gatewayDefaults(routes, f, table).map((r) => ({ f, r })))
      )
      out.push(
        withGateway.length > 0
          ? result(
              "tenant-route",
              t.name,
              "ok",
              withGateway
                .map(({ f, r }) => `${ipv(f)} default via ${r.gateways.join(", ")} in table ${r.table}`)
                .join("; ")
            )
          : result(
              "tenant-route",
              t.name,
              "fail",
              `table ${tables.join(", ")}, which its rules look up, holds no default route via a gateway in either family: its traffic is dropped`,
              "add the tenant's gateway route (a tenants file with `node-setup` does it)"
            )
      )
      continue
    }
    const table = t.routing.table
    for (const f of FAMILIES) {
      const wanted = t.routing.gateways.filter((g) => ipFamily(g) === f)
      const subject = `${t.name}/${ipv(f)}`
      const unreachable = hasUnreachableDefault(routes, f, table)
      if (wanted.length === 0) {
        out.push(
          unreachable
            ? result(
                "tenant-route",
                subject,
                "ok",
                `no IPv${f} gateways: table ${table} drops its IPv${f} traffic (unreachable default)`
              )
            : result(
                "tenant-route",
                subject,
                "warn",
                `no IPv${f} gateways and no unreachable default in table ${table}: its marked IPv${f} traffic falls through to the main table`,
                NODE_SETUP_HINT
              )
        )
        continue
      }
      const defaults = gatewayDefaults(routes, f, table)
      const matching = defaults.find((r) => r.gateways.some((g) => wanted.includes(canonicalIp(g))))
      if (matching === undefined) {
        out.push(
          result(
            "tenant-route",
            subject,
            "fail",
            defaults.length === 0
              ? `no default route via ${wanted.join(", ")} in table ${table}`
              : `the default route of table ${table} goes via ${defaults.flatMap((r) => r.gateways).join(", ")}, not the tenant's ${wanted.join(", ")}`,
            NODE_SETUP_HINT
          )
        )
        continue
      }
      const missing = wanted.filter((g) => !matching.gateways.map(canonicalIp).includes(g))
      if (missing.length > 0) {
        out.push(
          result(
            "tenant-route",
            subject,
            "warn",
            `default route in table ${table} via ${matching.gateways.join(", ")}; ${missing.join(", ")} missing from it`,
            NODE_SETUP_HINT
          )
        )
      } else if (!unreachable) {
        out.push(
          result(
            "tenant-route",
            subject,
            "warn",
            `default via ${matching.gateways.join(", ")} in table ${table}, but no unreachable default behind it: if that route goes away, the traffic falls through to the main table`,
            NODE_SETUP_HINT
          )
        )
      } else {
        out.push(
          result(
            "tenant-route",
            subject,
            "ok",
            `default via ${matching.gateways.join(", ")} in table ${table}`
          )
        )
      }
    }
  }
  return out
}

const describeRules = (
  rules: ReadonlyArray<IpRule>,
  t: DoctorTenant,
  mask: number,
  families: ReadonlyArray<Family>
): string => {
  const tables = [...new Set(families.map((f) => rules[tenantRuleIndex(rules, t, mask, f)]!.table))]
  return `fwmark ${formatMark(t.mark)}/${formatMark(mask)} lookup ${tables.join("/")}`
}

// ---------------------------------------------------------------------------------------------------
// Reverse-path filtering (see the file comment)

/** The sysctl key as `sysctl -w` takes it: with `/` separators when the interface name has a dot. */
export const sysctlKey = (iface: string, leaf: string): string =>
  iface.includes(".") ? `net/ipv4/conf/${iface}/${leaf}` : `net.ipv4.conf.${iface}.${leaf}`

const rpChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const rp = facts.rp
  if (isUnreadable(rp))
    return [
      result(
        "rp-filter",
        "",
        "warn",
        `cannot read reverse-path settings: ${rp.unreadable}`,
        "run doctor as root"
      )
    ]
  if (rp.gateways.length === 0) return []
  const out: Array<CheckResult> = []
  for (const g of rp.gateways.filter((x) => x.iface === undefined)) {
    out.push(
      result(
        "rp-filter",
        g.gateway,
        "warn",
        `gateway ${g.gateway} is not reachable from this node (no route to it)`,
        "give the node an address in the gateway's subnet"
      )
    )
  }
  const ifaces = [...new Set(rp.gateways.flatMap((g) => (g.iface === undefined ? [] : [g.iface])))]
  const all = rp.sysctls.all?.rpFilter
  for (const iface of ifaces) {
    const gws = rp.gateways
      .filter((g) => g.iface === iface)
      .map((g) => g.gateway)
      .join(", ")
    const own = rp.sysctls[iface]?.rpFilter
    if (all === undefined || own === undefined) {
      out.push(
        result(
          "rp-filter",
          iface,
          "warn",
          `cannot read net.ipv4.conf.{all,${iface}}.rp_filter`,
          "run doctor as root"
        )
      )
      continue
    }
    const effective = Math.max(all, own)
    const values = `max(all=${all}, ${iface}=${own}) = ${effective}`
    const carriesDefault = rp.mainDefaultInterfaces.includes(iface)
    if (effective === 0) {
      out.push(result("rp-filter", iface, "ok", `off (${values}); replies from ${gws} pass`))
    } else if (effective === 1 && carriesDefault) {
      out.push(
        result(
          "rp-filter",
          iface,
          "ok",
          `strict (${values}), but ${iface} also carries main's default route, so replies from ${gws} pass`
        )
      )
    } else if (effective === 1) {
      const fix = [
        ...(all === 1 ? [`${sysctlKey("all", "rp_filter")}=2`] : []),
        ...(own === 1 ? [`${sysctlKey(iface, "rp_filter")}=2`] : [])
      ]
      const srcValid = rp.sysctls.all?.srcValidMark === 1 || rp.sysctls[iface]?.srcValidMark === 1
      out.push(
        result(
          "rp-filter",
          iface,
          "warn",
          `strict (${values}) drops replies arriving on ${iface} via tenant gateways ${gws}: replies are unmarked, so their reverse lookup ${rp.mainDefaultInterfaces.length === 0 ? "finds no route (main has no IPv4 default route)" : `leads out through main's default route (${rp.mainDefaultInterfaces.join(", ")})`}${srcValid ? "; src_valid_mark=1 does not help unmarked replies" : ""}`,
          `sysctl -w ${fix.join(" ")} (loose mode; the effective value is the max of all and ${iface}; persist it in /etc/sysctl.d)`
        )
      )
    } else if (rp.mainDefaultInterfaces.length === 0) {
      out.push(
        result(
          "rp-filter",
          iface,
          "warn",
          `loose (${values}), but main has no IPv4 default route: replies from remote sources reverse-route to nothing and are dropped`,
          `sysctl -w ${sysctlKey(iface, "rp_filter")}=0${all === 2 ? ` ${sysctlKey("all", "rp_filter")}=0` : ""}, or give main a default route`
        )
      )
    } else {
      out.push(result("rp-filter", iface, "ok", `loose (${values}); replies from ${gws} pass`))
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------------
// Stale entries and records

const EXAMPLES = 3
const examples = (items: ReadonlyArray<string>): string =>
  items.slice(0, EXAMPLES).join(", ") +
  (items.length > EXAMPLES ? ` and ${items.length - EXAMPLES} more` : "")

const BACKEND_LIST: ReadonlyArray<Backend> = ["iptables", "nftables"]

const staleChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const out: Array<CheckResult> = []
  const stateDir = facts.config.plugin?.stateDir ?? "the state directory"
  const listed = BACKEND_LIST.flatMap((b) => {
    const e = facts.entries[b]
    return isUnreadable(e) ? [] : e.map((entry) => ({ backend: b, entry }))
  })
  for (const b of BACKEND_LIST) {
    const e = facts.entries[b]
    if (isUnreadable(e))
      out.push(
        result("stale-entries", b, "warn", `cannot list ${b} entries: ${e.unreadable}`, "run doctor as root")
      )
  }
  const records = facts.records
  if (isUnreadable(records)) {
    out.push(
      result(
        "stale-records",
        "",
        "warn",
        `cannot read the state records in ${stateDir}: ${records.unreadable}`,
        "run doctor as root"
      )
    )
  } else {
    const tags = new Set(records.map((r) => r.tag))
    const orphans = listed.filter(({ entry }) => !tags.has(entry.owner))
    out.push(
      orphans.length === 0
        ? result("stale-entries", "", "ok", `${listed.length} entries, each with its attachment's record`)
        : result(
            "stale-entries",
            "",
            "warn",
            `${orphans.length} entries without a record: ${examples(orphans.map(({ backend, entry }) => `${backend} ${entry.ip} ${formatMark(entry.mark)} ${entry.owner}`))}`,
            "left by a DEL that never ran; the runtime's CNI GC removes them, and ADD removes any on an IP it reuses"
          )
    )
    const missing = records.flatMap((r) =>
      r.mark === null
        ? []
        : r.ips
            .filter(
              (ip) =>
                !listed.some(
                  ({ entry }) =>
                    entry.owner === r.tag && entry.mark === r.mark && entry.ip === canonicalIp(ip)
                )
            )
            .map((ip) => `${r.owner} ${ip} ${r.tenant ?? "?"} ${formatMark(r.mark as number)}`)
    )
    out.push(
      missing.length === 0
        ? result(
            "stale-records",
            "",
            "ok",
            `${records.filter((r) => r.mark !== null).length} tagged attachments, each with its entries`
          )
        : result(
            "stale-records",
            "",
            "fail",
            `${missing.length} tagged pod IPs without their entry: ${examples(missing)}; if the pod still runs, its egress is not tenant-routed`,
            "restart the pod (CNI CHECK reports it as drift); a record that outlived its pod goes with the runtime's CNI GC"
          )
    )
  }
  const marks = new Set(facts.config.source.tenants.map((t) => t.mark))
  const unknown = listed.filter(({ entry }) => !marks.has(entry.mark))
  const unknownMarks = [...new Set(unknown.map(({ entry }) => entry.mark))].map(formatMark)
  out.push(
    unknown.length === 0
      ? result("unknown-marks", "", "ok", `every entry carries a tenant's mark`)
      : result(
          "unknown-marks",
          "",
          "fail",
          `${unknown.length} entries carry marks no tenant has (${unknownMarks.join(", ")}): ${examples(unknown.map(({ backend, entry }) => `${backend} ${entry.ip} ${entry.owner}`))}; no rule routes them`,
          "restart those pods under the current tenants, or give the mark back to a tenant"
        )
  )
  return out
}

// ---------------------------------------------------------------------------------------------------
// Other users of mark bits (see the file comment)

export interface MarkUser {
  /** Short name, the result's subject: `kubernetes`, `portmap`, `cilium/magic`, `cilium/key`, `cilium/identity`, `calico`. */
  readonly user: string
  /** Who uses the bits for what, from which source. */
  readonly role: string
  readonly bits: number
  /** Why doctor thinks the user is present. */
  readonly evidence: string
  readonly hint: string
}

const KUBE_BITS = 0xc000
const PORTMAP_BITS = 0x2000
const CILIUM_MAGIC = 0x0f00
const CILIUM_KEY = 0xf000
const CILIUM_IDENTITY = 0xffff00ff
const CALICO_BITS = 0xffff0000

export interface Presence {
  readonly kubernetes: string | undefined
  readonly portmap: string | undefined
  readonly cilium: string | undefined
  readonly calico: string | undefined
}

/** Evidence of each user, or undefined. */
export const presenceOf = (
  inventory: NetfilterInventory,
  files: DoctorFacts["files"],
  plugin: PluginSettings | undefined
): Presence => {
  const chain = (re: RegExp) => inventory.chains.find((c) => re.test(c.chain))
  const nft = (name: string) => inventory.nftTables.find((t) => t.name === name)
  const chained = (type: string) => plugin?.otherPlugins.includes(type) === true
  const first = (...evidence: ReadonlyArray<string | undefined>) => evidence.find((e) => e !== undefined)
  const chainEv = (c: ReturnType<typeof chain>) =>
    c === undefined ? undefined : `chain ${c.chain} (${c.tool} ${c.table})`
  const nftEv = (t: ReturnType<typeof nft>) =>
    t === undefined ? undefined : `nft table ${t.family} ${t.name}`
  return {
    kubernetes: first(chainEv(chain(/^KUBE-/)), nftEv(nft("kube-proxy"))),
    portmap: first(
      chainEv(chain(/^CNI-HOSTPORT-/)),
      files.portmap ? "the portmap plugin binary" : undefined,
      chained("portmap") ? "portmap in the conflist" : undefined
    ),
    cilium: first(
      chainEv(chain(/^CILIUM_/)),
      files.ciliumCni ? "the cilium-cni plugin binary" : undefined,
      chained("cilium-cni") ? "cilium-cni in the conflist" : undefined
    ),
    calico: first(
      chainEv(chain(/^cali-/)),
      nftEv(nft("calico")),
      chained("calico") ? "calico in the conflist" : undefined
    )
  }
}

/** Bits set by rules of chains whose names match. */
const bitsSetBy = (inventory: NetfilterInventory, re: RegExp): number =>
  inventory.markSets.filter((m) => re.test(m.chain)).reduce((acc, m) => or32(acc, m.mask), 0)

export const markUsers = (inventory: NetfilterInventory, presence: Presence): ReadonlyArray<MarkUser> => {
  const users: Array<MarkUser> = []
  if (presence.kubernetes !== undefined) {
    users.push({
      user: "kubernetes",
      role: "kube-proxy masquerades 0x4000 and kubelet drops 0x8000 (plus bits KUBE-MARK-* rules set)",
      bits: or32(KUBE_BITS, bitsSetBy(inventory, /^KUBE-MARK-/)),
      evidence: presence.kubernetes,
      hint: "choose tenant marks and markMask outside the bits KUBE-MARK-* chains set (iptables-save | grep KUBE-MARK)"
    })
  }
  if (presence.portmap !== undefined) {
    users.push({
      user: "portmap",
      role: "portmap masquerades hairpin traffic with markMasqBit 13 = 0x2000",
      bits: or32(PORTMAP_BITS, bitsSetBy(inventory, /^CNI-HOSTPORT-/)),
      evidence: presence.portmap,
      hint: "choose tenant marks and markMask outside portmap's markMasqBit"
    })
  }
  if (presence.cilium !== undefined) {
    users.push(
      {
        user: "cilium/magic",
        role: "Cilium's magic marks use 0x0f00 (bpf/lib/common.h MARK_MAGIC_HOST_MASK)",
        bits: CILIUM_MAGIC,
        evidence: presence.cilium,
        hint: "keep tenant marks and markMask out of 0x0f00: Cilium's BPF programs and ip rules (fwmark 0x200/0xf00 …) read these bits on every packet"
      },
      {
        user: "cilium/key",
        role: "Cilium's IPsec key index and WireGuard mark use 0xf000 (MARK_MAGIC_KEY_MASK, MagicMarkWireGuardEncrypted 0x1e00)",
        bits: CILIUM_KEY,
        evidence: presence.cilium,
        hint: "keep tenant marks and markMask out of 0xf000"
      },
      {
        user: "cilium/identity",
        role: "Cilium carries the security identity in 0xffff00ff (bpf/lib/common.h)",
        bits: CILIUM_IDENTITY,
        evidence: presence.cilium,
        hint: "Cilium leaves no bit free: tenant bits here rewrite the identity of identity-carrying packets; make sure nothing Cilium does after mangle PREROUTING depends on it (host firewall, BPF masquerade, egress gateway)"
      }
    )
  }
  if (presence.calico !== undefined) {
    users.push({
      user: "calico",
      role: "Calico Felix's iptablesMarkMask defaults to 0xffff0000 (plus bits cali-* rules set)",
      bits: or32(CALICO_BITS, bitsSetBy(inventory, /^cali-/)),
      evidence: presence.calico,
      hint: "keep tenant marks and markMask outside Felix's iptablesMarkMask/nftablesMarkMask"
    })
  }
  return users
}

/** The bits the plugin rewrites on marked packets: the tenants file's and the conflist's markMask. */
export const ownedBits = (config: LoadedConfig): number =>
  or32(config.source.markMask, config.plugin?.markMask ?? 0)

const clashChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const inv = facts.inventory
  if (isUnreadable(inv)) {
    return [
      result(
        "mark-clash",
        "",
        "warn",
        `cannot list netfilter chains: ${inv.unreadable}`,
        "run doctor as root"
      )
    ]
  }
  const users = markUsers(inv, presenceOf(inv, facts.files, facts.config.plugin))
  if (users.length === 0) {
    return [result("mark-clash", "", "ok", "no other mark users found (kube-proxy, portmap, Cilium, Calico)")]
  }
  const owned = ownedBits(facts.config)
  const tenants = facts.config.source.tenants
  return users.map((u) => {
    const overlap = and32(owned, u.bits)
    const subject = u.user
    if (overlap === 0) {
      return result(
        "mark-clash",
        subject,
        "ok",
        `found ${u.evidence}; ${u.role}; markMask ${formatMark(owned)} stays clear of ${formatMark(u.bits)}`
      )
    }
    const touching = tenants
      .filter((t) => and32(t.mark, u.bits) !== 0)
      .map((t) => `${t.name} ${formatMark(t.mark)}`)
    return result(
      "mark-clash",
      subject,
      "warn",
      `found ${u.evidence}; ${u.role}; markMask ${formatMark(owned)} overlaps ${formatMark(u.bits)} in ${formatMark(overlap)}${touching.length > 0 ? ` (${touching.join(", ")})` : ""}`,
      u.hint
    )
  })
}

// ---------------------------------------------------------------------------------------------------
// Cilium's host routing

/** `BPF` or `Legacy` from `cilium-dbg status` text, in either of the formats Cilium has printed. */
export const parseHostRouting = (text: string): "BPF" | "Legacy" | undefined => {
  const m = /^Host Routing:\s+(BPF|Legacy)\b/m.exec(text) ?? /^Routing:.*\bHost:\s+(BPF|Legacy)\b/m.exec(text)
  return m === null ? undefined : (m[1] as "BPF" | "Legacy")
}

const ciliumChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const inv = facts.inventory
  const presence = presenceOf(
    isUnreadable(inv) ? { chains: [], markSets: [], nftTables: [] } : inv,
    facts.files,
    facts.config.plugin
  )
  if (presence.cilium === undefined) return []
  const hint =
    "set bpf.hostLegacyRouting=true in Cilium's Helm values (enable-host-legacy-routing: true) and restart the agents"
  const status = facts.cilium
  if (isUnreadable(status))
    return [
      result(
        "cilium-host-routing",
        "",
        "warn",
        `Cilium found (${presence.cilium}), but its status is unreadable: ${status.unreadable}`,
        hint
      )
    ]
  if (status === undefined) {
    return [
      result(
        "cilium-host-routing",
        "",
        "warn",
        `Cilium found (${presence.cilium}); cannot tell its host routing mode (cilium-dbg not installed here): BPF host routing bypasses netfilter, so no tenant mark is ever set`,
        `check \`cilium-dbg status\` in the agent pod shows Host Routing: Legacy; else ${hint}`
      )
    ]
  }
  const mode = parseHostRouting(status.text)
  if (mode === "Legacy")
    return [
      result("cilium-host-routing", "", "ok", "Cilium host routing is Legacy: pod egress passes netfilter")
    ]
  if (mode === "BPF") {
    return [
      result(
        "cilium-host-routing",
        "",
        "fail",
        "Cilium host routing is BPF: pod egress bypasses netfilter, so no tenant mark is ever set",
        hint
      )
    ]
  }
  return [
    result(
      "cilium-host-routing",
      "",
      "warn",
      `Cilium found (${presence.cilium}); \`cilium-dbg status\` (exit ${status.exitCode}) shows no host routing mode`,
      `make sure Host Routing is Legacy; else ${hint}`
    )
  ]
}

// ---------------------------------------------------------------------------------------------------
// Namespace reads

const apiChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const plugin = facts.config.plugin
  const api = facts.api
  if (plugin === undefined || api.kind === "no-kubeconfig") {
    return [
      result(
        "namespace-read",
        "",
        "ok",
        "no kubeconfig configured: only runtime-provided annotations count, nothing is pinned"
      )
    ]
  }
  const kc = plugin.kubeconfig ?? "?"
  if (api.kind === "connect-failed") {
    const code = api.error === "InvalidConfig" ? 7 : 11
    const open = api.error === "TryAgainLater" && plugin.failurePolicy === "open"
    return [
      result(
        "namespace-read",
        kc,
        open ? "warn" : "fail",
        `${api.msg}: every ADD ${open ? "starts its pod untagged (failurePolicy open)" : `fails with code ${code}`}`,
        api.error === "InvalidConfig"
          ? "fix the kubeconfig (current context, cluster, user)"
          : "write the kubeconfig (the DaemonSet does) or remove `kubeconfig` from the conflist"
      )
    ]
  }
  switch (api.outcome) {
    case "ok":
    case "not-found":
      return [
        result("namespace-read", api.namespace, "ok", `the configured identity may read namespaces (${kc})`)
      ]
    case "forbidden":
      return [
        plugin.pinning === "strict"
          ? result(
              "namespace-read",
              api.namespace,
              "fail",
              `namespace reads are forbidden (${api.msg}): under pinning strict every ADD fails with code 11`,
              "grant the plugin's identity `get` on namespaces (the deploy/ ServiceAccount has it)"
            )
          : result(
              "namespace-read",
              api.namespace,
              "warn",
              `namespace reads are forbidden (${api.msg}): namespace pinning is off under best-effort (it fails ADD under strict)`,
              "grant the plugin's identity `get` on namespaces (the deploy/ ServiceAccount has it)"
            )
      ]
    case "unavailable":
      return [
        result(
          "namespace-read",
          api.namespace,
          "warn",
          `the API does not answer now (${api.msg}): ADD returns code 11 unless failurePolicy is open`,
          "check the API server address and credentials in the kubeconfig"
        )
      ]
  }
}

// ---------------------------------------------------------------------------------------------------
// Config and backend

const configChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const { source, plugin, problems } = facts.config
  const out = problems.map((p) =>
    result("config", "", "fail", p, "fix the file; doctor checked the rest with the tenants it could find")
  )
  const from =
    source.kind === "defaults"
      ? "the defaults (no tenants file, no conflist with the plugin)"
      : `${source.kind} ${source.path}`
  out.push(
    result(
      "config",
      "tenants",
      "ok",
      `${source.tenants.length} tenants from ${from}, markMask ${formatMark(source.markMask)}`
    )
  )
  if (plugin !== undefined) {
    const diff = disagreements(source, plugin)
    out.push(
      diff.length === 0
        ? result(
            "config",
            "conflist",
            "ok",
            `plugin config from ${plugin.conflist} (network ${plugin.network})`
          )
        : result(
            "config",
            "conflist",
            "warn",
            `${plugin.conflist} and the tenants file disagree: ${diff.join("; ")}`,
            "ADD marks by the conflist and node-setup routes by the tenants file: make them name the same tenants, marks and markMask"
          )
    )
  }
  return out
}

const backendChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const configured = facts.config.plugin?.backend ?? "auto"
  const { iptables, nftables } = facts.backends
  if (configured === "auto") {
    if (nftables)
      return [result("backend", "nftables", "ok", "backend auto: nft works, so ADD uses nftables")]
    if (iptables)
      return [result("backend", "iptables", "ok", "backend auto: nft is not usable, so ADD uses iptables")]
    return [
      result(
        "backend",
        "auto",
        "fail",
        "neither nft nor iptables-save/ip6tables-save works: every ADD fails (STATUS reports 50)",
        "install nftables or iptables"
      )
    ]
  }
  const ok = configured === "iptables" ? iptables : nftables
  return [
    ok
      ? result("backend", configured, "ok", `${configured} is usable`)
      : result(
          "backend",
          configured,
          "fail",
          `backend ${configured} is not usable here: every ADD fails (STATUS reports 50)`,
          configured === "iptables"
            ? "install iptables (iptables-save, ip6tables-save) or set backend auto"
            : "install nftables or set backend auto"
        )
  ]
}

// ---------------------------------------------------------------------------------------------------

/** Every check's results, in a fixed order. */
export const diagnose = (facts: DoctorFacts): ReadonlyArray<CheckResult> => [
  ...configChecks(facts),
  ...backendChecks(facts),
  ...routingChecks(facts),
  ...rpChecks(facts),
  ...staleChecks(facts),
  ...clashChecks(facts),
  ...ciliumChecks(facts),
  ...apiChecks(facts)
]

/** Whether `cilium-dbg status` is worth running (only when Cilium is present). */
export const ciliumPresent = (
  inventory: Fact<NetfilterInventory>,
  files: DoctorFacts["files"],
  plugin: PluginSettings | undefined
): boolean =>
  presenceOf(isUnreadable(inventory) ? { chains: [], markSets: [], nftTables: [] } : inventory, files, plugin)
    .cilium !== undefined
