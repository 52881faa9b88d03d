import { afterAll, describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { authSessions } from "../../../src/db/schema";
import { MemoryStore, RedisStore, type StoreWrite } from "../../../src/platform/kv";
import {
  type Account,
  API,
  call,
  eventually,
  HAS_REDIS_SERVER,
  makeApp,
  memoryLogger,
  promote,
  signUp,
  TEST_DATABASE_URL,
  type TestContext,
  type ThrowawayRedis,
  throwawayRedis,
} from "../../support";

const servers: ThrowawayRedis[] = [];
const stores: RedisStore[] = [];
afterAll(async () => {
  await Promise.all(stores.map((store) => store.close()));
  await Promise.all(servers.map((server) => server.stop()));
});

async function redisServer() {
  const server = await throwawayRedis();
  servers.push(server);
  return server;
}

async function storeOn(server: ThrowawayRedis, logger = memoryLogger()) {
  const store = new RedisStore(server.url, logger);
  await store.connect();
  stores.push(store);
  return store;
}

const me = (ctx: TestContext, account: Pick<Account, "access">) =>
  call(ctx.app, "GET", `${API}/users/me`, { token: account.access });

/** Requests until the instance serves from a store it trusts again (its background check has run). */
async function settle(ctx: TestContext, account: Account) {
  for (let i = 0; i < 6; i++) {
    await me(ctx, account);
    await Bun.sleep(60);
  }
}

// These start a redis-server of their own; a machine with only Node/npm has none (CI's machines do).
describe.skipIf(!HAS_REDIS_SERVER)("revocation holds when Redis misbehaves", () => {
  test("Redis refuses writes (maxmemory): logout and demotion still hold on every instance", async () => {
    const server = await redisServer();
    const a = await makeApp({}, { kv: await storeOn(server) });
    const b = await makeApp({}, { config: a.deps.config, kv: await storeOn(server) });
    const admin = await signUp(a.app);
    await promote(a.deps.db, admin.id);
    const deputy = await signUp(a.app);
    await promote(a.deps.db, deputy.id);
    const user = await signUp(a.app);
    for (const ctx of [a, b]) await settle(ctx, admin);
    for (const ctx of [a, b]) for (const account of [deputy, user]) expect((await me(ctx, account)).status).toBe(200);
    expect((await me(b, deputy)).json.role).toBe("admin");

    await server.cli("config", "set", "maxmemory", "1");
    expect(await server.cli("set", "probe", "1")).toContain("OOM");

    expect((await call(a.app, "POST", `${API}/auth/logout`, { token: user.access })).status).toBe(204);
    const demoted = await call(a.app, "PATCH", `${API}/users/${deputy.id}`, {
      token: admin.access,
      body: { role: "user" },
    });
    expect(demoted.status).toBe(200);
    for (const ctx of [a, b]) {
      expect((await me(ctx, user)).status).toBe(401);
      const deputyNow = await me(ctx, deputy);
      expect(deputyNow.json.role).toBe("user");
      const create = await call(ctx.app, "POST", `${API}/users`, {
        token: deputy.access,
        body: { username: `sneaky${crypto.randomUUID().slice(0, 6)}`, email: "s@example.com", password: "secret123" },
      });
      expect(create.status).toBe(403);
    }
  });

  test("Redis restarted from a snapshot older than a logout: the token stays revoked", async () => {
    const server = await redisServer();
    const a = await makeApp({}, { kv: await storeOn(server) });
    const account = await signUp(a.app);
    await settle(a, account);
    expect((await me(a, account)).status).toBe(200);
    expect(await server.cli("save")).toBe("OK");
    await settle(a, account); // a check between the snapshot and the logout
    const bystander = await signUp(a.app);

    expect((await call(a.app, "POST", `${API}/auth/logout`, { token: account.access })).status).toBe(204);
    expect((await me(a, account)).status).toBe(401);
    await server.stop();
    await server.start();
    await Bun.sleep(1500); // reconnected, without a single command failing
    // A later change raises the watermark past the lost logout's.
    await call(a.app, "PATCH", `${API}/users/me`, { token: bystander.access, body: { name: "Bystander" } });

    // A fresh instance too, which has never seen the logout.
    const b = await makeApp({}, { config: a.deps.config, kv: await storeOn(server) });
    for (let i = 0; i < 40; i++) {
      expect((await me(a, account)).status).toBe(401);
      expect((await me(b, account)).status).toBe(401);
      await Bun.sleep(75);
    }
  }, 20_000);

  test("a Redis that may evict keys is not trusted with revocations", async () => {
    const server = await redisServer();
    const a = await makeApp({}, { kv: await storeOn(server) });
    await server.cli("config", "set", "maxmemory-policy", "volatile-ttl");
    const account = await signUp(a.app);
    await settle(a, account);
    expect((await call(a.app, "POST", `${API}/auth/logout`, { token: account.access })).status).toBe(204);
    // What eviction does to the markers (they carry TTLs, so volatile-* policies take them first).
    const markers = (await server.cli("--scan", "--pattern", "rp:revoked:*")).split("\n").filter(Boolean);
    expect(markers.length).toBeGreaterThan(0);
    await server.cli("del", ...markers);
    for (let i = 0; i < 5; i++) expect((await me(a, account)).status).toBe(401);
    expect(a.logs.some((line) => line.includes("maxmemory-policy") && line.includes('"level":"error"'))).toBe(true);
  });

  test("a hung Redis trips the circuit: requests are served from the database, the login limit still counts", async () => {
    const server = await redisServer();
    const logger = memoryLogger();
    const kv = await storeOn(server, logger);
    const ctx = await makeApp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_LOGIN: "2/minute" }, { kv });
    const account = await signUp(ctx.app);
    await settle(ctx, account);

    server.signal("SIGSTOP");
    try {
      expect((await me(ctx, account)).status).toBe(200);
      expect(kv.circuit).toBe("open");
      for (let i = 0; i < 5; i++) expect((await me(ctx, account)).status).toBe(200);
      expect(logger.lines.filter((line) => line.includes("redis unreachable"))).toHaveLength(1);
      // The login limit falls back to this process's counters rather than failing open.
      const attempt = () =>
        call(ctx.app, "POST", `${API}/auth/login`, { body: { username: account.username, password: "wrongpass1" } });
      expect((await attempt()).status).toBe(401);
      expect((await attempt()).status).toBe(401);
      expect((await attempt()).status).toBe(429);
    } finally {
      server.signal("SIGCONT");
    }
    expect(
      await eventually(async () => (await call(ctx.app, "GET", `${API}/health`)).json.checks.cache.ok === true),
    ).toBe(true);
    expect(kv.circuit).toBe("closed");
  }, 20_000);
});

/** A store whose conditional writes (the cache's puts) land late: a slow network, made wide for the test. */
class LatePuts extends MemoryStore {
  override async commit(write: StoreWrite) {
    if (write.set?.some((entry) => entry.key.startsWith("user:"))) await Bun.sleep(15);
    return super.commit(write);
  }
}

describe("changes the cache never heard of", () => {
  test("a revocation committed without its cache write (a crash in between) is seen within two checks", async () => {
    const ctx = await makeApp();
    const account = await signUp(ctx.app);
    await settle(ctx, account);
    // What a logout that died right after its database write leaves behind.
    await ctx.deps.db.orm
      .update(authSessions)
      .set({ revokedAt: new Date() })
      .where(eq(authSessions.userId, account.id));
    // Another user's change, cached normally, raises the watermark past the lost one.
    const other = await signUp(ctx.app);
    await call(ctx.app, "PATCH", `${API}/users/me`, { token: other.access, body: { name: "Other" } });
    expect(await eventually(async () => (await me(ctx, account)).status === 401, 8000)).toBe(true);
    for (let i = 0; i < 5; i++) expect((await me(ctx, account)).status).toBe(401);
  }, 15_000);

  test("a user version that expired and came back never revives an entry cached under an older one", async () => {
    const ctx = await makeApp();
    const boss = await signUp(ctx.app);
    await promote(ctx.deps.db, boss.id);
    const deputy = await signUp(ctx.app);
    await promote(ctx.deps.db, deputy.id);
    await settle(ctx, deputy);
    const renamed = await call(ctx.app, "PATCH", `${API}/users/me`, { token: deputy.access, body: { name: "Deputy" } });
    expect(renamed.status).toBe(200);
    expect((await me(ctx, deputy)).json.role).toBe("admin"); // cached under the rename's version
    await ctx.deps.kv.del(`userv:${deputy.id}`); // the version key's TTL ran out
    const demoted = await call(ctx.app, "PATCH", `${API}/users/${deputy.id}`, {
      token: boss.access,
      body: { role: "user" },
    });
    expect(demoted.status).toBe(200);
    expect((await me(ctx, deputy)).json.role).toBe("user");
    expect((await call(ctx.app, "GET", `${API}/users`, { token: deputy.access })).status).toBe(403);
  });
});

describe("no stale user from the cache", () => {
  test("100 reads racing a demotion never leave a cached admin role", async () => {
    const ctx = await makeApp({}, { kv: new LatePuts() });
    const admin = await signUp(ctx.app);
    await promote(ctx.deps.db, admin.id);
    const target = await signUp(ctx.app);
    for (let round = 0; round < 100; round++) {
      const up = await call(ctx.app, "PATCH", `${API}/users/${target.id}`, {
        token: admin.access,
        body: { role: "admin" },
      });
      expect(up.status).toBe(200);
      await Promise.all([
        me(ctx, target),
        me(ctx, target),
        call(ctx.app, "PATCH", `${API}/users/${target.id}`, { token: admin.access, body: { role: "user" } }),
        me(ctx, target),
      ]);
      const after = await me(ctx, target);
      expect(after.json.role).toBe("user");
    }
  }, 60_000);
});

// PGlite is one process's database; sharing one needs a real Postgres.
describe.skipIf(!TEST_DATABASE_URL)("two instances on one Postgres, no Redis", () => {
  test("logout, deactivation and demotion on one are seen at once by the other", async () => {
    const a = await makeApp({}, { kv: new MemoryStore() });
    const b = await makeApp({}, { config: a.deps.config, kv: new MemoryStore() });
    const admin = await signUp(a.app);
    await promote(a.deps.db, admin.id);
    const deputy = await signUp(a.app);
    await promote(a.deps.db, deputy.id);
    const leaving = await signUp(a.app);
    const deactivated = await signUp(a.app);
    for (const account of [admin, deputy, leaving, deactivated]) expect((await me(b, account)).status).toBe(200);

    expect((await call(a.app, "POST", `${API}/auth/logout`, { token: leaving.access })).status).toBe(204);
    expect((await me(b, leaving)).status).toBe(401);

    const off = await call(a.app, "PATCH", `${API}/users/${deactivated.id}`, {
      token: admin.access,
      body: { is_active: false },
    });
    expect(off.status).toBe(200);
    expect((await me(b, deactivated)).status).toBe(401);

    const demote = await call(a.app, "PATCH", `${API}/users/${deputy.id}`, {
      token: admin.access,
      body: { role: "user" },
    });
    expect(demote.status).toBe(200);
    const create = await call(b.app, "POST", `${API}/users`, {
      token: deputy.access,
      body: { username: "made_by_demoted", email: "made@example.com", password: "secret123", role: "admin" },
    });
    expect(create.status).toBe(403);
  });
});
