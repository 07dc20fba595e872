/**
 * A whole node and cluster in memory: kernel entries, state records, delegate leases, the cluster's
 * annotations and a fault plan, with helpers to run real CNI calls (env + stdin bytes) through
 * `runCni` against them and to snapshot everything a law compares.
 */
import { type Duration, Effect, Layer, Logger } from "effect"
import { TestClock } from "effect/testing"
import { Committer } from "../../src/domain/datapath/Committer.ts"
import { Netfilter } from "../../src/domain/datapath/Netfilter.ts"
import { NodeLock } from "../../src/domain/datapath/NodeLock.ts"
import * as AnnotationsMemory from "../../src/interpreters/memory/AnnotationsMemory.ts"
import { Cluster } from "../../src/interpreters/memory/AnnotationsMemory.ts"
import * as AttachmentStoreMemory from "../../src/interpreters/memory/AttachmentStoreMemory.ts"
import { Records } from "../../src/interpreters/memory/AttachmentStoreMemory.ts"
import * as DelegateMemory from "../../src/interpreters/memory/DelegateMemory.ts"
import { Leases } from "../../src/interpreters/memory/DelegateMemory.ts"
import { FaultPlan } from "../../src/interpreters/memory/Faults.ts"
import * as NetfilterMemory from "../../src/interpreters/memory/NetfilterMemory.ts"
import { Kernel } from "../../src/interpreters/memory/NetfilterMemory.ts"
import * as NodeLockMemory from "../../src/interpreters/memory/NodeLockMemory.ts"
import { makeCommitter } from "../../src/programs/committer.ts"
import { type CniOutput, type CniServices, runCni } from "../../src/programs/dispatch.ts"

export const silent = () => Logger.layer([])

export interface WorldOptions {
  readonly poolSize?: number
  readonly dualStack?: boolean
  /** How long a call waits for the node lock before giving up with 11 (default 30 s). */
  readonly lockTimeout?: Duration.Input
}

export class World {
  readonly kernel = new Kernel()
  readonly records = new Records()
  readonly leases: Leases
  readonly cluster = new Cluster()
  readonly faults = new FaultPlan()
  /** The node's one lock, shared by every call run in this world (concurrent ones included). */
  readonly lock: NodeLock["Service"]
  readonly netfilter: Netfilter["Service"]
  /** The node's one committer, shared like the agent's by every call run in this world. */
  readonly committer: ReturnType<typeof makeCommitter>
  private built: Layer.Layer<CniServices> | undefined

  constructor(options: WorldOptions = {}) {
    this.leases = new Leases(options.poolSize ?? 16, options.dualStack ?? false)
    this.lock = NodeLockMemory.makeUnsafe(
      options.lockTimeout === undefined ? {} : { timeout: options.lockTimeout }
    )
    this.netfilter = NetfilterMemory.make(this.kernel, this.faults)
    this.committer = makeCommitter(this.netfilter, this.lock)
  }

  layer(): Layer.Layer<CniServices> {
    this.built ??= Layer.mergeAll(
      Layer.succeed(Netfilter, this.netfilter),
      Layer.succeed(Committer, this.committer),
      AttachmentStoreMemory.layer(this.records, this.faults),
      DelegateMemory.layer(this.leases, this.faults),
      AnnotationsMemory.layer(this.cluster, this.faults),
      Layer.succeed(NodeLock, this.lock)
    )
    return this.built
  }

  /** Everything a law compares: entries of both backends, records, leases. */
  snapshot() {
    return {
      entries: this.kernel.snapshot(),
      records: this.records.snapshot(),
      leases: this.leases.snapshot()
    }
  }

  call(
    env: Readonly<Record<string, string | undefined>>,
    conf: unknown
  ): Effect.Effect<CniOutput, never, CniServices> {
    const stdin =
      typeof conf === "string"
        ? new TextEncoder().encode(conf)
        : new TextEncoder().encode(JSON.stringify(conf))
    return runCni(env, stdin, silent)
  }

  run(env: Readonly<Record<string, string | undefined>>, conf: unknown): Promise<CniOutput> {
    return Effect.runPromise(this.call(env, conf).pipe(Effect.provide(this.layer())))
  }

  /**
   * `run` on virtual time: the clock moves only once the call has made no progress for many
   * scheduler turns (every fiber of it waits on the clock), so a deadline (apiTimeout) fires exactly
   * when a read never answers, never because the machine was slow. The memory services only ever
   * wait by yielding (Faults.ts), far fewer turns than the driver gives them.
   */
  runOnVirtualTime(env: Readonly<Record<string, string | undefined>>, conf: unknown): Promise<CniOutput> {
    const call = this.call(env, conf)
    return Effect.runPromise(
      Effect.gen(function* () {
        const fiber = yield* Effect.forkChild(call)
        for (;;) {
          for (let i = 0; i < 200 && fiber.pollUnsafe() === undefined; i++) yield* Effect.yieldNow
          const exit = fiber.pollUnsafe()
          if (exit !== undefined) return yield* exit
          yield* TestClock.adjust("1 second")
        }
      }).pipe(Effect.provide(this.layer()), Effect.provide(TestClock.layer()))
    )
  }
}

export interface PodRef {
  readonly containerId: string
  readonly ifname?: string
  readonly namespace?: string
  readonly name?: string
}

export const cniEnv = (command: string, pod: PodRef): Record<string, string> => ({
  CNI_COMMAND: command,
  CNI_CONTAINERID: pod.containerId,
  CNI_IFNAME: pod.ifname ?? "eth0",
  CNI_NETNS: `/var/run/netns/${pod.containerId}`,
  CNI_PATH: "/opt/cni/bin",
  CNI_ARGS:
    pod.namespace === undefined
      ? "IgnoreUnknown=1"
      : `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name ?? pod.containerId}`
})

/** The original project's conflist entry, as libcni hands it to the first plugin. */
export const originalConf = (overrides: Record<string, unknown> = {}): Record<string, unknown> => ({
  cniVersion: "1.0.0",
  name: "tenant-routing",
  type: "tenant-routing-wrapper",
  kubeconfig: "/etc/kubernetes/kubelet.conf",
  annotationKey: "tenant.routing/fwmark",
  delegate: { type: "ptp", ipam: { type: "host-local", subnet: "10.200.0.0/16" } },
  ...overrides
})

export const parse = (out: CniOutput): unknown =>
  out.stdout === undefined ? undefined : JSON.parse(out.stdout)
