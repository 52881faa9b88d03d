import { and, asc, count, desc, eq, gt, gte, ilike, lte, ne, or, type SQL, sql } from "drizzle-orm";
import type { Orm, Tx } from "../../db/client";
import { type UserRow, users } from "../../db/schema";
import type { UserFilter, UserListParams } from "./model";

export type NewUser = typeof users.$inferInsert;
export type UserUpdate = Partial<
  Pick<NewUser, "username" | "email" | "name" | "bio" | "role" | "isActive" | "passwordHash">
>;
/** Runs inside the writing transaction (the audit event of the change). */
export type ChangeRecorder = (tx: Tx, before: UserRow, after: UserRow) => Promise<void>;

const SORT_COLUMNS = { created_at: users.createdAt, username: users.username, email: users.email } as const;
const EXPORT_BATCH = 500;

function escapeLike(text: string): string {
  return text.replace(/[\\%_]/g, (c) => `\\${c}`);
}

function where(filter: UserFilter): SQL | undefined {
  const pattern = filter.q ? `%${escapeLike(filter.q)}%` : undefined;
  return and(
    pattern ? or(ilike(users.username, pattern), ilike(users.email, pattern), ilike(users.name, pattern)) : undefined,
    filter.role ? eq(users.role, filter.role) : undefined,
    filter.is_active === undefined ? undefined : eq(users.isActive, filter.is_active),
    filter.created_after ? gte(users.createdAt, new Date(filter.created_after)) : undefined,
    filter.created_before ? lte(users.createdAt, new Date(filter.created_before)) : undefined,
  );
}

/** Any constant shared by every instance; it names the admin lock in pg_locks. */
const ADMIN_LOCK_KEY = 7_240_312;

/** Under the admin lock (held to the end of `tx`): is `id` the only active admin? */
async function isLastAdmin(tx: Tx, id: string): Promise<boolean> {
  await tx.execute(sql`select pg_advisory_xact_lock(${ADMIN_LOCK_KEY})`);
  const [target] = await tx
    .select({ role: users.role, isActive: users.isActive })
    .from(users)
    .where(eq(users.id, id))
    .limit(1);
  if (target?.role !== "admin" || !target.isActive) return false;
  const [others] = await tx
    .select({ total: count() })
    .from(users)
    .where(and(eq(users.role, "admin"), eq(users.isActive, true), ne(users.id, id)));
  return (others?.total ?? 0) === 0;
}

export function createUsersRepo(orm: Orm) {
  return {
    async findById(id: string): Promise<UserRow | undefined> {
      const [row] = await orm.select().from(users).where(eq(users.id, id)).limit(1);
      return row;
    },

    /** Login accepts the username or the email, either ignoring case. */
    async findByLogin(identifier: string): Promise<UserRow | undefined> {
      const lowered = identifier.toLowerCase();
      const [row] = await orm
        .select()
        .from(users)
        .where(or(sql`lower(${users.username}) = ${lowered}`, sql`lower(${users.email}) = ${lowered}`))
        .limit(1);
      return row;
    },

    async findByEmail(email: string): Promise<UserRow | undefined> {
      const [row] = await orm.select().from(users).where(sql`lower(${users.email}) = ${email.toLowerCase()}`).limit(1);
      return row;
    },

    /** Which of the given username/email another account already holds (ignoring case). */
    async takenFields(values: { username?: string; email?: string }, exceptId?: string) {
      const checks = [
        values.username ? sql`lower(${users.username}) = ${values.username.toLowerCase()}` : undefined,
        values.email ? sql`lower(${users.email}) = ${values.email.toLowerCase()}` : undefined,
      ].filter(Boolean) as SQL[];
      if (checks.length === 0) return [];
      const rows = await orm
        .select({ username: users.username, email: users.email })
        .from(users)
        .where(and(or(...checks), exceptId ? sql`${users.id} <> ${exceptId}` : undefined));
      const taken: ("username" | "email")[] = [];
      if (values.username && rows.some((r) => r.username.toLowerCase() === values.username?.toLowerCase())) {
        taken.push("username");
      }
      if (values.email && rows.some((r) => r.email.toLowerCase() === values.email?.toLowerCase())) taken.push("email");
      return taken;
    },

    /** Replaces a hash only if it is still `current` (a rehash must not undo a concurrent change). */
    async setPasswordHash(id: string, current: string, next: string): Promise<void> {
      await orm
        .update(users)
        .set({ passwordHash: next })
        .where(and(eq(users.id, id), eq(users.passwordHash, current)));
    },

    /** Inserts a user and runs `record` with it, in one transaction. */
    async insert(user: NewUser, record: (tx: Tx, row: UserRow) => Promise<void>): Promise<UserRow> {
      return orm.transaction(async (tx) => {
        const [row] = await tx.insert(users).values(user).returning();
        await record(tx, row as UserRow);
        return row as UserRow;
      });
    },

    /**
     * Updates a user and runs `record` with the row before and after, in one transaction; with
     * `keepAnAdmin`, refuses ("last-admin") when the change would leave no active admin. Changes that
     * can remove an admin are serialised by a transaction-scoped advisory lock, so two of them racing
     * (mutual demotion, crossed deactivation) cannot both see another admin left.
     */
    async update(
      id: string,
      changes: UserUpdate,
      options: { keepAnAdmin: boolean; record: ChangeRecorder },
    ): Promise<{ before: UserRow; after: UserRow } | undefined | "last-admin"> {
      return orm.transaction(async (tx) => {
        if (options.keepAnAdmin && (await isLastAdmin(tx, id))) return "last-admin";
        const [before] = await tx.select().from(users).where(eq(users.id, id)).for("update");
        if (!before) return undefined;
        const [after] = await tx
          .update(users)
          .set({ ...changes, updatedAt: new Date() })
          .where(eq(users.id, id))
          .returning();
        if (!after) return undefined;
        await options.record(tx, before, after);
        return { before, after };
      });
    },

    /**
     * Deletes a user, running `record` with its last row in the same transaction; refuses ("last-admin")
     * to delete the last active admin, serialised like `update`.
     */
    async delete(id: string, record: (tx: Tx, row: UserRow) => Promise<void>): Promise<boolean | "last-admin"> {
      return orm.transaction(async (tx) => {
        if (await isLastAdmin(tx, id)) return "last-admin";
        const [row] = await tx.delete(users).where(eq(users.id, id)).returning();
        if (!row) return false;
        await record(tx, row);
        return true;
      });
    },

    async list(params: UserListParams): Promise<{ rows: UserRow[]; total: number }> {
      const condition = where(params);
      const direction = params.order === "asc" ? asc : desc;
      const [rows, [totals]] = await Promise.all([
        orm
          .select()
          .from(users)
          .where(condition)
          .orderBy(direction(SORT_COLUMNS[params.sort]), direction(users.id))
          .offset(params.offset)
          .limit(params.limit),
        orm.select({ total: count() }).from(users).where(condition),
      ]);
      return { rows, total: totals?.total ?? 0 };
    },

    /** Every matching user in batches, keyset-paginated on the (time-ordered, v7) id, so memory stays flat. */
    async *stream(filter: UserFilter): AsyncGenerator<UserRow> {
      let after: string | undefined;
      for (;;) {
        const page = await orm
          .select()
          .from(users)
          .where(and(where(filter), after ? gt(users.id, after) : undefined))
          .orderBy(asc(users.id))
          .limit(EXPORT_BATCH);
        yield* page;
        after = page.at(-1)?.id;
        if (!after || page.length < EXPORT_BATCH) return;
      }
    },
  };
}

export type UsersRepo = ReturnType<typeof createUsersRepo>;
