/**
 * Every expected failure of the plugin, as data carrying its CNI error code (docs/DESIGN.md §5).
 *
 * Programs fail with these and nothing else; `toCniError` (CniError.ts) is the one place that turns
 * them into the `{cniVersion, code, msg, details}` document on stdout. Defects (bugs) are not here:
 * the entry point reports them as code 999 without pretending to know more.
 */
import * as Schema from "effect/Schema"

import { Issue } from "../decode/Issue.ts"

const issues = Schema.Array(Issue)

/**
 * The one-sentence `msg` of a decode failure: where the problems are. What is wrong at each place
 * goes in `details` (CniError.ts), because runtimes show users `msg; details` and the same text
 * twice reads as noise in a pod's events.
 */
export const issuesSummary = (what: string, found: ReadonlyArray<Issue>): string => {
  const where = found.map((i) => (i.path === "" ? "(top level)" : i.path))
  return found.length === 1
    ? `${what}: ${where[0]} is wrong`
    : `${what}: ${found.length} problems, at ${where.join(", ")}`
}

/** 1: the caller asked for a CNI version or verb this config's version does not support. */
export class IncompatibleVersion extends Schema.TaggedError<IncompatibleVersion>()("IncompatibleVersion", {
  msg: Schema.String
}) {
  readonly code = 1 as const
}

/** 4: the CNI_* environment (or CNI_ARGS) is missing or malformed. */
export class InvalidEnvironment extends Schema.TaggedError<InvalidEnvironment>()("InvalidEnvironment", {
  msg: Schema.String,
  issues
}) {
  readonly code = 4 as const
}

/** 6: stdin is not UTF-8, not JSON, or larger than we accept. */
export class UndecodableInput extends Schema.TaggedError<UndecodableInput>()("UndecodableInput", {
  msg: Schema.String
}) {
  readonly code = 6 as const
}

/** 7: the network config (including prevResult and the kubeconfig's content) is invalid. */
export class InvalidConfig extends Schema.TaggedError<InvalidConfig>()("InvalidConfig", {
  msg: Schema.String,
  issues
}) {
  readonly code = 7 as const
}

/** 11: something we depend on is unavailable now; the runtime should retry the call later. */
export class TryAgainLater extends Schema.TaggedError<TryAgainLater>()("TryAgainLater", {
  msg: Schema.String
}) {
  readonly code = 11 as const
}

/**
 * 11 as well, but never covered by failurePolicy open: under `pinning: strict` a namespace we cannot
 * read might pin the pod, so starting it untagged could route it as the wrong tenant.
 */
export class NamespaceUnreadable extends Schema.TaggedError<NamespaceUnreadable>()("NamespaceUnreadable", {
  msg: Schema.String
}) {
  readonly code = 11 as const
}

/**
 * 11 too, and never covered by failurePolicy open: the pod's namespace was read and is pinned, but
 * the pod could not be read, so whether its own annotation names an allowed tenant is unknown.
 * Starting it untagged would let it leave through the default gateway, out of its namespace's tenant.
 */
export class PinnedPodUnreadable extends Schema.TaggedError<PinnedPodUnreadable>()("PinnedPodUnreadable", {
  msg: Schema.String
}) {
  readonly code = 11 as const
}

/** 50: STATUS found the plugin unable to serve ADD (its netfilter backend is unusable). */
export class NotAvailable extends Schema.TaggedError<NotAvailable>()("NotAvailable", {
  msg: Schema.String
}) {
  readonly code = 50 as const
}

/** 100: the pod names a tenant that does not exist, or one its namespace does not allow. */
export class TenantRejected extends Schema.TaggedError<TenantRejected>()("TenantRejected", {
  msg: Schema.String,
  known: Schema.Array(Schema.String)
}) {
  readonly code = 100 as const
}

/** 101: iptables/nft refused a change or a listing. */
export class NetfilterFailed extends Schema.TaggedError<NetfilterFailed>()("NetfilterFailed", {
  msg: Schema.String,
  /** true when the failed change only removed entries: never covered by failurePolicy open. */
  removal: Schema.Boolean
}) {
  readonly code = 101 as const
}

/** 102: the delegate is missing, crashed, timed out or printed garbage, without an error of its own. */
export class DelegateFailed extends Schema.TaggedError<DelegateFailed>()("DelegateFailed", {
  msg: Schema.String,
  /** true when the delegate ran (it may have allocated something): an ADD then needs its DEL. */
  ran: Schema.optionalKey(Schema.Boolean)
}) {
  readonly code = 102 as const
}

/** The delegate returned a CNI error of its own: its code and details are kept, msg prefixed. */
export class DelegateError extends Schema.TaggedError<DelegateError>()("DelegateError", {
  plugin: Schema.String,
  code: Schema.Number,
  msg: Schema.String,
  details: Schema.optionalKey(Schema.String)
}) {}

/** 103: CHECK found the kernel's entries differing from what ADD recorded. */
export class Drift extends Schema.TaggedError<Drift>()("Drift", {
  msg: Schema.String,
  differences: Schema.Array(Schema.String)
}) {
  readonly code = 103 as const
}

/** Failures of the state records (disk full, permissions): reported as a netfilter-side failure. */
export class StateFailed extends Schema.TaggedError<StateFailed>()("StateFailed", {
  msg: Schema.String
}) {
  readonly code = 101 as const
}

export type CniFailure =
  | IncompatibleVersion
  | InvalidEnvironment
  | UndecodableInput
  | InvalidConfig
  | TryAgainLater
  | NamespaceUnreadable
  | PinnedPodUnreadable
  | NotAvailable
  | TenantRejected
  | NetfilterFailed
  | DelegateFailed
  | DelegateError
  | Drift
  | StateFailed
