import { describe, expect, test } from "bun:test";
import { MemoryStore, RedisStore } from "../../src/platform/kv";
import { API, call, makeApp, memoryLogger, signUp, TEST_REDIS_URL, testStore } from "../support";

describe("key-value store", () => {
  test("a fixed window counts hits and starts over when it ends", async () => {
    const store = await testStore();
    const key = `window-${crypto.randomUUID()}`;
    expect((await store.hit(key, 300)).count).toBe(1);
    const second = await store.hit(key, 300);
    expect(second.count).toBe(2);
    expect(second.resetMs).toBeGreaterThan(0);
    expect(second.resetMs).toBeLessThanOrEqual(300);
    await Bun.sleep(350);
    expect((await store.hit(key, 300)).count).toBe(1);
  });

  test("values expire after their TTL", async () => {
    const store = new MemoryStore();
    await store.set("k", "v", 1);
    expect(await store.getMany(["k", "missing"])).toEqual(["v", null]);
    await Bun.sleep(1050);
    expect(await store.getMany(["k"])).toEqual([null]);
    await store.close();
  });
});

describe("Redis unreachable at run time", () => {
  test("the server keeps serving from the database; health says degraded", async () => {
    const logger = memoryLogger();
    const kv = new RedisStore("redis://127.0.0.1:1", logger);
    await kv.connect();
    try {
      const { app } = await makeApp({ RATE_LIMIT_ENABLED: "true" }, { kv });
      const account = await signUp(app);
      const me = await call(app, "GET", `${API}/users/me`, { token: account.access });
      expect(me.status).toBe(200);
      expect((await call(app, "POST", `${API}/auth/logout`, { token: account.access })).status).toBe(204);
      // The revocation is still enforced, from the database.
      expect((await call(app, "GET", `${API}/users/me`, { token: account.access })).status).toBe(401);
      const health = await call(app, "GET", `${API}/health`);
      expect(health.status).toBe(200);
      expect(health.json.status).toBe("degraded");
      expect(health.json.checks.cache).toEqual({ ok: false, backend: "redis" });
      expect(logger.lines.some((line) => line.includes("redis unreachable"))).toBe(true);
    } finally {
      await kv.close();
    }
  });
});

// Sharing needs a real Redis; the in-memory store is one process's by design.
describe.skipIf(!TEST_REDIS_URL)("two instances on one Redis", () => {
  test("share rate limits and revocations", async () => {
    const a = await makeApp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_LOGIN: "2/minute" });
    const b = await makeApp({}, { config: a.deps.config });
    const attempt = (app: typeof a.app) =>
      call(app, "POST", `${API}/auth/login`, { body: { username: "shared", password: "wrongpass1" } });
    expect((await attempt(a.app)).status).toBe(401);
    expect((await attempt(b.app)).status).toBe(401);
    expect((await attempt(a.app)).status).toBe(429);

    const account = await signUp(a.app);
    expect((await call(b.app, "GET", `${API}/users/me`, { token: account.access })).status).toBe(200);
    expect((await call(a.app, "POST", `${API}/auth/logout`, { token: account.access })).status).toBe(204);
    expect((await call(b.app, "GET", `${API}/users/me`, { token: account.access })).status).toBe(401);
  });
});
