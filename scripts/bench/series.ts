/**
 * Sequential ADD then DEL of one attachment, for several variants in the same iteration (their order
 * rotating from one iteration to the next), so a change of the machine's load hits every variant alike
 * and each variant's overhead can be taken pairwise against bare ptp of the same iteration.
 */
import { join } from "node:path"
import { SYSTEM_CNI } from "../../test/sim/fixture.ts"
import { type Call, callSync, mustSucceed } from "./calls.ts"
import { type Backend, cniEnv, ipam, type NodeNs, wrapperConf } from "./node.ts"

export interface Sample {
  readonly add: Array<number>
  readonly del: Array<number>
  readonly addRss: Array<number>
  readonly delRss: Array<number>
}

export interface Variant {
  readonly label: string
  /** One ADD then DEL of attachment `i` (pod namespace `podNs`): the two wall times and peak RSS. */
  readonly run: (i: number, podNs: string) => { add: Call; del: Call }
}

const both = (add: Call, del: Call) => ({ add, del })

/** Bare `ptp` + host-local, the way a runtime runs a one-plugin conflist. */
export const bare = (node: NodeNs, network: string, dataDir: string, subnet: string): Variant => {
  const conf = { cniVersion: "1.0.0", name: network, type: "ptp", ipam: ipam(dataDir, subnet) }
  const ptp = join(SYSTEM_CNI, "ptp")
  return {
    label: network,
    run: (i, podNs) => {
      const env = (verb: "ADD" | "DEL") =>
        cniEnv(verb, { podNs, id: `${network}${i}`, pod: `pod-${i % 250}`, cniPath: [SYSTEM_CNI] })
      const add = mustSucceed(
        `${network} ADD`,
        callSync(ptp, { prefix: node.prefix, env: env("ADD"), stdin: JSON.stringify(conf) })
      )
      const prevResult = JSON.parse(add.stdout) as unknown
      const del = mustSucceed(
        `${network} DEL`,
        callSync(ptp, {
          prefix: node.prefix,
          env: env("DEL"),
          stdin: JSON.stringify({ ...conf, prevResult })
        })
      )
      return both(add, del)
    }
  }
}

/**
 * `ptp` then the reference `firewall` plugin (iptables backend), chained as libcni runs a conflist:
 * ADD ptp → firewall with ptp's result; DEL in reverse order. A call's time is the sum of both
 * plugins', its peak RSS the larger.
 */
export const withFirewall = (node: NodeNs, network: string, dataDir: string, subnet: string): Variant => {
  const ptpConf = { cniVersion: "1.0.0", name: network, type: "ptp", ipam: ipam(dataDir, subnet) }
  const fwConf = { cniVersion: "1.0.0", name: network, type: "firewall", backend: "iptables" }
  const ptp = join(SYSTEM_CNI, "ptp")
  const fw = join(SYSTEM_CNI, "firewall")
  const sum = (a: Call, b: Call): Call => ({ ...b, ms: a.ms + b.ms, rssKiB: Math.max(a.rssKiB, b.rssKiB) })
  return {
    label: network,
    run: (i, podNs) => {
      const env = (verb: "ADD" | "DEL") =>
        cniEnv(verb, { podNs, id: `${network}${i}`, pod: `pod-${i % 250}`, cniPath: [SYSTEM_CNI] })
      const call = (plugin: string, verb: "ADD" | "DEL", conf: unknown) =>
        mustSucceed(
          `${network} ${verb} ${plugin}`,
          callSync(plugin, { prefix: node.prefix, env: env(verb), stdin: JSON.stringify(conf) })
        )
      const a1 = call(ptp, "ADD", ptpConf)
      const prevResult = JSON.parse(a1.stdout) as unknown
      const a2 = call(fw, "ADD", { ...fwConf, prevResult })
      const final = JSON.parse(a2.stdout) as unknown
      const d1 = call(fw, "DEL", { ...fwConf, prevResult: final })
      const d2 = call(ptp, "DEL", { ...ptpConf, prevResult: final })
      return both(sum(a1, a2), sum(d1, d2))
    }
  }
}

/** Our plugin through the shim: to the agent at `agentSocket`, or standalone when it is absent. */
export const shim = (
  node: NodeNs,
  shimPath: string,
  binDir: string,
  o: {
    readonly network: string
    readonly backend: Backend
    readonly stateDir: string
    readonly dataDir: string
    readonly subnet: string
    readonly agentSocket?: string
    readonly kubeconfig?: string
  }
): Variant => {
  const conf = wrapperConf(o)
  return {
    label: o.network,
    run: (i, podNs) => {
      const env = (verb: "ADD" | "DEL") =>
        cniEnv(verb, { podNs, id: `${o.network}${i}`, pod: `pod-${i % 250}`, cniPath: [binDir, SYSTEM_CNI] })
      const add = mustSucceed(
        `${o.network} ADD`,
        callSync(shimPath, { prefix: node.prefix, env: env("ADD"), stdin: JSON.stringify(conf) })
      )
      const prevResult = JSON.parse(add.stdout) as unknown
      const del = mustSucceed(
        `${o.network} DEL`,
        callSync(shimPath, {
          prefix: node.prefix,
          env: env("DEL"),
          stdin: JSON.stringify({ ...conf, prevResult })
        })
      )
      return both(add, del)
    }
  }
}

/** `runs` measured iterations (after `warmup` unmeasured ones) of every variant, order rotating. */
export const measure = (
  variants: ReadonlyArray<Variant>,
  podNs: string,
  runs: number,
  warmup = 2
): ReadonlyMap<string, Sample> => {
  const out = new Map<string, Sample>(
    variants.map((v) => [v.label, { add: [], del: [], addRss: [], delRss: [] }])
  )
  for (let i = 0; i < runs + warmup; i++) {
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(i + k) % variants.length]!
      const { add, del } = v.run(i, podNs)
      if (i < warmup) continue
      const s = out.get(v.label)!
      s.add.push(add.ms)
      s.del.push(del.ms)
      s.addRss.push(add.rssKiB)
      s.delRss.push(del.rssKiB)
    }
  }
  return out
}
