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
  mutate)
    # A mutant can turn a test's temporary path back into the real default (a dry run into a write to
    # /etc/iproute2/rt_tables, an install into /opt/cni/bin). As root, Stryker therefore runs in a
    # private mount namespace where every directory the product writes to is an empty tmpfs.
    if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1; then
      exec unshare --mount --propagation private sh -c '
        for d in /etc/iproute2 /etc/tenant-routing /etc/cni /opt /var/lib/cni /run; do
          if [ -d "$d" ]; then mount -t tmpfs tmpfs "$d"; fi
        done
        exec stryker run "$@"' stryker "$@"
    fi
    stryker run "$@"
    ;;
  *) echo "unknown task: $task" >&2; exit 2 ;;
esac
