/**
 * `tenant-routing agent` (docs/DESIGN.md §8) as a command of the CLI: its flags, their checks, and
 * the start of the agent itself (bin/agent.ts), which is loaded only now, so neither the CNI path nor
 * another subcommand pays for the agent's modules. Exit codes: 0 stopped by SIGTERM/SIGINT, 1 not
 * started, 2 usage (a bad flag, `--kubeconfig` without a node name, an unusable kubeconfig).
 */

import { Command } from "effect/cli"
import * as Effect from "effect/Effect"
import { DEFAULT_AGENT_SOCKET } from "../src/interpreters/live/AgentServer.ts"
import type { AgentOptions } from "./agent.ts"
import { optionalString, stringFlag, usageError } from "./cliSupport.ts"

/** Replaceable parts, for tests: the environment (NODE_NAME), and what runs once flags are checked. */
export interface AgentCliEnv {
  readonly environment?: Readonly<Record<string, string | undefined>>
  readonly runAgent?: (options: AgentOptions) => Effect.Effect<void, unknown>
}

const NAME = "agent"

const HOST_NAME = /^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$/
const IPV6 = /^[0-9A-Fa-f:.]+$/

/** `HOST:PORT`, `[IPv6]:PORT`; port 0 picks a free one. The reason when it is not one. */
export const parseHostPort = (text: string): { host: string; port: number } | string => {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text)
  if (m === null) return `expected HOST:PORT or [IPv6]:PORT, got ${JSON.stringify(text)}`
  const port = Number(m[3])
  if (port > 65535) return `port ${port} is over 65535`
  const v6 = m[1]
  if (v6 !== undefined)
    return IPV6.test(v6) ? { host: v6, port } : `${JSON.stringify(v6)} is not an IPv6 address`
  const host = m[2] ?? ""
  return HOST_NAME.test(host) ? { host, port } : `${JSON.stringify(host)} is not a host name or address`
}

const isPath = (text: string) => text.startsWith("/") && !text.includes("\0")

export const agentCommand = (env: AgentCliEnv) =>
  Command.make(
    NAME,
    {
      socket: stringFlag(
        "socket",
        "PATH",
        "unix socket the shim connects to (absolute path; its directory is created 0700)",
        DEFAULT_AGENT_SOCKET
      ),
      kubeconfig: optionalString(
        "kubeconfig",
        "FILE",
        "kubeconfig of this node's identity: pods on this node and all namespaces are then watched, and calls whose config names the same file read their annotations from that cache (needs --node-name)"
      ),
      nodeName: optionalString(
        "node-name",
        "NAME",
        "this node's name, whose pods the cache watches (default $NODE_NAME; required with --kubeconfig)"
      ),
      tenants: optionalString(
        "tenants",
        "FILE",
        "tenants file to keep node-setup converged on: applied at start, on every change of the file and every minute"
      ),
      metricsAddress: optionalString(
        "metrics-address",
        "HOST:PORT",
        "serve /metrics (Prometheus), /healthz and /readyz over HTTP on this address only (port 0: any free port)"
      )
    },
    (flags) =>
      Effect.gen(function* () {
        const socket = flags.socket
        if (!isPath(socket))
          return yield* usageError(NAME, `--socket must be an absolute path, got ${JSON.stringify(socket)}`)
        const environment = env.environment ?? process.env
        const given = <A>(o: { readonly _tag: "Some"; readonly value: A } | { readonly _tag: "None" }) =>
          o._tag === "Some" ? o.value : undefined
        const kubeconfig = given(flags.kubeconfig)
        const nodeName = given(flags.nodeName) ?? (environment.NODE_NAME || undefined)
        if (kubeconfig !== undefined && !isPath(kubeconfig))
          return yield* usageError(
            NAME,
            `--kubeconfig must be an absolute path, got ${JSON.stringify(kubeconfig)}`
          )
        if (kubeconfig !== undefined && nodeName === undefined)
          return yield* usageError(
            NAME,
            "--kubeconfig needs this node's name: pass --node-name NAME or set NODE_NAME"
          )
        const tenants = given(flags.tenants)
        if (tenants !== undefined && tenants === "")
          return yield* usageError(NAME, "--tenants needs a file name")
        const addressText = given(flags.metricsAddress)
        const metricsAddress = addressText === undefined ? undefined : parseHostPort(addressText)
        if (typeof metricsAddress === "string")
          return yield* usageError(NAME, `--metrics-address: ${metricsAddress}`)
        const options: AgentOptions = { socket, kubeconfig, nodeName, tenants, metricsAddress }
        if (env.runAgent !== undefined) return yield* Effect.orDie(env.runAgent(options))
        const { runAgent } = yield* Effect.promise(() => import("./agent.ts"))
        return yield* runAgent(options)
      })
  ).pipe(
    Command.withDescription(
      "Run the warm per-node agent: serve the shim's CNI calls on a unix socket with the same programs as the standalone plugin, until SIGTERM or SIGINT (then finish the calls in progress, remove the socket and exit within 5 s). Exit 0 stopped, 1 not started, 2 usage."
    ),
    Command.withShortDescription("serve CNI calls from a warm per-node process")
  )
