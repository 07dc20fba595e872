/**
 * The `namespace-read` check: with a kubeconfig in the conflist, whether the configured identity may
 * read namespaces, judged by what ADD would then do. A kubeconfig that cannot be used fails: ADD
 * fails with code 7 when it is invalid, and with code 11 when it is not there (only a warning under
 * failurePolicy open, which starts pods untagged). Forbidden reads fail under pinning strict and warn
 * under best-effort; an API that does not answer warns. The program does the one read; this only
 * judges its outcome.
 */
import { type CheckResult, result } from "./CheckResult.ts"
import type { DoctorFacts } from "./Facts.ts"

export const apiChecks = (facts: DoctorFacts): Array<CheckResult> => {
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
