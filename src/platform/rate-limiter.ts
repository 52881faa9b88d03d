import type { RateLimit } from "../config";
import type { KeyValueStore } from "./kv";
import type { Logger } from "./logger";

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the window resets. */
  resetSeconds: number;
}

/** Fixed-window counters in the shared store; when the store is unreachable the limiter lets requests through. */
export function createRateLimiter(kv: KeyValueStore, logger: Logger) {
  let lastWarning = 0;
  return {
    async consume(bucket: string, key: string, rule: RateLimit): Promise<RateDecision> {
      try {
        const { count, resetMs } = await kv.hit(`rl:${bucket}:${key}`, rule.windowMs);
        return {
          allowed: count <= rule.limit,
          limit: rule.limit,
          remaining: Math.max(0, rule.limit - count),
          resetSeconds: Math.max(1, Math.ceil(resetMs / 1000)),
        };
      } catch (error) {
        // Availability over strictness, but say so (at most once a minute).
        if (Date.now() - lastWarning > 60_000) {
          lastWarning = Date.now();
          logger.warn("rate limiter unavailable; not limiting", { error: (error as Error).message });
        }
        return {
          allowed: true,
          limit: rule.limit,
          remaining: rule.limit,
          resetSeconds: Math.ceil(rule.windowMs / 1000),
        };
      }
    },
  };
}

export type RateLimiter = ReturnType<typeof createRateLimiter>;
