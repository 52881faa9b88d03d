import { describe, expect, spyOn, test } from "bun:test";
import { eq } from "drizzle-orm";
import { decodeJwt, SignJWT } from "jose";
import { authSessions, users } from "../../../src/db/schema";
import { API, call, login, makeApp, signUp } from "../../support";

const sign = (secret: string, claims: Record<string, unknown>, alg = "HS256") =>
  new SignJWT(claims).setProtectedHeader({ alg }).sign(new TextEncoder().encode(secret));

describe("register", () => {
  test("201 with the user, and no password or hash in the body", async () => {
    const { app } = await makeApp();
    const res = await call(app, "POST", `${API}/auth/register`, {
      body: { username: "ada.l", email: "ada@example.com", password: "analytical1", name: "Ada" },
    });
    expect(res.status).toBe(201);
    expect(res.json).toMatchObject({
      username: "ada.l",
      email: "ada@example.com",
      name: "Ada",
      role: "user",
      is_active: true,
    });
    expect(res.json.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(res.json.created_at).toEndWith("Z");
    expect(res.text).not.toContain("analytical1");
    expect(res.text).not.toContain("$2");
  });

  test("username or email differing only in case → 409 naming the field", async () => {
    const { app } = await makeApp();
    await signUp(app, { username: "Grace", email: "grace@example.com" });
    const sameName = await call(app, "POST", `${API}/auth/register`, {
      body: { username: "gRACE", email: "other@example.com", password: "secret123" },
    });
    expect(sameName.status).toBe(409);
    expect(sameName.json.error.code).toBe("CONFLICT");
    expect(sameName.json.error.details).toEqual([{ field: "username", issue: expect.any(String) }]);
    const sameEmail = await call(app, "POST", `${API}/auth/register`, {
      body: { username: "grace2", email: "GRACE@Example.com", password: "secret123" },
    });
    expect(sameEmail.status).toBe(409);
    expect(sameEmail.json.error.details[0].field).toBe("email");
  });

  test("each rule broken → 422 naming every field, the password not echoed", async () => {
    const { app } = await makeApp();
    const res = await call(app, "POST", `${API}/auth/register`, {
      body: { username: "a b", email: "nope", password: "lettersonly" },
    });
    expect(res.status).toBe(422);
    expect(res.json.error.code).toBe("VALIDATION_ERROR");
    expect(res.json.error.details.map((d: { field: string }) => d.field).sort()).toEqual([
      "email",
      "password",
      "username",
    ]);
    expect(res.text).not.toContain("lettersonly");
    for (const password of ["12345678", "short1", "x1".repeat(65)]) {
      const bad = await call(app, "POST", `${API}/auth/register`, {
        body: { username: "okname", email: "ok@example.com", password },
      });
      expect(bad.status).toBe(422);
    }
  });

  test("100 concurrent registrations of one username → exactly one 201, the rest 409", async () => {
    const { app } = await makeApp();
    const attempts = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        call(app, "POST", `${API}/auth/register`, {
          body: { username: "racer", email: `racer${i}@example.com`, password: "secret123" },
        }),
      ),
    );
    const statuses = attempts.map((r) => r.status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(1);
    expect(statuses.filter((s) => s === 409)).toHaveLength(99);
    // Whether the pre-check or the unique index caught it, the field is named.
    for (const res of attempts.filter((r) => r.status === 409))
      expect(res.json.error.details[0].field).toBe("username");
  });
});

describe("login", () => {
  test("by username or email (any case), JSON or OAuth2 form; claims as the contract says", async () => {
    const { app, deps } = await makeApp();
    const { user, password } = await signUp(app, { username: "Linus", email: "linus@example.com" });
    for (const body of [
      { username: "linus", password },
      { username: "LINUS@example.com", password },
      { email: "linus@example.com", password },
      new URLSearchParams({ grant_type: "password", username: "Linus", password }),
    ]) {
      const res = await call(app, "POST", `${API}/auth/login`, { body });
      expect(res.status).toBe(200);
      expect(res.json).toMatchObject({ token_type: "bearer", expires_in: 3600 });
      const access = decodeJwt(res.json.access_token);
      expect(access).toMatchObject({ sub: user.id, username: "Linus", role: "user", type: "access" });
      expect((access.exp as number) - (access.iat as number)).toBe(deps.config.ACCESS_TOKEN_EXPIRE_MINUTES * 60);
      expect(typeof access.jti).toBe("string");
      const refresh = decodeJwt(res.json.refresh_token);
      expect(refresh.type).toBe("refresh");
      expect((refresh.exp as number) - (refresh.iat as number)).toBe(7 * 86_400);
    }
  });

  test("unknown user and wrong password get the same answer, and both run a bcrypt verify", async () => {
    const { app } = await makeApp();
    await signUp(app, { username: "known" });
    const verify = spyOn(Bun.password, "verify");
    try {
      const wrong = await call(app, "POST", `${API}/auth/login`, {
        body: { username: "known", password: "wrongpass1" },
      });
      expect(verify).toHaveBeenCalledTimes(1);
      const unknown = await call(app, "POST", `${API}/auth/login`, {
        body: { username: "ghost", password: "wrongpass1" },
      });
      expect(verify).toHaveBeenCalledTimes(2);
      for (const res of [wrong, unknown]) {
        expect(res.status).toBe(401);
        expect(res.headers.get("www-authenticate")).toBe("Bearer");
        expect(res.json.error.code).toBe("INVALID_CREDENTIALS");
      }
      expect(wrong.json.error.message).toBe(unknown.json.error.message);
    } finally {
      verify.mockRestore();
    }
  });

  test("a deactivated account cannot log in", async () => {
    const { app, deps } = await makeApp();
    const { user, password } = await signUp(app);
    await deps.db.orm.update(users).set({ isActive: false }).where(eq(users.id, user.id));
    const res = await call(app, "POST", `${API}/auth/login`, { body: { username: user.username, password } });
    expect(res.status).toBe(401);
  });

  test("missing identifier → 422", async () => {
    const { app } = await makeApp();
    const res = await call(app, "POST", `${API}/auth/login`, { body: { password: "secret123" } });
    expect(res.status).toBe(422);
    expect(res.json.error.details[0].field).toBe("username");
  });
});

describe("tokens", () => {
  test("GET /auth/me equals GET /users/me", async () => {
    const { app } = await makeApp();
    const account = await signUp(app);
    const me = await call(app, "GET", `${API}/auth/me`, { token: account.access });
    const usersMe = await call(app, "GET", `${API}/users/me`, { token: account.access });
    expect(me.status).toBe(200);
    expect(me.json).toEqual(usersMe.json);
    expect(me.json.id).toBe(account.user.id);
  });

  test("a refresh token is not an access token, and the reverse", async () => {
    const { app } = await makeApp();
    const account = await signUp(app);
    const asAccess = await call(app, "GET", `${API}/users/me`, { token: account.refresh });
    expect(asAccess.status).toBe(401);
    expect(asAccess.json.error.code).toBe("INVALID_TOKEN");
    const asRefresh = await call(app, "POST", `${API}/auth/refresh`, { body: { refresh_token: account.access } });
    expect(asRefresh.status).toBe(401);
  });

  test("expired → TOKEN_EXPIRED; tampered, alg none and wrong secret → INVALID_TOKEN", async () => {
    const { app, deps } = await makeApp();
    const account = await signUp(app);
    const claims = decodeJwt(account.access);
    const now = Math.floor(Date.now() / 1000);
    const expired = await sign(deps.config.secretKey, { ...claims, iat: now - 7200, exp: now - 3600 });
    const res = await call(app, "GET", `${API}/users/me`, { token: expired });
    expect(res.status).toBe(401);
    expect(res.json.error.code).toBe("TOKEN_EXPIRED");

    const [header, payload, signature] = account.access.split(".") as [string, string, string];
    const forged = Buffer.from(JSON.stringify({ ...claims, role: "admin" })).toString("base64url");
    const none = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url");
    const candidates = [
      `${header}.${forged}.${signature}`,
      `${none}.${payload}.`,
      await sign("not-the-server-secret-not-the-server-secret", claims),
      await sign(deps.config.secretKey, claims, "HS512"),
      "not.a.jwt",
    ];
    for (const token of candidates) {
      const rejected = await call(app, "GET", `${API}/users/me`, { token });
      expect(rejected.status).toBe(401);
      expect(rejected.json.error.code).toBe("INVALID_TOKEN");
      expect(rejected.headers.get("www-authenticate")).toBe("Bearer");
    }
  });

  test("refresh rotates; replaying the old token (no grace window) → 401 and the whole session ends", async () => {
    const { app, deps } = await makeApp({ REFRESH_GRACE_SECONDS: "0" });
    const account = await signUp(app);
    const rotated = await call(app, "POST", `${API}/auth/refresh`, {
      headers: { authorization: `Bearer ${account.refresh}` },
    });
    expect(rotated.status).toBe(200);
    expect(rotated.json.refresh_token).not.toBe(account.refresh);
    expect((await call(app, "GET", `${API}/users/me`, { token: rotated.json.access_token })).status).toBe(200);

    const replay = await call(app, "POST", `${API}/auth/refresh`, { body: { refresh_token: account.refresh } });
    expect(replay.status).toBe(401);
    // The session is gone: the newest refresh token and every access token of it fail too.
    expect(
      (await call(app, "POST", `${API}/auth/refresh`, { body: { refresh_token: rotated.json.refresh_token } })).status,
    ).toBe(401);
    expect((await call(app, "GET", `${API}/users/me`, { token: rotated.json.access_token })).status).toBe(401);
    expect((await call(app, "GET", `${API}/users/me`, { token: account.access })).status).toBe(401);
    const [session] = await deps.db.orm.select().from(authSessions).where(eq(authSessions.userId, account.user.id));
    expect(session?.revokedAt).toBeInstanceOf(Date);
    // Other logins of the same account are unaffected.
    const again = await login(app, account.user.username, account.password);
    expect((await call(app, "GET", `${API}/users/me`, { token: again.access_token })).status).toBe(200);
  });

  test("logout revokes the access token and the session's refresh token; logging in again works", async () => {
    const { app } = await makeApp();
    const account = await signUp(app);
    const other = await login(app, account.user.username, account.password);
    const out = await call(app, "POST", `${API}/auth/logout`, {
      token: account.access,
      body: { refresh_token: other.refresh_token },
    });
    expect(out.status).toBe(204);
    expect(out.text).toBe("");
    expect((await call(app, "GET", `${API}/users/me`, { token: account.access })).status).toBe(401);
    expect((await call(app, "POST", `${API}/auth/refresh`, { body: { refresh_token: account.refresh } })).status).toBe(
      401,
    );
    // The refresh token given in the body belonged to another session of the same user: it ends too.
    expect(
      (await call(app, "POST", `${API}/auth/refresh`, { body: { refresh_token: other.refresh_token } })).status,
    ).toBe(401);
    const fresh = await login(app, account.user.username, account.password);
    expect((await call(app, "GET", `${API}/users/me`, { token: fresh.access_token })).status).toBe(200);
  });

  test("logout without a token → 401 AUTHENTICATION_REQUIRED", async () => {
    const { app } = await makeApp();
    const res = await call(app, "POST", `${API}/auth/logout`);
    expect(res.status).toBe(401);
    expect(res.json.error.code).toBe("AUTHENTICATION_REQUIRED");
  });

  test("revocations survive a restart with an empty store (the database is the record)", async () => {
    const first = await makeApp();
    const account = await signUp(first.app);
    expect((await call(first.app, "POST", `${API}/auth/logout`, { token: account.access })).status).toBe(204);
    // A new process: same database and secret, but nothing in its (memory) store.
    const { MemoryStore } = await import("../../../src/platform/kv");
    const restarted = await makeApp({}, { config: first.deps.config, kv: new MemoryStore() });
    expect((await call(restarted.app, "GET", `${API}/users/me`, { token: account.access })).status).toBe(401);
  });
});

describe("refresh races and guess limits", () => {
  test("two refreshes racing with one token get the same new pair; a replay after the grace window ends the session", async () => {
    const { app } = await makeApp({ REFRESH_GRACE_SECONDS: "1" });
    const account = await signUp(app);
    const refresh = () => call(app, "POST", `${API}/auth/refresh`, { body: { refresh_token: account.refresh } });
    const [first, second] = await Promise.all([refresh(), refresh()]);
    expect([first?.status, second?.status]).toEqual([200, 200]);
    expect(second?.json).toEqual(first?.json);
    const pair = first?.json;
    expect((await call(app, "GET", `${API}/users/me`, { token: pair.access_token })).status).toBe(200);
    // Still in the window: a third racer gets the same pair too.
    expect((await refresh()).json).toEqual(pair);

    await Bun.sleep(1100);
    expect((await refresh()).status).toBe(401);
    expect((await call(app, "GET", `${API}/users/me`, { token: pair.access_token })).status).toBe(401);
    expect(
      (await call(app, "POST", `${API}/auth/refresh`, { body: { refresh_token: pair.refresh_token } })).status,
    ).toBe(401);
  });

  test("an account's username and email share one login bucket", async () => {
    const { app } = await makeApp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_LOGIN: "3/minute" });
    const account = await signUp(app); // its login is the bucket's first hit
    const attempt = (identifier: string) =>
      call(app, "POST", `${API}/auth/login`, { body: { username: identifier, password: "wrongpass1" } });
    expect((await attempt(account.username)).status).toBe(401);
    expect((await attempt(account.email.toUpperCase())).status).toBe(401);
    expect((await attempt(account.username)).status).toBe(429);
    const byEmailField = await call(app, "POST", `${API}/auth/login`, {
      body: { email: account.email, password: account.password },
    });
    expect(byEmailField.status).toBe(429);
  });

  test("password-change attempts are limited per account, atomically", async () => {
    const { app } = await makeApp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_PASSWORD_CHANGE: "2/hour" });
    const account = await signUp(app);
    const other = await signUp(app);
    const change = (who: typeof account, current: string) =>
      call(app, "POST", `${API}/users/me/password`, {
        token: who.access,
        body: { current_password: current, new_password: "brandnew42" },
      });
    expect((await change(account, "wrongpass1")).status).toBe(422);
    expect((await change(account, "wrongpass2")).status).toBe(422);
    const blocked = await change(account, account.password);
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get("retry-after"))).toBeGreaterThan(0);
    await login(app, account.username, account.password);
    // Another account's attempts are its own; a burst of them gets no more through than the limit.
    const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => change(other, `wrongpass${i}`)));
    expect(burst.filter((r) => r.status !== 429)).toHaveLength(2);
  });

  test("a password hashed at another cost is rehashed at BCRYPT_ROUNDS on login", async () => {
    const cheap = await makeApp({ BCRYPT_ROUNDS: "4" });
    const account = await signUp(cheap.app);
    const costOf = async () => {
      const [row] = await cheap.deps.db.orm.select().from(users).where(eq(users.id, account.id));
      return row?.passwordHash.slice(0, 7);
    };
    expect(await costOf()).toBe("$2b$04$");
    const stronger = await makeApp({ BCRYPT_ROUNDS: "5" });
    await login(stronger.app, account.username, account.password);
    expect(await costOf()).toBe("$2b$05$");
    await login(stronger.app, account.username, account.password);
    await login(cheap.app, account.username, account.password);
  });
});
