import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { count, sql } from "drizzle-orm";
import { createServices } from "../../../src/app";
import { auditEvents } from "../../../src/db/schema";
import { type Inbox, startInbox } from "../../mail";
import {
  API,
  type CallOptions,
  call,
  expectError,
  login,
  makeApp,
  PASSWORD,
  promote,
  signUp,
  type TestContext,
} from "../../support";
import { HAS_OATHTOOL, oathtool, testClock } from "../../totp";
import { SoftAuthenticator } from "../../webauthn";

let inbox: Inbox;
beforeAll(async () => {
  inbox = await startInbox();
});
afterAll(() => inbox.close());

const allEvents = async (ctx: TestContext) =>
  ctx.deps.db.orm.select().from(auditEvents).orderBy(auditEvents.at, auditEvents.id);
const adminToken = async (ctx: TestContext) => {
  const admin = await signUp(ctx.app);
  await promote(ctx.deps.db, admin.id);
  return { admin, token: (await login(ctx.app, admin.username)).access_token };
};
const exec = (ctx: TestContext, statement: string) => ctx.deps.db.orm.execute(sql.raw(statement));

describe("an event commits with its change, or not at all", () => {
  test("a change rolled back at commit leaves no event; a committed one has exactly one", async () => {
    const ctx = await makeApp();
    const { token } = await adminToken(ctx);
    const target = await signUp(ctx.app);
    // Refuses, at commit time, any transaction that made someone an admin: after the event was written.
    await exec(
      ctx,
      `create function test_no_new_admins() returns trigger language plpgsql as $$
       begin if new.role = 'admin' and old.role <> 'admin' then raise exception 'refused at commit'; end if; return null; end $$`,
    );
    await exec(
      ctx,
      "create constraint trigger test_no_new_admins after update on users deferrable initially deferred for each row execute function test_no_new_admins()",
    );
    try {
      const refused = await call(ctx.app, "PATCH", `${API}/users/${target.id}`, { token, body: { role: "admin" } });
      expectError(refused, 500, "INTERNAL_ERROR");
    } finally {
      await exec(ctx, "drop trigger test_no_new_admins on users");
      await exec(ctx, "drop function test_no_new_admins");
    }
    expect((await allEvents(ctx)).filter((e) => e.action === "user.updated")).toEqual([]);
    expect((await call(ctx.app, "GET", `${API}/users/${target.id}`, { token })).json.role).toBe("user");

    const promoted = await call(ctx.app, "PATCH", `${API}/users/${target.id}`, { token, body: { role: "admin" } });
    expect(promoted.status).toBe(200);
    const updates = (await allEvents(ctx)).filter((e) => e.action === "user.updated");
    expect(updates.map((e) => e.details)).toEqual([
      { before: { role: "user", is_active: true }, after: { role: "admin", is_active: true } },
    ]);
  });

  test("an event that cannot be written takes its change down with it", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    await exec(
      ctx,
      `create function test_no_password_events() returns trigger language plpgsql as $$
       begin if new.action = 'password.changed' then raise exception 'audit store refused'; end if; return new; end $$`,
    );
    await exec(
      ctx,
      "create trigger test_no_password_events before insert on audit_events for each row execute function test_no_password_events()",
    );
    try {
      const change = await call(ctx.app, "POST", `${API}/users/me/password`, {
        token: account.access,
        body: { current_password: PASSWORD, new_password: "another123" },
      });
      expectError(change, 500, "INTERNAL_ERROR");
    } finally {
      await exec(ctx, "drop trigger test_no_password_events on audit_events");
      await exec(ctx, "drop function test_no_password_events");
    }
    await login(ctx.app, account.username, PASSWORD);
    expect((await allEvents(ctx)).some((e) => e.action === "password.changed")).toBe(false);
  });
});

describe("GET /admin/audit", () => {
  test("newest first, filtered by actor, target, action and time, paged with the total", async () => {
    const ctx = await makeApp();
    const { admin, token } = await adminToken(ctx);
    const user = await signUp(ctx.app);
    await call(ctx.app, "POST", `${API}/auth/login`, { body: { username: user.username, password: "wrong-pass1" } });
    await call(ctx.app, "PATCH", `${API}/users/${user.id}`, { token, body: { is_active: false } });
    const list = async (query: string) => {
      const res = await call(ctx.app, "GET", `${API}/admin/audit${query}`, { token });
      expect(res.status).toBe(200);
      return res.json;
    };
    const everything = await list("");
    const events = await allEvents(ctx);
    expect(everything.total).toBe(events.length);
    expect(everything.items.map((e: { id: string }) => e.id)).toEqual(events.map((e) => e.id).reverse());
    const [newest] = everything.items;
    expect(Object.keys(newest).sort()).toEqual(
      [
        "action",
        "actor_id",
        "at",
        "details",
        "id",
        "ip",
        "request_id",
        "target_id",
        "target_type",
        "user_agent",
      ].sort(),
    );
    expect(newest).toMatchObject({
      action: "user.updated",
      actor_id: admin.id,
      target_type: "user",
      target_id: user.id,
    });

    const byAdmin = await list(`?actor_id=${admin.id}`);
    expect(byAdmin.items.every((e: { actor_id: string }) => e.actor_id === admin.id)).toBe(true);
    const aboutUser = await list(`?target_id=${user.id}`);
    expect(aboutUser.items.map((e: { action: string }) => e.action)).toEqual([
      "user.updated",
      "login.failed",
      "login.succeeded",
      "user.created",
    ]);
    expect((await list("?action=login.failed")).items).toHaveLength(1);
    const page = await list(`?target_id=${user.id}&limit=2&offset=1`);
    expect({ total: page.total, actions: page.items.map((e: { action: string }) => e.action) }).toEqual({
      total: 4,
      actions: ["login.failed", "login.succeeded"],
    });
    const future = new Date(Date.now() + 60_000).toISOString();
    expect((await list(`?since=${future}`)).total).toBe(0);
    expect((await list(`?until=${future}`)).total).toBe(events.length);
    expect(
      (await list(`?since=${encodeURIComponent(newest.at)}&until=${encodeURIComponent(newest.at)}`)).items[0].id,
    ).toBe(newest.id);
  });

  test("admins only; bad filters are a 422", async () => {
    const ctx = await makeApp();
    const { token } = await adminToken(ctx);
    const user = await signUp(ctx.app);
    expectError(await call(ctx.app, "GET", `${API}/admin/audit`), 401, "AUTHENTICATION_REQUIRED");
    expectError(await call(ctx.app, "GET", `${API}/admin/audit`, { token: user.access }), 403, "PERMISSION_DENIED");
    expectError(
      await call(ctx.app, "GET", `${API}/admin/audit/export`, { token: user.access }),
      403,
      "PERMISSION_DENIED",
    );
    for (const query of ["?actor_id=nope", "?since=yesterday", "?limit=0", "?limit=101", "?action=a%00b"]) {
      expectError(await call(ctx.app, "GET", `${API}/admin/audit${query}`, { token }), 422, "VALIDATION_ERROR");
    }
  });
});

describe("GET /admin/audit/export", () => {
  test("streams every matching event as JSON lines, newest first, past one batch", async () => {
    const ctx = await makeApp();
    const { token } = await adminToken(ctx);
    const at = new Date();
    // More than a batch (500), many sharing one instant: the keyset pages on (at, id).
    const rows = Array.from({ length: 1234 }, (_, i) => ({
      id: Bun.randomUUIDv7(),
      at: i % 2 ? at : new Date(at.getTime() - i),
      action: "file.downloaded",
      details: { n: i },
    }));
    await ctx.deps.db.orm.insert(auditEvents).values(rows);
    const res = await fetchExport(ctx, token, "?action=file.downloaded");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/x-ndjson; charset=utf-8");
    const lines = (await res.text())
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line));
    expect(lines).toHaveLength(1234);
    expect(new Set(lines.map((e) => e.id)).size).toBe(1234);
    const keys = lines.map((e) => `${e.at}|${e.id}`);
    expect(keys).toEqual([...keys].sort().reverse());
    expect(lines.every((e) => e.action === "file.downloaded")).toBe(true);
  });
});

async function fetchExport(ctx: TestContext, token: string, query = "") {
  return ctx.app.handle(
    new Request(`http://localhost${API}/admin/audit/export${query}`, { headers: { authorization: `Bearer ${token}` } }),
  );
}

describe("retention", () => {
  test("events older than AUDIT_RETENTION_DAYS are pruned in batches; newer ones stay", async () => {
    const ctx = await makeApp({ AUDIT_RETENTION_DAYS: "30" });
    const day = 86_400_000;
    const old = Array.from({ length: 7 }, (_, i) => ({ action: "logout", at: new Date(Date.now() - (31 + i) * day) }));
    const recent = Array.from({ length: 3 }, (_, i) => ({
      action: "logout",
      at: new Date(Date.now() - (29 - i) * day),
    }));
    await ctx.deps.db.orm.insert(auditEvents).values([...old, ...recent]);
    const { audit } = createServices(ctx.deps);
    // Two instances pruning at once share the work through the lock: each event goes once.
    const [first, second] = await Promise.all([audit.prune(Date.now(), 2), audit.prune(Date.now(), 2)]);
    expect(first + second).toBe(7);
    const [left] = await ctx.deps.db.orm.select({ n: count() }).from(auditEvents);
    expect(left?.n).toBe(3);
    expect(await audit.prune(Date.now(), 2)).toBe(0);
  });
});

describe("the switch", () => {
  test("AUDIT_ENABLED=false records nothing", async () => {
    const ctx = await makeApp({ AUDIT_ENABLED: "false" });
    const account = await signUp(ctx.app);
    await call(ctx.app, "POST", `${API}/auth/login`, { body: { username: account.username, password: "wrong-pass1" } });
    await call(ctx.app, "POST", `${API}/auth/logout`, { token: account.access });
    expect(await allEvents(ctx)).toEqual([]);
  });
});

describe.skipIf(!HAS_OATHTOOL)("no secret in any event", () => {
  test("a run through every audited action: each event names who, from where, and holds no secret", async () => {
    const clock = testClock();
    const ctx = await makeApp({ SMTP_URL: inbox.url, TRUST_PROXY: "true" }, { now: clock.now });
    const secrets: string[] = [];
    const keep = <T extends string>(value: T) => {
      secrets.push(value);
      return value;
    };
    const headers = { "user-agent": "AuditProbe/1.0", "x-forwarded-for": "192.0.2.44" };
    let requests = 0;
    const send = async (method: string, path: string, options: CallOptions = {}) => {
      requests++;
      const res = await call(ctx.app, method, `${API}${path}`, {
        ...options,
        headers: { ...headers, "x-request-id": `probe-${requests}`, ...options.headers },
      });
      for (const field of ["access_token", "refresh_token", "mfa_token", "secret"]) {
        if (typeof res.json?.[field] === "string") keep(res.json[field]);
      }
      for (const code of res.json?.recovery_codes ?? []) keep(code);
      return res;
    };
    const email = `probe.${crypto.randomUUID().slice(0, 8)}@example.com`;
    const password = keep("Probe-password-1");
    await send("POST", "/auth/register", { body: { username: "probe", email, password } });
    await send("POST", "/auth/login", { body: { username: "probe", password: keep("Wrong-guess-22") } });
    await send("POST", "/auth/login", {
      body: { username: keep("nobody-named-this"), password: keep("Wrong-guess-33") },
    });
    let session = (await send("POST", "/auth/login", { body: { username: "probe", password } })).json;
    const verifyToken = keep(await inbox.tokenFor(email, "/verify-email?token="));
    await send("POST", "/auth/verify-email", { body: { token: verifyToken } });

    // Refresh reuse, a revoked session, logout and logout-all.
    const rotated = (await send("POST", "/auth/refresh", { body: { refresh_token: session.refresh_token } })).json;
    await Bun.sleep(10);
    await send("POST", "/auth/refresh", { body: { refresh_token: session.refresh_token } }); // inside the grace window
    const spare = (await send("POST", "/auth/login", { body: { username: "probe", password } })).json;
    const [spareSession] = (await send("GET", "/auth/sessions", { token: spare.access_token })).json.items;
    await send("DELETE", `/auth/sessions/${spareSession.id}`, { token: rotated.access_token });
    const reused = await makeApp(
      { REFRESH_GRACE_SECONDS: "0" },
      { config: { ...ctx.deps.config, REFRESH_GRACE_SECONDS: 0 } },
    );
    const again = (await send("POST", "/auth/login", { body: { username: "probe", password } })).json;
    await call(reused.app, "POST", `${API}/auth/refresh`, { body: { refresh_token: again.refresh_token }, headers });
    await call(reused.app, "POST", `${API}/auth/refresh`, { body: { refresh_token: again.refresh_token }, headers });
    await send("POST", "/auth/logout", { token: rotated.access_token });
    session = (await send("POST", "/auth/login", { body: { username: "probe", password } })).json;
    await send("POST", "/auth/logout-all", { token: session.access_token });
    session = (await send("POST", "/auth/login", { body: { username: "probe", password } })).json;

    // Passwords: a change and a reset.
    const changed = keep("Changed-password-2");
    await send("POST", "/users/me/password", {
      token: session.access_token,
      body: { current_password: password, new_password: changed },
    });
    await send("POST", "/auth/request-password-reset", { body: { email } });
    const resetToken = keep(await inbox.tokenFor(email, "/reset-password?token="));
    const reset = keep("Reset-password-3");
    await send("POST", "/auth/reset-password", { body: { token: resetToken, new_password: reset } });
    session = (await send("POST", "/auth/login", { body: { username: "probe", password: reset } })).json;

    // The email.
    const moved = `moved.${crypto.randomUUID().slice(0, 8)}@example.com`;
    await send("PATCH", "/users/me", { token: session.access_token, body: { email: moved, current_password: reset } });

    // TOTP: enrol, confirm, a failed and a good second step, a recovery code, off.
    const { secret } = (
      await send("POST", "/auth/mfa/totp", { token: session.access_token, body: { password: reset } })
    ).json;
    const codes = (
      await send("POST", "/auth/mfa/totp/confirm", {
        token: session.access_token,
        body: { code: keep(await oathtool(secret, clock.now())) },
      })
    ).json.recovery_codes as string[];
    clock.advance(30_000);
    const challenge = (await send("POST", "/auth/login", { body: { username: "probe", password: reset } })).json;
    const right = keep(await oathtool(secret, clock.now()));
    // Not "000000": generated request ids end in such digits.
    const wrong = keep(right === "987654" ? "987655" : "987654");
    await send("POST", "/auth/login/mfa", { body: { mfa_token: challenge.mfa_token, code: wrong } });
    await send("POST", "/auth/login/mfa", { body: { mfa_token: challenge.mfa_token, code: right } });
    const second = (await send("POST", "/auth/login", { body: { username: "probe", password: reset } })).json;
    await send("POST", "/auth/login/mfa", { body: { mfa_token: second.mfa_token, code: codes[0] } });
    await send("DELETE", "/auth/mfa/totp", {
      token: session.access_token,
      body: { password: reset, code: codes[1] },
    });

    // Passkeys: add, sign in, remove.
    const authenticator = new SoftAuthenticator("http://localhost:5173");
    const creation = await send("POST", "/auth/passkeys/register/options", { token: session.access_token, body: {} });
    const passkey = await send("POST", "/auth/passkeys/register/verify", {
      token: session.access_token,
      body: authenticator.register(creation.json),
    });
    const request = await send("POST", "/auth/passkeys/login/options", { body: {} });
    await send("POST", "/auth/passkeys/login/verify", { body: authenticator.authenticate(request.json) });
    await send("DELETE", `/auth/passkeys/${passkey.json.id}`, { token: session.access_token });

    // An admin: creates, demotes, deactivates, resets MFA, deletes.
    const boss = await signUp(ctx.app, { password: keep("Boss-password-5") });
    await promote(ctx.deps.db, boss.id);
    session = (await send("POST", "/auth/login", { body: { username: boss.username, password: boss.password } })).json;
    const created = await send("POST", "/users", {
      token: session.access_token,
      body: { username: "made", email: "made@example.com", password: keep("Made-password-4"), role: "admin" },
    });
    await send("PATCH", `/users/${created.json.id}`, { token: session.access_token, body: { role: "user" } });
    await send("PATCH", `/users/${created.json.id}`, { token: session.access_token, body: { is_active: false } });
    await send("DELETE", `/users/${created.json.id}/mfa`, { token: session.access_token });
    await send("DELETE", `/users/${created.json.id}`, { token: session.access_token });

    const res = await fetchExport(ctx, session.access_token);
    const exported = await res.text();
    const events = exported
      .trimEnd()
      .split("\n")
      .map((line) => JSON.parse(line));
    const actions = new Set(events.map((e) => e.action));
    expect([...actions].sort()).toEqual(
      [
        "email.changed",
        "email.verified",
        "login.failed",
        "login.succeeded",
        "logout",
        "mfa.disabled",
        "mfa.enabled",
        "mfa.failed",
        "passkey.added",
        "passkey.removed",
        "password.changed",
        "password.reset",
        "refresh.reuse_detected",
        "session.revoked",
        "user.created",
        "user.deleted",
        "user.updated",
      ].sort(),
    );
    expect(secrets.length).toBeGreaterThan(20);
    // As a whole word: a 6-digit code may well occur inside a UUID's hex digits.
    const occurs = (secret: string) =>
      new RegExp(`(?<![A-Za-z0-9])${secret.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?![A-Za-z0-9])`).test(exported);
    for (const secret of new Set(secrets)) expect({ secret, found: occurs(secret) }).toEqual({ secret, found: false });
    expect(exported).not.toMatch(/\$2[aby]\$\d\d\$/); // no bcrypt hash
    // Every event carries the request it came from; only the admin's sign-up and the second app's refresh
    // went around `send`.
    const elsewhere = events.filter((e) => !e.request_id?.startsWith("probe-")).map((e) => e.action);
    expect(elsewhere.sort()).toEqual(["login.succeeded", "refresh.reuse_detected", "user.created"]);
    for (const event of events.filter((e) => e.request_id?.startsWith("probe-"))) {
      expect(event).toMatchObject({ ip: "192.0.2.44", user_agent: "AuditProbe/1.0" });
    }
  }, 60_000);
});
