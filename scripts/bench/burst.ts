/**
 * A burst: `n` concurrent ADDs through the shim (one pod namespace each), then `n` concurrent DELs,
 * timed as a whole, and the node's state checked after each half: every pod has its entry (as
 * `tenant-routing inspect` lists them) and its state record, then none has, and host-local holds no lease.
 */
import { spawnSync } from "node:child_process"
import { leases, recordDirs, SYSTEM_CNI } from "../../test/sim/fixture.ts"
import { callAsync } from "./calls.ts"
import { type Backend, cniEnv, type NodeNs, wrapperConf } from "./node.ts"

export interface BurstResult {
  readonly addMs: number
  readonly delMs: number
  readonly totalMs: number
  /** Empty when the final state was right. */
  readonly problems: ReadonlyArray<string>
}

interface Inspected {
  readonly containerId: string | null
}

const inspect = (node: NodeNs, program: string, stateDir: string): ReadonlyArray<Inspected> => {
  const r = spawnSync(
    node.prefix[0]!,
    [...node.prefix.slice(1), program, "inspect", "--json", "--state-dir", stateDir],
    {
      encoding: "utf8",
      timeout: 120_000
    }
  )
  if (r.status !== 0) throw new Error(`inspect exited ${r.status}: ${r.stderr}`)
  return JSON.parse(r.stdout) as ReadonlyArray<Inspected>
}

export const burst = async (
  node: NodeNs,
  shimPath: string,
  program: string,
  binDir: string,
  pods: ReadonlyArray<string>,
  o: {
    readonly network: string
    readonly backend: Backend
    readonly stateDir: string
    readonly dataDir: string
    readonly subnet: string
    readonly agentSocket?: string
  }
): Promise<BurstResult> => {
  const conf = wrapperConf(o)
  const problems: Array<string> = []
  const env = (verb: "ADD" | "DEL", i: number) =>
    cniEnv(verb, { podNs: pods[i]!, id: `${o.network}${i}`, pod: `pod-${i}`, cniPath: [binDir, SYSTEM_CNI] })
  const mine = () =>
    inspect(node, program, o.stateDir).filter((e) => e.containerId?.startsWith(o.network) === true).length

  let t0 = performance.now()
  const adds = await Promise.all(
    pods.map((_, i) =>
      callAsync(shimPath, {
        prefix: node.prefix,
        env: env("ADD", i),
        stdin: JSON.stringify(conf),
        rss: false
      })
    )
  )
  const addMs = performance.now() - t0
  const failedAdds = adds.filter((c) => c.status !== 0)
  if (failedAdds.length > 0) problems.push(`${failedAdds.length} ADDs failed: ${failedAdds[0]!.stdout}`)
  const entries = mine()
  const records = recordDirs(o.stateDir, o.network).length
  if (entries !== pods.length || records !== pods.length)
    problems.push(`after the ADDs: ${entries} entries and ${records} records for ${pods.length} pods`)

  t0 = performance.now()
  const dels = await Promise.all(
    pods.map((_, i) => {
      const add = adds[i]!
      const prevResult = add.status === 0 ? (JSON.parse(add.stdout) as unknown) : undefined
      return callAsync(shimPath, {
        prefix: node.prefix,
        env: env("DEL", i),
        stdin: JSON.stringify(prevResult === undefined ? conf : { ...conf, prevResult }),
        rss: false
      })
    })
  )
  const delMs = performance.now() - t0
  const failedDels = dels.filter((c) => c.status !== 0)
  if (failedDels.length > 0) problems.push(`${failedDels.length} DELs failed: ${failedDels[0]!.stdout}`)
  const left = {
    entries: mine(),
    records: recordDirs(o.stateDir, o.network).length,
    leases: leases(o.dataDir, o.network).length
  }
  if (left.entries + left.records + left.leases > 0)
    problems.push(`after the DELs: ${JSON.stringify(left)} left`)
  return { addMs, delMs, totalMs: addMs + delMs, problems }
}
