/**
 * Reads Stryker's JSON report (reports/mutation/mutation.json, written by `npm run mutate`) and
 * prints the mutation score of each top folder under src/ (src/domain, src/programs; a subfolder
 * counts towards its top folder), then every surviving or uncovered mutant grouped by file, as
 * `file:line:column  mutator  replacement`, files with the most survivors first.
 *
 * Score, as Stryker counts it: (killed + timeout) / (killed + timeout + survived + no coverage);
 * compile and runtime errors and ignored mutants are left out.
 *
 * Usage: node scripts/mutation-summary.ts [report.json ...] [--survivors FILE]
 *   several reports (e.g. of runs split by folder) are read as one
 *   --survivors FILE  also write the full survivor list to FILE
 */
import { readFileSync, writeFileSync } from "node:fs"

interface Mutant {
  readonly mutatorName: string
  readonly replacement?: string
  readonly status: string
  readonly location: { readonly start: { readonly line: number; readonly column: number } }
}
interface Report {
  readonly files: Record<string, { readonly mutants: ReadonlyArray<Mutant> }>
}

const args = process.argv.slice(2)
const at = args.indexOf("--survivors")
const survivorsFile = at >= 0 ? args[at + 1] : undefined
const reportFiles = args.filter((a, i) => !a.startsWith("--") && (at < 0 || i !== at + 1))
const files: Report["files"] = Object.assign(
  {},
  ...(reportFiles.length > 0 ? reportFiles : ["reports/mutation/mutation.json"]).map(
    (f) => (JSON.parse(readFileSync(f, "utf8")) as Report).files
  )
)

const DETECTED = new Set(["Killed", "Timeout"])
const UNDETECTED = new Set(["Survived", "NoCoverage"])

const folderOf = (file: string) => {
  const parts = file.split("/")
  return parts[0] === "src" && parts.length > 2 ? `src/${parts[1]}` : parts.slice(0, -1).join("/") || "."
}

const tally = new Map<string, { detected: number; undetected: number; other: number }>()
const survivors = new Map<string, Array<Mutant>>()
for (const [file, { mutants }] of Object.entries(files)) {
  const t = tally.get(folderOf(file)) ?? { detected: 0, undetected: 0, other: 0 }
  tally.set(folderOf(file), t)
  for (const m of mutants) {
    if (DETECTED.has(m.status)) t.detected++
    else if (UNDETECTED.has(m.status)) {
      t.undetected++
      survivors.set(file, [...(survivors.get(file) ?? []), m])
    } else t.other++
  }
}

const pct = (d: number, u: number) => (d + u === 0 ? "n/a" : `${((100 * d) / (d + u)).toFixed(2)}%`)
const lines: Array<string> = ["folder          score    detected  undetected  (errors/ignored)"]
let all = { detected: 0, undetected: 0 }
for (const [folder, t] of [...tally].sort(([a], [b]) => a.localeCompare(b))) {
  lines.push(
    `${folder.padEnd(15)} ${pct(t.detected, t.undetected).padStart(7)}  ${String(t.detected).padStart(8)}  ${String(t.undetected).padStart(10)}  (${t.other})`
  )
  all = { detected: all.detected + t.detected, undetected: all.undetected + t.undetected }
}
lines.push(`${"all".padEnd(15)} ${pct(all.detected, all.undetected).padStart(7)}`)

const listing: Array<string> = []
for (const [file, ms] of [...survivors].sort(([a, x], [b, y]) => y.length - x.length || a.localeCompare(b))) {
  listing.push("", `${file} (${ms.length})`)
  for (const m of [...ms].sort((x, y) => x.location.start.line - y.location.start.line)) {
    const replacement = (m.replacement ?? "").replace(/\s+/g, " ").slice(0, 100)
    const where = `${file}:${m.location.start.line}:${m.location.start.column}`
    listing.push(
      `  ${where}  ${m.mutatorName}${m.status === "NoCoverage" ? " (no coverage)" : ""}  ${replacement}`
    )
  }
}

console.log(lines.join("\n"))
console.log(`\nsurviving or uncovered mutants, by file:${listing.join("\n")}`)
if (survivorsFile !== undefined) writeFileSync(survivorsFile, [...lines, "", ...listing, ""].join("\n"))
