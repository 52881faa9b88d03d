import type { KeyValueStore } from "../../platform/kv";
import type { Logger } from "../../platform/logger";
import type { PublicUser } from "./model";

export const userCacheKey = (id: string) => `user:${id}`;

/** The per-request user lookup, cached; every change to a user must call `invalidate`. */
export function createUserCache(kv: KeyValueStore, ttlSeconds: number, logger: Logger) {
  return {
    parse(value: string | null | undefined): PublicUser | undefined {
      return value ? (JSON.parse(value) as PublicUser) : undefined;
    },
    async put(user: PublicUser): Promise<void> {
      await kv.set(userCacheKey(user.id), JSON.stringify(user), ttlSeconds).catch((error: Error) => {
        logger.warn("user cache write failed", { error: error.message });
      });
    },
    async invalidate(id: string): Promise<void> {
      await kv.del(userCacheKey(id)).catch((error: Error) => {
        logger.error("user cache invalidation failed", { user_id: id, error: error.message });
      });
    },
  };
}

export type UserCache = ReturnType<typeof createUserCache>;
