import { describe, expect, test } from "bun:test";
import { API, call, makeApp } from "../support";

const LIMITED = { RATE_LIMIT_ENABLED: "true" };

const loginAs = (app: Parameters<typeof call>[0], username: string, ip = "10.0.0.1") =>
  call(app, "POST", `${API}/auth/login`, {
    body: { username, password: "wrongpass1" },
    headers: { "x-forwarded-for": ip },
  });

describe("rate limits", () => {
  test("login: per identifier; the 429 carries Retry-After and X-RateLimit-*", async () => {
    const { app } = await makeApp({ ...LIMITED, TRUST_PROXY: "true", RATE_LIMIT_LOGIN: "3/minute" });
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const res = await loginAs(app, "victim", `10.0.0.${i + 1}`);
      statuses.push(res.status);
      expect(res.headers.get("x-ratelimit-limit")).toBe("3");
      expect(res.headers.get("x-ratelimit-remaining")).toBe(String(2 - i));
    }
    expect(statuses).toEqual([401, 401, 401]);
    // Changing IP does not help: the identifier is counted, whatever its case.
    const blocked = await loginAs(app, "VICTIM", "10.9.9.9");
    expect(blocked.status).toBe(429);
    expect(blocked.json.error.code).toBe("RATE_LIMITED");
    expect(Number(blocked.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(Number(blocked.headers.get("retry-after"))).toBeLessThanOrEqual(60);
    expect(blocked.headers.get("x-ratelimit-remaining")).toBe("0");
    expect(Number(blocked.headers.get("x-ratelimit-reset"))).toBeGreaterThan(0);
    expect((await loginAs(app, "someone-else", "10.9.9.9")).status).toBe(401);
  });

  test("login: per IP across identifiers (client IP from X-Forwarded-For only with TRUST_PROXY)", async () => {
    const { app } = await makeApp({ ...LIMITED, TRUST_PROXY: "true", RATE_LIMIT_LOGIN_IP: "2/minute" });
    expect((await loginAs(app, "a", "10.1.1.1")).status).toBe(401);
    expect((await loginAs(app, "b", "10.1.1.1")).status).toBe(401);
    expect((await loginAs(app, "c", "10.1.1.1")).status).toBe(429);
    expect((await loginAs(app, "d", "10.1.1.2")).status).toBe(401);
  });

  test("register: per IP", async () => {
    const { app } = await makeApp({ ...LIMITED, TRUST_PROXY: "true", RATE_LIMIT_REGISTER: "2/hour" });
    const register = (n: number) =>
      call(app, "POST", `${API}/auth/register`, {
        body: { username: `reg${n}`, email: `reg${n}@example.com`, password: "secret123" },
        headers: { "x-forwarded-for": "10.2.2.2" },
      });
    expect((await register(1)).status).toBe(201);
    expect((await register(2)).status).toBe(201);
    const third = await register(3);
    expect(third.status).toBe(429);
    expect(Number(third.headers.get("retry-after"))).toBeGreaterThan(60);
  });

  test("password reset: per email", async () => {
    const { app } = await makeApp({ ...LIMITED, RATE_LIMIT_PASSWORD_RESET: "1/hour" });
    const ask = (email: string) => call(app, "POST", `${API}/auth/request-password-reset`, { body: { email } });
    expect((await ask("x@example.com")).status).toBe(202);
    expect((await ask("X@example.com")).status).toBe(429);
    expect((await ask("y@example.com")).status).toBe(202);
  });

  test("default limit per IP on every API route; health is exempt; disabled means no headers", async () => {
    const { app } = await makeApp({ ...LIMITED, RATE_LIMIT_DEFAULT: "2/minute" });
    const first = await call(app, "GET", `${API}/users/me`);
    expect(first.headers.get("x-ratelimit-limit")).toBe("2");
    await call(app, "GET", `${API}/users/me`);
    const third = await call(app, "GET", `${API}/users/me`, { headers: { origin: "http://localhost:5173" } });
    expect(third.status).toBe(429);
    expect(third.headers.get("retry-after")).not.toBeNull();
    // A browser app can read the 429 (and its Retry-After) only if it carries the CORS grant.
    expect(third.headers.get("access-control-allow-origin")).toBe("http://localhost:5173");
    for (let i = 0; i < 5; i++) expect((await call(app, "GET", `${API}/health/live`)).status).toBe(200);

    const { app: open } = await makeApp({ RATE_LIMIT_ENABLED: "false", RATE_LIMIT_DEFAULT: "1/minute" });
    for (let i = 0; i < 3; i++) {
      const res = await call(open, "GET", `${API}/users/me`);
      expect(res.status).toBe(401);
      expect(res.headers.get("x-ratelimit-limit")).toBeNull();
    }
  });

  test("default: a short Host that shifts the path the router reads does not escape the limit", async () => {
    const { app } = await makeApp({ ...LIMITED, RATE_LIMIT_DEFAULT: "2/minute" });
    // Elysia's router reads the path from a fixed offset of the URL: with the Host `x`,
    // `/ZZ/api/v1/auth/verify-email` is routed as `/api/v1/auth/verify-email`.
    const shifted = (path: string, init: RequestInit = {}) => app.handle(new Request(`http://x/ZZ${path}`, init));
    const verify = () =>
      shifted(`${API}/auth/verify-email`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ token: "not-a-token" }),
      });
    const statuses = [];
    for (let i = 0; i < 3; i++) statuses.push((await verify()).status);
    expect(statuses).toEqual([400, 400, 429]);
    // Health stays exempt however its path is read.
    for (let i = 0; i < 3; i++) expect((await shifted(`${API}/health/live`)).status).toBe(200);
  });
});
