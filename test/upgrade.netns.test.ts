/**
 * A rolling update of the DaemonSet, at the moments that could break a pod start (docs/DESIGN.md
 * §7, §8): both executables installed by `install` into a temporary CNI bin dir, the real Go shim.
 *
 * - "Between pods": the old pod is gone and the new agent is not serving, so no socket answers. ADD
 *   and DEL through the shim still succeed: it execs `tenant-routing` (standalone), which marks and
 *   unmarks the pod in a network namespace this test created (the program runs from source here,
 *   through a two-line script; the SEA executable behaves the same and is tested elsewhere).
 * - "Install while calls run": `install` replaces `tenant-routing` with another version again and
 *   again while calls run through the shim; every call runs one whole version, never half a file
 *   (the version's output is at the end of an 8 MB script, after the padding, so a torn copy prints
 *   nothing or the wrong thing).
 */
import { execFile, execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { runCli } from "../bin/cli.ts"
import { buildShim } from "../shim/build.ts"
import { NodeSource } from "../src/domain/install/NodeSource.ts"
import { missingOf, skipLive } from "./support/liveGate.ts"

const canRun = !skipLive(
  "upgrade window: shim and install in a throwaway network namespace",
  missingOf({ root: true, commands: ["ip", "nft", "go"] })
)
const root = join(import.meta.dirname, "..")
const ns = `trw-upg-${randomBytes(4).toString("hex")}`
const dir = mkdtempSync(join(tmpdir(), "trw-upgrade-"))
const host = join(dir, "host")
const bin = join(host, "opt/cni/bin")
const shim = join(bin, "tenant-routing-wrapper")
const stateDir = join(dir, "state")

const nodeSource = Layer.succeed(
  NodeSource,
  NodeSource.of({ podCidrs: () => Effect.succeed(["10.99.0.0/24"]) })
)

/** Runs `install` into `host` with `program` as tenant-routing. */
const install = async (program: string) => {
  const err: Array<string> = []
  const code = await runCli(
    [
      "install",
      "--node=n1",
      `--template=${join(dir, "template.json")}`,
      `--host-root=${host}`,
      `--sa-dir=${join(dir, "sa")}`,
      "--server=https://127.0.0.1:6443",
      `--binary=${program}`,
      `--shim=${join(dir, "shim")}`
    ],
    { nodeSource, stdout: () => {}, stderr: (t) => void err.push(t) }
  )
  assert.strictEqual(code, 0, err.join(""))
}

/** One CNI call through the installed shim, in the test's namespace; never rejects. */
const call = (command: string, stdin: string, containerId = "c0ffee") =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    const child = execFile(
      "ip",
      ["netns", "exec", ns, shim],
      {
        encoding: "utf8",
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          CNI_COMMAND: command,
          CNI_CONTAINERID: containerId,
          CNI_NETNS: "/var/run/netns/none",
          CNI_IFNAME: "eth0",
          CNI_PATH: bin,
          CNI_ARGS: "K8S_POD_NAMESPACE=team;K8S_POD_NAME=web-0"
        }
      },
      (error, stdout, stderr) =>
        resolve({ code: error === null ? 0 : Number(error.code ?? 1), stdout, stderr })
    )
    child.stdin?.end(stdin)
  })

/** The network config the runtime would hand the plugin: no agent socket exists at `agentSocket`. */
const netconf = JSON.stringify({
  cniVersion: "1.0.0",
  name: "upg",
  type: "tenant-routing-wrapper",
  stateDir,
  agentSocket: join(dir, "agent.sock"),
  backend: "nftables",
  capabilities: { "io.kubernetes.cri.pod-annotations": true },
  runtimeConfig: { "io.kubernetes.cri.pod-annotations": { "tenant.routing/fwmark": "tenant-a" } },
  tenants: { "tenant-a": { mark: "0x10" } },
  delegate: { type: "fake-delegate" }
})

const nftRuleset = () =>
  execFileSync("ip", ["netns", "exec", ns, "nft", "list", "ruleset"], { encoding: "utf8" })

describe.skipIf(!canRun)("upgrade window", () => {
  beforeAll(async () => {
    execFileSync("ip", ["netns", "add", ns])
    await buildShim({ arch: "amd64", out: join(dir, "shim") })
    mkdirSync(join(dir, "sa"))
    writeFileSync(join(dir, "sa/token"), "token")
    writeFileSync(join(dir, "sa/ca.crt"), "ca")
    writeFileSync(
      join(dir, "template.json"),
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "upg",
        plugins: [{ type: "tenant-routing-wrapper", delegate: { type: "fake-delegate" } }]
      })
    )
    // The standalone program, from source.
    writeFileSync(
      join(dir, "program"),
      `#!/bin/sh\nexec ${process.execPath} ${join(root, "bin/tenant-routing.ts")} "$@"\n`
    )
    chmodSync(join(dir, "program"), 0o755)
    await install(join(dir, "program"))
    // A delegate that only reports an address: the pod side is not what this test is about.
    writeFileSync(
      join(bin, "fake-delegate"),
      `#!/bin/sh\ncat >/dev/null\n[ "$CNI_COMMAND" = ADD ] && printf '%s'\nexit 0\n`.replace(
        "%s",
        JSON.stringify({
          cniVersion: "1.0.0",
          interfaces: [{ name: "eth0", sandbox: "/var/run/netns/none" }],
          ips: [{ address: "10.99.0.5/24", interface: 0 }]
        })
      )
    )
    chmodSync(join(bin, "fake-delegate"), 0o755)
  }, 240_000)

  afterAll(() => {
    try {
      execFileSync("ip", ["netns", "del", ns])
    } catch {
      // never created
    }
    rmSync(dir, { recursive: true, force: true })
  })

  it("between pods (no agent serving): ADD and DEL through the shim succeed standalone", async () => {
    assert.isFalse(existsSync(join(dir, "agent.sock")))
    const add = await call("ADD", netconf)
    assert.strictEqual(add.code, 0, add.stderr + add.stdout)
    assert.deepStrictEqual(
      (JSON.parse(add.stdout) as { ips: Array<{ address: string }> }).ips.map((i) => i.address),
      ["10.99.0.5/24"]
    )
    assert.include(nftRuleset(), "10.99.0.5")
    assert.isTrue(existsSync(join(stateDir, "upg/c0ffee/eth0.json")))
    const del = await call("DEL", netconf)
    assert.strictEqual(del.code, 0, del.stderr + del.stdout)
    assert.notInclude(nftRuleset(), "10.99.0.5")
    assert.isFalse(existsSync(join(stateDir, "upg/c0ffee/eth0.json")))
  }, 120_000)

  it("install replacing tenant-routing while calls run: every call runs one whole version", async () => {
    // Two versions of 8 MB each; the answer comes after the padding.
    const padding = `${"# padding padding padding padding padding padding padding padding padding\n".repeat(110_000)}`
    const version = (v: string) => {
      const file = join(dir, `program-${v}`)
      writeFileSync(
        file,
        `#!/bin/sh\n${padding}cat >/dev/null\nprintf '{"cniVersion":"1.0.0","supportedVersions":["1.0.0"],"v":"${v}"}'\n`
      )
      chmodSync(file, 0o755)
      return file
    }
    const [v1, v2] = [version("v1"), version("v2")]
    await install(v1)
    const outputs = new Map<string, number>()
    let installing = true
    const calls = (async () => {
      const results: Array<{ code: number; stdout: string; stderr: string }> = []
      while (installing) results.push(...(await Promise.all([0, 1, 2].map(() => call("VERSION", "{}")))))
      return results
    })()
    for (let i = 0; i < 12; i++) await install(i % 2 === 0 ? v2 : v1)
    installing = false
    const results = await calls
    for (const r of results) {
      assert.strictEqual(r.code, 0, `a call failed while install replaced the executable: ${r.stderr}`)
      outputs.set(r.stdout, (outputs.get(r.stdout) ?? 0) + 1)
    }
    console.log(`${results.length} calls during 12 installs: ${JSON.stringify(Object.fromEntries(outputs))}`)
    assert.isAbove(results.length, 0)
    for (const out of outputs.keys())
      assert.match(out, /^\{"cniVersion":"1\.0\.0","supportedVersions":\["1\.0\.0"\],"v":"v[12]"\}$/)
    assert.strictEqual(
      readFileSync(join(bin, "tenant-routing"), "utf8").slice(-60).includes('"v":"v1"'),
      true
    )
  }, 240_000)
})
