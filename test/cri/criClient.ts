/**
 * A CRI v1 client, speaking to a container runtime over its unix socket the way kubelet does, for the
 * containerd suite. Only the calls kubelet makes around a pod's network are typed: Version, Status,
 * RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox and ImageStatus.
 *
 * The service definitions come from `api.proto` beside this file: the Kubernetes cri-api project's
 * `pkg/apis/runtime/v1/api.proto` at tag v0.36.3, kept verbatim with its Apache-2.0 licence header
 * (that version has no gogoproto options, so @grpc/proto-loader reads it as it is). Newer fields are
 * unknown to containerd 1.6 and simply not sent; the ones used here keep their numbers in every v1.
 */

import { fileURLToPath } from "node:url"
import { credentials, loadPackageDefinition, type ServiceError } from "@grpc/grpc-js"
import { loadSync } from "@grpc/proto-loader"

export const API_PROTO = fileURLToPath(new URL("api.proto", import.meta.url))

export interface PodSandboxMetadata {
  readonly name: string
  readonly uid: string
  readonly namespace: string
  readonly attempt?: number
}

export interface PodSandboxConfig {
  readonly metadata: PodSandboxMetadata
  readonly hostname?: string
  readonly logDirectory?: string
  readonly labels?: Readonly<Record<string, string>>
  readonly annotations?: Readonly<Record<string, string>>
  readonly linux?: { readonly cgroupParent?: string }
}

export interface RuntimeCondition {
  readonly type: string
  readonly status: boolean
  readonly reason: string
  readonly message: string
}

export interface StatusResponse {
  readonly status: { readonly conditions: ReadonlyArray<RuntimeCondition> }
  readonly info: Readonly<Record<string, string>>
}

export interface PodSandboxStatus {
  readonly id: string
  readonly metadata: PodSandboxMetadata
  readonly state: "SANDBOX_READY" | "SANDBOX_NOTREADY"
  readonly network: {
    readonly ip: string
    readonly additionalIps: ReadonlyArray<{ readonly ip: string }>
  } | null
  readonly annotations: Readonly<Record<string, string>>
}

export interface PodSandboxSummary {
  readonly id: string
  readonly metadata: PodSandboxMetadata
  readonly state: "SANDBOX_READY" | "SANDBOX_NOTREADY"
}

/** A failed call: the gRPC status code and the runtime's message (containerd puts the CNI error there). */
export class CriError extends Error {
  readonly code: number
  readonly details: string
  constructor(method: string, error: ServiceError) {
    super(`CRI ${method} failed (gRPC ${error.code}): ${error.details}`)
    this.name = "CriError"
    this.code = error.code
    this.details = error.details
  }
}

type Unary = (
  request: unknown,
  options: { deadline: Date },
  callback: (error: ServiceError | null, response: unknown) => void
) => void
type RawClient = Record<string, Unary> & { close(): void }
type ClientConstructor = new (
  address: string,
  creds: ReturnType<typeof credentials.createInsecure>
) => RawClient

const loadServices = (): { runtime: ClientConstructor; image: ClientConstructor } => {
  const definition = loadSync(API_PROTO, { keepCase: false, longs: String, enums: String, defaults: true })
  const root = loadPackageDefinition(definition) as unknown as {
    runtime: { v1: { RuntimeService: ClientConstructor; ImageService: ClientConstructor } }
  }
  return { runtime: root.runtime.v1.RuntimeService, image: root.runtime.v1.ImageService }
}

export class CriClient {
  private readonly runtime: RawClient
  private readonly image: RawClient
  /** Per-call deadline: RunPodSandbox runs the whole CNI chain, so it is generous. */
  private readonly timeoutMs: number

  constructor(socket: string, timeoutMs = 120_000) {
    const services = loadServices()
    const address = `unix://${socket}`
    this.runtime = new services.runtime(address, credentials.createInsecure())
    this.image = new services.image(address, credentials.createInsecure())
    this.timeoutMs = timeoutMs
  }

  private call<T>(client: RawClient, method: string, request: object): Promise<T> {
    return new Promise((resolve, reject) => {
      const fn = client[method]
      if (fn === undefined) return reject(new Error(`no CRI method ${method}`))
      fn.call(client, request, { deadline: new Date(Date.now() + this.timeoutMs) }, (error, response) => {
        if (error !== null) reject(new CriError(method, error))
        else resolve(response as T)
      })
    })
  }

  version(): Promise<{ runtimeName: string; runtimeVersion: string; runtimeApiVersion: string }> {
    return this.call(this.runtime, "Version", { version: "v1" })
  }

  status(verbose = false): Promise<StatusResponse> {
    return this.call(this.runtime, "Status", { verbose })
  }

  async runPodSandbox(config: PodSandboxConfig): Promise<string> {
    const r = await this.call<{ podSandboxId: string }>(this.runtime, "RunPodSandbox", { config })
    return r.podSandboxId
  }

  async stopPodSandbox(podSandboxId: string): Promise<void> {
    await this.call(this.runtime, "StopPodSandbox", { podSandboxId })
  }

  async removePodSandbox(podSandboxId: string): Promise<void> {
    await this.call(this.runtime, "RemovePodSandbox", { podSandboxId })
  }

  podSandboxStatus(
    podSandboxId: string,
    verbose = false
  ): Promise<{ status: PodSandboxStatus; info: Readonly<Record<string, string>> }> {
    return this.call(this.runtime, "PodSandboxStatus", { podSandboxId, verbose })
  }

  async listPodSandbox(): Promise<ReadonlyArray<PodSandboxSummary>> {
    const r = await this.call<{ items: ReadonlyArray<PodSandboxSummary> }>(this.runtime, "ListPodSandbox", {})
    return r.items
  }

  /** The image's id, or undefined when the runtime does not have it. */
  async imageId(reference: string): Promise<string | undefined> {
    const r = await this.call<{ image: { id: string } | null }>(this.image, "ImageStatus", {
      image: { image: reference }
    })
    return r.image?.id
  }

  close(): void {
    this.runtime.close()
    this.image.close()
  }
}
