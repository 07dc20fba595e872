/**
 * What the containerd suite needs to know about a running pod sandbox beyond the CRI's typed status:
 * its process (from the verbose status, which containerd fills with its own SandboxInfo), and a TCP
 * probe made from inside its network namespace, entered through that process.
 */
import { run } from "../sim/netns.ts"
import type { CriClient } from "./criClient.ts"

/** The pid of the sandbox's pause process, as containerd reports it in the verbose status. */
export const sandboxPid = async (client: CriClient, id: string): Promise<number> => {
  const { info } = await client.podSandboxStatus(id, true)
  const parsed = JSON.parse(info.info ?? "{}") as { pid?: unknown }
  if (typeof parsed.pid !== "number" || parsed.pid <= 0)
    throw new Error(`no pid in the verbose status of ${id}: ${info.info}`)
  return parsed.pid
}

/** One connection over bash's /dev/tcp with a deadline: prints what the peer sent (`<name> <peer>`). */
const TCP_PROBE = 'exec 3<>"/dev/tcp/$1/$2" || exit 3; timeout "$3" cat <&3'

/** Connects from inside the sandbox to `address:port`: who answered and the source address it saw. */
export const probeFromSandbox = async (
  pid: number,
  address: string,
  port: number,
  timeoutSeconds = 2
): Promise<{ answeredBy: string | undefined; peer: string | undefined; detail: string }> => {
  const r = await run(
    "nsenter",
    [
      `--net=/proc/${pid}/ns/net`,
      "--",
      "timeout",
      String(timeoutSeconds + 1),
      "bash",
      "-c",
      TCP_PROBE,
      "probe",
      address,
      String(port),
      String(timeoutSeconds)
    ],
    { timeoutMs: (timeoutSeconds + 3) * 1000 }
  )
  const line = r.stdout.trim().split("\n")[0] ?? ""
  const [answeredBy, peer] = line.split(" ")
  if (r.code === 0 && answeredBy !== undefined && answeredBy !== "") return { answeredBy, peer, detail: line }
  return { answeredBy: undefined, peer: undefined, detail: `exit ${r.code}: ${r.stderr.trim()}` }
}
