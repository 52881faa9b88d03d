import { describe, expect, test } from "bun:test";
import { eq, sql } from "drizzle-orm";
import { auditEvents, authSessions, passkeys, webauthnChallenges } from "../../../src/db/schema";
import type { MailMessage } from "../../../src/platform/mail";
import {
  type Account,
  API,
  call,
  eventually,
  expectError,
  login,
  makeApp,
  promote,
  signUp,
  TEST_DATABASE_URL,
  type TestContext,
} from "../../support";
import { type Overrides, SoftAuthenticator } from "../../webauthn";

const ORIGIN = "http://localhost:5173";

const registrationOptions = async (ctx: TestContext, account: Account) => {
  const res = await call(ctx.app, "POST", `${API}/auth/passkeys/register/options`, { token: account.access, body: {} });
  expect(res.status).toBe(200);
  return res.json;
};

const verifyRegistration = (ctx: TestContext, account: Account, body: unknown, query = "?name=Laptop") =>
  call(ctx.app, "POST", `${API}/auth/passkeys/register/verify${query}`, { token: account.access, body });

async function registerPasskey(ctx: TestContext, account: Account, authenticator = new SoftAuthenticator(ORIGIN)) {
  const res = await verifyRegistration(ctx, account, authenticator.register(await registrationOptions(ctx, account)));
  expect(res.status).toBe(201);
  return { authenticator, passkey: res.json as { id: string; name: string; created_at: string } };
}

const loginOptions = async (ctx: TestContext) => {
  const res = await call(ctx.app, "POST", `${API}/auth/passkeys/login/options`, { body: {} });
  expect(res.status).toBe(200);
  return res.json;
};

const verifyLogin = (ctx: TestContext, body: unknown) =>
  call(ctx.app, "POST", `${API}/auth/passkeys/login/verify`, { body });

async function signIn(ctx: TestContext, authenticator: SoftAuthenticator, overrides: Overrides = {}) {
  return verifyLogin(ctx, authenticator.authenticate(await loginOptions(ctx), overrides));
}

const events = (ctx: TestContext, action: string) =>
  ctx.deps.db.orm.select().from(auditEvents).where(eq(auditEvents.action, action));

describe("passkeys", () => {
  test("register while signed in, then sign in with no password: the tokens work and the session is listed", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const options = await registrationOptions(ctx, account);
    expect(options.rp).toEqual({ name: "ReViewPoint", id: "localhost" });
    expect(options.authenticatorSelection).toMatchObject({ residentKey: "required", userVerification: "required" });
    const authenticator = new SoftAuthenticator(ORIGIN);
    const verified = await verifyRegistration(ctx, account, authenticator.register(options));
    expect(verified.status).toBe(201);
    expect(verified.json).toEqual({ id: expect.any(String), name: "Laptop", created_at: expect.any(String) });

    const signedIn = await signIn(ctx, authenticator);
    expect(signedIn.status).toBe(200);
    expect(signedIn.json.token_type).toBe("bearer");
    expect(signedIn.headers.get("cache-control")).toBe("no-store");
    const me = await call(ctx.app, "GET", `${API}/users/me`, { token: signedIn.json.access_token });
    expect(me.json.id).toBe(account.id);
    const sessions = await call(ctx.app, "GET", `${API}/auth/sessions`, { token: signedIn.json.access_token });
    expect(sessions.json.items).toHaveLength(2);
    const listed = await call(ctx.app, "GET", `${API}/auth/passkeys`, { token: account.access });
    expect(listed.json.items).toEqual([
      { id: verified.json.id, name: "Laptop", created_at: verified.json.created_at, last_used_at: expect.any(String) },
    ]);
    expect((await events(ctx, "passkey.added")).map((e) => e.targetId)).toEqual([verified.json.id]);
    const logins = await events(ctx, "login.succeeded");
    expect(logins.map((e) => e.details.method).sort()).toEqual(["passkey", "password"]);
  });

  test("only a recent login adds a passkey (a stolen token of an older session cannot); the owner is told by mail", async () => {
    const mails: MailMessage[] = [];
    const ctx = await makeApp({}, { mailer: { send: async (mail) => void mails.push(mail) } });
    const account = await signUp(ctx.app);
    const options = await registrationOptions(ctx, account);
    // The session logged in 20 minutes ago (refreshing it since changes nothing).
    await ctx.deps.db.orm
      .update(authSessions)
      .set({ createdAt: new Date(Date.now() - 20 * 60_000) })
      .where(eq(authSessions.userId, account.id));
    const late = await call(ctx.app, "POST", `${API}/auth/passkeys/register/options`, {
      token: account.access,
      body: {},
    });
    expectError(late, 403, "PERMISSION_DENIED");
    const planted = await verifyRegistration(ctx, account, new SoftAuthenticator(ORIGIN).register(options));
    expectError(planted, 403, "PERMISSION_DENIED");
    expect(await ctx.deps.db.orm.select().from(passkeys)).toEqual([]);

    const fresh = await login(ctx.app, account.username);
    await registerPasskey(ctx, { ...account, access: fresh.access_token });
    const notice = mails.find((mail) => mail.subject.includes("passkey was added"));
    expect(notice?.to).toBe(account.email);
    expect(notice?.text).toContain('"Laptop"');
  });

  test("only a recent login removes a passkey: an older session's token gets 403 and the passkey stays", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const { authenticator, passkey } = await registerPasskey(ctx, account);
    await ctx.deps.db.orm
      .update(authSessions)
      .set({ createdAt: new Date(Date.now() - 20 * 60_000) })
      .where(eq(authSessions.userId, account.id));
    const late = await call(ctx.app, "DELETE", `${API}/auth/passkeys/${passkey.id}`, { token: account.access });
    expectError(late, 403, "PERMISSION_DENIED");
    expect((await signIn(ctx, authenticator)).status).toBe(200);

    const fresh = await login(ctx.app, account.username);
    const removed = await call(ctx.app, "DELETE", `${API}/auth/passkeys/${passkey.id}`, { token: fresh.access_token });
    expect(removed.status).toBe(204);
    expect(await ctx.deps.db.orm.select().from(passkeys)).toEqual([]);
  });

  test("a challenge works once: a replayed sign-in or registration is refused", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const authenticator = new SoftAuthenticator(ORIGIN);
    const registration = authenticator.register(await registrationOptions(ctx, account));
    expect((await verifyRegistration(ctx, account, registration)).status).toBe(201);
    expectError(await verifyRegistration(ctx, account, registration), 400, "BAD_REQUEST");

    const assertion = authenticator.authenticate(await loginOptions(ctx));
    expect((await verifyLogin(ctx, assertion)).status).toBe(200);
    expectError(await verifyLogin(ctx, assertion), 401, "INVALID_CREDENTIALS");
  });

  test("one sign-in answer raced ten times starts one session", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const { authenticator } = await registerPasskey(ctx, account);
    const assertion = authenticator.authenticate(await loginOptions(ctx));
    const raced = await Promise.all(Array.from({ length: 10 }, () => verifyLogin(ctx, assertion)));
    expect(raced.map((r) => r.status).sort()).toEqual([200, ...Array(9).fill(401)]);
  });

  test("a wrong origin or RP id is refused, at registration and at sign-in", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    for (const overrides of [
      { origin: "https://evil.example" },
      { rpId: "evil.example" },
      { origin: "http://localhost:4000" },
    ]) {
      const authenticator = new SoftAuthenticator(ORIGIN);
      const res = await verifyRegistration(
        ctx,
        account,
        authenticator.register(await registrationOptions(ctx, account), overrides),
      );
      expectError(res, 400, "BAD_REQUEST");
    }
    expect(await ctx.deps.db.orm.select().from(passkeys)).toEqual([]);
    const { authenticator } = await registerPasskey(ctx, account);
    for (const overrides of [{ origin: "https://evil.example" }, { rpId: "evil.example" }]) {
      expectError(await signIn(ctx, authenticator, overrides), 401, "INVALID_CREDENTIALS");
    }
    expect((await signIn(ctx, authenticator)).status).toBe(200);
  });

  test("WEBAUTHN_RP_ID and WEBAUTHN_ORIGINS decide what is accepted", async () => {
    const ctx = await makeApp({ WEBAUTHN_RP_ID: "example.com", WEBAUTHN_ORIGINS: "https://app.example.com" });
    const account = await signUp(ctx.app);
    const options = await registrationOptions(ctx, account);
    expect(options.rp.id).toBe("example.com");
    const local = new SoftAuthenticator(ORIGIN);
    expectError(await verifyRegistration(ctx, account, local.register(options, {})), 400, "BAD_REQUEST");
    const app = new SoftAuthenticator("https://app.example.com");
    const res = await verifyRegistration(ctx, account, app.register(await registrationOptions(ctx, account)));
    expect(res.status).toBe(201);
    expect((await signIn(ctx, app)).status).toBe(200);
  });

  test("user verification is required", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const authenticator = new SoftAuthenticator(ORIGIN);
    const registration = authenticator.register(await registrationOptions(ctx, account), { unverified: true });
    expectError(await verifyRegistration(ctx, account, registration), 400, "BAD_REQUEST");
    const { authenticator: verified } = await registerPasskey(ctx, account);
    expectError(await signIn(ctx, verified, { unverified: true }), 401, "INVALID_CREDENTIALS");
  });

  test("a cloned authenticator (the counter does not move forward) is refused and audited", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const { authenticator, passkey } = await registerPasskey(ctx, account);
    expect((await signIn(ctx, authenticator, { counter: 5 })).status).toBe(200);
    expectError(await signIn(ctx, authenticator, { counter: 5 }), 401, "INVALID_CREDENTIALS");
    expectError(await signIn(ctx, authenticator, { counter: 3 }), 401, "INVALID_CREDENTIALS");
    const clones = await events(ctx, "passkey.clone_detected");
    expect(clones.map((e) => [e.targetId, e.details.stored_counter, e.details.presented_counter])).toEqual([
      [passkey.id, 5, 5],
      [passkey.id, 5, 3],
    ]);
    expect((await signIn(ctx, authenticator, { counter: 6 })).status).toBe(200);
  });

  test("an authenticator that keeps no counter (always 0) signs in every time", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const { authenticator } = await registerPasskey(ctx, account);
    for (let i = 0; i < 3; i++) expect((await signIn(ctx, authenticator, { counter: 0 })).status).toBe(200);
  });

  test("malformed payloads get the contract's errors, never a 500", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const { authenticator } = await registerPasskey(ctx, account);
    const good = authenticator.authenticate(await loginOptions(ctx));
    const notJson = Buffer.from("not json").toString("base64url");
    const cases: [unknown, number][] = [
      [{}, 422],
      [{ ...good, type: "password" }, 422],
      [{ ...good, response: { ...good.response, clientDataJSON: "%%%" } }, 422],
      [{ ...good, response: { ...good.response, clientDataJSON: notJson } }, 400],
      [{ ...good, response: { ...good.response, signature: "AAAA" } }, 401],
      [{ ...good, response: { ...good.response, authenticatorData: "AAAA" } }, 401],
      [{ ...good, id: "bm90LWEta2V5", rawId: "bm90LWEta2V5" }, 401],
      ["[1,2]", 422],
    ];
    for (const [body, status] of cases) {
      const res = await call(ctx.app, "POST", `${API}/auth/passkeys/login/verify`, {
        body,
        headers: typeof body === "string" ? { "content-type": "application/json" } : {},
      });
      expect({ body, status: res.status }).toEqual({ body, status });
      expect(res.json.error.code).toBeString();
    }
    const registration = authenticator.register(await registrationOptions(ctx, account));
    const garbage = [
      { ...registration, response: { ...registration.response, attestationObject: "AAAA" } },
      { ...registration, response: { ...registration.response, clientDataJSON: notJson } },
    ];
    for (const body of garbage) expectError(await verifyRegistration(ctx, account, body), 400, "BAD_REQUEST");
  });

  test("an expired challenge, or another user's, is refused", async () => {
    const ctx = await makeApp();
    const alice = await signUp(ctx.app);
    const mallory = await signUp(ctx.app);
    const authenticator = new SoftAuthenticator(ORIGIN);
    const stolen = authenticator.register(await registrationOptions(ctx, alice));
    expectError(await verifyRegistration(ctx, mallory, stolen), 400, "BAD_REQUEST");
    expect((await verifyRegistration(ctx, alice, stolen)).status).toBe(201);

    const options = await loginOptions(ctx);
    await ctx.deps.db.orm
      .update(webauthnChallenges)
      .set({ expiresAt: new Date(Date.now() - 1000) })
      .where(eq(webauthnChallenges.challenge, options.challenge));
    expectError(await verifyLogin(ctx, authenticator.authenticate(options)), 401, "INVALID_CREDENTIALS");
  });

  test("list and remove: another user's passkey is a 404, a removed one signs in no more", async () => {
    const ctx = await makeApp();
    const alice = await signUp(ctx.app);
    const bob = await signUp(ctx.app);
    const { authenticator, passkey } = await registerPasskey(ctx, alice);
    expect((await call(ctx.app, "GET", `${API}/auth/passkeys`, { token: bob.access })).json).toEqual({ items: [] });
    const theirs = await call(ctx.app, "DELETE", `${API}/auth/passkeys/${passkey.id}`, { token: bob.access });
    expectError(theirs, 404, "NOT_FOUND");
    expect((await call(ctx.app, "DELETE", `${API}/auth/passkeys/${passkey.id}`, { token: alice.access })).status).toBe(
      204,
    );
    expectError(
      await call(ctx.app, "DELETE", `${API}/auth/passkeys/${passkey.id}`, { token: alice.access }),
      404,
      "NOT_FOUND",
    );
    expectError(await signIn(ctx, authenticator), 401, "INVALID_CREDENTIALS");
    expect((await events(ctx, "passkey.removed")).map((e) => e.targetId)).toEqual([passkey.id]);
  });

  test("a deactivated account cannot sign in with its passkey", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const { authenticator } = await registerPasskey(ctx, account);
    expect((await call(ctx.app, "DELETE", `${API}/users/me`, { token: account.access })).status).toBe(204);
    expectError(await signIn(ctx, authenticator), 401, "INVALID_CREDENTIALS");
  });

  test("the credential kept is the one the response names: another, or one too long to keep, is a 400", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    // The attestation carries a credential id of 1100 bytes; the response names a short one.
    const oversized = new SoftAuthenticator(ORIGIN, 1100).register(await registrationOptions(ctx, account));
    const hidden = await verifyRegistration(ctx, account, { ...oversized, id: "AAAA", rawId: "AAAA" });
    expectError(hidden, 400, "BAD_REQUEST");
    const named = new SoftAuthenticator(ORIGIN).credentialId;
    const other = new SoftAuthenticator(ORIGIN).register(await registrationOptions(ctx, account));
    expectError(await verifyRegistration(ctx, account, { ...other, id: named, rawId: named }), 400, "BAD_REQUEST");
    expect(await ctx.deps.db.orm.select().from(passkeys)).toEqual([]);
  });

  test("the same authenticator cannot be registered twice", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const { authenticator } = await registerPasskey(ctx, account);
    const options = await registrationOptions(ctx, account);
    expect(options.excludeCredentials.map((c: { id: string }) => c.id)).toEqual([authenticator.credentialId]);
    expectError(await verifyRegistration(ctx, account, authenticator.register(options)), 409, "CONFLICT");
  });

  test("without any origin to accept, passkey routes answer 404", async () => {
    const ctx = await makeApp({ ALLOWED_ORIGINS: "*" });
    const account = await signUp(ctx.app);
    const res = await call(ctx.app, "POST", `${API}/auth/passkeys/register/options`, {
      token: account.access,
      body: {},
    });
    expectError(res, 404, "NOT_FOUND");
    expectError(await call(ctx.app, "POST", `${API}/auth/passkeys/login/options`, { body: {} }), 404, "NOT_FOUND");
  });
});

describe.skipIf(!TEST_DATABASE_URL)("passkeys racing (Postgres: concurrent transactions)", () => {
  test("a sign-in racing the account's deletion: one goes first, neither answers 500", async () => {
    const ctx = await makeApp();
    const admin = await signUp(ctx.app);
    await promote(ctx.deps.db, admin.id);
    const account = await signUp(ctx.app);
    const { authenticator, passkey } = await registerPasskey(ctx, account);
    const assertion = authenticator.authenticate(await loginOptions(ctx));
    let signIn: ReturnType<typeof call> | undefined;
    let deletion: ReturnType<typeof call> | undefined;
    // The passkey's row is held until the sign-in and then the deletion wait for a lock, so they meet
    // halfway instead of one finishing before the other starts.
    await ctx.deps.db.orm.transaction(async (tx) => {
      await tx.select({ id: passkeys.id }).from(passkeys).where(eq(passkeys.id, passkey.id)).for("update");
      const waiting = (count: number) => async () => {
        const [row] = (await tx.execute(sql`select count(*)::int as n from pg_locks where not granted`)) as unknown as {
          n: number;
        }[];
        return (row?.n ?? 0) >= count;
      };
      signIn = verifyLogin(ctx, assertion);
      expect(await eventually(waiting(1))).toBe(true);
      deletion = call(ctx.app, "DELETE", `${API}/users/${account.id}`, { token: admin.access });
      expect(await eventually(waiting(2))).toBe(true);
    });
    const [signedIn, deleted] = await Promise.all([signIn, deletion]);
    expect({ signIn: signedIn?.status, deletion: deleted?.status }).toEqual({ signIn: 200, deletion: 204 });
  });
});
