import { and, asc, count, desc, eq, gt, gte, ilike, lte, or, type SQL, sql } from "drizzle-orm";
import type { Orm } from "../../db/client";
import { type UserRow, users } from "../../db/schema";
import type { UserFilter, UserListParams } from "./model";

export type NewUser = typeof users.$inferInsert;
export type UserUpdate = Partial<
  Pick<NewUser, "username" | "email" | "name" | "bio" | "role" | "isActive" | "passwordHash">
>;

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

    async countActiveAdmins(): Promise<number> {
      const [row] = await orm
        .select({ total: count() })
        .from(users)
        .where(and(eq(users.role, "admin"), eq(users.isActive, true)));
      return row?.total ?? 0;
    },

    async insert(user: NewUser): Promise<UserRow> {
      const [row] = await orm.insert(users).values(user).returning();
      return row as UserRow;
    },

    async update(id: string, changes: UserUpdate): Promise<UserRow | undefined> {
      const [row] = await orm
        .update(users)
        .set({ ...changes, updatedAt: new Date() })
        .where(eq(users.id, id))
        .returning();
      return row;
    },

    async delete(id: string): Promise<boolean> {
      const rows = await orm.delete(users).where(eq(users.id, id)).returning({ id: users.id });
      return rows.length > 0;
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
