/**
 * The suites that mutation testing (`npm run mutate`, stryker.config.mjs) runs: the pure, in-memory
 * and property suites only. Left out: everything that needs root, network namespaces, the real
 * CNI plugins, another process or a Kubernetes API server — the integration suites, the *.live and
 * *.netns suites, and the contract suites, whose live half runs as root in a netns (delegate,
 * routing) or on a real socket (nodeLock). `npm test` keeps using vitest.config.ts.
 *
 * FC_NUM_RUNS=<n> caps every fc.assert at n runs (test/support/fastCheckCapped.ts), for this
 * config only.
 */
import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

export default defineConfig({
  resolve: {
    alias: [
      {
        find: /^fast-check$/,
        replacement: fileURLToPath(new URL("./test/support/fastCheckCapped.ts", import.meta.url))
      }
    ]
  },
  test: {
    include: ["test/**/*.test.ts"],
    exclude: [
      "**/node_modules/**",
      "test/integration/**",
      "test/**/*.live.test.ts",
      "test/**/*.netns.test.ts",
      "test/**/*.contract.test.ts",
      "test/**/delegateExec.test.ts",
      "test/**/annotationsKubernetes.test.ts",
      "test/support/kubeApiServer.test.ts",
      "test/**/deploy.test.ts"
    ],
    // One module graph for all files: these suites keep no state between files, and a mutant run
    // then costs its tests rather than re-importing Effect for every file (about 3x faster).
    isolate: false,
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
