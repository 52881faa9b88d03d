import type { RateLimit } from "../config";
import { type KeyValueStore, MemoryStore } from "./kv";
import type { Logger } from "./logger";

export interface RateDecision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the window resets. */
  resetSeconds: number;
}

/**
 * Fixed-window counters in the shared store. When the store is unreachable the counting goes on in
 * this process's memory instead of stopping: a fail-open login limit would be a brute-force window
 * for as long as Redis is away. Each instance then counts alone, so N instances allow up to N times
 * the limit; that is still a limit.
 */
export function createRateLimiter(kv: KeyValueStore, logger: Logger) {
  const local = kv instanceof MemoryStore ? kv : new MemoryStore();
  let lastWarning = 0;
  /** Resets the shared store missed (it was away): made there before the key is counted there again. */
  const missedResets = new Set<string>();

  async function hit(key: string, windowMs: number) {
    try {
      if (missedResets.has(key)) {
        await kv.del(key);
        missedResets.delete(key);
      }
      return await kv.hit(key, windowMs);
    } catch (error) {
      if (Date.now() - lastWarning > 60_000) {
        lastWarning = Date.now();
        logger.warn("shared rate-limit store unavailable; counting in this process", {
          error: (error as Error).message,
        });
      }
      return local.hit(key, windowMs);
    }
  }

  return {
    /** Forgets a key's count: a right code ends a run of wrong ones. */
    async reset(bucket: string, key: string): Promise<void> {
      const name = `rl:${bucket}:${key}`;
      if (local !== kv) await local.del(name);
      try {
        await kv.del(name);
        missedResets.delete(name);
      } catch {
        // Else the count from before the outage would come back with the store and end a run too soon.
        missedResets.add(name);
      }
    },

    async consume(bucket: string, key: string, rule: RateLimit): Promise<RateDecision> {
      const { count, resetMs } = await hit(`rl:${bucket}:${key}`, rule.windowMs);
      return {
        allowed: count <= rule.limit,
        limit: rule.limit,
        remaining: Math.max(0, rule.limit - count),
        resetSeconds: Math.max(1, Math.ceil(resetMs / 1000)),
      };
    },
  };
}

export type RateLimiter = ReturnType<typeof createRateLimiter>;
