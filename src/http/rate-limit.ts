import { Elysia } from "elysia";
import type { Config, RateLimit } from "../config";
import type { RateLimiter } from "../platform/rate-limiter";
import { errors } from "./errors";
import { type ClientServer, clientIp, pathOf } from "./request-context";

type Headers = Record<string, string | number>;

/** Health probes: never limited (a load balancer asks as often as it likes) and never touching the store. */
export const isProbePath = (path: string) => /^\/api\/v1\/health(\/|$)/.test(path);

/**
 * `enforce` counts one request against a rule and sets X-RateLimit-* (429 with Retry-After when over);
 * the plugin applies RATE_LIMIT_DEFAULT per client IP to every API request, and routes add their own.
 */
export function rateLimits(limiter: RateLimiter, config: Pick<Config, "rateLimits" | "TRUST_PROXY">) {
  const enabled = config.rateLimits.enabled;
  const ipOf = (request: Request, server: ClientServer) => clientIp(request, server, config.TRUST_PROXY);

  async function enforce(set: { headers: Headers }, bucket: string, key: string, rule: RateLimit): Promise<void> {
    if (!enabled) return;
    const decision = await limiter.consume(bucket, key, rule);
    const headers = {
      "x-ratelimit-limit": String(decision.limit),
      "x-ratelimit-remaining": String(decision.remaining),
      "x-ratelimit-reset": String(decision.resetSeconds),
    };
    Object.assign(set.headers, headers);
    if (!decision.allowed) throw errors.rateLimited(decision.resetSeconds, headers);
  }

  // Not async: most requests that skip the limiter should not pay for a promise.
  const plugin = new Elysia({ name: "rate-limit" }).onRequest(({ request, server, set }) => {
    if (!enabled) return;
    const path = pathOf(request.url);
    if (!path.startsWith("/api/") || isProbePath(path)) return;
    return enforce(set, "default", ipOf(request, server), config.rateLimits.default);
  });

  return { plugin, enforce, ipOf };
}

export type RateLimits = ReturnType<typeof rateLimits>;
