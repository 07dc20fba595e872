/**
 * The sandbox ("pause") image of the containerd suite, built from source on this machine: a static
 * binary that only waits for SIGTERM or SIGINT (as the pause container's process does; it runs as PID 1
 * of the pod, where a signal without a handler is ignored, hence the explicit handlers), put alone in a
 * one-layer OCI image (ociImage.ts).
 *
 * `gcc -static` is preferred (well under a second); Go with CGO_ENABLED=0 is the fallback (its first
 * build compiles part of the standard library, tens of seconds).
 */
import { chmodSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { must } from "../sim/netns.ts"
import { hasCommand } from "../support/liveGate.ts"
import { ociImageArchive } from "./ociImage.ts"

const C_SOURCE = `#include <signal.h>
#include <unistd.h>
static void stop(int sig) { (void)sig; _exit(0); }
int main(void) {
  signal(SIGTERM, stop);
  signal(SIGINT, stop);
  for (;;) pause();
}
`

const GO_SOURCE = `package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tc := make(chan os.Signal, 1)
\tsignal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
\t<-c
}
`

/** Which compiler can build the pause binary here (undefined: none). */
export const pauseCompiler = (): "gcc" | "go" | undefined =>
  hasCommand("gcc") ? "gcc" : hasCommand("go") ? "go" : undefined

/** Compiles the pause binary into `dir` (with `compiler`, default the first available) and returns its path. */
export const buildPauseBinary = async (
  dir: string,
  compiler: "gcc" | "go" | undefined = pauseCompiler()
): Promise<string> => {
  const out = join(dir, "pause")
  if (compiler === "gcc") {
    const src = join(dir, "pause.c")
    writeFileSync(src, C_SOURCE)
    await must("gcc", ["-static", "-O2", "-o", out, src], { timeoutMs: 120_000 })
  } else if (compiler === "go") {
    const src = join(dir, "pause.go")
    writeFileSync(src, GO_SOURCE)
    const env = { ...process.env, CGO_ENABLED: "0" }
    await must("go", ["build", "-o", out, src], { env, timeoutMs: 5 * 60_000, cwd: dir })
  } else {
    throw new Error("neither gcc nor go is installed: cannot build the pause binary")
  }
  chmodSync(out, 0o755)
  return out
}

/** Builds the pause image as an OCI archive `dir/pause.oci.tar` stored under `reference`. */
export const buildPauseImage = async (dir: string, reference: string): Promise<string> => {
  const binary = readFileSync(await buildPauseBinary(dir))
  const { archive } = ociImageArchive({
    reference,
    entrypoint: ["/pause"],
    layer: [
      { name: "pause", data: binary, mode: 0o755 },
      // Mount points the runtime fills in; present so a read-only root needs no new directories.
      { name: "dev" },
      { name: "proc" },
      { name: "sys" },
      { name: "etc" }
    ]
  })
  const path = join(dir, "pause.oci.tar")
  writeFileSync(path, archive)
  return path
}
