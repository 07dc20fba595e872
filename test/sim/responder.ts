/**
 * A tiny TCP responder for the simulated node: every connection gets one line, `<name> <client address>`,
 * and is closed. Gateways run it to say which of them answered (they all own the same address); pods run
 * it for pod-to-pod and inbound probes (the client address shows no NAT happened on the way).
 *
 *   ip netns exec NS node test/sim/responder.ts --name gw-a --port 8080 [--host ::]
 *
 * Listens on `::` (dual-stack) by default and prints `ready <port>` on stdout once listening; SIGTERM or
 * SIGINT closes it. Plain Node 24, no dependencies.
 */
import { createServer } from "node:net"
import { parseArgs } from "node:util"

const { values } = parseArgs({
  options: {
    name: { type: "string" },
    port: { type: "string", default: "8080" },
    host: { type: "string", default: "::" }
  }
})

const name = values.name
const port = Number(values.port)
if (
  name === undefined ||
  !/^[A-Za-z0-9_.-]+$/.test(name) ||
  !Number.isInteger(port) ||
  port < 1 ||
  port > 65535
) {
  process.stderr.write("usage: responder.ts --name NAME [--port PORT] [--host ADDR]\n")
  process.exit(2)
}

const server = createServer((socket) => {
  const peer = (socket.remoteAddress ?? "?").replace(/^::ffff:/, "")
  socket.on("error", () => socket.destroy())
  socket.end(`${name} ${peer}\n`)
})
server.on("error", (error) => {
  process.stderr.write(`responder ${name}: ${error.message}\n`)
  process.exit(1)
})
server.listen({ port, host: values.host, ipv6Only: false }, () => {
  process.stdout.write(`ready ${port}\n`)
})
const stop = () => server.close(() => process.exit(0))
process.on("SIGTERM", stop)
process.on("SIGINT", stop)
