import { Elysia } from "elysia";
import type { Config } from "../config";
import type { Metrics } from "../platform/metrics";
import type { RateLimiter } from "../platform/rate-limiter";
import { type ClientServer, clientIp } from "./client";
import { errors } from "./errors";
import { routedPath } from "./request-target";

type Headers = Record<string, string | number>;
export type RuleName = Exclude<keyof Config["rateLimits"], "enabled">;

/** One limit a route declares: which configured rule, counted against which key (none: not counted). */
export interface LimitSpec {
  rule: RuleName;
  key: (request: {
    ip: string;
    body: unknown;
    userId: string | undefined;
  }) => string | undefined | Promise<string | undefined>;
}

/** Health probes: never limited (a load balancer asks as often as it likes) and never touching the store. */
export const isProbePath = (path: string) => /^\/api\/v1\/health(\/|$)/.test(path);

/** Counts against the client IP. */
export const perIp: LimitSpec["key"] = ({ ip }) => ip;
/** Counts against the signed-in user (declare `auth:` before `rateLimit:` on the route). */
export const perUser: LimitSpec["key"] = ({ userId }) => userId;

/**
 * Rate limits: RATE_LIMIT_DEFAULT per client IP on every API request, and a `rateLimit:` route option
 * for the routes' own (`{ rateLimit: { rule: "register", key: perIp } }`), checked after the body is
 * validated and before the handler. Each sets X-RateLimit-*; over the limit is a 429 with Retry-After.
 */
export function rateLimits(
  limiter: RateLimiter,
  config: Pick<Config, "rateLimits" | "TRUST_PROXY">,
  metrics: Pick<Metrics, "rateLimited">,
) {
  const { enabled, ...rules } = config.rateLimits;
  const ipOf = (request: Request, server: ClientServer) => clientIp(request, server, config.TRUST_PROXY);

  async function enforce(set: { headers: Headers }, rule: RuleName, key: string): Promise<void> {
    const decision = await limiter.consume(rule, key, rules[rule]);
    const headers = {
      "x-ratelimit-limit": String(decision.limit),
      "x-ratelimit-remaining": String(decision.remaining),
      "x-ratelimit-reset": String(decision.resetSeconds),
    };
    Object.assign(set.headers, headers);
    if (!decision.allowed) {
      metrics.rateLimited(rule);
      throw errors.rateLimited(decision.resetSeconds, headers);
    }
  }

  /**
   * A limit a service applies itself (the account a password change is for is known only there):
   * `take` counts one attempt atomically and refuses once over, before any work is done, so a burst of
   * concurrent attempts cannot slip past a check-then-count. With `untilSuccess`, attempts also count
   * against that rule until `succeeded` starts it again: a cap on a run of failures, however slow.
   */
  const attempts = (rule: RuleName, untilSuccess?: RuleName) => ({
    async take(key: string): Promise<void> {
      if (!enabled) return;
      await enforce({ headers: {} }, rule, key);
      if (untilSuccess) await enforce({ headers: {} }, untilSuccess, key);
    },
    async succeeded(key: string): Promise<void> {
      if (enabled && untilSuccess) await limiter.reset(untilSuccess, key);
    },
  });

  // Registered once, on the root app: a named plugin used again inside a `.group()` is not deduplicated
  // and would count every request twice.
  const perRequest = new Elysia({ name: "rate-limit" })
    // Not async: most requests that skip the limiter should not pay for a promise.
    .onRequest(({ request, server, set }) => {
      if (!enabled) return;
      // The router's own path, so what is exempt is exactly what is served as a probe.
      const path = routedPath(request.url);
      if (!path.startsWith("/api/") || isProbePath(path)) return;
      return enforce(set, "default", ipOf(request, server));
    });

  // What modules use: only the `rateLimit:` option, which adds hooks to the routes that declare it.
  const perRoute = new Elysia({ name: "rate-limit-option" }).macro({
    rateLimit: (specs: LimitSpec | LimitSpec[]) => ({
      // An arrow, destructured in the signature: Elysia's static analysis misreads a method's source
      // (it warned at start-up and inferred no body) and a context it cannot see into.
      beforeHandle: async ({ request, server, body, set, ...resolved }) => {
        if (!enabled) return;
        const ip = ipOf(request, server);
        const userId = (resolved as { principal?: { user: { id: string } } }).principal?.user.id;
        for (const spec of Array.isArray(specs) ? specs : [specs]) {
          const key = await spec.key({ ip, body, userId });
          if (key !== undefined) await enforce(set, spec.rule, key);
        }
      },
    }),
  });

  return { perRequest, perRoute, attempts };
}

export type RateLimits = ReturnType<typeof rateLimits>;
