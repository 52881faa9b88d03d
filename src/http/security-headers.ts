import { Elysia } from "elysia";
import { isHttps } from "./client";

/** The contract's security headers on every response (static, so Elysia merges them for free); HSTS over HTTPS. */
export function securityHeaders(trustProxy: boolean) {
  const plugin = new Elysia({ name: "security-headers" }).headers({
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'self'",
  });
  // The server speaks plain HTTP, so only a trusted proxy can say a request came over HTTPS: without
  // one there is no HSTS to decide, and no per-request hook at all.
  if (!trustProxy) return plugin;
  return plugin.onRequest(({ request, set }) => {
    if (isHttps(request, trustProxy)) set.headers["strict-transport-security"] = "max-age=31536000; includeSubDomains";
  });
}

/** For an answer that carries a secret (tokens, a TOTP secret, recovery codes): no cache may keep it (RFC 6749 5.1). */
export function noStore(set: { headers: Record<string, unknown> }): void {
  set.headers["cache-control"] = "no-store";
}
