/**
 * The facts `doctor` judges, as plain data: `programs/doctor.ts` gathers them through the services,
 * and the checks in this folder look at nothing else. A fact that could not be read is `Unreadable`
 * with the reason, so one broken tool becomes one check's warning instead of hiding the others.
 * Types only, plus the `Unreadable` constructor and guard; nothing here decides.
 */

import type { Backend } from "../cni/Config.ts"
import type { AttachmentRecord } from "../datapath/AttachmentRecord.ts"
import type { UnreadableRecord } from "../datapath/AttachmentStore.ts"
import type { MarkEntry } from "../datapath/Entries.ts"
import type { IpRule, Route } from "../node-setup/RoutingPlan.ts"
import type { Tenant } from "../tenancy/Tenant.ts"
import type { CommandOutput, NetfilterInventory } from "./NodeFacts.ts"

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
  /** Records the store could not read (skipped from `records`), with the reason. */
  readonly unreadableRecords?: ReadonlyArray<UnreadableRecord>
  readonly rp: Fact<RpFacts>
  readonly inventory: Fact<NetfilterInventory>
  readonly files: { readonly portmap: boolean; readonly ciliumCni: boolean }
  /** `cilium-dbg status`; undefined when the binary is absent or Cilium was not detected. */
  readonly cilium: Fact<CommandOutput | undefined>
  readonly api: ApiFact
  /**
   * The CNI config dir's file names and the parsed conflist that holds the plugin (for the
   * `cni-chaining` check); undefined when not gathered.
   */
  readonly cniConf?: Fact<{ readonly files: ReadonlyArray<string>; readonly conflist: unknown }>
}
