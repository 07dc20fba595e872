/** The benchmark's one table (target, measured, met) and the machine it ran on, as text and Markdown. */
import { spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"

export interface Row {
  readonly what: string
  readonly target: string
  readonly measured: string
  /** undefined: not measured (the reason is in `measured`), or a reference figure with no target. */
  readonly met: boolean | undefined
}

const sh = (file: string, args: ReadonlyArray<string>) =>
  spawnSync(file, [...args], { encoding: "utf8" }).stdout?.trim() ?? ""

export const machine = (): ReadonlyArray<string> => {
  const cpu = /^model name\s*:\s*(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "?"
  const mem = sh("free", ["-h"]).split("\n")[1]?.replace(/\s+/g, " ") ?? "?"
  return [`nproc ${sh("nproc", [])}, CPU ${cpu}`, `free -h: ${mem}`, `kernel ${sh("uname", ["-r"])}`]
}

export const loadAverage = (): string =>
  readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")

const verdict = (met: boolean | undefined) => (met === undefined ? "-" : met ? "met" : "NOT met")

export const textTable = (rows: ReadonlyArray<Row>): string => {
  const cells = [
    ["", "target", "measured", ""],
    ...rows.map((r) => [r.what, r.target, r.measured, verdict(r.met)])
  ]
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((c) => c[i]!.length)))
  return cells
    .map((c) =>
      c
        .map((x, i) => x.padEnd(widths[i]!))
        .join("  ")
        .trimEnd()
    )
    .join("\n")
}

export const markdownTable = (rows: ReadonlyArray<Row>): string =>
  [
    "| | target | measured | |",
    "|---|---|---|---|",
    ...rows.map((r) => `| ${r.what} | ${r.target} | ${r.measured} | ${verdict(r.met)} |`)
  ].join("\n")
