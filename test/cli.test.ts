/**
 * The operator's command line as an operator meets it: the real entry point run with Node (it runs
 * .ts directly), no CNI_COMMAND. Every subcommand answers --help on stdout with exit 0 and a
 * description for each of its flags; usage errors exit 2 in the one error style on stderr; `version`
 * names the version and commit. And the CNI path never loads the CLI: a resolve hook records every
 * module a CNI call imports.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, assert, describe, it } from "@effect/vitest"

const ENTRY = "bin/tenant-routing.ts"
const dir = mkdtempSync(join(tmpdir(), "trw-cli-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const run = (args: ReadonlyArray<string>, env: Record<string, string> = {}, input = "") => {
  const { CNI_COMMAND: _, ...parent } = process.env
  const r = spawnSync(process.execPath, [ENTRY, ...args], {
    env: { ...parent, ...env },
    input,
    encoding: "utf8"
  })
  return { code: r.status, out: r.stdout, err: r.stderr }
}

const FLAGS: Readonly<Record<string, ReadonlyArray<string>>> = {
  "node-setup": ["--config", "--dry-run", "--remove", "--write-rt-tables", "--json"],
  install: [
    "--node",
    "--template",
    "--host-root",
    "--cni-bin-dir",
    "--cni-conf-dir",
    "--conflist-name",
    "--credentials-dir",
    "--kubeconfig",
    "--sa-dir",
    "--server",
    "--binary",
    "--json"
  ],
  inspect: ["--backend", "--state-dir", "--json"],
  doctor: ["--config", "--json"],
  uninstall: [
    "--host-root",
    "--cni-bin-dir",
    "--cni-conf-dir",
    "--conflist-name",
    "--credentials-dir",
    "--state-dir",
    "--cni-cache-dir",
    "--tenants",
    "--force",
    "--json"
  ],
  agent: ["--socket", "--kubeconfig", "--node-name", "--tenants", "--metrics-address"],
  version: ["--json"]
}

describe("--help", () => {
  it("the program lists every subcommand, exit 0", () => {
    const r = run(["--help"])
    assert.strictEqual(r.code, 0, r.err)
    for (const sub of Object.keys(FLAGS)) assert.match(r.out, new RegExp(`^  ${sub}\\s{2,}\\S`, "m"), sub)
  })

  it.each(Object.entries(FLAGS))("%s --help exits 0 and describes each of its flags", (sub, flags) => {
    const r = run([sub, "--help"])
    assert.strictEqual(r.code, 0, r.err)
    assert.strictEqual(r.err, "")
    for (const flag of flags) {
      // The flag, maybe its value's name, then at least two spaces and a description.
      assert.match(r.out, new RegExp(`^  ${flag}( \\S+)?\\s{2,}\\S`, "m"), `${sub} ${flag}`)
    }
  })
})

describe("usage errors: exit 2, one style", () => {
  const cases: ReadonlyArray<readonly [string, ReadonlyArray<string>, string]> = [
    ["an unknown flag", ["node-setup", "--bogus"], "tenant-routing node-setup: "],
    ["a flag without its value", ["doctor", "--config"], "tenant-routing doctor: "],
    ["a bad choice", ["inspect", "--backend", "pf"], "tenant-routing inspect: "],
    ["a missing required flag", ["install", "--node", "n1"], "tenant-routing install: "],
    ["an unknown subcommand", ["frobnicate"], "tenant-routing: "]
  ]
  it.each(cases)("%s", (_name, args, prefix) => {
    const r = run(args)
    assert.strictEqual(r.code, 2)
    assert.strictEqual(r.out, "", "help is not dumped on a usage error")
    const [first, hint] = r.err.split("\n")
    assert.isTrue(first?.startsWith(prefix), r.err)
    assert.match(hint ?? "", /^run 'tenant-routing( \S+)? --help' for usage$/)
  })

  it("no subcommand and no CNI_COMMAND: exit 2, says why", () => {
    const r = run([])
    assert.strictEqual(r.code, 2)
    assert.strictEqual(
      r.err,
      "tenant-routing: CNI_COMMAND is not set, so this is not a CNI call; give a subcommand (tenant-routing --help lists them)\n"
    )
  })

  it("an invalid tenants file is exit 2 in the same style, naming the field", () => {
    const file = join(dir, "bad.json")
    writeFileSync(
      file,
      JSON.stringify({ tenants: { a: { mark: "0x10", table: 100, gateways: [], priority: 1 } } })
    )
    const r = run(["node-setup", "--dry-run", "--config", file])
    assert.strictEqual(r.code, 2)
    assert.match(
      r.err,
      new RegExp(`^tenant-routing node-setup: invalid tenants file ${file}:\\n  tenants\\.a\\.priority: `)
    )
  })
})

describe("version", () => {
  const commit = (() => {
    try {
      return execFileSync("git", ["rev-parse", "HEAD"], { encoding: "utf8" }).trim()
    } catch {
      return "unknown"
    }
  })()
  const version = (JSON.parse(readFileSync("package.json", "utf8")) as { version: string }).version

  it("prints the version and the commit; --version says the same", () => {
    const r = run(["version"])
    assert.strictEqual(r.code, 0, r.err)
    assert.strictEqual(r.out, `tenant-routing ${version} (commit ${commit})\n`)
    assert.strictEqual(run(["--version"]).out, r.out)
  })

  it("--json gives both as fields", () => {
    const r = run(["version", "--json"])
    assert.deepStrictEqual(JSON.parse(r.out), { version, commit })
  })
})

describe("start-up cost", () => {
  it("a CNI call never loads the CLI or Effect's CLI module", () => {
    const log = join(dir, "loaded.txt")
    const hook = join(dir, "hook.mjs")
    writeFileSync(
      hook,
      `import { registerHooks } from "node:module"
import { appendFileSync } from "node:fs"
registerHooks({ resolve(specifier, context, next) {
  const r = next(specifier, context)
  appendFileSync(${JSON.stringify(log)}, r.url + "\\n")
  return r
} })
`
    )
    const r = run(
      [],
      {
        CNI_COMMAND: "VERSION",
        NODE_OPTIONS: `--import ${hook}`
      },
      JSON.stringify({ cniVersion: "1.0.0" })
    )
    assert.strictEqual(r.code, 0, r.err)
    assert.include(r.out, '"supportedVersions"')
    const loaded = readFileSync(log, "utf8")
    assert.include(loaded, "/src/programs/dispatch.ts", "the hook saw the CNI modules")
    assert.notInclude(loaded, "/bin/cli.ts")
    assert.notInclude(loaded, "/effect/dist/cli/")
    // And the same hook does see them when a subcommand runs.
    rmSync(log)
    run(["version"], { NODE_OPTIONS: `--import ${hook}` })
    assert.include(readFileSync(log, "utf8"), "/bin/cli.ts")
  })
})
