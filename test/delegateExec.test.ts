/**
 * DelegateExec against real processes: small shell-script plugins written to a temporary directory
 * for every outcome the interpreter must tell apart, and Debian's real `host-local` IPAM plugin
 * (VERSION, ADD, DEL) to show the protocol is the one real plugins speak. `it.live`: the deadline
 * must run on the real clock.
 */

import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import type { Command } from "../src/domain/cni/CniEnv.ts"
import { Delegate, type DelegateCall } from "../src/domain/cni/Delegate.ts"
import { DelegateError, DelegateFailed } from "../src/domain/cni/Errors.ts"
import * as DelegateExec from "../src/interpreters/live/DelegateExec.ts"
import * as AnnotationsMemory from "../src/interpreters/memory/AnnotationsMemory.ts"
import { Cluster } from "../src/interpreters/memory/AnnotationsMemory.ts"
import * as AttachmentStoreMemory from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { Records } from "../src/interpreters/memory/AttachmentStoreMemory.ts"
import { FaultPlan } from "../src/interpreters/memory/Faults.ts"
import * as NetfilterMemory from "../src/interpreters/memory/NetfilterMemory.ts"
import { Kernel } from "../src/interpreters/memory/NetfilterMemory.ts"
import * as NodeLockMemory from "../src/interpreters/memory/NodeLockMemory.ts"
import { runCni } from "../src/programs/dispatch.ts"
import { missingOf, skipLive } from "./support/liveGate.ts"

const dir = mkdtempSync(join(tmpdir(), "trw-delegate-"))
const bin = join(dir, "bin")
const other = join(dir, "other")
mkdirSync(bin)
mkdirSync(other)

const plugin = (name: string, body: string, mode = 0o755, where = bin) => {
  writeFileSync(join(where, name), `#!/bin/sh\n${body}\n`)
  chmodSync(join(where, name), mode)
}

// Echoes what a plugin sees: the CNI variables, one inherited variable, and the stdin document.
plugin(
  "echo-env",
  `in=$(cat)
printf '{"command":"%s","containerId":"%s","netns":"%s","ifname":"%s","args":"%s","path":"%s","marker":"%s","stdin":%s}' \
  "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" "$TRW_TEST_MARKER" "$in"`
)
plugin("silent", "cat >/dev/null")
plugin(
  "cni-error",
  `cat >/dev/null; echo 'some noise' >&2
echo '{"cniVersion":"1.0.0","code":11,"msg":"no address left","details":"range 10.0.0.0/30 is full"}'; exit 1`
)
plugin("cni-error-object-details", `cat >/dev/null; echo '{"code":120,"msg":"x","details":{"a":1}}'; exit 1`)
plugin("garbage", "cat >/dev/null; echo 'this is not json'")
plugin("garbage-exit", "cat >/dev/null; echo 'not json either'; echo 'plugin exploded' >&2; exit 3")
plugin("exit-json-no-code", `cat >/dev/null; echo '{"cniVersion":"1.0.0"}'; exit 2`)
plugin("crash", "cat >/dev/null; echo 'about to crash' >&2; kill -SEGV $$")
plugin("no-read", `echo '{"cniVersion":"1.0.0","ok":true}'`)
plugin("second-dir", `cat >/dev/null; echo '{"where":"other"}'`, 0o755, other)
plugin("not-executable", "echo '{}'", 0o644)
plugin("huge-stdout", "cat >/dev/null; head -c 5000000 /dev/zero | tr '\\0' a")
plugin(
  "huge-stderr",
  `cat >/dev/null; head -c 300000 /dev/zero | tr '\\0' e >&2; echo >&2; echo 'the real reason' >&2; exit 1`
)
// Succeeds but leaves a background process behind (its output detached, so stdout closes).
plugin(
  "leaves-child",
  `cat >/dev/null; sleep 1000 >/dev/null 2>&1 & echo $! > "${dir}/leftover.pid"; echo '{"cniVersion":"1.0.0"}'`
)
// Starts a grandchild that would outlive a plugin killed alone, records its pid, then hangs.
plugin("sleeper", `cat >/dev/null; sleep 1000 & echo $! > "${dir}/grandchild.pid"; sleep 1000`)

const call = (type: string, overrides: Partial<DelegateCall> = {}): DelegateCall => ({
  command: "ADD",
  type,
  conf: { cniVersion: "1.0.0", name: "t", type },
  containerId: "c1",
  netns: "/var/run/netns/x",
  ifname: "eth0",
  args: "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1",
  path: [bin],
  timeoutMs: 10_000,
  ...overrides
})

const run = (c: DelegateCall) => Delegate.use((d) => d.run(c)).pipe(Effect.provide(DelegateExec.layer))

const failure = (c: DelegateCall) => Effect.flip(run(c))

const failedWith = (e: DelegateFailed | DelegateError, pattern: RegExp) => {
  assert.instanceOf(e, DelegateFailed)
  assert.strictEqual(e.code, 102)
  assert.match(e.msg, pattern)
}

/** Gone, or a zombie waiting for a reaper: either way it no longer runs. */
const isRunning = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    return !/^\d+ \(.*\) Z /.test(stat)
  } catch {
    return false
  }
}

describe("DelegateExec", () => {
  it.live("success: passes the CNI environment over the parent's, the config on stdin, parses stdout", () =>
    Effect.gen(function* () {
      process.env.TRW_TEST_MARKER = "inherited"
      process.env.CNI_IFNAME = "parent-value-must-not-leak"
      const conf = { cniVersion: "1.0.0", name: "t", type: "echo-env", nested: { a: [1, 2] } }
      const out = yield* run(call("echo-env", { command: "DEL", conf, path: [other, bin] }))
      assert.deepStrictEqual(out, {
        command: "DEL",
        containerId: "c1",
        netns: "/var/run/netns/x",
        ifname: "eth0",
        args: "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1",
        path: `${other}:${bin}`,
        marker: "inherited",
        stdin: conf
      })
      delete process.env.CNI_IFNAME
    })
  )

  it.live("success with empty stdout is undefined", () =>
    Effect.gen(function* () {
      assert.strictEqual(yield* run(call("silent", { command: "DEL" })), undefined)
    })
  )

  it.live("searches every CNI_PATH directory in order", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* run(call("second-dir", { path: ["/nonexistent", bin, other] })), {
        where: "other"
      })
    })
  )

  it.live("a plugin that exits without reading a large stdin still succeeds (no EPIPE failure)", () =>
    Effect.gen(function* () {
      const conf = { cniVersion: "1.0.0", name: "t", type: "no-read", padding: "x".repeat(1_000_000) }
      assert.deepStrictEqual(yield* run(call("no-read", { conf })), { cniVersion: "1.0.0", ok: true })
    })
  )

  it.live("non-zero exit with a CNI error: DelegateError keeps code, msg and details", () =>
    Effect.gen(function* () {
      const e = yield* failure(call("cni-error"))
      assert.instanceOf(e, DelegateError)
      assert.deepStrictEqual(
        { plugin: e.plugin, code: e.code, msg: e.msg, details: e.details },
        { plugin: "cni-error", code: 11, msg: "no address left", details: "range 10.0.0.0/30 is full" }
      )
    })
  )

  it.live("a CNI error whose details are not a string keeps them as JSON text", () =>
    Effect.gen(function* () {
      const e = yield* failure(call("cni-error-object-details"))
      assert.instanceOf(e, DelegateError)
      assert.strictEqual(e.details, '{"a":1}')
    })
  )

  it.live("exit 0 with garbage on stdout is DelegateFailed", () =>
    Effect.gen(function* () {
      failedWith(yield* failure(call("garbage")), /delegate garbage ADD succeeded but printed invalid JSON/)
    })
  )

  it.live("non-zero exit without a CNI error is DelegateFailed with stderr", () =>
    Effect.gen(function* () {
      failedWith(
        yield* failure(call("garbage-exit")),
        /exited 3 without a CNI error.*stderr: plugin exploded/
      )
      failedWith(yield* failure(call("exit-json-no-code")), /exited 2 without a CNI error/)
    })
  )

  it.live("crash by a signal is DelegateFailed", () =>
    Effect.gen(function* () {
      failedWith(yield* failure(call("crash")), /crashed.*SIGSEGV.*stderr: about to crash/)
    })
  )

  it.live("not found, not executable, and a path as type are DelegateFailed", () =>
    Effect.gen(function* () {
      failedWith(yield* failure(call("nope")), /delegate nope ADD: not found in CNI_PATH/)
      failedWith(yield* failure(call("not-executable")), /not-executable is not executable/)
      failedWith(yield* failure(call("../bin/echo-env")), /must be a plugin name, not a path/)
      failedWith(yield* failure(call("..")), /must be a plugin name/)
    })
  )

  it.live("stdout beyond 4 MiB is refused; stderr is bounded to its tail", () =>
    Effect.gen(function* () {
      failedWith(yield* failure(call("huge-stdout")), /after printing more than 4194304 bytes/)
      const e = yield* failure(call("huge-stderr"))
      failedWith(e, /stderr: \.\.\.e+ \| the real reason$/)
      assert.isBelow(e.msg.length, 1000)
    })
  )

  it.live("timeout kills the whole process group, grandchild included", () =>
    Effect.gen(function* () {
      failedWith(
        yield* failure(call("sleeper", { timeoutMs: 700 })),
        /delegate sleeper ADD timed out after 700ms/
      )
      const grandchild = Number(readFileSync(join(dir, "grandchild.pid"), "utf8").trim())
      assert.isAbove(grandchild, 1)
      assert.isFalse(isRunning(grandchild), `grandchild ${grandchild} still runs`)
    })
  )
})

describe("DelegateExec cleanup", () => {
  it.live("a successful plugin's leftover background process is killed with its group", () =>
    Effect.gen(function* () {
      assert.deepStrictEqual(yield* run(call("leaves-child")), { cniVersion: "1.0.0" })
      const leftover = Number(readFileSync(join(dir, "leftover.pid"), "utf8").trim())
      assert.isFalse(isRunning(leftover), `leftover ${leftover} still runs`)
    })
  )
})

describe("DelegateExec with the real host-local plugin", () => {
  const cniBin = "/usr/lib/cni"
  const available = !skipLive(
    "DelegateExec with the real host-local plugin",
    missingOf({ files: [join(cniBin, "host-local")] })
  )
  const dataDir = join(dir, "ipam")
  const conf = {
    cniVersion: "1.0.0",
    name: "t",
    ipam: { type: "host-local", subnet: "10.250.0.0/24", dataDir }
  }
  const hostLocal = (command: Command) =>
    run(
      call("host-local", {
        command,
        conf,
        containerId: "ctr-host-local",
        // Real plugins refuse unknown CNI_ARGS keys unless told otherwise; the runtimes always add this.
        args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=p1",
        // host-local is IPAM only and never enters the netns: any string will do.
        netns: "/not/a/real/netns",
        path: [cniBin]
      })
    )

  it.live.skipIf(!available)("VERSION lists 1.0.0", () =>
    Effect.gen(function* () {
      const out = (yield* hostLocal("VERSION")) as { supportedVersions: Array<string> }
      assert.include(out.supportedVersions, "1.0.0")
    })
  )

  it.live.skipIf(!available)("ADD leases an address (file appears), DEL releases it (file goes)", () =>
    Effect.gen(function* () {
      const added = (yield* hostLocal("ADD")) as { ips: Array<{ address: string }> }
      assert.strictEqual(added.ips.length, 1)
      const ip = added.ips[0]!.address.split("/")[0]!
      assert.match(ip, /^10\.250\.0\.\d+$/)
      const lease = join(dataDir, "t", ip)
      assert.isTrue(existsSync(lease), `${lease} after ADD`)
      assert.strictEqual(readFileSync(lease, "utf8").split(/\r?\n/)[0], "ctr-host-local")

      assert.strictEqual(yield* hostLocal("DEL"), undefined)
      assert.isFalse(existsSync(lease), `${lease} after DEL`)
      // DEL is idempotent (CNI spec): a second one succeeds too.
      assert.strictEqual(yield* hostLocal("DEL"), undefined)
    })
  )

  it.live.skipIf(!available)("a host-local error keeps its own code", () =>
    Effect.gen(function* () {
      const e = yield* Effect.flip(
        run(
          call("host-local", {
            conf: {
              cniVersion: "1.0.0",
              name: "t",
              ipam: { type: "host-local", subnet: "not-a-subnet", dataDir }
            },
            path: [cniBin]
          })
        )
      )
      assert.instanceOf(e, DelegateError)
      assert.strictEqual(e.plugin, "host-local")
      assert.isAbove(e.code, 0)
    })
  )
})

afterAll(() => rmSync(dir, { recursive: true, force: true }))

// A delegate that leases (leaves a file per attachment), answers ADD with `$TRW_ADD_OUTPUT` (garbage
// or too much of it) while exiting 0, and releases on DEL: what a broken ptp + host-local would do.
plugin(
  "garbage-add",
  `cat >/dev/null
lease="${dir}/lease-$CNI_CONTAINERID"
case "$CNI_COMMAND" in
  VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"]}' ;;
  ADD) echo leased > "$lease"
       if [ "$TRW_ADD_OUTPUT" = huge ]; then head -c 5000000 /dev/zero | tr '\\0' a; else echo 'this is not json'; fi ;;
  DEL) rm -f "$lease"; echo del >> "${dir}/del-calls-$CNI_CONTAINERID" ;;
esac`
)

describe("ADD through a delegate that exits 0 with unparsable output", () => {
  const services = () =>
    Layer.mergeAll(
      DelegateExec.layer,
      NetfilterMemory.layer(new Kernel(), new FaultPlan()),
      AttachmentStoreMemory.layer(new Records(), new FaultPlan()),
      AnnotationsMemory.layer(new Cluster(), new FaultPlan()),
      NodeLockMemory.layer
    )
  for (const output of ["not-json", "huge"] as const) {
    it.live(`fails with 102 and runs the delegate's DEL, releasing its lease (${output} stdout)`, () =>
      Effect.gen(function* () {
        const containerId = `garbage-${output}`
        const env = {
          CNI_COMMAND: "ADD",
          CNI_CONTAINERID: containerId,
          CNI_IFNAME: "eth0",
          CNI_NETNS: "/var/run/netns/x",
          CNI_PATH: bin,
          CNI_ARGS: "IgnoreUnknown=1"
        }
        const conf = {
          cniVersion: "1.0.0",
          name: "net-a",
          type: "tenant-routing-wrapper",
          delegate: { type: "garbage-add" }
        }
        process.env.TRW_ADD_OUTPUT = output
        const out = yield* runCni(env, new TextEncoder().encode(JSON.stringify(conf)), () =>
          Logger.layer([])
        ).pipe(
          Effect.provide(services()),
          Effect.ensuring(Effect.sync(() => delete process.env.TRW_ADD_OUTPUT))
        )
        assert.strictEqual(out.exitCode, 1)
        assert.strictEqual((JSON.parse(out.stdout ?? "{}") as { code: number }).code, 102)
        assert.isTrue(existsSync(join(dir, `del-calls-${containerId}`)), "the delegate's DEL ran")
        assert.strictEqual(readFileSync(join(dir, `del-calls-${containerId}`), "utf8"), "del\n", "once")
        assert.isFalse(existsSync(join(dir, `lease-${containerId}`)), "the lease was released")
      })
    )
  }
})
