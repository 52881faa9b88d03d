import { and, eq, gt, isNull, sql } from "drizzle-orm";
import type { Executor, Orm } from "../../db/client";
import { emailVerifications, type UserRow, users } from "../../db/schema";

export function createVerificationRepo(orm: Orm) {
  return {
    async insert(verification: { tokenHash: string; userId: string; email: string; expiresAt: Date }) {
      await orm.insert(emailVerifications).values(verification);
    },

    /**
     * Spends a live token and marks its address verified, if it is still the user's address (an email
     * change deletes the user's tokens anyway). Undefined when the token is unknown, spent or expired.
     */
    async spend(tx: Executor, tokenHash: string): Promise<UserRow | undefined> {
      const [pending] = await tx
        .select({ userId: emailVerifications.userId })
        .from(emailVerifications)
        .where(eq(emailVerifications.tokenHash, tokenHash))
        .limit(1);
      if (!pending) return undefined;
      // The user's row before the token's, in the order an email change takes them (the row, then its
      // trigger deletes the tokens): the other order deadlocks with a concurrent change.
      await tx.select({ id: users.id }).from(users).where(eq(users.id, pending.userId)).for("update");
      const [spent] = await tx
        .update(emailVerifications)
        .set({ usedAt: new Date() })
        .where(
          and(
            eq(emailVerifications.tokenHash, tokenHash),
            isNull(emailVerifications.usedAt),
            gt(emailVerifications.expiresAt, new Date()),
          ),
        )
        .returning({ userId: emailVerifications.userId, email: emailVerifications.email });
      if (!spent) return undefined;
      const [row] = await tx
        .update(users)
        .set({ emailVerified: true, updatedAt: new Date() })
        .where(
          and(eq(users.id, spent.userId), eq(users.isActive, true), sql`lower(${users.email}) = lower(${spent.email})`),
        )
        .returning();
      return row;
    },
  };
}

export type VerificationRepo = ReturnType<typeof createVerificationRepo>;
