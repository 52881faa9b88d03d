import { stringify } from "csv-stringify/sync";
import type { Tx } from "../../db/client";
import type { UserRow } from "../../db/schema";
import { errors, loggableError } from "../../http/errors";
import { NO_REQUEST, type RequestMeta } from "../../http/request-meta";
import type { Logger } from "../../platform/logger";
import type { PasswordHasher } from "../../platform/passwords";
import type { AuditRecorder } from "../audit/service";
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
  /** Mails a verification link to the user's (new) address. */
  verifyEmail(user: PublicUser): Promise<void>;
  /** After an email change: the new address gets a link, the old one a notice. */
  emailChanged(user: PublicUser, previousEmail: string): Promise<void>;
}

/** Who is acting and from where, for the audit log. */
export interface Acting {
  /** The signed-in user making the change; null for a registration. */
  actorId: string | null;
  meta: RequestMeta;
}

/** The command line: no request, no signed-in user. */
export const COMMAND_LINE: Acting = { actorId: null, meta: { ...NO_REQUEST, userAgent: "reviewpoint (command line)" } };

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
  "email_verified",
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
const sameAddress = (a: string, b: string) => a.toLowerCase() === b.toLowerCase();

export function createUsersService(deps: {
  repo: UsersRepo;
  passwords: PasswordHasher;
  hooks: AccountHooks;
  passwordAttempts: AttemptLimit;
  logger: Logger;
  audit: AuditRecorder;
}) {
  const { repo, passwords, hooks, passwordAttempts, logger, audit } = deps;

  /** Mail is a consequence, not part of the change: a failure is logged, and the user can ask again. */
  const mailing = (what: string, userId: string, work: Promise<void>) =>
    work.catch((error) => logger.error(`${what} failed`, { user_id: userId, error: loggableError(error) }));

  /** The audit events of one change to a user row, written in its transaction. */
  async function recordChanges(tx: Tx, before: UserRow, after: UserRow, acting: Acting) {
    const event = { actorId: acting.actorId, target: { type: "user" as const, id: after.id }, meta: acting.meta };
    if (before.passwordHash !== after.passwordHash) await audit(tx, { action: "password.changed", ...event });
    if (!sameAddress(before.email, after.email)) {
      await audit(tx, { action: "email.changed", ...event, details: { before: before.email, after: after.email } });
    }
    if (before.role !== after.role || before.isActive !== after.isActive) {
      await audit(tx, {
        action: "user.updated",
        ...event,
        details: {
          before: { role: before.role, is_active: before.isActive },
          after: { role: after.role, is_active: after.isActive },
        },
      });
    }
  }

  async function refuseTaken(values: { username?: string; email?: string }, exceptId?: string) {
    const taken = await repo.takenFields(values, exceptId);
    if (taken.length > 0) {
      throw errors.conflict(
        `${taken.join(" and ")} already registered`,
        taken.map((field) => ({ field, issue: `This ${field} is already taken` })),
      );
    }
  }

  /**
   * Every change to a user goes through here: the row and its audit events (one transaction), then the
   * cache, then the sessions if it lost access, then the mail if the address changed.
   */
  async function apply(id: string, changes: UserUpdate, acting: Acting): Promise<PublicUser> {
    const losesAdmin = changes.role === "user" || changes.isActive === false;
    const result = await repo.update(id, changes, {
      keepAnAdmin: losesAdmin,
      record: (tx, before, after) => recordChanges(tx, before, after, acting),
    });
    if (result === "last-admin") throw lastAdmin();
    if (!result) throw errors.notFound("User");
    await hooks.userChanged(id);
    if (changes.isActive === false) await hooks.endSessions(id);
    const user = toPublicUser(result.after);
    hooks.userUpdated?.(user);
    if (!sameAddress(result.before.email, result.after.email)) {
      await mailing("email change mail", id, hooks.emailChanged(user, result.before.email));
    }
    return user;
  }

  async function update(id: string, changes: AdminChanges, acting: Acting): Promise<PublicUser> {
    const { username, email, name, bio, role, is_active: isActive } = changes;
    await refuseTaken({ username, email }, id);
    // Named one by one, so nothing else a body might carry can reach the row (undefined = unchanged).
    return apply(id, { username, email, name, bio, role, isActive }, acting);
  }

  /** Checks a user's current password, counting the attempt against the account's limit. */
  async function checkPassword(id: string, password: string, field: string): Promise<UserRow> {
    await passwordAttempts.take(id);
    const row = await repo.findById(id);
    if (!row) throw errors.notFound("User");
    if (!(await passwords.verify(password, row.passwordHash))) {
      throw errors.validation([{ field, issue: "Current password is incorrect" }]);
    }
    return row;
  }

  return {
    async get(id: string): Promise<PublicUser> {
      const row = await repo.findById(id);
      if (!row) throw errors.notFound("User");
      return toPublicUser(row);
    },

    /** Registration and admin creation; a race on the unique indexes still ends as 409 (23505). */
    async create(account: NewAccount, acting: Acting): Promise<PublicUser> {
      await refuseTaken(account);
      const row = await repo.insert(
        {
          username: account.username,
          email: account.email,
          name: account.name ?? null,
          role: account.role ?? "user",
          passwordHash: await passwords.hash(account.password),
        },
        (tx, created) =>
          audit(tx, {
            action: "user.created",
            actorId: acting.actorId ?? created.id,
            target: { type: "user", id: created.id },
            details: { username: created.username, role: created.role, by: acting.actorId ? "admin" : "registration" },
            meta: acting.meta,
          }),
      );
      const user = toPublicUser(row);
      await mailing("verification mail", user.id, hooks.verifyEmail(user));
      return user;
    },

    /**
     * A user's own profile: the type has no role or active flag to change. A new email address needs the
     * current password (attempts limited like a password change).
     */
    async updateProfile(id: string, changes: ProfileChanges, meta: RequestMeta): Promise<PublicUser> {
      const { current_password: password, ...fields } = changes;
      if (fields.email !== undefined) {
        const row = await repo.findById(id);
        if (row && !sameAddress(row.email, fields.email)) {
          if (password === undefined) {
            throw errors.validation([{ field: "current_password", issue: "Required to change the email address" }]);
          }
          await checkPassword(id, password, "current_password");
        }
      }
      return update(id, fields, { actorId: id, meta });
    },

    /** An admin's change to any user; demoting or deactivating the last active admin is a 409. */
    update,

    /** Checks the current password (attempts are limited); this session survives, every other one ends. */
    async changePassword(id: string, current: string, next: string, currentSession: string, meta: RequestMeta) {
      await checkPassword(id, current, "current_password");
      await apply(id, { passwordHash: await passwords.hash(next) }, { actorId: id, meta });
      await hooks.endSessions(id, currentSession);
    },

    async deactivate(id: string, meta: RequestMeta): Promise<void> {
      await apply(id, { isActive: false }, { actorId: id, meta });
    },

    /** The user, its rows (by cascade), then its stored bytes. */
    async delete(id: string, acting: Acting): Promise<void> {
      const removeBytes = await hooks.bytesRemover(id);
      const deleted = await repo.delete(id, (tx, row) =>
        audit(tx, {
          action: "user.deleted",
          actorId: acting.actorId,
          target: { type: "user", id },
          details: { username: row.username, email: row.email, role: row.role },
          meta: acting.meta,
        }),
      );
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
