import { stringify } from "csv-stringify/sync";
import { errors, loggableError } from "../../http/errors";
import type { Logger } from "../../platform/logger";
import type { PasswordHasher } from "../../platform/passwords";
import {
  type AdminChanges,
  type NewAccount,
  type ProfileChanges,
  type PublicUser,
  toPublicUser,
  type UserFilter,
  type UserListParams,
} from "./model";
import type { UsersRepo, UserUpdate } from "./repo";

/** What the users module needs from whoever caches users and holds sessions (the auth module). */
export interface AccountHooks {
  /** Called after every change to a user row, once the database has it. */
  userChanged(id: string): Promise<void>;
  /** The user as it now is, for the user's own sockets. */
  userUpdated?(user: PublicUser): void;
  /** Ends every login of the user except `keep`. */
  endSessions(id: string, keep?: string): Promise<void>;
  /** Before a user is deleted: notes what it stored, and returns what removes those bytes afterwards. */
  bytesRemover(id: string): Promise<() => Promise<void>>;
}

/** A limit on attempts: `take` counts one and throws (429) once over. */
export interface AttemptLimit {
  take(key: string): Promise<void>;
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

const lastAdmin = () => errors.conflict("This is the last active admin; promote another user first");

export function createUsersService(deps: {
  repo: UsersRepo;
  passwords: PasswordHasher;
  hooks: AccountHooks;
  passwordAttempts: AttemptLimit;
  logger: Logger;
}) {
  const { repo, passwords, hooks, passwordAttempts, logger } = deps;

  async function refuseTaken(values: { username?: string; email?: string }, exceptId?: string) {
    const taken = await repo.takenFields(values, exceptId);
    if (taken.length > 0) {
      throw errors.conflict(
        `${taken.join(" and ")} already registered`,
        taken.map((field) => ({ field, issue: `This ${field} is already taken` })),
      );
    }
  }

  /** Every change to a user goes through here: the row, then the cache, then the sessions if it lost access. */
  async function apply(id: string, changes: UserUpdate): Promise<PublicUser> {
    const losesAdmin = changes.role === "user" || changes.isActive === false;
    const row = await repo.update(id, changes, losesAdmin);
    if (row === "last-admin") throw lastAdmin();
    if (!row) throw errors.notFound("User");
    await hooks.userChanged(id);
    if (changes.isActive === false) await hooks.endSessions(id);
    const user = toPublicUser(row);
    hooks.userUpdated?.(user);
    return user;
  }

  async function update(id: string, changes: AdminChanges): Promise<PublicUser> {
    const { username, email, name, bio, role, is_active: isActive } = changes;
    await refuseTaken({ username, email }, id);
    // Named one by one, so nothing else a body might carry can reach the row (undefined = unchanged).
    return apply(id, { username, email, name, bio, role, isActive });
  }

  return {
    async get(id: string): Promise<PublicUser> {
      const row = await repo.findById(id);
      if (!row) throw errors.notFound("User");
      return toPublicUser(row);
    },

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

    /** A user's own profile: the type has no role or active flag to change. */
    updateProfile: (id: string, changes: ProfileChanges) => update(id, changes),

    /** An admin's change to any user; demoting or deactivating the last active admin is a 409. */
    update,

    /** Checks the current password (attempts are limited); this session survives, every other one ends. */
    async changePassword(id: string, current: string, next: string, currentSession: string): Promise<void> {
      await passwordAttempts.take(id);
      const row = await repo.findById(id);
      if (!row) throw errors.notFound("User");
      if (!(await passwords.verify(current, row.passwordHash))) {
        throw errors.validation([{ field: "current_password", issue: "Current password is incorrect" }]);
      }
      await apply(id, { passwordHash: await passwords.hash(next) });
      await hooks.endSessions(id, currentSession);
    },

    async deactivate(id: string): Promise<void> {
      await apply(id, { isActive: false });
    },

    /** The user, its rows (by cascade), then its stored bytes. */
    async delete(id: string): Promise<void> {
      const removeBytes = await hooks.bytesRemover(id);
      const deleted = await repo.delete(id);
      if (deleted === "last-admin") throw lastAdmin();
      if (!deleted) throw errors.notFound("User");
      await hooks.userChanged(id);
      // The user is gone either way; bytes left behind are logged, not a failed request.
      await removeBytes().catch((error: Error) =>
        logger.error("removing a deleted user's files failed", { user_id: id, error: loggableError(error) }),
      );
    },

    async list(params: UserListParams) {
      const { rows, total } = await repo.list(params);
      return { items: rows.map(toPublicUser), total, offset: params.offset, limit: params.limit };
    },

    /**
     * Every matching user as CSV or JSON lines, produced while the client reads (no row cap). The first
     * batch is read before this returns, so a failing query is an error response, not a cut-off 200.
     */
    async export(filter: UserFilter, format: "csv" | "json"): Promise<ReadableStream<Uint8Array>> {
      const rows = repo.stream(filter);
      const first = await rows.next();
      const encoder = new TextEncoder();
      const line = format === "json" ? (user: PublicUser) => `${JSON.stringify(user)}\n` : csvLine;
      let pending: IteratorResult<Parameters<typeof toPublicUser>[0]> | undefined = first;
      return new ReadableStream({
        start(controller) {
          if (format === "csv") controller.enqueue(encoder.encode(stringify([[...EXPORT_COLUMNS]])));
        },
        async pull(controller) {
          try {
            const next = pending ?? (await rows.next());
            pending = undefined;
            if (next.done) controller.close();
            else controller.enqueue(encoder.encode(line(toPublicUser(next.value))));
          } catch (error) {
            logger.error("user export failed mid-stream", { error: loggableError(error) });
            controller.error(error);
          }
        },
        cancel: () => void rows.return(undefined),
      });
    },
  };
}

export type UsersService = ReturnType<typeof createUsersService>;
