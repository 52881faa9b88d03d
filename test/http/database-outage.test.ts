import { describe, expect, test } from "bun:test";
import net from "node:net";
import { connectPostgres } from "../../src/db/client";
import { API, call, makeApp, TEST_DATABASE_URL } from "../support";

const register = (app: Parameters<typeof call>[0], name: string) =>
  call(app, "POST", `${API}/auth/register`, {
    body: { username: name, email: `${name}@example.com`, password: "secret123" },
  });

/** A TCP relay to Postgres that the test can cut and restore, like a database that goes away and returns. */
function relay(target: URL) {
  const sockets = new Set<net.Socket>();
  let server: net.Server | undefined;
  const open = (port: number) =>
    new Promise<number>((resolve) => {
      const listener = net.createServer((client) => {
        const upstream = net.connect(Number(target.port || 5432), target.hostname);
        for (const socket of [client, upstream]) {
          sockets.add(socket);
          socket.on("error", () => {
            client.destroy();
            upstream.destroy();
          });
          socket.on("close", () => sockets.delete(socket));
        }
        client.pipe(upstream).pipe(client);
      });
      server = listener;
      listener.listen(port, "127.0.0.1", () => resolve((listener.address() as net.AddressInfo).port));
    });
  const cut = () =>
    new Promise<void>((resolve) => {
      for (const socket of sockets) socket.destroy();
      server?.close(() => resolve());
    });
  return { open, cut };
}

describe("database outage", () => {
  test("unreachable database → 503 in the contract's shape", async () => {
    const db = connectPostgres({ url: "postgres://postgres@127.0.0.1:1/none", max: 1, connectTimeoutSeconds: 1 });
    const { app, logs } = await makeApp({}, { db });
    const res = await register(app, "nodb");
    expect(res.status).toBe(503);
    expect(res.json.error.code).toBe("SERVICE_UNAVAILABLE");
    expect(res.text).not.toContain("ECONNREFUSED");
    expect(logs.some((line) => line.includes("database unavailable"))).toBe(true);
    await db.close();
  });

  // Needs a real server to cut the connection to; PGlite runs inside the process.
  test.skipIf(!TEST_DATABASE_URL)("the server recovers by itself when the database returns", async () => {
    const target = new URL(TEST_DATABASE_URL as string);
    const link = relay(target);
    const port = await link.open(0);
    const viaRelay = new URL(target);
    viaRelay.port = String(port);
    const db = connectPostgres({ url: viaRelay.toString(), max: 2, connectTimeoutSeconds: 1 });
    try {
      const { app } = await makeApp({}, { db });
      expect((await register(app, "before")).status).toBe(201);
      await link.cut();
      expect((await register(app, "during")).status).toBe(503);
      expect((await call(app, "GET", `${API}/health`)).status).toBe(503);
      await link.open(port);
      expect((await register(app, "after")).status).toBe(201);
      expect((await call(app, "GET", `${API}/health`)).status).toBe(200);
    } finally {
      await link.cut();
      await db.close();
    }
  });
});
