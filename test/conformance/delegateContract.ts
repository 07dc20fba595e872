/**
 * The laws every Delegate interpreter obeys when it runs ptp with host-local IPAM, run against the
 * memory model (src/interpreters/memory/DelegateMemory.ts) and against Debian's real plugins through
 * DelegateExec in throwaway namespaces (test/delegate.contract.test.ts), so the delegate of every
 * property test behaves like the real one.
 *
 * The pool is a /30 (one usable address, .2; .1 is the gateway), so "the lease is released" is
 * observable whatever order host-local hands addresses out in (it goes round-robin from its last
 * reservation, the model takes the lowest free one; that order is not part of the contract). The
 * model ignores `ipam`; its memory layer is given a pool of one address inside the same subnet.
 * Each law uses fresh container ids, and DELs every attachment it touched when it ends, so the live
 * leases directory and pod netns are empty between laws.
 *
 * What the real plugins answered (Debian containernetworking-plugins, versions up to 1.0.0), and the
 * laws pin down:
 * - a repeated ADD for the same container id and ifname fails with 999 ("duplicate allocation is not
 *   allowed"); the first lease stays. host-local does NOT return the existing lease;
 * - a config in a version the plugin does not speak fails with code 1, "incompatible CNI versions";
 * - CHECK wants the lease and a prevResult (999 otherwise).
 * GC is not covered: Debian's ptp/host-local stop at 1.0.0 and answer GC with code 4 ("unknown
 * CNI_COMMAND"); the model's GC is only exercised by the property tests until a 1.1.0 delegate
 * exists to check it against.
 */
import { randomBytes } from "node:crypto"
import { assert, describe, it } from "@effect/vitest"
import { Effect, type Layer } from "effect"
import type { Command } from "../../src/domain/cni/CniEnv.ts"
import { Delegate } from "../../src/domain/cni/Delegate.ts"
import { DelegateError, type DelegateFailed } from "../../src/domain/cni/Errors.ts"

export type DelegateLaw =
  | "version-list"
  | "add-in-subnet"
  | "add-repeated"
  | "del-releases"
  | "del-unknown"
  | "check-after-add"
  | "check-unknown"
  | "version-refused"

export interface DelegateContractOptions {
  /** The plugin binary's name ("ptp"). */
  readonly type: string
  /** CNI_PATH for the calls (ignored by the model). */
  readonly path: () => ReadonlyArray<string>
  /** The pod netns path passed as CNI_NETNS. */
  readonly netns: () => string
  /** The IPv4 subnet the delegate leases from: a /30, so the pool holds one address. */
  readonly subnet: string
  /** The `ipam` block of the config (host-local with that subnet and its dataDir). */
  readonly ipam: () => Readonly<Record<string, unknown>>
}

export const NETWORK = "trw-dlg"

interface CniIp {
  readonly address: string
  readonly gateway?: string
  readonly interface?: number
}
interface CniResultLike {
  readonly cniVersion: string
  readonly interfaces?: ReadonlyArray<{ readonly name: string; readonly sandbox?: string }>
  readonly ips: ReadonlyArray<CniIp>
}

const v4 = (text: string) => text.split(".").reduce((acc, o) => acc * 256 + Number(o), 0)

/** `ip` (no prefix) lies inside `cidr`. */
export const inSubnet = (ip: string, cidr: string) => {
  const [net, bits] = cidr.split("/") as [string, string]
  const size = 2 ** (32 - Number(bits))
  return Math.floor(v4(ip) / size) === Math.floor(v4(net) / size)
}

const addressOf = (ip: CniIp) => ip.address.split("/")[0] as string

type Failure = DelegateError | DelegateFailed

export const delegateContract = (
  name: string,
  makeLayer: () => Layer.Layer<Delegate>,
  opts: DelegateContractOptions
) =>
  describe(`Delegate contract: ${name}`, () => {
    const suite = randomBytes(3).toString("hex")
    let n = 0

    interface Calls {
      /** A fresh container id (unique in this run). */
      readonly container: () => string
      readonly run: (
        command: Command,
        containerId: string,
        ifname: string,
        extra?: Readonly<Record<string, unknown>>
      ) => Effect.Effect<unknown, Failure>
      readonly add: (
        containerId: string,
        ifname: string,
        version?: string
      ) => Effect.Effect<CniResultLike, Failure>
      /** The failure of a call that must fail with a CNI error. */
      readonly refused: (
        command: Command,
        containerId: string,
        ifname: string,
        extra?: Readonly<Record<string, unknown>>
      ) => Effect.Effect<DelegateError, Failure>
    }

    const law = (title: string, id: DelegateLaw, body: (c: Calls) => Effect.Effect<void, Failure>) =>
      // Live: the delegate's deadline runs on the real clock.
      it.live(`${title} [${id}]`, () =>
        Effect.gen(function* () {
          const delegate = yield* Delegate
          const touched = new Map<string, readonly [string, string]>()
          const run: Calls["run"] = (command, containerId, ifname, extra = {}) => {
            if (command !== "VERSION") touched.set(`${containerId}/${ifname}`, [containerId, ifname])
            return delegate.run({
              command,
              type: opts.type,
              conf: { cniVersion: "1.0.0", name: NETWORK, type: opts.type, ipam: opts.ipam(), ...extra },
              containerId,
              netns: opts.netns(),
              ifname,
              args: "",
              path: opts.path(),
              timeoutMs: 20_000
            })
          }
          const calls: Calls = {
            container: () => `trw-${suite}-${id}-${n++}`,
            run,
            add: (containerId, ifname, version = "1.0.0") =>
              run("ADD", containerId, ifname, { cniVersion: version }).pipe(
                Effect.map((out) => out as CniResultLike)
              ),
            refused: (command, containerId, ifname, extra) =>
              run(command, containerId, ifname, extra).pipe(
                Effect.flip,
                Effect.orElseSucceed((out) => assert.fail(`${command} succeeded: ${JSON.stringify(out)}`)),
                Effect.map((e) => {
                  assert.instanceOf(e, DelegateError, `a CNI error, not ${e._tag}: ${e.msg}`)
                  return e as DelegateError
                })
              )
          }
          const cleanup = Effect.suspend(() =>
            Effect.forEach([...touched.values()], ([c, i]) => Effect.ignore(run("DEL", c, i)), {
              discard: true
            })
          )
          yield* body(calls).pipe(Effect.ensuring(cleanup))
          // After cleanup the one address is free again: every law leaves the pool as it found it.
          const probe = calls.container()
          yield* calls.add(probe, "eth0")
          yield* run("DEL", probe, "eth0")
        }).pipe(Effect.provide(makeLayer()))
      )

    law("VERSION lists the versions it speaks, and ADD works in each of them", "version-list", (c) =>
      Effect.gen(function* () {
        const out = (yield* c.run("VERSION", "", "")) as { supportedVersions: ReadonlyArray<string> }
        for (const v of ["0.3.1", "0.4.0", "1.0.0"]) {
          assert.include(out.supportedVersions, v)
          const id = c.container()
          const result = yield* c.add(id, "eth0", v)
          assert.strictEqual(result.cniVersion, v, "the result is in the config's version")
          yield* c.run("DEL", id, "eth0", { cniVersion: v })
        }
        assert.notInclude(out.supportedVersions, "1.1.0")
      })
    )

    law(
      "ADD returns a result whose IPs are in the configured subnet, on an interface in the netns",
      "add-in-subnet",
      (c) =>
        Effect.gen(function* () {
          const result = yield* c.add(c.container(), "eth0")
          assert.strictEqual(result.ips.length, 1)
          for (const ip of result.ips) {
            assert.isTrue(inSubnet(addressOf(ip), opts.subnet), `${ip.address} in ${opts.subnet}`)
            if (ip.gateway !== undefined) assert.isTrue(inSubnet(ip.gateway, opts.subnet))
            const itf = result.interfaces?.[ip.interface ?? -1]
            assert.strictEqual(itf?.sandbox, opts.netns(), "the address is on the pod's interface")
            assert.strictEqual(itf?.name, "eth0")
          }
        })
    )

    law(
      "a repeated ADD for the same attachment is refused (999) and keeps the first lease",
      "add-repeated",
      (c) =>
        Effect.gen(function* () {
          const id = c.container()
          const first = yield* c.add(id, "eth0")
          const again = yield* c.refused("ADD", id, "eth0")
          assert.strictEqual(again.code, 999)
          assert.include(again.msg, "duplicate allocation is not allowed")
          // The lease is still held: CHECK passes, and the one-address pool stays exhausted.
          yield* c.run("CHECK", id, "eth0", { prevResult: first })
          const other = yield* c.refused("ADD", c.container(), "eth1")
          assert.include(other.msg, "no IP addresses available")
        })
    )

    law("ADD then DEL releases the lease: another container gets the address back", "del-releases", (c) =>
      Effect.gen(function* () {
        const a = c.container()
        const b = c.container()
        const first = yield* c.add(a, "eth0")
        const full = yield* c.refused("ADD", b, "eth1")
        assert.strictEqual(full.code, 999)
        assert.include(full.msg, "no IP addresses available")
        yield* c.run("DEL", a, "eth0")
        const second = yield* c.add(b, "eth1")
        assert.deepStrictEqual(second.ips.map(addressOf), first.ips.map(addressOf))
      })
    )

    law("DEL of an unknown attachment succeeds, twice", "del-unknown", (c) =>
      Effect.gen(function* () {
        const id = c.container()
        assert.isUndefined(yield* c.run("DEL", id, "eth0"))
        assert.isUndefined(yield* c.run("DEL", id, "eth0"))
      })
    )

    law("CHECK after ADD, given the ADD's result as prevResult, succeeds", "check-after-add", (c) =>
      Effect.gen(function* () {
        const id = c.container()
        const result = yield* c.add(id, "eth0")
        assert.isUndefined(yield* c.run("CHECK", id, "eth0", { prevResult: result }))
        const noPrev = yield* c.refused("CHECK", id, "eth0")
        assert.strictEqual(noPrev.code, 999)
        assert.include(noPrev.msg, "prevResult")
      })
    )

    law("CHECK of an attachment without a lease fails (999)", "check-unknown", (c) =>
      Effect.gen(function* () {
        const e = yield* c.refused("CHECK", c.container(), "eth0")
        assert.strictEqual(e.code, 999)
      })
    )

    law("a config in a version it does not speak fails with code 1, on ADD and DEL", "version-refused", (c) =>
      Effect.gen(function* () {
        for (const command of ["ADD", "DEL"] as const) {
          const e = yield* c.refused(command, c.container(), "eth0", { cniVersion: "1.1.0" })
          assert.strictEqual(e.code, 1)
          assert.strictEqual(e.msg, "incompatible CNI versions")
          assert.include(e.details ?? "", 'config is "1.1.0"')
        }
      })
    )
  })
