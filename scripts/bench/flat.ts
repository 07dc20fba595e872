/**
 * "Flat with many pods": the cost of an ADD and a DEL on a node that already holds 5000 entries, against
 * an empty node, through the shim and the agent, per backend; and the same growth for the original
 * plugin's iptables approach (`iptables -C`, then `-A`, per pod; `-D` on DEL) as the reference.
 *
 * The node is filled through the agent itself, with chained-mode ADDs (a prevResult naming the pod's
 * address, no delegate) sent straight to its socket, concurrently: so the entries, their state records
 * and the agent's kept view are exactly what 5000 pods would have left.
 */
import { spawnSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { ANNOTATION, NODE_ENV, POD_ANNOTATIONS, SYSTEM_CNI } from "../../test/sim/fixture.ts"
import { netnsPath } from "../../test/sim/netns.ts"
import { call as agentCall } from "../../test/support/agentClient.ts"
import { type Backend, type NodeNs, TENANT_MARK } from "./node.ts"

const ipOf = (i: number) => `10.${100 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`

/** `count` chained-mode ADDs to the agent at `socket`, `concurrency` at a time. */
export const fillThroughAgent = async (
  socket: string,
  o: { readonly backend: Backend; readonly stateDir: string; readonly podNs: string; readonly count: number },
  concurrency = 50
): Promise<void> => {
  const add = async (i: number) => {
    const conf = {
      cniVersion: "1.0.0",
      name: "fill",
      type: "tenant-routing-wrapper",
      backend: o.backend,
      stateDir: o.stateDir,
      runtimeConfig: { [POD_ANNOTATIONS]: { [ANNOTATION]: TENANT_MARK } },
      prevResult: {
        cniVersion: "1.0.0",
        interfaces: [{ name: "eth0", sandbox: netnsPath(o.podNs) }],
        ips: [{ address: `${ipOf(i)}/32`, interface: 0 }]
      }
    }
    const reply = await agentCall(
      socket,
      {
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: `fill${i}`,
        CNI_NETNS: netnsPath(o.podNs),
        CNI_IFNAME: "eth0",
        CNI_PATH: SYSTEM_CNI,
        CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=fill;K8S_POD_NAME=fill${i}`
      },
      JSON.stringify(conf)
    )
    if (reply.exit !== 0) throw new Error(`fill ADD ${i} exited ${reply.exit}: ${reply.stdout}`)
  }
  for (let next = 0; next < o.count; next += concurrency)
    await Promise.all(Array.from({ length: Math.min(concurrency, o.count - next) }, (_, k) => add(next + k)))
}

/** How many TRW entries the node holds in `backend`, read with the system tools. */
export const countEntries = (node: NodeNs, backend: Backend): number => {
  const [file, args] =
    backend === "nftables"
      ? ["nft", ["list", "table", "inet", "tenant_routing"]]
      : ["iptables-save", ["-t", "mangle"]]
  const r = spawnSync(node.prefix[0]!, [...node.prefix.slice(1), file, ...args], {
    encoding: "utf8",
    maxBuffer: 256 * 1024 * 1024
  })
  if (backend === "iptables") return r.stdout.split("\n").filter((l) => l.startsWith("-A TRW-MARK ")).length
  return (r.stdout.match(/\b\d+\.\d+\.\d+\.\d+\b/g) ?? []).length
}

export interface Reference {
  readonly empty: { add: Array<number>; del: Array<number> }
  readonly full: { add: Array<number>; del: Array<number> }
}

/**
 * The original's iptables approach in namespace `node`, on a chain of its own: per pod `iptables -C`
 * (absent), then `-A`; per DEL `-D`. Measured on an empty chain, then with `count` rules in it.
 */
export const iptablesReference = (node: NodeNs, dir: string, count: number, runs: number): Reference => {
  const run = (args: ReadonlyArray<string>) => {
    const t0 = process.hrtime.bigint()
    const r = spawnSync(node.prefix[0]!, [...node.prefix.slice(1), "iptables", "-w", ...args], {
      encoding: "utf8",
      env: { ...NODE_ENV }
    })
    return { ok: r.status === 0, ms: Number(process.hrtime.bigint() - t0) / 1e6, stderr: r.stderr }
  }
  const rule = (ip: string, owner: string) => [
    "-t",
    "mangle",
    "TRW-REF",
    "-s",
    `${ip}/32`,
    "-m",
    "comment",
    "--comment",
    owner,
    "-j",
    "MARK",
    "--set-xmark",
    `${TENANT_MARK}/0x30`
  ]
  const verb = (v: string, ip: string, owner: string) => {
    const r = rule(ip, owner)
    return [...r.slice(0, 2), v, ...r.slice(2)]
  }
  const created = run(["-t", "mangle", "-N", "TRW-REF"])
  if (!created.ok) throw new Error(`iptables -N TRW-REF: ${created.stderr}`)
  const phase = () => {
    const add: Array<number> = []
    const del: Array<number> = []
    for (let i = 0; i < runs; i++) {
      const ip = ipOf(200_000 + i)
      const owner = `ref/m${i}/eth0`
      const check = run(verb("-C", ip, owner))
      if (check.ok) throw new Error("iptables -C found a rule that should not exist")
      const append = run(verb("-A", ip, owner))
      if (!append.ok) throw new Error(`iptables -A: ${append.stderr}`)
      add.push(check.ms + append.ms)
      const remove = run(verb("-D", ip, owner))
      if (!remove.ok) throw new Error(`iptables -D: ${remove.stderr}`)
      del.push(remove.ms)
    }
    return { add, del }
  }
  const empty = phase()
  const lines = ["*mangle"]
  for (let i = 0; i < count; i++)
    lines.push(
      `-A TRW-REF -s ${ipOf(i)}/32 -m comment --comment ref/fill${i}/eth0 -j MARK --set-xmark ${TENANT_MARK}/0x30`
    )
  lines.push("COMMIT", "")
  const file = join(dir, "ref.rules")
  writeFileSync(file, lines.join("\n"))
  const restore = spawnSync(
    node.prefix[0]!,
    [...node.prefix.slice(1), "iptables-restore", "--noflush", file],
    {
      encoding: "utf8"
    }
  )
  if (restore.status !== 0) throw new Error(`iptables-restore: ${restore.stderr}`)
  const full = phase()
  return { empty, full }
}
