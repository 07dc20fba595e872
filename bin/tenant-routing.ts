/**
 * The single entry point of the `tenant-routing` executable (the shim, `tenant-routing-wrapper`, execs it).
 *
 * With `CNI_COMMAND` set it is a CNI plugin (docs/DESIGN.md §1): it reads stdin as bytes, runs `runCni`
 * with the live interpreters, writes the one JSON document `runCni` returns with a single
 * `process.stdout.write`, and exits with its status. Nothing else may reach stdout: first thing at run
 * time `console.log`/`info`/`debug`/`dir`/`table` are pointed at stderr (Effect's default logger and
 * any stray library print use them), every log line goes through `loggingFor` or, outside a call's
 * settings, `stderrLogging`, and a last-resort handler turns anything unexpected (an escaped defect,
 * an uncaught exception) into a code-999 CNI error instead of a stack trace.
 *
 * Without `CNI_COMMAND` it is the operator's tool (bin/cli.ts): `node-setup`, `install`, `inspect`,
 * `doctor`, `version`, `--help`; their stdout is free. The CNI path never loads bin/cli.ts, Effect's
 * CLI module or anything only a subcommand needs.
 *
 * Start-up cost, paid by every pod start: each mode loads its modules with `await import()` only when
 * chosen (esbuild keeps them as lazily initialised closures in the bundle), and the Kubernetes client
 * is loaded by AnnotationsKubernetes only in calls that have a kubeconfig. The shipped executable goes
 * further: it is built from a V8 start-up snapshot (scripts/build.ts), taken while this file runs
 * under `v8.startupSnapshot.isBuildingSnapshot()`, which loads the CNI modules and registers `start`
 * as the main function; a call then begins with those modules already evaluated. Builtins are imported
 * statically: the executable's main script has no dynamic-import callback for them.
 */
import { format } from "node:util"
import { startupSnapshot } from "node:v8"

type InvocationModule = typeof import("../src/domain/cni/Invocation.ts")

// ---------------------------------------------------------------------------------------------
// CNI plugin mode

/** stdin as bytes, reading at most one byte past the limit: enough for the decoder to refuse it. */
const readStdin = async (MAX_STDIN_BYTES: number): Promise<Uint8Array> => {
  const chunks: Array<Buffer> = []
  let size = 0
  for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
    chunks.push(chunk)
    size += chunk.length
    if (size > MAX_STDIN_BYTES) break // leaving the loop destroys the stream: no more is read
  }
  const all = Buffer.concat(chunks)
  return all.length > MAX_STDIN_BYTES + 1 ? all.subarray(0, MAX_STDIN_BYTES + 1) : all
}

/** The exit status of the answer once one is given; later failures must not contradict it. */
let answered: number | undefined

/** The only writer of stdout in CNI mode; exits once the bytes are handed to the kernel. */
const finish = (stdout: string | undefined, exitCode: number): void => {
  if (answered !== undefined) process.exit(answered)
  answered = exitCode
  process.exitCode = exitCode
  // Exit explicitly rather than waiting for the event loop to drain: a library's keep-alive socket
  // or timer must not hold the container runtime's call open after the answer is out.
  if (stdout === undefined) process.exit(exitCode)
  process.stdout.write(stdout, () => process.exit(exitCode))
}

/** Loaded first in CNI mode: the stdin limit and the version to answer in come from it. */
let invocation: InvocationModule | undefined

/** A bug escaped every handler: still answer in CNI JSON (code 999), never with a stack on stdout. */
const lastResort = (stdin: Uint8Array | undefined, what: unknown): void => {
  process.stderr.write(
    `tenant-routing: internal error: ${what instanceof Error ? (what.stack ?? what.message) : String(what)}\n`
  )
  if (answered !== undefined) process.exit(answered)
  // Without the decoder module (it failed to load) there is no version to answer in: exit only.
  if (invocation === undefined) process.exit(1)
  let json: unknown
  try {
    json = JSON.parse(Buffer.from(stdin ?? []).toString("utf8"))
  } catch {
    // Unreadable input: replyVersion answers in the newest version we speak.
  }
  const msg = what instanceof Error ? what.message : String(what)
  finish(
    JSON.stringify({
      cniVersion: invocation.replyVersion(json),
      code: 999,
      msg: `internal error: ${msg.slice(0, 200)}`
    }),
    1
  )
}

const runCniMode = async (): Promise<void> => {
  let stdin: Uint8Array | undefined
  process.on("uncaughtException", (e) => lastResort(stdin, e))
  process.on("unhandledRejection", (e) => lastResort(stdin, e))
  try {
    invocation = await import("../src/domain/cni/Invocation.ts")
    stdin = await readStdin(invocation.MAX_STDIN_BYTES)
    const [Effect, Layer, { runCni }, { loggingFor, stderrLogging }, live] = await Promise.all([
      import("effect/Effect"),
      import("effect/Layer"),
      import("../src/programs/dispatch.ts"),
      import("../src/interpreters/live/Logging.ts"),
      liveLayers()
    ])
    const services = Layer.mergeAll(
      live.DelegateExec.layer,
      live.NetfilterLive.layer(),
      live.NodeLockSocket.layer(),
      live.AttachmentStoreFiles.layer,
      live.AnnotationsKubernetes.layer
    )
    const out = await Effect.runPromise(
      runCni(process.env, stdin, loggingFor).pipe(
        Effect.provide(services),
        // Outermost, so even the building of the layers above logs to stderr, never stdout.
        Effect.provide(stderrLogging)
      )
    )
    finish(out.stdout, out.exitCode)
  } catch (e) {
    lastResort(stdin, e)
  }
}

const liveLayers = async () => {
  const [DelegateExec, NetfilterLive, NodeLockSocket, AttachmentStoreFiles, AnnotationsKubernetes] =
    await Promise.all([
      import("../src/interpreters/live/DelegateExec.ts"),
      import("../src/interpreters/live/NetfilterLive.ts"),
      import("../src/interpreters/live/NodeLockSocket.ts"),
      import("../src/interpreters/live/AttachmentStoreFiles.ts"),
      import("../src/interpreters/live/AnnotationsKubernetes.ts")
    ])
  return { DelegateExec, NetfilterLive, NodeLockSocket, AttachmentStoreFiles, AnnotationsKubernetes }
}

// ---------------------------------------------------------------------------------------------

/** Runs the chosen mode; in a snapshot-based executable this is the deserialized main function. */
const start = (): void => {
  if (process.env.CNI_COMMAND !== undefined) {
    // Before any other module runs: whatever prints with console.log lands on stderr.
    const toStderr = (...args: Array<unknown>) => {
      process.stderr.write(`${format(...args)}\n`)
    }
    console.log = toStderr
    console.info = toStderr
    console.debug = toStderr
    console.dir = toStderr
    console.table = toStderr
    void runCniMode()
  } else {
    // Only here is the CLI loaded: a pod start never pays for it.
    import("./cli.ts")
      .then(({ runCli }) => runCli(process.argv.slice(2)))
      .then(
        (code) => {
          process.exitCode = code
        },
        (e: unknown) => {
          process.stderr.write(`tenant-routing: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`)
          process.exitCode = 1
        }
      )
  }
}

if (startupSnapshot.isBuildingSnapshot()) {
  // Building the executable's start-up snapshot (scripts/build.ts): evaluate every module a CNI
  // call needs now, so each call starts from an initialised heap instead of running them again.
  // Only module initialisation happens here; no stdio, environment or clock is read.
  startupSnapshot.setDeserializeMainFunction(start)
  void Promise.all([
    import("effect/Effect"),
    import("effect/Layer"),
    import("../src/programs/dispatch.ts"),
    import("../src/interpreters/live/Logging.ts"),
    liveLayers(),
    import("../src/domain/cni/Invocation.ts")
  ]).then(([, , , , , invocation]) => {
    // Warm the hot path: decoding a call (env, stdin, the config and a prevResult through their
    // Schemas) is pure, so run it once on a made-up ADD; the functions it compiles are in the
    // snapshot, and a pod's call does not compile them again.
    const conf = {
      cniVersion: "1.0.0",
      name: "warm-up",
      type: "tenant-routing-wrapper",
      backend: "nftables",
      runtimeConfig: { "io.kubernetes.cri.pod-annotations": { "tenant.routing/fwmark": "tenant-a" } },
      prevResult: {
        cniVersion: "1.0.0",
        interfaces: [{ name: "eth0", sandbox: "/var/run/netns/warm" }],
        ips: [{ address: "10.0.0.2/24", interface: 0 }]
      }
    }
    const env = {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "warm",
      CNI_NETNS: "/var/run/netns/warm",
      CNI_IFNAME: "eth0",
      CNI_ARGS: "K8S_POD_NAMESPACE=default;K8S_POD_NAME=warm",
      CNI_PATH: "/opt/cni/bin"
    }
    invocation.decodeInvocation(env, new TextEncoder().encode(JSON.stringify(conf)))
  })
} else {
  start()
}
