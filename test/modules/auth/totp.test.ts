import { describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { SignJWT } from "jose";
import { auditEvents, mfaRecoveryCodes, userMfa } from "../../../src/db/schema";
import { RedisStore } from "../../../src/platform/kv";
import type { Mailer, MailMessage } from "../../../src/platform/mail";
import {
  type Account,
  API,
  call,
  expectError,
  expectUnauthorized,
  HAS_REDIS_SERVER,
  makeApp,
  memoryLogger,
  PASSWORD,
  promote,
  signUp,
  TEST_DATABASE_URL,
  type TestContext,
  throwawayRedis,
} from "../../support";
import { HAS_OATHTOOL, oathtool, testClock } from "../../totp";
import { SoftAuthenticator } from "../../webauthn";

const STEP = 30_000;

/** An app whose TOTP clock the test moves, and one account with TOTP enabled through oathtool's codes. */
async function withTotp(overrides: Record<string, string> = {}, mailer?: Mailer) {
  const clock = testClock();
  const ctx = await makeApp(overrides, { now: clock.now, mailer });
  const account = await signUp(ctx.app);
  return { ctx, clock, account, ...(await enableTotp(ctx, clock, account)) };
}

/** Enrols and confirms TOTP for `account`, then moves the clock to the next step. */
async function enableTotp(ctx: TestContext, clock: ReturnType<typeof testClock>, account: Account) {
  const enrolment = await call(ctx.app, "POST", `${API}/auth/mfa/totp`, {
    token: account.access,
    body: { password: PASSWORD },
  });
  expect(enrolment.status).toBe(200);
  expect(enrolment.headers.get("cache-control")).toBe("no-store");
  const { secret } = enrolment.json as { secret: string; otpauth_url: string };
  const confirmed = await call(ctx.app, "POST", `${API}/auth/mfa/totp/confirm`, {
    token: account.access,
    body: { code: await oathtool(secret, clock.now()) },
  });
  expect(confirmed.status).toBe(200);
  expect(confirmed.headers.get("cache-control")).toBe("no-store");
  clock.advance(STEP);
  return { secret, enrolment: enrolment.json, recoveryCodes: confirmed.json.recovery_codes as string[] };
}

const passwordStep = async (ctx: TestContext, account: Account) => {
  const res = await call(ctx.app, "POST", `${API}/auth/login`, {
    body: { username: account.username, password: PASSWORD },
  });
  expect(res.status).toBe(200);
  return res.json;
};

const codeStep = (ctx: TestContext, mfaToken: string, code: string) =>
  call(ctx.app, "POST", `${API}/auth/login/mfa`, { body: { mfa_token: mfaToken, code } });

const events = (ctx: TestContext, action: string) =>
  ctx.deps.db.orm.select().from(auditEvents).where(eq(auditEvents.action, action));

describe.skipIf(!HAS_OATHTOOL)("TOTP with oathtool as the authenticator", () => {
  test("enrol, confirm, then log in in two steps; the tokens work", async () => {
    const { ctx, clock, account, secret, enrolment, recoveryCodes } = await withTotp();
    expect(secret).toMatch(/^[A-Z2-7]{32}$/);
    const url = new URL(enrolment.otpauth_url);
    expect(url.protocol).toBe("otpauth:");
    expect(url.searchParams.get("secret")).toBe(secret);
    expect(url.searchParams.get("issuer")).toBe("ReViewPoint");
    expect(url.searchParams.get("algorithm")).toBe("SHA1");
    expect(url.searchParams.get("digits")).toBe("6");
    expect(url.searchParams.get("period")).toBe("30");
    expect(recoveryCodes).toHaveLength(10);
    expect(new Set(recoveryCodes).size).toBe(10);
    for (const code of recoveryCodes) expect(code).toMatch(/^[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}$/);

    const challenge = await passwordStep(ctx, account);
    expect(Object.keys(challenge).sort()).toEqual(["methods", "mfa_required", "mfa_token"]);
    expect(challenge).toMatchObject({ mfa_required: true, methods: ["totp"] });
    // As an authenticator app shows it.
    const code = await oathtool(secret, clock.now());
    const done = await codeStep(ctx, challenge.mfa_token, `${code.slice(0, 3)} ${code.slice(3)}`);
    expect(done.status).toBe(200);
    expect(done.headers.get("cache-control")).toBe("no-store");
    expect(Object.keys(done.json).sort()).toEqual(["access_token", "expires_in", "refresh_token", "token_type"]);
    expect((await call(ctx.app, "GET", `${API}/users/me`, { token: done.json.access_token })).json.id).toBe(account.id);
    expect((await events(ctx, "mfa.enabled")).map((e) => e.targetId)).toEqual([account.id]);
    const logins = await events(ctx, "login.succeeded");
    expect(logins.map((e) => e.details.method).sort()).toEqual(["password", "totp"]);
  });

  test("each code works once: a reused code, an old code and a wrong one are refused; one step of drift is fine", async () => {
    const { ctx, clock, account, secret } = await withTotp();
    const login = async (code: string) => codeStep(ctx, (await passwordStep(ctx, account)).mfa_token, code);

    clock.advance(10 * STEP);
    // A code from one step back (the phone's clock is late) is accepted...
    const late = await oathtool(secret, clock.now() - STEP);
    expect((await login(late)).status).toBe(200);
    // ...and once only.
    expectError(await login(late), 401, "INVALID_CREDENTIALS");
    const current = await oathtool(secret, clock.now());
    expect((await login(current)).status).toBe(200);
    expectError(await login(current), 401, "INVALID_CREDENTIALS");
    // One step ahead (the phone's clock is early) is accepted; two steps back is too old.
    expect((await login(await oathtool(secret, clock.now() + STEP))).status).toBe(200);
    clock.advance(5 * STEP);
    expectError(await login(await oathtool(secret, clock.now() - 2 * STEP)), 401, "INVALID_CREDENTIALS");
    const right = await oathtool(secret, clock.now());
    const wrong = String((Number(right) + 1) % 1_000_000).padStart(6, "0");
    expectError(await login(wrong), 401, "INVALID_CREDENTIALS");
    expect((await login(right)).status).toBe(200);

    const failures = await events(ctx, "mfa.failed");
    expect(failures).toHaveLength(4);
    expect(failures.every((e) => e.targetId === account.id && e.details.stage === "login")).toBe(true);
  });

  test("a wrong code leaves the mfa_token usable; a used one, an expired one or another kind of token is refused", async () => {
    const { ctx, clock, account, secret } = await withTotp();
    const { mfa_token: mfaToken } = await passwordStep(ctx, account);
    expectError(await codeStep(ctx, mfaToken, "000000"), 401, "INVALID_CREDENTIALS");
    expect((await codeStep(ctx, mfaToken, await oathtool(secret, clock.now()))).status).toBe(200);
    clock.advance(STEP);
    expectUnauthorized(await codeStep(ctx, mfaToken, await oathtool(secret, clock.now())), "INVALID_TOKEN");

    const key = new TextEncoder().encode(ctx.deps.config.secretKey);
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ type: "mfa", username: account.username, role: "user" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(account.id)
      .setJti(crypto.randomUUID())
      .setIssuedAt(now - 600)
      .setExpirationTime(now - 300)
      .sign(key);
    expectUnauthorized(await codeStep(ctx, expired, await oathtool(secret, clock.now())), "TOKEN_EXPIRED");
    expectUnauthorized(await codeStep(ctx, account.access, await oathtool(secret, clock.now())), "INVALID_TOKEN");
    expectUnauthorized(await codeStep(ctx, "garbage", "123456"), "INVALID_TOKEN");
    // The mfa_token opens nothing else.
    const fresh = await passwordStep(ctx, account);
    expectUnauthorized(await call(ctx.app, "GET", `${API}/users/me`, { token: fresh.mfa_token }), "INVALID_TOKEN");
    const refresh = await call(ctx.app, "POST", `${API}/auth/refresh`, { body: { refresh_token: fresh.mfa_token } });
    expectUnauthorized(refresh, "INVALID_TOKEN");
  });

  test("a password change or reset voids the mfa_tokens issued before it", async () => {
    const mails: MailMessage[] = [];
    const { ctx, clock, account, secret } = await withTotp({}, { send: async (mail) => void mails.push(mail) });
    const code = () => oathtool(secret, clock.now());
    const stale = (await passwordStep(ctx, account)).mfa_token;
    const changed = await call(ctx.app, "POST", `${API}/users/me/password`, {
      token: account.access,
      body: { current_password: PASSWORD, new_password: "changed123" },
    });
    expect(changed.status).toBe(204);
    expectUnauthorized(await codeStep(ctx, stale, await code()), "INVALID_TOKEN");

    const beforeReset = await call(ctx.app, "POST", `${API}/auth/login`, {
      body: { username: account.username, password: "changed123" },
    });
    await call(ctx.app, "POST", `${API}/auth/request-password-reset`, { body: { email: account.email } });
    const token = decodeURIComponent(mails.at(-1)?.text.match(/[?&]token=([A-Za-z0-9._%-]+)/)?.[1] ?? "");
    const reset = await call(ctx.app, "POST", `${API}/auth/reset-password`, {
      body: { token, new_password: "resetted123" },
    });
    expect(reset.status).toBe(200);
    expectUnauthorized(await codeStep(ctx, beforeReset.json.mfa_token, await code()), "INVALID_TOKEN");
    // An mfa_token of the current password still completes its login.
    const current = await call(ctx.app, "POST", `${API}/auth/login`, {
      body: { username: account.username, password: "resetted123" },
    });
    expect((await codeStep(ctx, current.json.mfa_token, await code())).status).toBe(200);
  });

  test("one code raced by ten logins completes one of them", async () => {
    const { ctx, clock, account, secret, recoveryCodes } = await withTotp();
    const challenges = await Promise.all(Array.from({ length: 10 }, () => passwordStep(ctx, account)));
    const code = await oathtool(secret, clock.now());
    const raced = await Promise.all(challenges.map((c) => codeStep(ctx, c.mfa_token, code)));
    expect(raced.map((r) => r.status).sort()).toEqual([200, ...Array(9).fill(401)]);
    const again = await Promise.all(challenges.map((c) => codeStep(ctx, c.mfa_token, recoveryCodes[0] as string)));
    expect(again.filter((r) => r.status === 200)).toHaveLength(1);
  });

  test("recovery codes work once each, at login and to turn TOTP off", async () => {
    const { ctx, account, recoveryCodes } = await withTotp();
    const [first, second] = recoveryCodes as [string, string];
    expect((await codeStep(ctx, (await passwordStep(ctx, account)).mfa_token, first.toUpperCase())).status).toBe(200);
    const reused = await codeStep(ctx, (await passwordStep(ctx, account)).mfa_token, first);
    expectError(reused, 401, "INVALID_CREDENTIALS");
    const logins = await events(ctx, "login.succeeded");
    expect(logins.map((e) => e.details.method)).toContain("recovery_code");

    const off = await call(ctx.app, "DELETE", `${API}/auth/mfa/totp`, {
      token: account.access,
      body: { password: PASSWORD, code: second.replaceAll("-", "") },
    });
    expect(off.status).toBe(204);
    const plain = await call(ctx.app, "POST", `${API}/auth/login`, {
      body: { username: account.username, password: PASSWORD },
    });
    expect(plain.json.access_token).toBeString();
    expect(await ctx.deps.db.orm.select().from(mfaRecoveryCodes)).toEqual([]);
  });

  test("enrolment rules: no confirm without an enrolment, no second enrolment, the password and the code are checked", async () => {
    const clock = testClock();
    const ctx = await makeApp({}, { now: clock.now });
    const account = await signUp(ctx.app);
    const confirm = (code: string) =>
      call(ctx.app, "POST", `${API}/auth/mfa/totp/confirm`, { token: account.access, body: { code } });
    expectError(await confirm("123456"), 409, "CONFLICT");
    const wrongPassword = await call(ctx.app, "POST", `${API}/auth/mfa/totp`, {
      token: account.access,
      body: { password: "not-my-password1" },
    });
    expectError(wrongPassword, 422, "VALIDATION_ERROR", ["password"]);
    const enrolment = await call(ctx.app, "POST", `${API}/auth/mfa/totp`, {
      token: account.access,
      body: { password: PASSWORD },
    });
    expectError(await confirm("000000"), 422, "VALIDATION_ERROR", ["code"]);
    // Pending: the login does not ask for a code yet.
    expect((await passwordStep(ctx, account)).access_token).toBeString();
    expect((await confirm(await oathtool(enrolment.json.secret, clock.now()))).status).toBe(200);
    expectError(await confirm(await oathtool(enrolment.json.secret, clock.now() + STEP)), 409, "CONFLICT");
    const again = await call(ctx.app, "POST", `${API}/auth/mfa/totp`, {
      token: account.access,
      body: { password: PASSWORD },
    });
    expectError(again, 409, "CONFLICT");
    expect((await passwordStep(ctx, account)).mfa_required).toBe(true);
  });

  test("turning TOTP off needs the right password and a fresh code", async () => {
    const { ctx, clock, account, secret } = await withTotp();
    const disable = (password: string, code: string) =>
      call(ctx.app, "DELETE", `${API}/auth/mfa/totp`, { token: account.access, body: { password, code } });
    const code = await oathtool(secret, clock.now());
    expectError(await disable("not-my-password1", code), 422, "VALIDATION_ERROR", ["password"]);
    expectError(await disable(PASSWORD, "999999"), 422, "VALIDATION_ERROR", ["code"]);
    expect((await disable(PASSWORD, code)).status).toBe(204);
    expectError(await disable(PASSWORD, code), 409, "CONFLICT");
    expect((await passwordStep(ctx, account)).access_token).toBeString();
    const off = await events(ctx, "mfa.disabled");
    expect(off.map((e) => [e.actorId, e.targetId, e.details.by])).toEqual([[account.id, account.id, "self"]]);
  });

  test("an admin may turn a user's TOTP off; others may not; the user is told", async () => {
    const mails: MailMessage[] = [];
    const { ctx, account } = await withTotp({}, { send: async (mail) => void mails.push(mail) });
    const admin = await signUp(ctx.app);
    await promote(ctx.deps.db, admin.id);
    const adminToken = (
      await call(ctx.app, "POST", `${API}/auth/login`, { body: { username: admin.username, password: PASSWORD } })
    ).json.access_token;
    const reset = (token: string, id: string) => call(ctx.app, "DELETE", `${API}/users/${id}/mfa`, { token });
    expectError(await reset(account.access, account.id), 403, "PERMISSION_DENIED");
    expectError(await reset(adminToken, "0196f0a2-7c1e-7000-8000-000000000000"), 404, "NOT_FOUND");
    expect((await reset(adminToken, account.id)).status).toBe(204);
    expect(await ctx.deps.db.orm.select().from(userMfa).where(eq(userMfa.userId, account.id))).toEqual([]);
    expect((await passwordStep(ctx, account)).access_token).toBeString();
    const off = await events(ctx, "mfa.disabled");
    expect(off.map((e) => [e.actorId, e.targetId, e.details.by])).toEqual([[admin.id, account.id, "admin"]]);
    const notice = mails.find((mail) => mail.subject.includes("turned off"));
    expect(notice?.to).toBe(account.email);
    expect(notice?.text).toContain("an administrator");
  });

  test("the secret is sealed at rest, the recovery codes hashed, and neither is ever shown or logged again", async () => {
    const { ctx, account, secret, recoveryCodes } = await withTotp();
    const [row] = await ctx.deps.db.orm.select().from(userMfa).where(eq(userMfa.userId, account.id));
    expect(row?.secret).toMatch(/^v1\./);
    expect(row?.secret).not.toContain(secret);
    const stored = JSON.stringify(await ctx.deps.db.orm.select().from(mfaRecoveryCodes));
    for (const code of recoveryCodes) {
      expect(stored).not.toContain(code);
      expect(stored).not.toContain(code.replaceAll("-", ""));
    }
    for (const path of ["/users/me", "/auth/me", "/auth/sessions"]) {
      expect((await call(ctx.app, "GET", `${API}${path}`, { token: account.access })).text).not.toContain(secret);
    }
    expect(ctx.logs.join("\n")).not.toContain(secret);
    for (const code of recoveryCodes) expect(ctx.logs.join("\n")).not.toContain(code);
  });

  test("guesses are limited per account (RATE_LIMIT_MFA), even with the right code after", async () => {
    const { ctx, clock, account, secret } = await withTotp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_MFA: "3/minute" });
    const { mfa_token: mfaToken } = await passwordStep(ctx, account);
    for (let i = 0; i < 2; i++) expectError(await codeStep(ctx, mfaToken, "000000"), 401, "INVALID_CREDENTIALS");
    // The confirm at enrolment counted one.
    const limited = await codeStep(ctx, mfaToken, await oathtool(secret, clock.now()));
    expectError(limited, 429, "RATE_LIMITED");
    expect(limited.headers.get("retry-after")).toBeString();
  });

  test("a run of wrong codes is capped however slow (RATE_LIMIT_MFA_FAILURES); a right code starts it again", async () => {
    const { ctx, clock, account, secret } = await withTotp({
      RATE_LIMIT_ENABLED: "true",
      RATE_LIMIT_MFA: "100/minute",
      RATE_LIMIT_MFA_FAILURES: "3/day",
    });
    const nextCode = async () => {
      clock.advance(30_000);
      return oathtool(secret, clock.now());
    };
    // The right code at enrolment started the run again: two wrong, then a right one, is a login.
    let { mfa_token: mfaToken } = await passwordStep(ctx, account);
    for (let i = 0; i < 2; i++) expectError(await codeStep(ctx, mfaToken, "000000"), 401, "INVALID_CREDENTIALS");
    expect((await codeStep(ctx, mfaToken, await nextCode())).status).toBe(200);
    // And it started the run again too: three wrong ones, then even the right code waits for a day.
    ({ mfa_token: mfaToken } = await passwordStep(ctx, account));
    for (let i = 0; i < 3; i++) expectError(await codeStep(ctx, mfaToken, "000000"), 401, "INVALID_CREDENTIALS");
    const capped = await codeStep(ctx, mfaToken, await nextCode());
    expectError(capped, 429, "RATE_LIMITED");
    expect(Number(capped.headers.get("retry-after"))).toBeGreaterThan(23 * 3600);
  });

  test("a passkey sign-in satisfies MFA", async () => {
    const { ctx, account } = await withTotp();
    const authenticator = new SoftAuthenticator("http://localhost:5173");
    const options = await call(ctx.app, "POST", `${API}/auth/passkeys/register/options`, {
      token: account.access,
      body: {},
    });
    const registered = await call(ctx.app, "POST", `${API}/auth/passkeys/register/verify`, {
      token: account.access,
      body: authenticator.register(options.json),
    });
    expect(registered.status).toBe(201);
    const login = await call(ctx.app, "POST", `${API}/auth/passkeys/login/options`, { body: {} });
    const signedIn = await call(ctx.app, "POST", `${API}/auth/passkeys/login/verify`, {
      body: authenticator.authenticate(login.json),
    });
    expect(signedIn.status).toBe(200);
    expect(signedIn.json.access_token).toBeString();
  });
});

describe.skipIf(!HAS_OATHTOOL || !HAS_REDIS_SERVER)("TOTP with a Redis of its own", () => {
  test("a right code while Redis is away still starts the run of wrong ones again once it is back", async () => {
    const redis = await throwawayRedis();
    const kv = new RedisStore(redis.url, memoryLogger());
    await kv.connect();
    const clock = testClock();
    const ctx = await makeApp(
      { RATE_LIMIT_ENABLED: "true", RATE_LIMIT_MFA: "1000/minute", RATE_LIMIT_MFA_FAILURES: "3/day" },
      { now: clock.now, kv },
    );
    try {
      const account = await signUp(ctx.app);
      const { secret } = await enableTotp(ctx, clock, account);
      let { mfa_token: mfaToken } = await passwordStep(ctx, account);
      for (let i = 0; i < 2; i++) expectError(await codeStep(ctx, mfaToken, "000000"), 401, "INVALID_CREDENTIALS");
      redis.signal("SIGSTOP");
      clock.advance(STEP);
      expect((await codeStep(ctx, mfaToken, await oathtool(secret, clock.now()))).status).toBe(200);
      redis.signal("SIGCONT");
      expect(await kv.ping()).toBe(true);
      // Three wrong codes are what the cap allows after a right one, then the right code waits.
      ({ mfa_token: mfaToken } = await passwordStep(ctx, account));
      for (let i = 0; i < 3; i++) expectError(await codeStep(ctx, mfaToken, "000000"), 401, "INVALID_CREDENTIALS");
      clock.advance(STEP);
      expectError(await codeStep(ctx, mfaToken, await oathtool(secret, clock.now())), 429, "RATE_LIMITED");
    } finally {
      redis.signal("SIGCONT");
      await kv.close();
      await redis.stop();
    }
  });
});

describe.skipIf(!HAS_OATHTOOL || !TEST_DATABASE_URL)("TOTP changes racing (Postgres: concurrent transactions)", () => {
  test("turning TOTP off while an admin resets it and a recovery code signs in: each answers, none with a 500", async () => {
    const clock = testClock();
    const ctx = await makeApp({}, { now: clock.now });
    const admin = await signUp(ctx.app);
    await promote(ctx.deps.db, admin.id);
    const statuses = new Set<number>();
    for (let round = 0; round < 12; round++) {
      const account = await signUp(ctx.app);
      const { secret, recoveryCodes } = await enableTotp(ctx, clock, account);
      const { mfa_token: mfaToken } = await passwordStep(ctx, account);
      const raced = await Promise.all([
        call(ctx.app, "DELETE", `${API}/auth/mfa/totp`, {
          token: account.access,
          body: { password: PASSWORD, code: await oathtool(secret, clock.now()) },
        }),
        call(ctx.app, "DELETE", `${API}/users/${account.id}/mfa`, { token: admin.access }),
        codeStep(ctx, mfaToken, recoveryCodes[0] as string),
      ]);
      for (const res of raced) statuses.add(res.status);
      expect(await ctx.deps.db.orm.select().from(userMfa).where(eq(userMfa.userId, account.id))).toEqual([]);
    }
    expect([...statuses].filter((status) => status >= 500)).toEqual([]);
  });

  test("a confirm racing a restarted enrolment enables only the secret its code proved", async () => {
    const clock = testClock();
    const ctx = await makeApp({}, { now: clock.now });
    const outcomes = new Set<string>();
    for (let round = 0; round < 10; round++) {
      const account = await signUp(ctx.app);
      const enrol = () =>
        call(ctx.app, "POST", `${API}/auth/mfa/totp`, { token: account.access, body: { password: PASSWORD } });
      const { secret } = (await enrol()).json;
      const code = await oathtool(secret, clock.now());
      const [confirmed] = await Promise.all([
        call(ctx.app, "POST", `${API}/auth/mfa/totp/confirm`, { token: account.access, body: { code } }),
        enrol(),
      ]);
      clock.advance(STEP);
      outcomes.add(String(confirmed.status));
      const first = await passwordStep(ctx, account);
      if (confirmed.status === 200) {
        // TOTP is on, with the authenticator the confirm's code came from.
        expect((await codeStep(ctx, first.mfa_token, await oathtool(secret, clock.now()))).status).toBe(200);
      } else {
        // The new enrolment came first (the code is of the old secret: 422) or meanwhile (409); none is on.
        expect(confirmed.json.error.code).toBe(confirmed.status === 409 ? "CONFLICT" : "VALIDATION_ERROR");
        expect(first.access_token).toBeString();
      }
    }
    expect([...outcomes].every((status) => ["200", "409", "422"].includes(status))).toBe(true);
  });
});
