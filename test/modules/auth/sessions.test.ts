import { afterAll, describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { type AppDeps, listenOptions } from "../../../src/app";
import { auditEvents } from "../../../src/db/schema";
import { CLOSE_UNAUTHORIZED } from "../../../src/modules/realtime/service";
import { memoryPubSub, type PubSub, redisPubSub } from "../../../src/platform/pubsub";
import {
  API,
  call,
  expectError,
  expectUnauthorized,
  login,
  makeApp,
  memoryLogger,
  signUp,
  TEST_REDIS_URL,
  type TestContext,
  testStore,
} from "../../support";

const running: TestContext[] = [];
const buses: PubSub[] = [];
afterAll(async () => {
  for (const ctx of running.splice(0)) await ctx.app.stop(true);
  await Promise.all(buses.splice(0).map((bus) => bus.close()));
});

const sessionsOf = (ctx: TestContext, token: string) => call(ctx.app, "GET", `${API}/auth/sessions`, { token });
const me = (ctx: TestContext, token: string) => call(ctx.app, "GET", `${API}/users/me`, { token });
const refresh = (ctx: TestContext, token: string) =>
  call(ctx.app, "POST", `${API}/auth/refresh`, { body: { refresh_token: token } });

describe("sessions", () => {
  test("one per login, with user agent, IP, created, last used and `current`; a refresh moves last_used_at", async () => {
    const ctx = await makeApp({ TRUST_PROXY: "true" });
    const account = await signUp(ctx.app);
    const loginFrom = async (userAgent: string, ip: string) =>
      (
        await call(ctx.app, "POST", `${API}/auth/login`, {
          body: { username: account.username, password: account.password },
          headers: { "user-agent": userAgent, "x-forwarded-for": ip },
        })
      ).json;
    const laptop = await loginFrom("Firefox/140.0 (laptop)", "198.51.100.7");
    const phone = await loginFrom("Mobile Safari (phone)", "203.0.113.9");
    const listed = await sessionsOf(ctx, phone.access_token);
    expect(listed.status).toBe(200);
    const items = listed.json.items as Record<string, unknown>[];
    expect(items.map((s) => [s.user_agent, s.ip, s.current])).toEqual([
      ["Mobile Safari (phone)", "203.0.113.9", true],
      ["Firefox/140.0 (laptop)", "198.51.100.7", false],
      [null, null, false], // signUp's own login, through app.handle: no agent, no peer address
    ]);
    for (const item of items) {
      expect(Object.keys(item).sort()).toEqual(["created_at", "current", "id", "ip", "last_used_at", "user_agent"]);
    }
    const before = items[1] as { id: string; last_used_at: string };
    await Bun.sleep(5);
    const rotated = await refresh(ctx, laptop.refresh_token);
    expect(rotated.status).toBe(200);
    expect(rotated.headers.get("cache-control")).toBe("no-store");
    const after = (await sessionsOf(ctx, rotated.json.access_token)).json.items.find(
      (s: { id: string }) => s.id === before.id,
    );
    expect(after.current).toBe(true);
    expect(Date.parse(after.last_used_at)).toBeGreaterThan(Date.parse(before.last_used_at));
  });

  test("revoking one session stops its access and refresh tokens at once; the others live on", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const other = await login(ctx.app, account.username);
    const target = (await sessionsOf(ctx, account.access)).json.items.find((s: { current: boolean }) => !s.current);
    const revoked = await call(ctx.app, "DELETE", `${API}/auth/sessions/${target.id}`, { token: account.access });
    expect(revoked.status).toBe(204);
    expectUnauthorized(await me(ctx, other.access_token));
    expectUnauthorized(await refresh(ctx, other.refresh_token));
    expect((await me(ctx, account.access)).status).toBe(200);
    expect((await sessionsOf(ctx, account.access)).json.items.map((s: { id: string }) => s.id)).not.toContain(
      target.id,
    );
    const events = await ctx.deps.db.orm.select().from(auditEvents).where(eq(auditEvents.action, "session.revoked"));
    expect(events.map((e) => [e.actorId, e.targetType, e.targetId])).toEqual([[account.id, "session", target.id]]);
  });

  test("another user's session, an unknown one or one already ended is a 404", async () => {
    const ctx = await makeApp();
    const alice = await signUp(ctx.app);
    const bob = await signUp(ctx.app);
    const [bobs] = (await sessionsOf(ctx, bob.access)).json.items;
    const revoke = (token: string, id: string) => call(ctx.app, "DELETE", `${API}/auth/sessions/${id}`, { token });
    expectError(await revoke(alice.access, bobs.id), 404, "NOT_FOUND");
    expect((await me(ctx, bob.access)).status).toBe(200);
    expectError(await revoke(alice.access, "0196f0a2-7c1e-7000-8000-000000000000"), 404, "NOT_FOUND");
    expectError(await revoke(alice.access, "not-a-uuid"), 422, "VALIDATION_ERROR");
    const second = await login(ctx.app, alice.username);
    const [newest] = (await sessionsOf(ctx, second.access_token)).json.items;
    expect((await revoke(alice.access, newest.id)).status).toBe(204);
    expectError(await revoke(alice.access, newest.id), 404, "NOT_FOUND");
  });

  test("logout-all ends every session of the user, this one too; logging in again works", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    const other = await login(ctx.app, account.username);
    const bystander = await signUp(ctx.app);
    expect((await call(ctx.app, "POST", `${API}/auth/logout-all`, { token: account.access })).status).toBe(204);
    for (const token of [account.access, other.access_token]) expectUnauthorized(await me(ctx, token));
    for (const token of [account.refresh, other.refresh_token]) expectUnauthorized(await refresh(ctx, token));
    expect((await me(ctx, bystander.access)).status).toBe(200);
    const again = await login(ctx.app, account.username);
    expect((await sessionsOf(ctx, again.access_token)).json.items).toHaveLength(1);
  });
});

/** An app listening on a free port (sockets need a real server). */
function listening(ctx: TestContext): { base: string; ws: string } {
  running.push(ctx);
  ctx.app.listen({ ...listenOptions(ctx.deps.config), port: 0, hostname: "127.0.0.1" });
  const port = ctx.app.server?.port as number;
  return { base: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}${API}/ws` };
}

/** Opens a socket and resolves once the server said hello; `closed` resolves with the close code. */
async function socket(url: string) {
  const ws = new WebSocket(url);
  const closed = new Promise<number>((resolve) => {
    ws.onclose = (event) => resolve(event.code);
  });
  await new Promise<void>((resolve, reject) => {
    ws.onmessage = (event) => JSON.parse(String(event.data)).type === "connection.established" && resolve();
    ws.onerror = () => reject(new Error("socket failed"));
  });
  return { ws, closed };
}

describe("two instances sharing the database and the store", () => {
  test("a session revoked on A stops its tokens and its socket on B at once", async () => {
    const bus = TEST_REDIS_URL ? await redisPubSub(TEST_REDIS_URL, memoryLogger()) : memoryPubSub();
    buses.push(bus);
    const a = await makeApp({}, { pubsub: bus });
    // One secret and one store: each its own Redis connection, or the one in-process store standing in for it.
    const shared: Partial<AppDeps> = {
      pubsub: bus,
      config: a.deps.config,
      kv: TEST_REDIS_URL ? await testStore() : a.deps.kv,
    };
    const b = await makeApp({}, shared);
    const [serverA, serverB] = [listening(a), listening(b)];
    const account = await signUp(a.app);
    const phone = await login(b.app, account.username);
    // B has seen the session work (and cached what it could) before it ends.
    expect((await me(b, phone.access_token)).status).toBe(200);
    const phoneSocket = await socket(`${serverB.ws}?token=${phone.access_token}`);
    const laptopSocket = await socket(`${serverB.ws}?token=${account.access}`);

    const phoneSession = (await sessionsOf(a, account.access)).json.items.find((s: { current: boolean }) => !s.current);
    const revoked = await fetch(`${serverA.base}${API}/auth/sessions/${phoneSession.id}`, {
      method: "DELETE",
      headers: { authorization: `Bearer ${account.access}` },
    });
    expect(revoked.status).toBe(204);
    expectUnauthorized(await me(b, phone.access_token));
    expectUnauthorized(await refresh(b, phone.refresh_token));
    expect(await phoneSocket.closed).toBe(CLOSE_UNAUTHORIZED);
    expect(laptopSocket.ws.readyState).toBe(WebSocket.OPEN);
    expect((await me(b, account.access)).status).toBe(200);

    expect((await call(b.app, "POST", `${API}/auth/logout-all`, { token: account.access })).status).toBe(204);
    expect(await laptopSocket.closed).toBe(CLOSE_UNAUTHORIZED);
    expectUnauthorized(await me(a, account.access));
  }, 20_000);
});
