import { and, eq, isNotNull, isNull, lt, or } from "drizzle-orm";
import type { Executor, Orm } from "../../db/client";
import { mfaRecoveryCodes, usedMfaTokens, userMfa, users } from "../../db/schema";

export type MfaRow = typeof userMfa.$inferSelect;

/** The step is new for this user: no code of it, or of a later step, was accepted before. */
const stepIsNew = (step: number) => or(isNull(userMfa.lastUsedStep), lt(userMfa.lastUsedStep, step));

/**
 * Holds the user's row to the end of `tx`. Every change to a user's TOTP or recovery codes takes it
 * first, as the user's deletion does: changes of one user take turns instead of locking the TOTP row
 * and the codes in opposite orders (a user turning TOTP off while an admin reset it deadlocked).
 */
async function holdUser(tx: Executor, userId: string): Promise<void> {
  await tx.select({ id: users.id }).from(users).where(eq(users.id, userId)).for("no key update");
}

export function createMfaRepo(orm: Orm) {
  return {
    async find(userId: string): Promise<MfaRow | undefined> {
      const [row] = await orm.select().from(userMfa).where(eq(userMfa.userId, userId)).limit(1);
      return row;
    },

    /** Starts (or restarts) an enrolment with a new sealed secret; false when TOTP is already enabled. */
    async startEnrolment(userId: string, secret: string): Promise<boolean> {
      const rows = await orm
        .insert(userMfa)
        .values({ userId, secret })
        .onConflictDoUpdate({
          target: userMfa.userId,
          set: { secret, createdAt: new Date(), lastUsedStep: null },
          setWhere: isNull(userMfa.enabledAt),
        })
        .returning({ userId: userMfa.userId });
      return rows.length > 0;
    },

    /**
     * Enables the pending enrolment of `secret` (sealed), whose code of `step` was just checked,
     * replacing any recovery codes; false when that enrolment is no longer pending (a concurrent
     * confirm won, or a new enrolment replaced the secret).
     */
    async enable(tx: Executor, userId: string, secret: string, step: number, codeHashes: string[]): Promise<boolean> {
      await holdUser(tx, userId);
      const enabled = await tx
        .update(userMfa)
        .set({ enabledAt: new Date(), lastUsedStep: step })
        .where(and(eq(userMfa.userId, userId), eq(userMfa.secret, secret), isNull(userMfa.enabledAt), stepIsNew(step)))
        .returning({ userId: userMfa.userId });
      if (enabled.length === 0) return false;
      await tx.delete(mfaRecoveryCodes).where(eq(mfaRecoveryCodes.userId, userId));
      await tx.insert(mfaRecoveryCodes).values(codeHashes.map((codeHash) => ({ userId, codeHash })));
      return true;
    },

    /** Accepts a code of `step` if no code of it or a later step was accepted before (each code works once). */
    async acceptStep(tx: Executor, userId: string, step: number): Promise<boolean> {
      await holdUser(tx, userId);
      const rows = await tx
        .update(userMfa)
        .set({ lastUsedStep: step })
        .where(and(eq(userMfa.userId, userId), isNotNull(userMfa.enabledAt), stepIsNew(step)))
        .returning({ userId: userMfa.userId });
      return rows.length > 0;
    },

    /** Spends an unused recovery code; false when there is none with this hash. */
    async spendRecoveryCode(tx: Executor, userId: string, codeHash: string): Promise<boolean> {
      await holdUser(tx, userId);
      const rows = await tx
        .update(mfaRecoveryCodes)
        .set({ usedAt: new Date() })
        .where(
          and(
            eq(mfaRecoveryCodes.userId, userId),
            eq(mfaRecoveryCodes.codeHash, codeHash),
            isNull(mfaRecoveryCodes.usedAt),
          ),
        )
        .returning({ id: mfaRecoveryCodes.id });
      return rows.length > 0;
    },

    /** Removes the user's TOTP (pending or enabled) and recovery codes; true when there was one. */
    async remove(tx: Executor, userId: string): Promise<boolean> {
      await holdUser(tx, userId);
      await tx.delete(mfaRecoveryCodes).where(eq(mfaRecoveryCodes.userId, userId));
      const rows = await tx.delete(userMfa).where(eq(userMfa.userId, userId)).returning({ userId: userMfa.userId });
      return rows.length > 0;
    },

    /** Spends an mfa_token; false when it completed a login already. */
    async spendMfaToken(tx: Executor, token: { jti: string; userId: string; expiresAt: Date }): Promise<boolean> {
      const rows = await tx
        .insert(usedMfaTokens)
        .values(token)
        .onConflictDoNothing()
        .returning({ jti: usedMfaTokens.jti });
      return rows.length > 0;
    },
  };
}

export type MfaRepo = ReturnType<typeof createMfaRepo>;
