export type ClientServer = { requestIP(request: Request): { address: string } | null } | null;

/** The socket's peer, or with TRUST_PROXY the address our one trusted proxy appended last to X-Forwarded-For. */
export function clientIp(request: Request, server: ClientServer, trustProxy: boolean): string {
  if (trustProxy) {
    const forwarded = request.headers.get("x-forwarded-for");
    const last = forwarded?.split(",").at(-1)?.trim();
    if (last) return last;
  }
  return server?.requestIP(request)?.address ?? "unknown";
}

/** Served over HTTPS by a trusted proxy that says so (TRUST_PROXY); the server itself speaks plain HTTP. */
export function isHttps(request: Request, trustProxy: boolean): boolean {
  return trustProxy && request.headers.get("x-forwarded-proto")?.split(",")[0]?.trim() === "https";
}

/**
 * The origin the client used: the request's own, or (with TRUST_PROXY) as the proxy forwarded it
 * (`X-Forwarded-Proto`, `X-Forwarded-Host`, first value each).
 */
export function requestOrigin(request: Request, trustProxy: boolean): string {
  const url = new URL(request.url);
  const forwardedHost = trustProxy ? request.headers.get("x-forwarded-host")?.split(",")[0]?.trim() : undefined;
  const protocol = isHttps(request, trustProxy) ? "https:" : url.protocol;
  return `${protocol}//${forwardedHost || url.host}`;
}
