import { Elysia } from "elysia";
import { isHttps } from "./client";

/** The contract's security headers on every response (static, so Elysia merges them for free); HSTS over HTTPS. */
export function securityHeaders(trustProxy: boolean) {
  return new Elysia({ name: "security-headers" })
    .headers({
      "x-content-type-options": "nosniff",
      "x-frame-options": "DENY",
      "referrer-policy": "no-referrer",
      "content-security-policy": "default-src 'self'",
    })
    .onRequest(({ request, set }) => {
      if (isHttps(request, trustProxy))
        set.headers["strict-transport-security"] = "max-age=31536000; includeSubDomains";
    });
}
