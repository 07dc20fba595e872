/**
 * Kubernetes' naming rules (RFC 1123), in one place: namespaces and tenant names are DNS labels, pod
 * names DNS subdomains.
 */

/** A DNS label: at most 63 of a-z, 0-9 and `-`, starting and ending alphanumeric. */
export const isDnsLabel = (s: string): boolean => s.length <= 63 && /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(s)

/** A DNS subdomain: at most 253 characters of dot-separated labels. */
export const isDnsSubdomain = (s: string): boolean => s.length <= 253 && s.split(".").every(isDnsLabel)
