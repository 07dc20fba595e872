/**
 * The CNI environment of one call (CNI_COMMAND, CNI_CONTAINERID, ...), validated per the CNI spec's
 * character rules before anything runs, so that no malformed id ever reaches a rule comment, a
 * state path or a delegate (code 4 otherwise).
 */

import * as Result from "effect/Result"
import type { Issue } from "../decode/Issue.ts"
import { isDnsLabel, isDnsSubdomain } from "../net/DnsNames.ts"
import { InvalidEnvironment, issuesSummary } from "./Errors.ts"

export const COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"] as const
export type Command = (typeof COMMANDS)[number]

export interface CniEnv {
  readonly command: Command
  readonly containerId: string
  readonly netns: string
  readonly ifname: string
  /** CNI_ARGS as key → value. */
  readonly args: Readonly<Record<string, string>>
  readonly rawArgs: string
  readonly path: ReadonlyArray<string>
  readonly podNamespace: string | undefined
  readonly podName: string | undefined
  /** K8S_POD_UID: a UUID, or the hex digest the kubelet gives static pods. */
  readonly podUid: string | undefined
}

/** CNI spec: container ids are alphanumerics plus `_ . -`, starting with an alphanumeric. */
export const isContainerId = (s: string): boolean =>
  /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(s) && s.length <= 1024

/** CNI spec: at most 15 bytes, not `.`/`..`, no `/`, `:` or whitespace. */
export const isIfname = (s: string): boolean =>
  s.length > 0 && new TextEncoder().encode(s).length <= 15 && s !== "." && s !== ".." && !/[/:\s]/.test(s)

/** Pod uids are UUIDs, or for static pods a hex digest: letters, digits and `-`, nothing else. */
const isPodUid = (s: string) => /^[0-9A-Za-z][0-9A-Za-z-]{0,127}$/.test(s)

const parseArgs = (raw: string, issues: Array<Issue>): Record<string, string> => {
  const out: Record<string, string> = {}
  if (raw === "") return out
  for (const pair of raw.split(";")) {
    const eq = pair.indexOf("=")
    if (eq <= 0) {
      issues.push({
        path: "CNI_ARGS",
        message: `expected KEY=VALUE pairs separated by ';', got ${JSON.stringify(pair.slice(0, 64))}`
      })
      continue
    }
    out[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  return out
}

/** Validates the variables a verb needs; VERSION needs none beyond CNI_COMMAND. */
export const decodeEnv = (
  env: Readonly<Record<string, string | undefined>>
): Result.Result<CniEnv, InvalidEnvironment> => {
  const issues: Array<Issue> = []
  const command = env.CNI_COMMAND ?? ""
  if (!(COMMANDS as ReadonlyArray<string>).includes(command)) {
    issues.push({
      path: "CNI_COMMAND",
      message: `expected one of ${COMMANDS.join(", ")}, got ${JSON.stringify(command.slice(0, 32))}`
    })
  }
  const perAttachment = command === "ADD" || command === "DEL" || command === "CHECK"
  const containerId = env.CNI_CONTAINERID ?? ""
  const ifname = env.CNI_IFNAME ?? ""
  const netns = env.CNI_NETNS ?? ""
  if (perAttachment) {
    if (!isContainerId(containerId))
      issues.push({
        path: "CNI_CONTAINERID",
        message: "must be alphanumerics plus _ . -, starting with an alphanumeric"
      })
    if (!isIfname(ifname))
      issues.push({
        path: "CNI_IFNAME",
        message: "must be 1-15 bytes without / : or whitespace, not . or .."
      })
    // DEL may come after the netns is gone (CNI spec: "may be omitted"); ADD and CHECK need it.
    if (command !== "DEL" && netns === "") issues.push({ path: "CNI_NETNS", message: "is required" })
    // A path to a network namespace (e.g. /var/run/netns/cni-…, /proc/<pid>/ns/net): the delegate
    // gets it as is, so anything but an absolute path is refused before it runs.
    if (netns !== "" && !(netns.startsWith("/") && !netns.includes("\0") && netns.length <= 4096))
      issues.push({ path: "CNI_NETNS", message: "must be an absolute path" })
  }
  if (command !== "VERSION" && command !== "" && (env.CNI_PATH ?? "") === "") {
    issues.push({ path: "CNI_PATH", message: "is required" })
  }
  const rawArgs = env.CNI_ARGS ?? ""
  const args = parseArgs(rawArgs, issues)
  const podNamespace = args.K8S_POD_NAMESPACE
  const podName = args.K8S_POD_NAME
  if (podNamespace !== undefined && !isDnsLabel(podNamespace))
    issues.push({ path: "CNI_ARGS.K8S_POD_NAMESPACE", message: "must be a Kubernetes namespace name" })
  if (podName !== undefined && !isDnsSubdomain(podName))
    issues.push({ path: "CNI_ARGS.K8S_POD_NAME", message: "must be a Kubernetes object name" })
  const podUid = args.K8S_POD_UID
  if (podUid !== undefined && !isPodUid(podUid))
    issues.push({
      path: "CNI_ARGS.K8S_POD_UID",
      message: "must be a pod uid (letters, digits and -, at most 128)"
    })

  if (issues.length > 0) {
    return Result.fail(
      new InvalidEnvironment({
        msg: issuesSummary("invalid CNI environment", issues),
        issues
      })
    )
  }
  return Result.succeed({
    command: command as Command,
    containerId,
    netns,
    ifname,
    args,
    rawArgs,
    path: (env.CNI_PATH ?? "").split(":").filter((p) => p !== ""),
    podNamespace,
    podName,
    podUid
  })
}
