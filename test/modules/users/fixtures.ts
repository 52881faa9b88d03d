import { expect } from "bun:test";
import { parse } from "csv-parse/sync";
import { eq } from "drizzle-orm";
import { users } from "../../../src/db/schema";
import {
  type Account,
  API,
  type CallOptions,
  call,
  makeApp,
  PASSWORD,
  promote,
  signUp as register,
} from "../../support";

export { expectError, expectUnauthorized, PASSWORD } from "../../support";
/** A well-formed bcrypt hash for rows inserted straight into the database (nobody logs in with them). */
export const FIXED_HASH = `$2b$04$${"a".repeat(53)}`;
const BCRYPT_HASH = /\$2[aby]?\$\d\d\$/;

export const USER_FIELDS = [
  "bio",
  "created_at",
  "email",
  "email_verified",
  "id",
  "is_active",
  "name",
  "role",
  "updated_at",
  "username",
].sort();
const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Exactly the contract's User: these keys and no others (so no password or hash field), well-typed. */
export function expectUser(user: any, expected: Record<string, unknown> = {}) {
  expect(Object.keys(user).sort()).toEqual(USER_FIELDS);
  expect(user.id).toMatch(UUID);
  expect(["user", "admin"]).toContain(user.role);
  expect(typeof user.is_active).toBe("boolean");
  expect(typeof user.email_verified).toBe("boolean");
  expect(user.created_at).toMatch(ISO_UTC);
  expect(user.updated_at).toMatch(ISO_UTC);
  expect(user).toMatchObject(expected);
}

function submittedSecrets(body: unknown): string[] {
  if (!body || typeof body !== "object") return [];
  const b = body as Record<string, unknown>;
  return [b.password, b.current_password, b.new_password].filter((v): v is string => typeof v === "string");
}

/** The whole app, plus helpers; every response is checked for leaked passwords and bcrypt hashes. */
export async function usersApp() {
  const ctx = await makeApp();
  const { app, deps } = ctx;

  async function req(method: string, path: string, options: CallOptions = {}) {
    const res = await call(app, method, `${API}${path}`, options);
    expect(res.text).not.toMatch(BCRYPT_HASH);
    for (const secret of submittedSecrets(options.body)) expect(res.text).not.toContain(secret);
    return res;
  }

  async function login(username: string, password = PASSWORD) {
    return req("POST", "/auth/login", { body: { username, password } });
  }

  /** A fresh login (a new session) of an existing account. */
  async function session(username: string, password = PASSWORD): Promise<{ access: string; refresh: string }> {
    const res = await login(username, password);
    expect(res.status).toBe(200);
    return { access: res.json.access_token, refresh: res.json.refresh_token };
  }

  /** Registers and logs in (test/support), optionally promoted to admin in the database. */
  async function signUp(
    username: string,
    options: { admin?: boolean; name?: string; email?: string } = {},
  ): Promise<Account> {
    const email = options.email ?? `${username}@example.com`;
    const account = await register(app, { username, email, name: options.name });
    if (options.admin) await promote(deps.db, account.id);
    return account;
  }

  async function row(id: string) {
    const [found] = await deps.db.orm.select().from(users).where(eq(users.id, id));
    return found;
  }

  /** Direct inserts (fast): no API, a fixed hash. */
  async function insertUsers(rows: Partial<typeof users.$inferInsert>[]) {
    return deps.db.orm
      .insert(users)
      .values(
        rows.map((r, i) => ({
          username: `bulk${i}`,
          email: `bulk${i}@example.com`,
          passwordHash: FIXED_HASH,
          ...r,
        })),
      )
      .returning();
  }

  /** The refresh endpoint's verdict on a refresh token. */
  async function refreshStatus(refresh: string) {
    return (await req("POST", "/auth/refresh", { body: { refresh_token: refresh } })).status;
  }

  return { ...ctx, req, login, session, signUp, row, insertUsers, refreshStatus };
}

export type UsersApp = Awaited<ReturnType<typeof usersApp>>;

/** Reads the export back with a real CSV parser (quoted cells, doubled quotes, CRLF). */
export function parseCsv(text: string): string[][] {
  return parse(text, { relax_column_count: true });
}
