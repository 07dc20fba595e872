#!/usr/bin/env bash
# The one door to the project's tasks: puts Node 24 first on PATH, installs node_modules when the
# lockfile changed, then runs the task. npm scripts call it so a fresh clone needs only `npm <task>`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
node=$(bash scripts/node24.sh)
export PATH="$(dirname "$node"):$root/node_modules/.bin:$PATH"

stamp=node_modules/.lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  # `npm ci`: installs exactly what package-lock.json says and never writes it, so a task leaves
  # `git status` clean. It fails when package.json and the lockfile disagree: run `npm install` and
  # commit the lockfile it writes. The lockfile must keep every platform's optional packages,
  # e.g. vite's Windows-only napi-windows-process-start-time, or npm ci calls it out of sync.
  npm ci --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json "$stamp"
fi

task=${1:?usage: scripts/run.sh test|check|build|demo|bench|mutate}; shift
case "$task" in
  check)
    biome check .
    tsc -p tsconfig.json
    ;;
  test)
    biome check .
    tsc -p tsconfig.json
    if [ "$#" -gt 0 ]; then
      vitest run "$@"
    else
      # The soak judges its last calls' latency against its first ones: it runs alone, after the rest,
      # so the load of other suites running beside it cannot skew that ratio.
      vitest run --exclude test/integration/soak.test.ts
      vitest run test/integration/soak.test.ts
    fi
    ;;
  build) node scripts/build.ts "$@" ;;
  demo) bash scripts/demo.sh "$@" ;;
  bench) node scripts/bench.ts "$@" ;;
  mutate) stryker run "$@" ;;
  *) echo "unknown task: $task" >&2; exit 2 ;;
esac
