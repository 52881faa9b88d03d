import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { eq, sql } from "drizzle-orm";
import { auditEvents, emailVerifications, users } from "../../../src/db/schema";
import { type Inbox, startInbox } from "../../mail";
import {
  API,
  call,
  eventually,
  expectError,
  makeApp,
  PASSWORD,
  promote,
  signUp,
  TEST_DATABASE_URL,
  type TestContext,
} from "../../support";
import { SAMPLES, upload } from "../files/fixtures";

let inbox: Inbox;
beforeAll(async () => {
  inbox = await startInbox();
});
afterAll(() => inbox.close());

const VERIFY_LINK = "/verify-email?token=";
const verify = (ctx: TestContext, token: string) =>
  call(ctx.app, "POST", `${API}/auth/verify-email`, { body: { token } });
const me = async (ctx: TestContext, token: string) => (await call(ctx.app, "GET", `${API}/users/me`, { token })).json;
const mailApp = (overrides: Record<string, string> = {}) => makeApp({ SMTP_URL: inbox.url, ...overrides });
const uniqueEmail = (label: string) => `${label}.${crypto.randomUUID().slice(0, 8)}@example.com`;

describe("email verification", () => {
  test("registration mails a link; its token verifies the address once", async () => {
    const ctx = await mailApp();
    const account = await signUp(ctx.app, { email: uniqueEmail("new") });
    expect(account.user).toMatchObject({ email_verified: false });
    const token = await inbox.tokenFor(account.email, VERIFY_LINK);
    const verified = await verify(ctx, token);
    expect(verified.status).toBe(200);
    expect(verified.json).toMatchObject({ id: account.id, email_verified: true });
    expect((await me(ctx, account.access)).email_verified).toBe(true);
    expectError(await verify(ctx, token), 400, "BAD_REQUEST");
    const events = await ctx.deps.db.orm.select().from(auditEvents).where(eq(auditEvents.action, "email.verified"));
    expect(events.map((e) => [e.actorId, e.targetId, e.details.email])).toEqual([
      [account.id, account.id, account.email],
    ]);
    // Only the token's hash is kept.
    const stored = JSON.stringify(await ctx.deps.db.orm.select().from(emailVerifications));
    expect(stored).not.toContain(token);
  });

  test("a made-up, malformed or expired token is a 400 (or 422 when it is not even a token)", async () => {
    const ctx = await mailApp();
    const account = await signUp(ctx.app, { email: uniqueEmail("expiring") });
    const token = await inbox.tokenFor(account.email, VERIFY_LINK);
    expectError(await verify(ctx, "made-up"), 400, "BAD_REQUEST");
    expectError(await verify(ctx, "x".repeat(300)), 422, "VALIDATION_ERROR", ["token"]);
    expectError(await verify(ctx, "bad\u0000token"), 422, "VALIDATION_ERROR", ["token"]);
    await ctx.deps.db.orm
      .update(emailVerifications)
      .set({ expiresAt: new Date(Date.now() - 1000) })
      .where(eq(emailVerifications.userId, account.id));
    expectError(await verify(ctx, token), 400, "BAD_REQUEST");
  });

  test("REQUIRE_VERIFIED_EMAIL=true: an unverified account logs in and reads its profile, but uploads get 403", async () => {
    const ctx = await mailApp({ REQUIRE_VERIFIED_EMAIL: "true" });
    const account = await signUp(ctx.app, { email: uniqueEmail("strict") });
    expect((await me(ctx, account.access)).email_verified).toBe(false);
    expectError(await upload(ctx, SAMPLES.text, { token: account.access }), 403, "EMAIL_NOT_VERIFIED");
    expect((await verify(ctx, await inbox.tokenFor(account.email, VERIFY_LINK))).status).toBe(200);
    // The same token's very next request sees the change.
    expect((await upload(ctx, SAMPLES.text, { token: account.access })).status).toBe(201);

    const relaxed = await mailApp();
    const other = await signUp(relaxed.app, { email: uniqueEmail("relaxed") });
    expect((await upload(relaxed, SAMPLES.text, { token: other.access })).status).toBe(201);
  });

  test("a new link on request, rate-limited; none for an address verified already", async () => {
    const ctx = await mailApp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_EMAIL_VERIFY: "2/hour" });
    const account = await signUp(ctx.app, { email: uniqueEmail("again") });
    const ask = () => call(ctx.app, "POST", `${API}/auth/request-verification`, { token: account.access });
    const first = await ask();
    expect(first.status).toBe(202);
    expect(first.headers.get("x-ratelimit-limit")).toBe("2");
    expect((await ask()).status).toBe(202);
    const limited = await ask();
    expectError(limited, 429, "RATE_LIMITED");
    expect(limited.headers.get("retry-after")).toBeString();
    // Three links went out (registration and the two requests), each with its own token.
    const links = () => inbox.messages.filter((m) => m.includes(`To: ${account.email}`) && m.includes(VERIFY_LINK));
    expect(await eventually(() => links().length === 3)).toBe(true);
    const tokens = links().map((m) => m.match(/[?&]token=([A-Za-z0-9_-]+)/)?.[1]);
    expect(new Set(tokens).size).toBe(3);
    expect((await verify(ctx, tokens[2] as string)).status).toBe(200);

    const verified = await mailApp();
    const done = await signUp(verified.app, { email: uniqueEmail("done") });
    expect((await verify(verified, await inbox.tokenFor(done.email, VERIFY_LINK))).status).toBe(200);
    const again = await call(verified.app, "POST", `${API}/auth/request-verification`, { token: done.access });
    expectError(again, 409, "CONFLICT");
  });

  test("an email change needs current_password, unverifies, mails the new address, tells the old one, voids old links", async () => {
    const ctx = await mailApp();
    const oldEmail = uniqueEmail("before");
    const account = await signUp(ctx.app, { email: oldEmail });
    const pending = await inbox.tokenFor(oldEmail, VERIFY_LINK);
    const change = (body: Record<string, unknown>) =>
      call(ctx.app, "PATCH", `${API}/users/me`, { token: account.access, body });
    const newEmail = uniqueEmail("after");
    expectError(await change({ email: newEmail }), 422, "VALIDATION_ERROR", ["current_password"]);
    expectError(await change({ email: newEmail, current_password: "wrong-pass1" }), 422, "VALIDATION_ERROR", [
      "current_password",
    ]);
    const changed = await change({ email: newEmail, current_password: PASSWORD });
    expect(changed.status).toBe(200);
    expect(changed.json).toMatchObject({ email: newEmail, email_verified: false });

    const notice = await inbox.mailTo(oldEmail, "was changed");
    expect(notice).toContain(newEmail);
    expect(notice).not.toContain("token=");
    expectError(await verify(ctx, pending), 400, "BAD_REQUEST");
    const fresh = await inbox.tokenFor(newEmail, VERIFY_LINK);
    expect((await verify(ctx, fresh)).json).toMatchObject({ email: newEmail, email_verified: true });

    // Back to the first address: its old link stays void, and the address is unverified again.
    expect((await change({ email: oldEmail, current_password: PASSWORD })).json.email_verified).toBe(false);
    expectError(await verify(ctx, pending), 400, "BAD_REQUEST");
    const changes = await ctx.deps.db.orm.select().from(auditEvents).where(eq(auditEvents.action, "email.changed"));
    expect(changes.map((e) => e.details)).toEqual([
      { before: oldEmail, after: newEmail },
      { before: newEmail, after: oldEmail },
    ]);
    // Changing only the case, or keeping the address, needs no password.
    expect((await change({ email: oldEmail.toUpperCase() })).status).toBe(200);
  });

  test("an admin's change of address unverifies it too", async () => {
    const ctx = await mailApp();
    const admin = await signUp(ctx.app, { email: uniqueEmail("admin") });
    await promote(ctx.deps.db, admin.id);
    const account = await signUp(ctx.app, { email: uniqueEmail("member") });
    await ctx.deps.db.orm.update(users).set({ emailVerified: true }).where(eq(users.id, account.id));
    const newEmail = uniqueEmail("moved");
    const res = await call(ctx.app, "PATCH", `${API}/users/${account.id}`, {
      token: (
        await call(ctx.app, "POST", `${API}/auth/login`, { body: { username: admin.username, password: PASSWORD } })
      ).json.access_token,
      body: { email: newEmail },
    });
    expect(res.json).toMatchObject({ email: newEmail, email_verified: false });
    await inbox.tokenFor(newEmail, VERIFY_LINK);
  });
});

describe.skipIf(!TEST_DATABASE_URL)(
  "email verification racing an email change (Postgres: concurrent transactions)",
  () => {
    test("the link is spent before the change or void after it, never a deadlock (a 500)", async () => {
      const ctx = await mailApp();
      const oldEmail = uniqueEmail("racing");
      const account = await signUp(ctx.app, { email: oldEmail });
      const token = await inbox.tokenFor(oldEmail, VERIFY_LINK);
      const newEmail = uniqueEmail("raced");
      let verified: ReturnType<typeof verify> | undefined;
      // An email change as the users service makes it: the user's row locked first, then changed (its
      // trigger deletes the pending links). The link is verified while the row is held.
      await ctx.deps.db.orm.transaction(async (tx) => {
        await tx.select({ id: users.id }).from(users).where(eq(users.id, account.id)).for("update");
        verified = verify(ctx, token);
        const waiting = async () => {
          const [row] = (await tx.execute(
            sql`select count(*)::int as n from pg_locks where not granted`,
          )) as unknown as { n: number }[];
          return (row?.n ?? 0) > 0;
        };
        expect(await eventually(waiting)).toBe(true);
        await tx.update(users).set({ email: newEmail }).where(eq(users.id, account.id));
      });
      expectError(await (verified as ReturnType<typeof verify>), 400, "BAD_REQUEST");
      expect(await me(ctx, account.access)).toMatchObject({ email: newEmail, email_verified: false });
    });
  },
);
