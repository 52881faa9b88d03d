import { stringify } from "csv-stringify/sync";
import type { Role } from "../../db/schema";
import { errors } from "../../http/errors";
import type { PasswordHasher } from "../../platform/passwords";
import type { Revocation } from "../auth/revocation";
import type { UserCache } from "./cache";
import { type ProfileChanges, type PublicUser, toPublicUser, type UserFilter, type UserListParams } from "./model";
import type { UsersRepo, UserUpdate } from "./repo";

export interface NewAccount {
  username: string;
  email: string;
  password: string;
  name?: string;
  role?: Role;
}

const EXPORT_COLUMNS = [
  "id",
  "username",
  "email",
  "name",
  "bio",
  "role",
  "is_active",
  "created_at",
  "updated_at",
] as const;

/** One CSV record; a cell starting with = + - @ is prefixed with ' so spreadsheets do not run it as a formula. */
function csvLine(user: PublicUser): string {
  return stringify([EXPORT_COLUMNS.map((column) => user[column])], {
    cast: {
      boolean: (value) => String(value),
      string: (value) => (/^[=+\-@\t\r]/.test(value) ? `'${value}` : value),
    },
  });
}

export function createUsersService(deps: {
  repo: UsersRepo;
  cache: UserCache;
  passwords: PasswordHasher;
  revocation: Revocation;
}) {
  const { repo, cache, passwords, revocation } = deps;

  async function refuseTaken(values: { username?: string; email?: string }, exceptId?: string) {
    const taken = await repo.takenFields(values, exceptId);
    if (taken.length > 0) {
      throw errors.conflict(
        `${taken.join(" and ")} already registered`,
        taken.map((field) => ({ field, issue: `This ${field} is already taken` })),
      );
    }
  }

  async function apply(id: string, changes: UserUpdate): Promise<PublicUser> {
    const row = await repo.update(id, changes);
    await cache.invalidate(id);
    if (!row) throw errors.notFound("User");
    return toPublicUser(row);
  }

  /** Refuses a change that would leave no active admin to administer the deployment. */
  async function keepAnAdmin(id: string, losesAdmin: boolean): Promise<void> {
    if (!losesAdmin) return;
    const row = await repo.findById(id);
    if (row?.role === "admin" && row.isActive && (await repo.countActiveAdmins()) <= 1) {
      throw errors.conflict("This is the last active admin; promote another user first");
    }
  }

  async function get(id: string): Promise<PublicUser> {
    const row = await repo.findById(id);
    if (!row) throw errors.notFound("User");
    return toPublicUser(row);
  }

  return {
    get,

    /** Registration and admin creation; a race on the unique indexes still ends as 409 (23505). */
    async create(account: NewAccount): Promise<PublicUser> {
      await refuseTaken(account);
      const row = await repo.insert({
        username: account.username,
        email: account.email,
        name: account.name ?? null,
        role: account.role ?? "user",
        passwordHash: await passwords.hash(account.password),
      });
      return toPublicUser(row);
    },

    async update(id: string, changes: ProfileChanges): Promise<PublicUser> {
      const { username, email, name, bio, role, is_active: isActive } = changes;
      await refuseTaken({ username, email }, id);
      await keepAnAdmin(id, role === "user" || isActive === false);
      // Named one by one, so nothing else a body might carry can reach the row (undefined = unchanged).
      const user = await apply(id, { username, email, name, bio, role, isActive });
      if (isActive === false) await revocation.revokeUserSessions(id);
      return user;
    },

    /** Checks the current password; the caller's own session survives, every other one ends. */
    async changePassword(id: string, current: string, next: string, currentSession: string): Promise<void> {
      const row = await repo.findById(id);
      if (!row) throw errors.notFound("User");
      if (!(await passwords.verify(current, row.passwordHash))) {
        throw errors.validation([{ field: "current_password", issue: "Current password is incorrect" }]);
      }
      await apply(id, { passwordHash: await passwords.hash(next) });
      await revocation.revokeUserSessions(id, currentSession);
    },

    async deactivate(id: string): Promise<void> {
      await keepAnAdmin(id, true);
      await apply(id, { isActive: false });
      await revocation.revokeUserSessions(id);
    },

    async delete(id: string): Promise<void> {
      await keepAnAdmin(id, true);
      const deleted = await repo.delete(id);
      await cache.invalidate(id);
      if (!deleted) throw errors.notFound("User");
    },

    async list(params: UserListParams) {
      const { rows, total } = await repo.list(params);
      return { items: rows.map(toPublicUser), total, offset: params.offset, limit: params.limit };
    },

    /** Every matching user as CSV or JSON lines, produced while the client reads (no row cap). */
    export(filter: UserFilter, format: "csv" | "json"): ReadableStream<Uint8Array> {
      const rows = repo.stream(filter);
      const encoder = new TextEncoder();
      const line = format === "json" ? (user: PublicUser) => `${JSON.stringify(user)}\n` : csvLine;
      let header = format === "csv";
      return new ReadableStream({
        async pull(controller) {
          if (header) {
            header = false;
            controller.enqueue(encoder.encode(stringify([EXPORT_COLUMNS as unknown as string[]])));
          }
          const next = await rows.next();
          if (next.done) controller.close();
          else controller.enqueue(encoder.encode(line(toPublicUser(next.value))));
        },
        cancel: () => void rows.return(undefined),
      });
    },
  };
}

export type UsersService = ReturnType<typeof createUsersService>;
