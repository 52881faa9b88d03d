import type { KeyValueStore } from "../../platform/kv";
import type { Logger } from "../../platform/logger";
import type { AuthRepo } from "./repo";
import type { Claims } from "./tokens";

const tokenKey = (jti: string) => `revoked:jti:${jti}`;
const sessionKey = (sid: string) => `revoked:sid:${sid}`;
/** Present while the store holds every live revocation; gone after a restart or flush, which triggers a refill. */
const COMPLETE_KEY = "revoked:complete";
const COMPLETE_TTL_SECONDS = 365 * 86_400;

export type RevocationState = "revoked" | "valid" | "unknown";

/**
 * Token revocation: the database is the record, the store answers the per-request question fast.
 * A revoked session revokes every access token it issued (their `sid`), for as long as one could live.
 */
export function createRevocation(deps: {
  kv: KeyValueStore;
  repo: AuthRepo;
  accessTtlSeconds: number;
  logger: Logger;
}) {
  const { kv, repo, accessTtlSeconds, logger } = deps;
  let refilling = false;

  async function remember(keys: { key: string; ttlSeconds: number }[]) {
    try {
      await Promise.all(keys.map(({ key, ttlSeconds }) => kv.set(key, "1", Math.max(1, Math.ceil(ttlSeconds)))));
    } catch (error) {
      // The database already has it; requests fall back to it while the store is away.
      logger.warn("revocation cache write failed", { error: (error as Error).message });
    }
  }

  async function refill() {
    const since = new Date(Date.now() - accessTtlSeconds * 1000);
    const { tokens, sessions } = await repo.liveRevocations(since);
    const now = Date.now();
    await remember([
      ...tokens.map((t) => ({ key: tokenKey(t.jti), ttlSeconds: (t.expiresAt.getTime() - now) / 1000 })),
      ...sessions.map((s) => ({
        key: sessionKey(s.id),
        ttlSeconds: accessTtlSeconds - (now - (s.revokedAt as Date).getTime()) / 1000,
      })),
    ]);
    await kv.set(COMPLETE_KEY, "1", COMPLETE_TTL_SECONDS);
  }

  return {
    /** Keys to fetch (in one round trip, with the user) for `interpret`. */
    keys: (claims: Claims) => [tokenKey(claims.jti), sessionKey(claims.sid as string), COMPLETE_KEY],

    interpret([token, session, complete]: (string | null | undefined)[]): RevocationState {
      if (token || session) return "revoked";
      return complete ? "valid" : "unknown";
    },

    /** The database's answer, for when the store cannot give one; also starts a refill of the store. */
    async checkDurably(claims: Claims): Promise<boolean> {
      if (!refilling) {
        refilling = true;
        refill()
          .catch((error: Error) => logger.warn("revocation cache refill failed", { error: error.message }))
          .finally(() => {
            refilling = false;
          });
      }
      return repo.isRevoked(claims.jti, claims.sid as string);
    },

    async revokeToken(claims: Claims) {
      await repo.revokeToken(claims.jti, new Date(claims.exp * 1000));
      await remember([{ key: tokenKey(claims.jti), ttlSeconds: claims.exp - Date.now() / 1000 }]);
    },

    async revokeSessions(ids: string[]) {
      await repo.revokeSessions(ids);
      await remember(ids.map((id) => ({ key: sessionKey(id), ttlSeconds: accessTtlSeconds })));
    },

    /** Ends every login of a user except `keep`: their refresh tokens stop at once, access tokens too. */
    async revokeUserSessions(userId: string, keep?: string) {
      const ids = await repo.revokeUserSessions(userId, keep);
      await remember(ids.map((id) => ({ key: sessionKey(id), ttlSeconds: accessTtlSeconds })));
    },
  };
}

export type Revocation = ReturnType<typeof createRevocation>;
