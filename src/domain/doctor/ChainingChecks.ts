/**
 * The `cni-chaining` check (docs/DESIGN.md §7): the conflist that holds this plugin is the one the
 * runtime uses, and any `cilium-cni` after us is in a chaining mode it accepts. The rules are
 * `install`'s (`install/CiliumChaining.ts`), applied to what is installed on the node: a conflist
 * someone edited by hand, or a `05-cilium.conflist` Cilium wrote after the install, shows here.
 */
import { cniChainingIssue, conflistsBefore } from "../install/CiliumChaining.ts"
import { type CheckResult, result } from "./CheckResult.ts"
import { type DoctorFacts, isUnreadable } from "./Facts.ts"

const baseName = (path: string): string => path.slice(path.lastIndexOf("/") + 1)

export const chainingChecks = (facts: DoctorFacts): Array<CheckResult> => {
  const plugin = facts.config.plugin
  const cni = facts.cniConf
  if (plugin === undefined || cni === undefined) return []
  if (isUnreadable(cni))
    return [
      result(
        "cni-chaining",
        "",
        "warn",
        `cannot read the CNI config dir: ${cni.unreadable}`,
        "run doctor where /etc/cni/net.d is readable (the DaemonSet's pod mounts it)"
      )
    ]
  const ours = baseName(plugin.conflist)
  const out: Array<CheckResult> = []
  const before = conflistsBefore(cni.files, ours)
  out.push(
    before.length === 0
      ? result(
          "cni-chaining",
          ours,
          "ok",
          `${ours} sorts first among the CNI configs, so the runtime uses it`
        )
      : result(
          "cni-chaining",
          ours,
          "fail",
          `${before.join(", ")} sort${before.length === 1 ? "s" : ""} before ${ours}: the runtime uses the first config it can load, so pods never reach this plugin`,
          "remove them; with Cilium, set cni.customConf=true and cni.exclusive=false so it stops writing 05-cilium.conflist"
        )
  )
  const issue = cniChainingIssue(cni.conflist)
  if (issue !== undefined)
    out.push(
      result(
        "cni-chaining",
        "cilium-cni",
        "fail",
        issue,
        `fix ${plugin.conflist} (the DaemonSet's conflist template) and use Cilium's Helm values cni.chainingMode=generic-veth, cni.customConf=true`
      )
    )
  else if (plugin.otherPlugins.includes("cilium-cni"))
    out.push(result("cni-chaining", "cilium-cni", "ok", "cilium-cni is chained in a mode it accepts"))
  return out
}
