import { and, desc, eq, gt, inArray, isNull, ne, sql, TransactionRollbackError } from "drizzle-orm";
import type { Executor, Orm, Tx } from "../../db/client";
import { authSessions, revokedTokens, type UserRow, usedPasswordResetTokens, users } from "../../db/schema";

export type SessionRow = typeof authSessions.$inferSelect;
export type NewSession = Pick<
  typeof authSessions.$inferInsert,
  "id" | "userId" | "refreshJti" | "accessJti" | "expiresAt" | "userAgent" | "ip"
>;
/** Runs inside a revoking transaction, with the sessions it revoked: the audit event goes with them. */
export type RevocationRecorder = (tx: Tx, revoked: string[]) => Promise<void>;

// postgres.js returns the rows array itself; PGlite returns `{ rows }`.
function rowsOf<T>(result: unknown): T[] {
  return Array.isArray(result) ? (result as T[]) : ((result as { rows: T[] }).rows ?? []);
}

export function createAuthRepo(orm: Orm) {
  return {
    /** On `executor`: a login's session goes in the transaction that records the login. */
    async createSession(executor: Executor, session: NewSession) {
      const now = new Date();
      const [row] = await executor
        .insert(authSessions)
        .values({ ...session, rotatedAt: now, lastUsedAt: now })
        .returning();
      return row as SessionRow;
    },

    /** The user's sessions still able to refresh, newest first. */
    async liveSessions(userId: string): Promise<SessionRow[]> {
      return orm
        .select()
        .from(authSessions)
        .where(
          and(eq(authSessions.userId, userId), isNull(authSessions.revokedAt), gt(authSessions.expiresAt, new Date())),
        )
        .orderBy(desc(authSessions.createdAt), desc(authSessions.id));
    },

    async findSession(id: string): Promise<SessionRow | undefined> {
      const [row] = await orm.select().from(authSessions).where(eq(authSessions.id, id)).limit(1);
      return row;
    },

    /**
     * Swaps the session's refresh jti only if `expected` is still current, so concurrent refreshes cannot
     * both win; the pair it replaces stays on the row for the grace window. Returns the updated row.
     */
    async rotateRefresh(id: string, expected: string, next: { refreshJti: string; accessJti: string }) {
      const [row] = await orm
        .update(authSessions)
        .set({ ...next, previousJti: expected, rotatedAt: new Date(), lastUsedAt: new Date() })
        .where(and(eq(authSessions.id, id), eq(authSessions.refreshJti, expected), isNull(authSessions.revokedAt)))
        .returning();
      return row;
    },

    /**
     * In one transaction: revokes an access token, and the user's live sessions named (or all but
     * `keep`), then runs `record` with the ids of the sessions it revoked. Returns those ids.
     */
    async revoke(
      request: {
        userId: string;
        token?: { jti: string; expiresAt: Date };
        sessions?: string[] | "all";
        keep?: string;
      },
      record?: RevocationRecorder,
    ): Promise<string[]> {
      const { userId, token, sessions = [], keep } = request;
      return orm.transaction(async (tx) => {
        if (token) await tx.insert(revokedTokens).values(token).onConflictDoNothing();
        const named = sessions === "all" ? undefined : sessions;
        const revoked =
          named?.length === 0
            ? []
            : await tx
                .update(authSessions)
                .set({ revokedAt: new Date() })
                .where(
                  and(
                    eq(authSessions.userId, userId),
                    isNull(authSessions.revokedAt),
                    named ? inArray(authSessions.id, named) : undefined,
                    keep ? ne(authSessions.id, keep) : undefined,
                  ),
                )
                .returning({ id: authSessions.id });
        const ids = revoked.map((row) => row.id);
        await record?.(tx, ids);
        return ids;
      });
    },

    /** The durable answer for one request, in one round trip: the user, and whether the token is revoked. */
    async accessState(userId: string, jti: string, sessionId: string) {
      const [row] = await orm
        .select({
          user: users,
          revoked: sql<boolean>`exists(select 1 from ${revokedTokens} where ${revokedTokens.jti} = ${jti})
            or not exists(select 1 from ${authSessions} where ${authSessions.id} = ${sessionId} and ${authSessions.revokedAt} is null)`,
        })
        .from(users)
        .where(eq(users.id, userId))
        .limit(1);
      return row as { user: UserRow; revoked: boolean } | undefined;
    },

    /** Revocations still able to matter, to refill an empty or untrusted cache. */
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

    /** What changed since `since` (users, revoked sessions and tokens), for the cache to apply again. */
    async changesSince(since: Date) {
      const now = new Date();
      const [changedUsers, tokens, sessions] = await Promise.all([
        orm.select({ id: users.id }).from(users).where(gt(users.updatedAt, since)),
        orm
          .select({ jti: revokedTokens.jti, expiresAt: revokedTokens.expiresAt })
          .from(revokedTokens)
          .where(and(gt(revokedTokens.revokedAt, since), gt(revokedTokens.expiresAt, now))),
        orm
          .select({ id: authSessions.id, revokedAt: authSessions.revokedAt })
          .from(authSessions)
          .where(gt(authSessions.revokedAt, since)),
      ]);
      return { users: changedUsers.map((row) => row.id), tokens, sessions };
    },

    /** Advances the change counter (see `authChangeSeq`), returning the new value. */
    async nextChange(): Promise<number> {
      const result = await orm.execute(sql`select nextval('auth_change_seq')::text as value`);
      return Number(rowsOf<{ value: string }>(result)[0]?.value);
    },

    /** The change counter's current value (0 before the first change). */
    async currentChange(): Promise<number> {
      const result = await orm.execute(
        sql`select (case when is_called then last_value else 0 end)::text as value from auth_change_seq`,
      );
      return Number(rowsOf<{ value: string }>(result)[0]?.value ?? 0);
    },

    /**
     * Spends a reset token, sets the new password and records it (`record`) in one transaction. False when the token was
     * spent already, or the password changed since it was issued (`expectedHash` no longer current).
     */
    async spendResetToken(
      reset: { jti: string; userId: string; expiresAt: Date },
      expectedHash: string,
      passwordHash: string,
      record: (tx: Tx) => Promise<void>,
    ): Promise<boolean> {
      const spend = orm.transaction(async (tx) => {
        const spent = await tx
          .insert(usedPasswordResetTokens)
          .values(reset)
          .onConflictDoNothing()
          .returning({ jti: usedPasswordResetTokens.jti });
        if (spent.length === 0) return false;
        const updated = await tx
          .update(users)
          .set({ passwordHash, updatedAt: new Date() })
          .where(and(eq(users.id, reset.userId), eq(users.passwordHash, expectedHash)))
          .returning({ id: users.id });
        if (updated.length === 0) tx.rollback();
        await record(tx);
        return true;
      });
      return spend.catch((error) => {
        if (error instanceof TransactionRollbackError) return false;
        throw error;
      });
    },
  };
}

export type AuthRepo = ReturnType<typeof createAuthRepo>;
