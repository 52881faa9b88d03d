import { describe, expect, test } from "bun:test";
import { decodeJwt, SignJWT } from "jose";
import { API, call, expectError, expectUnauthorized, login, makeApp, promote, signUp } from "../support";

type Body = RequestInit["body"];

/** The app with one admin (registered, logged in and promoted in the database). */
async function withAdmin(overrides: Record<string, string> = {}) {
  const ctx = await makeApp(overrides);
  const admin = await signUp(ctx.app);
  await promote(ctx.deps.db, admin.id);
  return { ...ctx, admin };
}

const CONTROL_CHARACTERS = ["\u0000", "\u0007", "\u001b"];
const newAccount = () => {
  const username = `u${crypto.randomUUID().slice(0, 8)}`;
  return { username, email: `${username}@example.com`, password: "secret123" };
};

describe("control characters in text", () => {
  test("register `name` with a C0 control character or a newline → 422 naming `name`", async () => {
    const { app } = await makeApp();
    for (const control of [...CONTROL_CHARACTERS, "\n"]) {
      const res = await call(app, "POST", `${API}/auth/register`, {
        body: { ...newAccount(), name: `Ada${control}Lovelace` },
      });
      expectError(res, 422, "VALIDATION_ERROR", ["name"]);
    }
  });

  test("PATCH /users/me `name` with a C0 control character or a newline → 422 naming `name`", async () => {
    const { app } = await makeApp();
    const me = await signUp(app);
    for (const control of [...CONTROL_CHARACTERS, "\n"]) {
      const res = await call(app, "PATCH", `${API}/users/me`, { token: me.access, body: { name: `Ada${control}` } });
      expectError(res, 422, "VALIDATION_ERROR", ["name"]);
    }
    const after = await call(app, "GET", `${API}/users/me`, { token: me.access });
    expect(after.json.name).toBeNull();
  });

  test("login `username` with a C0 control character → 422 naming `username`", async () => {
    const { app } = await makeApp();
    const me = await signUp(app);
    for (const control of CONTROL_CHARACTERS) {
      const res = await call(app, "POST", `${API}/auth/login`, {
        body: { username: `${me.username}${control}`, password: me.password },
      });
      expectError(res, 422, "VALIDATION_ERROR", ["username"]);
    }
  });

  test("admin GET /users?q= with a control character (a%00b, a%07b, a%1Bb, a%0Ab) → 422 naming `q`", async () => {
    const { app, admin } = await withAdmin();
    for (const encoded of ["%00", "%07", "%1B", "%0A"]) {
      const res = await call(app, "GET", `${API}/users?q=a${encoded}b`, { token: admin.access });
      expectError(res, 422, "VALIDATION_ERROR", ["q"]);
    }
    expect((await call(app, "GET", `${API}/users?q=ab`, { token: admin.access })).status).toBe(200);
  });

  test("newline and tab are allowed in `bio`, and stored as sent", async () => {
    const { app } = await makeApp();
    const me = await signUp(app);
    const bio = "line1\nline2\tx";
    const res = await call(app, "PATCH", `${API}/users/me`, { token: me.access, body: { bio } });
    expect(res.status).toBe(200);
    expect(res.json.bio).toBe(bio);
    const after = await call(app, "GET", `${API}/users/me`, { token: me.access });
    expect(after.json.bio).toBe(bio);
  });

  test("newline and tab are allowed in a password: register 201, then login with it 200", async () => {
    const { app } = await makeApp();
    const account = { ...newAccount(), password: "abc12345\tx\n" };
    const registered = await call(app, "POST", `${API}/auth/register`, { body: account });
    expect(registered.status).toBe(201);
    const tokens = await login(app, account.username, account.password);
    expect(tokens.token_type).toBe("bearer");
    // The exact password, not a trimmed one.
    const trimmed = await call(app, "POST", `${API}/auth/login`, {
      body: { username: account.username, password: "abc12345\tx" },
    });
    expectUnauthorized(trimmed, "INVALID_CREDENTIALS");
  });
});

describe("query values out of range", () => {
  test("admin GET /users?offset=100000000000000000000 → 422 naming `offset`, not 500", async () => {
    const { app, admin } = await withAdmin();
    const res = await call(app, "GET", `${API}/users?offset=100000000000000000000`, { token: admin.access });
    expectError(res, 422, "VALIDATION_ERROR", ["offset"]);
  });

  // `+` must be sent as %2B: a bare `+` in a query string is a space.
  const UNREPRESENTABLE = [
    ["a leap second", "2026-01-01T23:59:60Z"],
    ["year 0000", "0000-01-01T00:00:00Z"],
    ["an offset without minutes", "2026-01-01T00:00:00%2B05"],
    ["February 30th", "2026-02-30T00:00:00Z"],
  ];

  test("created_after that JS or Postgres cannot represent → 422 naming `created_after`", async () => {
    const { app, admin } = await withAdmin();
    for (const [, value] of UNREPRESENTABLE) {
      const res = await call(app, "GET", `${API}/users?created_after=${value}`, { token: admin.access });
      expectError(res, 422, "VALIDATION_ERROR", ["created_after"]);
    }
  });

  test("created_after with an offset in hours and minutes → 200", async () => {
    const { app, admin } = await withAdmin();
    const res = await call(app, "GET", `${API}/users?created_after=2026-01-01T00:00:00%2B05:30`, {
      token: admin.access,
    });
    expect(res.status).toBe(200);
    // The offset is applied: a bound in the far future matches nobody, one in the past matches the admin.
    const later = await call(app, "GET", `${API}/users?created_after=2999-01-01T00:00:00%2B05:30`, {
      token: admin.access,
    });
    expect(later.json.total).toBe(0);
    const earlier = await call(app, "GET", `${API}/users?created_after=2000-01-01T00:00:00%2B05:30`, {
      token: admin.access,
    });
    expect(earlier.json.total).toBe(1);
  });

  test("export with such a created_after → the JSON 422 body, not a CSV", async () => {
    const { app, admin } = await withAdmin();
    for (const [, value] of UNREPRESENTABLE) {
      const res = await call(app, "GET", `${API}/users/export?created_after=${value}`, { token: admin.access });
      expectError(res, 422, "VALIDATION_ERROR", ["created_after"]);
      expect(res.headers.get("content-type")).toStartWith("application/json");
      expect(res.headers.get("content-disposition")).toBeNull();
    }
    const ok = await call(app, "GET", `${API}/users/export?created_after=2000-01-01T00:00:00%2B05:30`, {
      token: admin.access,
    });
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toStartWith("text/csv");
  });
});

describe("path ids", () => {
  test("GET /users/urn:uuid:<uuid> → 422 naming `id`, not 500", async () => {
    const { app, admin } = await withAdmin();
    const res = await call(app, "GET", `${API}/users/urn:uuid:${admin.id}`, { token: admin.access });
    expectError(res, 422, "VALIDATION_ERROR", ["id"]);
  });

  test("an upper-case UUID is a UUID: 404 when absent", async () => {
    const { app, admin } = await withAdmin();
    const absent = crypto.randomUUID().toUpperCase();
    const res = await call(app, "GET", `${API}/users/${absent}`, { token: admin.access });
    expectError(res, 404, "NOT_FOUND");
  });
});

describe("well-signed tokens with malformed ids", () => {
  const sign = (secret: string, claims: Record<string, unknown>) =>
    new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(new TextEncoder().encode(secret));

  async function forge() {
    const { app, deps } = await makeApp();
    const me = await signUp(app);
    const real = decodeJwt(me.access);
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      sub: me.id,
      username: me.username,
      role: "user",
      type: "access",
      jti: crypto.randomUUID(),
      sid: real.sid,
      iat: now,
      exp: now + 600,
    };
    return { app, me, claims, secret: deps.config.secretKey };
  }

  test("control: the same claims with real ids are accepted (the test signs like the server)", async () => {
    const { app, claims, secret, me } = await forge();
    const res = await call(app, "GET", `${API}/users/me`, { token: await sign(secret, claims) });
    expect(res.status).toBe(200);
    expect(res.json.id).toBe(me.id);
  });

  test("`sub` not a UUID → 401 INVALID_TOKEN", async () => {
    const { app, claims, secret } = await forge();
    for (const sub of ["not-a-uuid", `urn:uuid:${claims.sub}`, "1", ""]) {
      const res = await call(app, "GET", `${API}/users/me`, { token: await sign(secret, { ...claims, sub }) });
      expectUnauthorized(res, "INVALID_TOKEN");
    }
  });

  test("`sid` not a UUID → 401 INVALID_TOKEN", async () => {
    const { app, claims, secret } = await forge();
    for (const sid of ["not-a-uuid", `urn:uuid:${claims.sid}`, 1]) {
      const res = await call(app, "GET", `${API}/users/me`, { token: await sign(secret, { ...claims, sid }) });
      expectUnauthorized(res, "INVALID_TOKEN");
    }
  });
});

describe("docs assets", () => {
  test("Object.prototype names are not assets → 404 NOT_FOUND", async () => {
    const { app } = await makeApp();
    for (const name of ["constructor", "__proto__", "toString", "hasOwnProperty"]) {
      const res = await call(app, "GET", `/docs/assets/${name}`);
      expectError(res, 404, "NOT_FOUND");
      expect(res.headers.get("content-type")).toStartWith("application/json");
    }
    expect((await call(app, "GET", "/docs/assets/init.js")).status).toBe(200);
  });
});

describe("request bodies", () => {
  const registerJson = () => JSON.stringify(newAccount());

  test("a JSON route refuses text/plain, multipart/form-data and a body without a content type → 415", async () => {
    const { app } = await makeApp();
    const me = await signUp(app);
    const form = new FormData();
    form.set("username", "formuser");
    const attempts: { body: Body; headers?: Record<string, string> }[] = [
      { body: registerJson(), headers: { "content-type": "text/plain" } },
      { body: form },
      { body: new TextEncoder().encode(registerJson()) },
    ];
    for (const attempt of attempts) {
      const register = await call(app, "POST", `${API}/auth/register`, attempt);
      expectError(register, 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    const patches: { body: Body; headers?: Record<string, string> }[] = [
      { body: JSON.stringify({ bio: "x" }), headers: { "content-type": "text/plain" } },
      { body: form },
      { body: new TextEncoder().encode(JSON.stringify({ bio: "x" })) },
    ];
    for (const attempt of patches) {
      const patch = await call(app, "PATCH", `${API}/users/me`, { ...attempt, token: me.access });
      expectError(patch, 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    const after = await call(app, "GET", `${API}/users/me`, { token: me.access });
    expect(after.json.bio).toBeNull();
  });

  test("`Application/JSON; charset=UTF-8` is JSON", async () => {
    const { app } = await makeApp();
    const headers = { "content-type": "Application/JSON; charset=UTF-8" };
    const account = newAccount();
    const register = await call(app, "POST", `${API}/auth/register`, { body: JSON.stringify(account), headers });
    expect(register.status).toBe(201);
    expect(register.json.username).toBe(account.username);
    const { access_token } = await login(app, account.username, account.password);
    const patch = await call(app, "PATCH", `${API}/users/me`, {
      body: JSON.stringify({ bio: "hello" }),
      headers,
      token: access_token,
    });
    expect(patch.status).toBe(200);
    expect(patch.json.bio).toBe("hello");
  });

  test("a JSON body over 1 MiB → 413; the same body as text/plain → 415", async () => {
    const { app } = await makeApp();
    const me = await signUp(app);
    const big = JSON.stringify({ ...newAccount(), pad: "x".repeat(1024 * 1024) });
    expect(big.length).toBeGreaterThan(1024 * 1024);
    const json = await call(app, "POST", `${API}/auth/register`, {
      body: big,
      headers: { "content-type": "application/json" },
    });
    expectError(json, 413, "PAYLOAD_TOO_LARGE");
    const patch = await call(app, "PATCH", `${API}/users/me`, {
      body: JSON.stringify({ bio: "x", pad: "x".repeat(1024 * 1024) }),
      headers: { "content-type": "application/json" },
      token: me.access,
    });
    expectError(patch, 413, "PAYLOAD_TOO_LARGE");
    const text = await call(app, "POST", `${API}/auth/register`, {
      body: big,
      headers: { "content-type": "text/plain" },
    });
    expectError(text, 415, "UNSUPPORTED_MEDIA_TYPE");
  });

  test("a streamed 4 MiB body: JSON is read only just past the limit, text/plain not at all", async () => {
    const { app } = await makeApp();
    const chunk = new TextEncoder().encode("x".repeat(64 * 1024));
    const TOTAL_CHUNKS = 64;
    const post = async (type: string) => {
      let pulled = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          pulled++;
          if (pulled > TOTAL_CHUNKS) controller.close();
          else controller.enqueue(chunk);
        },
      });
      const res = await call(app, "POST", `${API}/auth/register`, { body, headers: { "content-type": type } });
      return { res, pulled };
    };
    const json = await post("application/json");
    expectError(json.res, 413, "PAYLOAD_TOO_LARGE");
    // 16 chunks make 1 MiB; the 17th passes it (plus at most what the stream buffers ahead).
    expect(json.pulled).toBeLessThanOrEqual(20);
    const text = await post("text/plain");
    expectError(text.res, 415, "UNSUPPORTED_MEDIA_TYPE");
    // Only what the stream queues on its own before anyone reads.
    expect(text.pulled).toBeLessThanOrEqual(2);
  });

  test("the limit is 1 MiB exactly: 1,048,576 bytes are read, one more is 413", async () => {
    const { app } = await makeApp();
    const exactly = (size: number) => {
      const account = JSON.stringify(newAccount());
      // {"username":…,"pad":"xxx"} padded to `size` bytes.
      const pad = size - account.length - ',"pad":""'.length;
      return `${account.slice(0, -1)},"pad":"${"x".repeat(pad)}"}`;
    };
    const headers = { "content-type": "application/json" };
    const atLimit = exactly(1024 * 1024);
    expect(atLimit.length).toBe(1024 * 1024);
    expect((await call(app, "POST", `${API}/auth/register`, { body: atLimit, headers })).status).toBe(201);
    const over = await call(app, "POST", `${API}/auth/register`, { body: exactly(1024 * 1024 + 1), headers });
    expectError(over, 413, "PAYLOAD_TOO_LARGE");
  });

  test("a route that takes no body ignores one: malformed JSON, text/plain or 2 MiB on DELETE → 204", async () => {
    const { app } = await makeApp();
    const me = await signUp(app);
    const strays: { body: Body; headers?: Record<string, string> }[] = [
      { body: "{not json", headers: { "content-type": "application/json" } },
      { body: "just text", headers: { "content-type": "text/plain" } },
      { body: "x".repeat(2 * 1024 * 1024), headers: { "content-type": "application/json" } },
    ];
    for (const stray of strays) {
      const form = new FormData();
      form.append("file", new File(["some notes"], "notes.txt", { type: "text/plain" }));
      const uploaded = await call(app, "POST", `${API}/uploads`, { body: form, token: me.access });
      expect(uploaded.status).toBe(201);
      const removed = await call(app, "DELETE", `${API}/uploads/${uploaded.json.id}`, { ...stray, token: me.access });
      expect(removed.status).toBe(204);
      expect((await call(app, "GET", `${API}/uploads/${uploaded.json.id}`, { token: me.access })).status).toBe(404);
    }
    const gone = await call(app, "DELETE", `${API}/users/me`, { ...strays[0], token: me.access });
    expect(gone.status).toBe(204);
  });

  test("the OAuth2 form works on /auth/login and is 415 on /auth/register", async () => {
    const { app } = await makeApp();
    const me = await signUp(app);
    const loginForm = new URLSearchParams({ grant_type: "password", username: me.username, password: me.password });
    const res = await call(app, "POST", `${API}/auth/login`, { body: loginForm });
    expect(res.status).toBe(200);
    expect(res.json.token_type).toBe("bearer");
    const registerForm = new URLSearchParams(newAccount());
    expectError(await call(app, "POST", `${API}/auth/register`, { body: registerForm }), 415, "UNSUPPORTED_MEDIA_TYPE");
  });

  test("PATCH /users/me with a JSON array, string or number → 422, and nothing changes", async () => {
    const { app } = await makeApp();
    const me = await signUp(app);
    const before = await call(app, "GET", `${API}/users/me`, { token: me.access });
    for (const body of ["[1]", '"x"', "5"]) {
      const res = await call(app, "PATCH", `${API}/users/me`, {
        body,
        headers: { "content-type": "application/json" },
        token: me.access,
      });
      expectError(res, 422, "VALIDATION_ERROR");
    }
    const after = await call(app, "GET", `${API}/users/me`, { token: me.access });
    // Not even a no-op write: updated_at stays.
    expect(after.json).toEqual(before.json);
  });

  test("the same on PUT /users/me and admin PATCH /users/:id → 422", async () => {
    const { app, admin } = await withAdmin();
    const other = await signUp(app);
    const routes: [string, string][] = [
      ["PUT", `${API}/users/me`],
      ["PATCH", `${API}/users/${other.id}`],
    ];
    for (const [method, path] of routes) {
      for (const body of ["[1]", '"x"', "5"]) {
        const res = await call(app, method, path, {
          body,
          headers: { "content-type": "application/json" },
          token: admin.access,
        });
        expectError(res, 422, "VALIDATION_ERROR");
      }
    }
  });
});

describe("authentication before validation", () => {
  test("anonymous PATCH /users/me with an invalid body → 401, not 422", async () => {
    const { app } = await makeApp();
    const res = await call(app, "PATCH", `${API}/users/me`, { body: { username: 1, email: "nope", bio: ["x"] } });
    expectUnauthorized(res, "AUTHENTICATION_REQUIRED");
  });

  test("a non-admin POST /users with an invalid body → 403, not 422", async () => {
    const { app } = await makeApp();
    const me = await signUp(app);
    const res = await call(app, "POST", `${API}/users`, { token: me.access, body: { username: "x", role: "root" } });
    expectError(res, 403, "PERMISSION_DENIED");
  });

  test("anonymous GET /users?offset=-1 → 401, not 422", async () => {
    const { app } = await makeApp();
    const res = await call(app, "GET", `${API}/users?offset=-1`);
    expectUnauthorized(res, "AUTHENTICATION_REQUIRED");
  });
});

describe("in-flight counter", () => {
  test("a CORS preflight, a 429 thrown in onRequest and a 404 leave the counter at 0", async () => {
    const inFlight = { count: 0 };
    const { app } = await makeApp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_DEFAULT: "1/minute" }, { inFlight });
    const preflight = await call(app, "OPTIONS", `${API}/auth/login`, {
      headers: { origin: "http://localhost:5173", "access-control-request-method": "POST" },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get("access-control-allow-origin")).toBe("http://localhost:5173");
    expect((await call(app, "GET", `${API}/health/live`)).status).toBe(200);
    await call(app, "GET", `${API}/missing`);
    // Over the default limit by now (1/minute), whatever the first one got: a 429 thrown from onRequest.
    expectError(await call(app, "GET", `${API}/missing`), 429, "RATE_LIMITED");
    // Outside /api: never limited, a plain 404.
    expectError(await call(app, "GET", "/missing-outside-the-api"), 404, "NOT_FOUND");
    await Bun.sleep(20);
    expect(inFlight.count).toBe(0);
  });
});

describe("default rate limit", () => {
  test("RATE_LIMIT_DEFAULT=3/minute lets 3 API requests through, counting each once", async () => {
    const { app } = await makeApp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_DEFAULT: "3/minute" });
    const answers = [];
    for (let i = 0; i < 4; i++) {
      const res = await call(app, "GET", `${API}/missing`);
      answers.push([res.status, res.headers.get("x-ratelimit-remaining")]);
    }
    expect(answers).toEqual([
      [404, "2"],
      [404, "1"],
      [404, "0"],
      [429, "0"],
    ]);
  });
});

describe("oversized request headers (real server)", () => {
  test("a ~100 KB header value: Bun answers 431 itself, before the app, with no body", async () => {
    const { app } = await makeApp();
    app.listen({ port: 0, hostname: "127.0.0.1" });
    try {
      const base = `http://127.0.0.1:${app.server?.port}`;
      const ok = await fetch(`${base}${API}/health/live`);
      expect(ok.status).toBe(200);
      await ok.text();
      const res = await fetch(`${base}${API}/health/live`, { headers: { "x-big": "a".repeat(100_000) } });
      expect(res.status).toBe(431);
      // Bun's own bare answer: only `Connection: close`; none of the app's headers, no JSON error body.
      expect(res.headers.get("x-request-id")).toBeNull();
      expect(res.headers.get("content-type")).toBeNull();
      expect(await res.text()).toBe("");
    } finally {
      await app.stop();
    }
  });
});
