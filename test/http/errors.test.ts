import { describe, expect, test } from "bun:test";
import { t } from "elysia";
import { API, call, makeApp } from "../support";

/** A per-process random prefix and a sequence number. */
const GENERATED_ID = /^[0-9a-f]{12}-[0-9a-z]{6,}$/;

const expectErrorShape = (json: any, code: string) => {
  expect(json.error.code).toBe(code);
  expect(typeof json.error.message).toBe("string");
  expect(Array.isArray(json.error.details)).toBe(true);
  expect(json.error.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  expect(typeof json.error.request_id).toBe("string");
};

/** The app plus two probe routes: one that validates a body and one that crashes. */
async function probeApp() {
  const ctx = await makeApp();
  const app = ctx.app
    .post(`${API}/probe`, ({ body }) => body, {
      body: t.Object({ email: t.String({ format: "email", error: "Invalid email format" }), age: t.Integer() }),
    })
    .get(`${API}/crash`, () => {
      throw new Error("db password is hunter2");
    });
  return { ...ctx, app };
}

describe("error mapper", () => {
  test("unknown route → 404 in the contract's shape, with the request id", async () => {
    const { app } = await makeApp();
    const res = await call(app, "GET", `${API}/does-not-exist`, { headers: { "x-request-id": "abc-123" } });
    expect(res.status).toBe(404);
    expectErrorShape(res.json, "NOT_FOUND");
    expect(res.json.error.request_id).toBe("abc-123");
    expect(res.headers.get("x-request-id")).toBe("abc-123");
  });

  test("malformed JSON → 400 BAD_REQUEST", async () => {
    const { app } = await probeApp();
    const res = await call(app, "POST", `${API}/probe`, {
      body: '{"email": ',
      headers: { "content-type": "application/json" },
    });
    expect(res.status).toBe(400);
    expectErrorShape(res.json, "BAD_REQUEST");
  });

  test("schema failure → 422 naming each field, without echoing the input", async () => {
    const { app } = await probeApp();
    const res = await call(app, "POST", `${API}/probe`, { body: { email: "not-an-email", age: "old" } });
    expect(res.status).toBe(422);
    expectErrorShape(res.json, "VALIDATION_ERROR");
    const fields = res.json.error.details.map((d: { field: string }) => d.field).sort();
    expect(fields).toEqual(["age", "email"]);
    expect(res.json.error.details.find((d: { field: string }) => d.field === "email").issue).toBe(
      "Invalid email format",
    );
    expect(res.text).not.toContain("not-an-email");
  });

  test("a crash → generic 500; the cause reaches only the log", async () => {
    const { app, logs } = await probeApp();
    const res = await call(app, "GET", `${API}/crash`);
    expect(res.status).toBe(500);
    expectErrorShape(res.json, "INTERNAL_ERROR");
    expect(res.text).not.toContain("hunter2");
    expect(logs.some((line) => line.includes("unhandled error") && line.includes("hunter2"))).toBe(true);
  });

  test("a JSON body over 1 MiB → 413", async () => {
    const { app } = await probeApp();
    const res = await call(app, "POST", `${API}/probe`, {
      body: JSON.stringify({ email: "a@b.co", age: 1, pad: "x".repeat(1024 * 1024 + 10) }),
      headers: { "content-type": "application/json" },
    });
    expect(res.status).toBe(413);
    expectErrorShape(res.json, "PAYLOAD_TOO_LARGE");
  });
});

describe("response headers", () => {
  test("security headers and a generated, unique request id on every response", async () => {
    const { app } = await makeApp();
    const ids = new Set<string | null>();
    for (const path of [`${API}/health/live`, `${API}/missing`]) {
      const res = await call(app, "GET", path);
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("x-frame-options")).toBe("DENY");
      expect(res.headers.get("referrer-policy")).toBe("no-referrer");
      expect(res.headers.get("content-security-policy")).toBe("default-src 'self'");
      expect(res.headers.get("x-request-id")).toMatch(GENERATED_ID);
      ids.add(res.headers.get("x-request-id"));
      expect(res.headers.get("strict-transport-security")).toBeNull();
    }
    expect(ids.size).toBe(2);
  });

  test("a malformed incoming request id is replaced", async () => {
    const { app } = await makeApp();
    const res = await call(app, "GET", `${API}/health/live`, { headers: { "x-request-id": "bad id\u0001<script>" } });
    expect(res.headers.get("x-request-id")).toMatch(GENERATED_ID);
  });

  test("HSTS only over HTTPS or behind a trusted proxy that says so", async () => {
    const trusted = await makeApp({ TRUST_PROXY: "true" });
    const viaProxy = await call(trusted.app, "GET", `${API}/health/live`, {
      headers: { "x-forwarded-proto": "https" },
    });
    expect(viaProxy.headers.get("strict-transport-security")).toContain("max-age=");
    const untrusted = await makeApp();
    const spoofed = await call(untrusted.app, "GET", `${API}/health/live`, {
      headers: { "x-forwarded-proto": "https" },
    });
    expect(spoofed.headers.get("strict-transport-security")).toBeNull();
  });

  test("CORS: an allowed origin's preflight is answered; others get no grant", async () => {
    const { app } = await makeApp({ ALLOWED_ORIGINS: "https://app.example" });
    const preflight = await call(app, "OPTIONS", `${API}/health`, {
      headers: { origin: "https://app.example", "access-control-request-method": "POST" },
    });
    expect(preflight.status).toBeLessThan(300);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("https://app.example");
    expect(preflight.headers.get("access-control-allow-headers")).toContain("Authorization");
    const simple = await call(app, "GET", `${API}/health/live`, { headers: { origin: "https://app.example" } });
    expect(simple.headers.get("access-control-expose-headers")).toContain("X-Request-ID");
    expect(simple.headers.get("access-control-expose-headers")).toContain("Retry-After");
    const other = await call(app, "GET", `${API}/health/live`, { headers: { origin: "https://evil.example" } });
    expect(other.headers.get("access-control-allow-origin")).toBeNull();
    const otherPreflight = await call(app, "OPTIONS", `${API}/health`, {
      headers: { origin: "https://evil.example", "access-control-request-method": "POST" },
    });
    expect(otherPreflight.headers.get("access-control-allow-origin")).toBeNull();
    // Not a CORS request: no grants, but caches are told the answer depends on Origin.
    const plain = await call(app, "GET", `${API}/health/live`);
    expect([...plain.headers.keys()].filter((name) => name.startsWith("access-control-"))).toEqual([]);
    expect(plain.headers.get("vary")).toBe("Origin");
  });

  test("one JSON access-log line per request with the route template", async () => {
    const { app, logs } = await makeApp();
    await call(app, "GET", `${API}/health/live?token=secret`, { headers: { "x-request-id": "log-1" } });
    await Bun.sleep(5);
    const line = logs
      .map((l) => JSON.parse(l))
      .find((entry) => entry.msg === "request" && entry.request_id === "log-1");
    expect(line).toMatchObject({ method: "GET", route: `${API}/health/live`, status: 200 });
    expect(typeof line.duration_ms).toBe("number");
    expect(logs.join("\n")).not.toContain("secret");
  });
});
