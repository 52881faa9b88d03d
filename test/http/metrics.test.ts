import { describe, expect, test } from "bun:test";
import { createMetrics, noMetrics } from "../../src/platform/metrics";
import { SAMPLES, upload } from "../modules/files/fixtures";
import { API, call, eventually, expectError, expectUnauthorized, makeApp, signUp, type TestContext } from "../support";

type Labels = Record<string, string>;

/** The value of the sample `name` whose labels are exactly `labels`, or undefined if the scrape has none. */
function sampleOf(text: string, name: string, labels: Labels = {}): number | undefined {
  for (const line of text.split("\n")) {
    const match = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/);
    if (!match || match[1] !== name) continue;
    const found = Object.fromEntries(
      [...(match[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (Bun.deepEquals(found, labels)) return Number(match[3]);
  }
  return undefined;
}

const scrape = async (ctx: TestContext, token?: string) => {
  const res = await call(ctx.app, "GET", `${API}/metrics`, { token });
  expect(res.status).toBe(200);
  return res.text;
};

/** Observers run after the response has gone out: wait until the scrape shows `name{labels}` at `value`. */
async function expectSample(ctx: TestContext, name: string, labels: Labels, value: number) {
  let last: number | undefined;
  await eventually(async () => {
    last = sampleOf(await scrape(ctx), name, labels);
    return last === value;
  }, 2000);
  expect({ name, labels, value: last }).toEqual({ name, labels, value });
}

const REQUESTS = "reviewpoint_http_request_duration_seconds";

describe("GET /metrics", () => {
  test("Prometheus text; requests by method, route template (never the raw path) and status, with a latency histogram", async () => {
    const ctx = await makeApp();
    const user = await signUp(ctx.app);
    await call(ctx.app, "GET", `${API}/users/${user.id}`, { token: user.access });
    await call(ctx.app, "GET", `${API}/users/${user.id}?x=secret-query`, { token: user.access });
    await call(ctx.app, "GET", `${API}/no-such-route/${user.id}`);

    // /users/:id is an admin route: a user gets 403.
    const route = { method: "GET", route: `${API}/users/:id`, status: "403" };
    await expectSample(ctx, `${REQUESTS}_count`, route, 2);
    await expectSample(ctx, `${REQUESTS}_count`, { method: "GET", route: "unmatched", status: "404" }, 1);
    const res = await call(ctx.app, "GET", `${API}/metrics`);
    expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(res.text).not.toContain(user.id);
    expect(res.text).not.toContain("secret-query");
    expect(res.text).toContain(`# TYPE ${REQUESTS} histogram`);
    // Cumulative buckets: every request is at most +Inf, and the sum of durations is there.
    expect(sampleOf(res.text, `${REQUESTS}_bucket`, { ...route, le: "+Inf" })).toBe(2);
    expect(sampleOf(res.text, `${REQUESTS}_bucket`, { ...route, le: "0.001" })).toBeLessThanOrEqual(2);
    expect(sampleOf(res.text, `${REQUESTS}_sum`, route)).toBeGreaterThan(0);
    // Process metrics, and the version.
    expect(sampleOf(res.text, "process_cpu_seconds_total")).toBeGreaterThan(0);
    expect(sampleOf(res.text, "process_resident_memory_bytes")).toBeGreaterThan(0);
    expect(sampleOf(res.text, "process_open_fds")).toBeGreaterThan(0);
    expect(res.text).toMatch(/^reviewpoint_build_info\{version="\d+\.\d+\.\d+",bun="[^"]+"\} 1$/m);
  });

  test("database pool: size, in use, idle and waiting follow the work in flight", async () => {
    const ctx = await makeApp();
    const { db } = ctx.deps;
    const size = db.pool.size;
    expect(size).toBe(db.kind === "pglite" ? 1 : 10);
    const pool = (text: string) => ({
      size: sampleOf(text, "reviewpoint_db_pool_size"),
      inUse: sampleOf(text, "reviewpoint_db_pool_connections", { state: "in_use" }),
      idle: sampleOf(text, "reviewpoint_db_pool_connections", { state: "idle" }),
      waiting: sampleOf(text, "reviewpoint_db_pool_waiting"),
    });
    const quiet = await eventually(async () => pool(await scrape(ctx)).inUse === 0);
    expect(quiet).toBe(true);
    expect(pool(await scrape(ctx))).toEqual({ size, inUse: 0, idle: size, waiting: 0 });

    // Every connection held by an open transaction, and one more query waiting for one.
    let release = () => {};
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    const held = Array.from({ length: size }, () => db.orm.transaction(() => gate));
    // Drizzle queries are lazy: `then` sends it.
    const waiting = db.orm.execute("select 1").then(() => {});
    try {
      expect(pool(await scrape(ctx))).toEqual({ size, inUse: size, idle: 0, waiting: 1 });
    } finally {
      release();
      await Promise.all([...held, waiting]);
    }
    expect(pool(await scrape(ctx))).toEqual({ size, inUse: 0, idle: size, waiting: 0 });
  });

  test("uploads: count and bytes of the files stored; a refused upload counts for nothing", async () => {
    const ctx = await makeApp();
    const user = await signUp(ctx.app);
    expect((await upload(ctx, SAMPLES.text, { token: user.access })).status).toBe(201);
    expect((await upload(ctx, SAMPLES.pdf, { type: "application/pdf", token: user.access })).status).toBe(201);
    expect((await upload(ctx, SAMPLES.exe, { type: "application/pdf", token: user.access })).status).toBe(415);
    const text = await scrape(ctx);
    expect(sampleOf(text, "reviewpoint_uploads_total")).toBe(2);
    expect(sampleOf(text, "reviewpoint_upload_bytes_total")).toBe(SAMPLES.text.byteLength + SAMPLES.pdf.byteLength);
  });

  test("a download's own 206 and 304 are counted as 206 and 304, not 200", async () => {
    const ctx = await makeApp();
    const user = await signUp(ctx.app);
    const file = (await upload(ctx, SAMPLES.text, { token: user.access })).json;
    const path = `${API}/uploads/${file.id}/download`;
    const headers = (extra: Record<string, string>) => ({ token: user.access, headers: extra });
    expect((await call(ctx.app, "GET", path, headers({ range: "bytes=0-1" }))).status).toBe(206);
    expect((await call(ctx.app, "GET", path, headers({ "if-none-match": `"${file.file_hash}"` }))).status).toBe(304);
    const route = `${API}/uploads/:id/download`;
    await expectSample(ctx, `${REQUESTS}_count`, { method: "GET", route, status: "206" }, 1);
    await expectSample(ctx, `${REQUESTS}_count`, { method: "GET", route, status: "304" }, 1);
    expect(sampleOf(await scrape(ctx), `${REQUESTS}_count`, { method: "GET", route, status: "200" })).toBeUndefined();
  });

  test("rate-limit rejections by rule; the cache backend is up", async () => {
    const ctx = await makeApp({ RATE_LIMIT_ENABLED: "true", TRUST_PROXY: "true", RATE_LIMIT_REGISTER: "1/hour" });
    // An address of its own: with TEST_REDIS_URL the counters outlive the run.
    const ip = `10.${Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 250)}.7`;
    const register = (n: number) =>
      call(ctx.app, "POST", `${API}/auth/register`, {
        body: {
          username: `metered${n}_${ip.replaceAll(".", "")}`,
          email: `m${n}.${ip}@example.com`,
          password: "secret123",
        },
        headers: { "x-forwarded-for": ip },
      });
    expect((await register(1)).status).toBe(201);
    expect((await register(2)).status).toBe(429);
    expect((await register(3)).status).toBe(429);
    const text = await scrape(ctx);
    expect(sampleOf(text, "reviewpoint_rate_limited_total", { rule: "register" })).toBe(2);
    expect(sampleOf(text, "reviewpoint_cache_up", { backend: ctx.deps.kv.backend })).toBe(1);
  });

  test("METRICS_TOKEN: required as a bearer token; missing or wrong is a 401 with the contract's body", async () => {
    const token = "scrape-Token_0123456789";
    const ctx = await makeApp({ METRICS_TOKEN: token });
    const missing = await call(ctx.app, "GET", `${API}/metrics`);
    expectUnauthorized(missing, "AUTHENTICATION_REQUIRED");
    const basic = await call(ctx.app, "GET", `${API}/metrics`, { headers: { authorization: `Basic ${btoa("a:b")}` } });
    expectUnauthorized(basic, "AUTHENTICATION_REQUIRED");
    for (const wrong of [`${token}x`, token.slice(0, -1), "x"]) {
      const res = await call(ctx.app, "GET", `${API}/metrics`, { token: wrong });
      expectUnauthorized(res, "INVALID_TOKEN");
      expect(res.text).not.toContain(token);
    }
    expect(await scrape(ctx, token)).toContain("process_cpu_seconds_total");
    // The scheme is case-insensitive, as for every bearer token.
    const lower = await call(ctx.app, "GET", `${API}/metrics`, { headers: { authorization: `bearer ${token}` } });
    expect(lower.status).toBe(200);
  });

  test("METRICS_ENABLED=false: no endpoint (404)", async () => {
    const ctx = await makeApp({ METRICS_ENABLED: "false" });
    expectError(await call(ctx.app, "GET", `${API}/metrics`), 404, "NOT_FOUND");
  });
});

describe("createMetrics", () => {
  const sources = (ping: () => Promise<boolean>) => ({
    version: "1.2.3",
    pool: { size: 4, active: 0 },
    cache: { backend: "redis" as const, ping },
  });

  test("open sockets and events published/delivered, by event type", async () => {
    const metrics = createMetrics(sources(async () => true));
    metrics.socketOpened();
    metrics.socketOpened();
    metrics.socketOpened();
    metrics.socketClosed();
    metrics.eventPublished("file.uploaded");
    metrics.eventPublished("file.uploaded");
    metrics.eventPublished("user.updated");
    metrics.eventDelivered("file.uploaded", 3);
    metrics.eventDelivered("user.updated", 0);
    const { body, contentType } = await metrics.render();
    expect(contentType).toStartWith("text/plain; version=0.0.4");
    expect(sampleOf(body, "reviewpoint_websocket_connections")).toBe(2);
    expect(sampleOf(body, "reviewpoint_events_published_total", { type: "file.uploaded" })).toBe(2);
    expect(sampleOf(body, "reviewpoint_events_published_total", { type: "user.updated" })).toBe(1);
    expect(sampleOf(body, "reviewpoint_events_delivered_total", { type: "file.uploaded" })).toBe(3);
    expect(sampleOf(body, "reviewpoint_events_delivered_total", { type: "user.updated" })).toBeUndefined();
    expect(sampleOf(body, "reviewpoint_db_pool_size")).toBe(4);
  });

  test("the request histogram: cumulative buckets (a bound is inclusive), +Inf = count, the sum in seconds", async () => {
    const metrics = createMetrics(sources(async () => true));
    const route = { method: "POST", route: "/api/v1/uploads", status: "201" };
    for (const durationMs of [0.5, 1, 1.5, 30, 20_000]) {
      metrics.observer?.({ method: "POST", route: "/api/v1/uploads", status: 201, durationMs });
    }
    metrics.observer?.({ method: "POST", route: "/api/v1/uploads", status: 413, durationMs: 2 });
    const { body } = await metrics.render();
    const bucket = (le: string) => sampleOf(body, `${REQUESTS}_bucket`, { ...route, le });
    expect([bucket("0.001"), bucket("0.0025"), bucket("0.025"), bucket("0.05"), bucket("10"), bucket("+Inf")]).toEqual([
      2, 3, 3, 4, 4, 5,
    ]);
    expect(sampleOf(body, `${REQUESTS}_count`, route)).toBe(5);
    expect(sampleOf(body, `${REQUESTS}_sum`, route)).toBeCloseTo(20.033, 6);
    expect(sampleOf(body, `${REQUESTS}_count`, { ...route, status: "413" })).toBe(1);
  });

  test("a cache that does not answer, or fails, is down", async () => {
    for (const ping of [async () => false, () => Promise.reject(new Error("ECONNREFUSED"))]) {
      const { body } = await createMetrics(sources(ping)).render();
      expect(sampleOf(body, "reviewpoint_cache_up", { backend: "redis" })).toBe(0);
    }
  });

  test("the twin for METRICS_ENABLED=false observes nothing and renders nothing", async () => {
    expect(noMetrics.observer).toBeUndefined();
    expect((await noMetrics.render()).body).toBe("");
  });
});
