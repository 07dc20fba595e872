/** Order statistics of the benchmark's samples (milliseconds, KiB): medians and p90, nothing fancier. */

/** The q-quantile by nearest rank (q in (0, 1]); NaN for no samples. */
export const quantile = (xs: ReadonlyArray<number>, q: number): number => {
  if (xs.length === 0) return Number.NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!
}

export const median = (xs: ReadonlyArray<number>): number => quantile(xs, 0.5)
export const p90 = (xs: ReadonlyArray<number>): number => quantile(xs, 0.9)
export const max = (xs: ReadonlyArray<number>): number => (xs.length === 0 ? Number.NaN : Math.max(...xs))

/** Pairwise differences a[i] - b[i] (the series were measured in the same iterations). */
export const paired = (a: ReadonlyArray<number>, b: ReadonlyArray<number>): ReadonlyArray<number> =>
  a.slice(0, b.length).map((x, i) => x - b[i]!)

export const ms = (x: number): string => (Number.isNaN(x) ? "-" : `${x.toFixed(1)} ms`)
export const mib = (kib: number): string => (Number.isNaN(kib) ? "-" : `${(kib / 1024).toFixed(1)} MiB`)
export const signed = (x: number): string => `${x >= 0 ? "+" : ""}${x.toFixed(1)}`
