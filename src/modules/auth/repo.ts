import { and, eq, gt, inArray, isNull, ne } from "drizzle-orm";
import type { Orm } from "../../db/client";
import { authSessions, revokedTokens, usedPasswordResetTokens, users } from "../../db/schema";

export type SessionRow = typeof authSessions.$inferSelect;

export function createAuthRepo(orm: Orm) {
  return {
    async createSession(session: { userId: string; refreshJti: string; expiresAt: Date }): Promise<SessionRow> {
      const [row] = await orm.insert(authSessions).values(session).returning();
      return row as SessionRow;
    },

    async findSession(id: string): Promise<SessionRow | undefined> {
      const [row] = await orm.select().from(authSessions).where(eq(authSessions.id, id)).limit(1);
      return row;
    },

    /** Swaps the session's refresh jti only if `expected` is still current: concurrent refreshes cannot both win. */
    async rotateRefresh(id: string, expected: string, next: string): Promise<boolean> {
      const rows = await orm
        .update(authSessions)
        .set({ refreshJti: next })
        .where(and(eq(authSessions.id, id), eq(authSessions.refreshJti, expected), isNull(authSessions.revokedAt)))
        .returning({ id: authSessions.id });
      return rows.length === 1;
    },

    async revokeSessions(ids: string[]): Promise<void> {
      if (ids.length === 0) return;
      await orm
        .update(authSessions)
        .set({ revokedAt: new Date() })
        .where(and(inArray(authSessions.id, ids), isNull(authSessions.revokedAt)));
    },

    /** Revokes every live session of a user (but `keep`), returning the revoked ids. */
    async revokeUserSessions(userId: string, keep?: string): Promise<string[]> {
      const rows = await orm
        .update(authSessions)
        .set({ revokedAt: new Date() })
        .where(
          and(
            eq(authSessions.userId, userId),
            isNull(authSessions.revokedAt),
            keep ? ne(authSessions.id, keep) : undefined,
          ),
        )
        .returning({ id: authSessions.id });
      return rows.map((row) => row.id);
    },

    async revokeToken(jti: string, expiresAt: Date): Promise<void> {
      await orm.insert(revokedTokens).values({ jti, expiresAt }).onConflictDoNothing();
    },

    /** The durable answer to "is this access token revoked?", used when the cache cannot answer. */
    async isRevoked(jti: string, sessionId: string): Promise<boolean> {
      const [token, session] = await Promise.all([
        orm.select({ jti: revokedTokens.jti }).from(revokedTokens).where(eq(revokedTokens.jti, jti)).limit(1),
        orm
          .select({ revokedAt: authSessions.revokedAt })
          .from(authSessions)
          .where(eq(authSessions.id, sessionId))
          .limit(1),
      ]);
      return token.length > 0 || !session[0] || session[0].revokedAt !== null;
    },

    /** Revocations still able to matter, to refill an empty cache. */
    async liveRevocations(sessionsSince: Date) {
      const now = new Date();
      const [tokens, sessions] = await Promise.all([
        orm.select().from(revokedTokens).where(gt(revokedTokens.expiresAt, now)),
        orm
          .select({ id: authSessions.id, revokedAt: authSessions.revokedAt })
          .from(authSessions)
          .where(gt(authSessions.revokedAt, sessionsSince)),
      ]);
      return { tokens, sessions };
    },

    /** Records a reset token as spent and sets the new password in one transaction; false if already spent. */
    async spendResetToken(
      reset: { jti: string; userId: string; expiresAt: Date },
      passwordHash: string,
    ): Promise<boolean> {
      return orm.transaction(async (tx) => {
        const spent = await tx
          .insert(usedPasswordResetTokens)
          .values(reset)
          .onConflictDoNothing()
          .returning({ jti: usedPasswordResetTokens.jti });
        if (spent.length === 0) return false;
        await tx.update(users).set({ passwordHash, updatedAt: new Date() }).where(eq(users.id, reset.userId));
        return true;
      });
    },
  };
}

export type AuthRepo = ReturnType<typeof createAuthRepo>;
