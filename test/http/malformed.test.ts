/**
 * Malformed HTTP over raw sockets. Bun's parser answers these itself, before any JavaScript runs: neither
 * Elysia's onError nor Bun.serve's `error` handler is called, so the answer is Bun's bare status (README,
 * beside the 431). What reaches the application gets the contract's body.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import { listenOptions } from "../../src/app";
import { API, eventually, expectError, makeApp, rawHttp, signUp, type TestContext } from "../support";

let ctx: TestContext;
let port: number;

beforeAll(async () => {
  ctx = await makeApp();
  ctx.app.listen({ ...listenOptions(ctx.deps.config), port: 0, hostname: "127.0.0.1" });
  port = ctx.app.server?.port as number;
});

afterAll(() => ctx.app.stop(true));

const login = `POST ${API}/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n`;

/** Malformed request heads, and the bare status Bun answers each with. */
const MALFORMED: [string, string, number, string][] = [
  ["a Content-Length that is not a number", `${login}Content-Length: abc\r\n\r\n{}`, 400, "Bad Request"],
  ["two different Content-Lengths", `${login}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}`, 400, "Bad Request"],
  [
    "Content-Length with Transfer-Encoding",
    `${login}Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n`,
    400,
    "Bad Request",
  ],
  ["a Transfer-Encoding other than chunked", `${login}Transfer-Encoding: gzip\r\n\r\n`, 400, "Bad Request"],
  ["HTTP/1.1 without a Host", `GET ${API}/health/live HTTP/1.1\r\n\r\n`, 400, "Bad Request"],
  [
    "a header line without a colon",
    `GET ${API}/health/live HTTP/1.1\r\nHost: localhost\r\nBroken\r\n\r\n`,
    400,
    "Bad Request",
  ],
  [
    "HTTP/2.0 in the request line",
    `GET ${API}/health/live HTTP/2.0\r\nHost: localhost\r\n\r\n`,
    505,
    "HTTP Version Not Supported",
  ],
  [
    "a space in the path",
    `GET ${API}/health /live HTTP/1.1\r\nHost: localhost\r\n\r\n`,
    505,
    "HTTP Version Not Supported",
  ],
  [
    "a vertical tab in the query",
    `GET ${API}/health/live?a=\x0b HTTP/1.1\r\nHost: localhost\r\n\r\n`,
    505,
    "HTTP Version Not Supported",
  ],
  [
    "a NUL in the path",
    `GET ${API}/health\0/live HTTP/1.1\r\nHost: localhost\r\n\r\n`,
    505,
    "HTTP Version Not Supported",
  ],
];

const BARE_400 = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";

/** The whole answer as bytes, read until the server closes. */
function exchange(serverPort: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let answer = "";
    const socket = net.connect(serverPort, "127.0.0.1", () => socket.write(request));
    socket.setTimeout(5000, () => socket.destroy(new Error("the server kept the connection open")));
    socket.on("data", (chunk: Buffer) => {
      answer += chunk.toString("latin1");
    });
    socket.on("close", () => resolve(answer));
    socket.on("error", reject);
  });
}

describe("malformed HTTP", () => {
  test.each(MALFORMED)(
    "%s: Bun's bare status, the connection closed, the app never involved",
    async (_, request, status, reason) => {
      const logged = ctx.logs.length;
      expect(await exchange(port, request)).toBe(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\n\r\n`);
      // No access-log line or error: the request never reached a handler.
      await Bun.sleep(20);
      expect(ctx.logs.slice(logged)).toEqual([]);
      // The server itself is unaffected.
      const after = await rawHttp(
        port,
        `GET ${API}/health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
      );
      expect(after.status).toBe(200);
    },
  );

  test("a chunk size that is not hex: Bun's bare 400 while the app reads the body, logged as that 400", async () => {
    const logged = ctx.logs.length;
    // The head is valid, so the route runs; reading the body then fails, and Bun has already answered.
    const answer = await exchange(port, `${login}Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`);
    expect(answer).toBe(BARE_400);
    await eventually(() => ctx.logs.length > logged, 2000);
    await Bun.sleep(50);
    const lines = ctx.logs.slice(logged).map((line) => JSON.parse(line));
    expect(lines.map(({ msg, route, status }) => ({ msg, route, status }))).toEqual([
      { msg: "request", route: `${API}/auth/login`, status: 400 },
    ]);
  });

  test("Bun.serve's own error handler is not called for any of them either", async () => {
    let called = 0;
    const server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: () => new Response("reached"),
      error: () => {
        called++;
        return new Response("mapped", { status: 400 });
      },
    });
    try {
      for (const [, request, status, reason] of MALFORMED) {
        expect(await exchange(server.port as number, request)).toBe(
          `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\n\r\n`,
        );
      }
      expect(called).toBe(0);
    } finally {
      await server.stop(true);
    }
  });

  test("what Bun lets through gets the contract's body: a path or a query with a bad percent-escape", async () => {
    const { access } = await signUp(ctx.app);
    const path = await rawHttp(port, `GET ${API}/nowhere/%zz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    expectError(path, 404, "NOT_FOUND");
    const query = await rawHttp(
      port,
      `GET ${API}/uploads?limit=%zz HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer ${access}\r\nConnection: close\r\n\r\n`,
    );
    expectError(query, 422, "VALIDATION_ERROR", ["limit"]);
  });
});
