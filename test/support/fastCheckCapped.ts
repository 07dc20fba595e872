/**
 * fast-check with `assert` capped at FC_NUM_RUNS runs. Only vitest.mutate.config.ts points
 * "fast-check" here, so mutation testing can trade depth for time while `npm test` keeps every
 * suite's own numRuns. Without FC_NUM_RUNS (or with a non-positive value) nothing changes.
 */
import * as real from "../../node_modules/fast-check/lib/fast-check.js"

export * from "../../node_modules/fast-check/lib/fast-check.js"

const cap = Number(process.env.FC_NUM_RUNS)

export const assert = ((property: any, params?: any) =>
  real.assert(
    property,
    Number.isInteger(cap) && cap > 0 ? { ...params, numRuns: Math.min(params?.numRuns ?? 100, cap) } : params
  )) as typeof real.assert
