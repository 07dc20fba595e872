/**
 * A problem found while decoding input (a network config, a tenants file, a conflist template): where
 * it is, and what is wrong there. One type and one path spelling for every decoder, so the CNI
 * error's `details`, node-setup's report and install's refusal read alike: `tenants.a.gateways[1]`.
 */
import * as Schema from "effect/Schema"
import * as SchemaIssue from "effect/SchemaIssue"

export const Issue = Schema.Struct({ path: Schema.String, message: Schema.String })
export type Issue = typeof Issue.Type

type PathPart = PropertyKey | { readonly key: PropertyKey }

/** `a.b[0].c`: keys joined with dots, array indices in brackets; "" for the whole document. */
export const formatPath = (path: ReadonlyArray<PathPart>): string =>
  path
    .map((p) => (typeof p === "object" ? p.key : p))
    .reduce<string>(
      (acc, key) =>
        typeof key === "number" ? `${acc}[${key}]` : acc === "" ? String(key) : `${acc}.${String(key)}`,
      ""
    )

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

/** A Schema failure as Issues, their paths under `prefix`. */
export const schemaIssues = (issue: SchemaIssue.Issue, prefix: ReadonlyArray<PathPart> = []): Array<Issue> =>
  formatter(issue).issues.map((i) => ({
    path: formatPath([...prefix, ...(i.path ?? [])]),
    // Say it in the operator's terms: a misspelt key is the usual cause.
    message: i.message === "Expected no excess property" ? "unknown field" : i.message
  }))

/** One line per issue, `path: message`. */
export const formatIssues = (issues: ReadonlyArray<Issue>): string =>
  issues.map((i) => (i.path === "" ? i.message : `${i.path}: ${i.message}`)).join("\n")
