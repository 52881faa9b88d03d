import { describe, expect, test } from "bun:test";
import { connectPostgres } from "../../../src/db/client";
import { API, call, makeApp } from "../../support";

/** A database nobody listens on: every query fails to connect at once. */
const unreachableDb = () =>
  connectPostgres({ url: "postgres://postgres@127.0.0.1:1/none", max: 1, connectTimeoutMs: 1000 });

describe("health", () => {
  test("GET /health reports database and cache", async () => {
    const { app } = await makeApp();
    const res = await call(app, "GET", `${API}/health`);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({
      status: "ok",
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      checks: { database: { ok: true }, cache: { ok: true } },
    });
    expect(typeof res.json.uptime_seconds).toBe("number");
    expect(typeof res.json.checks.database.latency_ms).toBe("number");
    expect(["redis", "memory"]).toContain(res.json.checks.cache.backend);
  });

  test("live and ready answer 200 on a migrated database", async () => {
    const { app } = await makeApp();
    expect((await call(app, "GET", `${API}/health/live`)).json).toEqual({ status: "ok" });
    const ready = await call(app, "GET", `${API}/health/ready`);
    expect(ready.status).toBe(200);
    expect(ready.json).toEqual({ status: "ready", checks: { database: true, migrations: true } });
  });

  test("database down → /health 503 with the same shape, ready 503, live still 200", async () => {
    const db = unreachableDb();
    const { app } = await makeApp({}, { db });
    const res = await call(app, "GET", `${API}/health`);
    expect(res.status).toBe(503);
    expect(res.json).toMatchObject({ status: "degraded", checks: { database: { ok: false }, cache: { ok: true } } });
    const ready = await call(app, "GET", `${API}/health/ready`);
    expect(ready.status).toBe(503);
    expect(ready.json.checks.database).toBe(false);
    expect((await call(app, "GET", `${API}/health/live`)).status).toBe(200);
    await db.close();
  });

  test("cache down → 200 but degraded", async () => {
    const { MemoryStore } = await import("../../../src/platform/kv");
    const kv = Object.assign(new MemoryStore(), { ping: async () => false });
    const { app } = await makeApp({}, { kv });
    const res = await call(app, "GET", `${API}/health`);
    expect(res.status).toBe(200);
    expect(res.json.status).toBe("degraded");
    expect(res.json.checks.cache.ok).toBe(false);
  });
});
