import { and, asc, eq, gt, isNull, lt, or } from "drizzle-orm";
import type { Executor, Orm } from "../../db/client";
import { type PasskeyRow, passkeys, users, webauthnChallenges } from "../../db/schema";

export type NewPasskey = Pick<
  typeof passkeys.$inferInsert,
  "userId" | "credentialId" | "publicKey" | "counter" | "transports" | "name"
>;
export type ChallengePurpose = "register" | "login";

export function createPasskeyRepo(orm: Orm) {
  return {
    async listForUser(userId: string): Promise<PasskeyRow[]> {
      return orm.select().from(passkeys).where(eq(passkeys.userId, userId)).orderBy(asc(passkeys.createdAt));
    },

    async findByCredentialId(credentialId: string): Promise<PasskeyRow | undefined> {
      const [row] = await orm.select().from(passkeys).where(eq(passkeys.credentialId, credentialId)).limit(1);
      return row;
    },

    async insert(tx: Executor, passkey: NewPasskey): Promise<PasskeyRow> {
      const [row] = await tx.insert(passkeys).values(passkey).returning();
      return row as PasskeyRow;
    },

    /** Removes one of the user's passkeys; undefined when the user has none with this id. */
    async remove(tx: Executor, userId: string, id: string): Promise<PasskeyRow | undefined> {
      const [row] = await tx
        .delete(passkeys)
        .where(and(eq(passkeys.id, id), eq(passkeys.userId, userId)))
        .returning();
      return row;
    },

    /**
     * Holds the owner's row (shared) to the end of `tx`, before the passkey's: the owner's deletion
     * takes them in that order, so a sign-in taking the passkey first deadlocked with it. False when
     * the owner is gone.
     */
    async holdOwner(tx: Executor, userId: string): Promise<boolean> {
      const rows = await tx.select({ id: users.id }).from(users).where(eq(users.id, userId)).for("key share");
      return rows.length > 0;
    },

    /**
     * Records a sign-in whose signature counter is `counter`, only if it moved forward (or the
     * authenticator keeps no counter: 0 then and 0 now). False otherwise: a cloned authenticator, or a
     * concurrent sign-in with the same counter value that won.
     */
    async advanceCounter(tx: Executor, id: string, counter: number): Promise<boolean> {
      const forward = or(lt(passkeys.counter, counter), counter === 0 ? eq(passkeys.counter, 0) : undefined);
      const rows = await tx
        .update(passkeys)
        .set({ counter, lastUsedAt: new Date() })
        .where(and(eq(passkeys.id, id), forward))
        .returning({ id: passkeys.id });
      return rows.length > 0;
    },

    /** Keeps a challenge until its answer takes it; expired ones are cleared on the way. */
    async saveChallenge(challenge: {
      challenge: string;
      purpose: ChallengePurpose;
      userId: string | null;
      expiresAt: Date;
    }): Promise<void> {
      await orm.delete(webauthnChallenges).where(lt(webauthnChallenges.expiresAt, new Date()));
      await orm.insert(webauthnChallenges).values(challenge);
    },

    /** Takes (deletes) a live challenge for this purpose (and user, for a registration); false if none. */
    async takeChallenge(challenge: string, purpose: ChallengePurpose, userId: string | null): Promise<boolean> {
      const rows = await orm
        .delete(webauthnChallenges)
        .where(
          and(
            eq(webauthnChallenges.challenge, challenge),
            eq(webauthnChallenges.purpose, purpose),
            gt(webauthnChallenges.expiresAt, new Date()),
            userId ? eq(webauthnChallenges.userId, userId) : isNull(webauthnChallenges.userId),
          ),
        )
        .returning({ challenge: webauthnChallenges.challenge });
      return rows.length > 0;
    },
  };
}

export type PasskeyRepo = ReturnType<typeof createPasskeyRepo>;
