/**
 * The path the router serves is the one the client sent, whatever the Host: Elysia found it at a fixed
 * offset of the URL, so a short Host moved it (`/ZZ/api/v1/users/me` served as `/api/v1/users/me`, past
 * the limiter, which saw `/ZZ/...`). Through a real socket: `app.handle` always has a full URL.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { listenOptions } from "../../src/app";
import { API, eventually, expectError, makeApp, rawHttp, signUp, type TestContext } from "../support";

let ctx: TestContext;
let port: number;

beforeAll(async () => {
  ctx = await makeApp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_DEFAULT: "1000/minute" });
  ctx.app.listen({ ...listenOptions(ctx.deps.config), port: 0, hostname: "127.0.0.1" });
  port = ctx.app.server?.port as number;
});

afterAll(() => ctx.app.stop(true));

/** A GET as `curl --path-as-is -H 'Host: …'` sends it. */
const get = (target: string, host: string | null, token?: string, version = "1.1") =>
  rawHttp(
    port,
    [
      `GET ${target} HTTP/${version}`,
      ...(host === null ? [] : [`Host: ${host}`]),
      ...(token ? [`Authorization: Bearer ${token}`] : []),
      "Connection: close",
      "",
      "",
    ].join("\r\n"),
  );

/** The route the access log recorded for a request id (written once the response has gone). */
async function loggedRoute(requestId: string): Promise<string | undefined> {
  const entry = () =>
    ctx.logs.map((line) => JSON.parse(line)).find((line) => line.msg === "request" && line.request_id === requestId);
  await eventually(() => entry() !== undefined, 2000);
  return entry()?.route;
}

describe("a short Host header", () => {
  test("/ZZ/api/v1/users/me is a 404 in the contract's shape, not the profile", async () => {
    const account = await signUp(ctx.app);
    for (const host of ["x", "ab", "abc", "localhost"]) {
      const res = await get("/ZZ/api/v1/users/me", host, account.access);
      expectError(res, 404, "NOT_FOUND");
      expect(res.body).not.toContain(account.username);
      expect(await loggedRoute(res.headers["x-request-id"] as string)).toBe("unmatched");
    }
  });

  test("GET /api/v1/uploads is served with hosts of 1 to 3 characters, logged under its route", async () => {
    const account = await signUp(ctx.app);
    for (const host of ["x", "ab", "abc", "x:1", "[::1]"]) {
      const res = await get(`${API}/uploads?limit=5`, host, account.access);
      expect({ host, status: res.status }).toEqual({ host, status: 200 });
      expect(res.json).toMatchObject({ items: [], total: 0, limit: 5 });
      expect(await loggedRoute(res.headers["x-request-id"] as string)).toBe(`${API}/uploads`);
    }
    // The metrics count them under the same route.
    const scrape = await get(`${API}/metrics`, "localhost");
    expect(scrape.body).toMatch(
      /reviewpoint_http_request_duration_seconds_count\{method="GET",route="\/api\/v1\/uploads",status="200"\} [5-9]/,
    );
  });

  test("/ZZ/api/v1/metrics is a 404, not the scrape a proxy rule on /api/v1/metrics is there to block", async () => {
    const res = await get("/ZZ/api/v1/metrics", "x");
    expectError(res, 404, "NOT_FOUND");
    expect(res.body).not.toContain("reviewpoint_");
  });
});

describe("the default limit sees the routed path", () => {
  test("with Host: x, once RATE_LIMIT_DEFAULT is spent no spelling of the path reaches the handler", async () => {
    const limited = await makeApp({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_DEFAULT: "3/minute" });
    limited.app.listen({ ...listenOptions(limited.deps.config), port: 0, hostname: "127.0.0.1" });
    const limitedPort = limited.app.server?.port as number;
    try {
      const { access } = await signUp(limited.app);
      const statuses: [string, number, string | undefined][] = [];
      for (const path of ["/api", "/api", "/api", "/ZZ/api", "/api"]) {
        const res = await rawHttp(
          limitedPort,
          `GET ${path}/v1/users/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${access}\r\nConnection: close\r\n\r\n`,
        );
        statuses.push([path, res.status, res.headers["x-ratelimit-remaining"]]);
      }
      expect(statuses).toEqual([
        ["/api", 200, "2"],
        ["/api", 200, "1"],
        ["/api", 200, "0"],
        // Outside the API: not counted, and not served either.
        ["/ZZ/api", 404, undefined],
        ["/api", 429, "0"],
      ]);
    } finally {
      await limited.app.stop(true);
    }
  });
});

describe("a request without a usable Host", () => {
  // Bun's request.url is then the bare path, which no offset can split safely (oven-sh/bun#33721).
  test.each([
    ["an empty Host", ""],
    ["a Host with a space", "a b"],
    ["a Host with a slash", "a/b"],
  ])("%s is a 400 in the contract's shape, before anything is routed", async (_, host) => {
    const account = await signUp(ctx.app);
    const res = await get("/ZZZZZZZZZZ/api/v1/users/me", host, account.access);
    expectError(res, 400, "BAD_REQUEST");
    expect(res.json.error.message).toContain("Host");
    expect(res.body).not.toContain(account.username);
  });

  test("HTTP/1.0 without a Host is a 400 too", async () => {
    const res = await get(`${API}/health/live`, null, undefined, "1.0");
    expectError(res, 400, "BAD_REQUEST");
  });
});
