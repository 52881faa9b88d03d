import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { JOURNAL } from "../../src/db/migrations";
import {
  API,
  buildBinary,
  finished,
  freePort,
  operatorDir,
  rawHttp,
  runShipped,
  scratchPostgres,
  TEST_DATABASE_URL,
  TEST_REDIS_URL,
} from "../support";
import { type Client, clientOf, samplePdf, untilReady } from "./client";

const ADMIN_PASSWORD = "adminpass1";

beforeAll(buildBinary, 120_000);

/** The embedded database's tests run once, in the PGlite run; the PostgreSQL run tests its own kind. */
const EMBEDDED_RUN = !TEST_DATABASE_URL;

describe("the binary as shipped (an empty folder, the checkout out of sight)", () => {
  test.skipIf(!EMBEDDED_RUN)(
    "--version names the version and the commit; --help; a bad setting → one line, exit 2",
    async () => {
      const dir = operatorDir();
      const version = await finished(runShipped(dir, ["--version"]));
      expect(version.code).toBe(0);
      expect(version.stdout.trim()).toMatch(
        new RegExp(`^reviewpoint ${pkg.version} \\(commit [0-9a-f]{40}(-dirty)?\\)$`),
      );
      const help = await finished(runShipped(dir, ["--help"]));
      expect(help.code).toBe(0);
      for (const command of ["serve", "migrate", "create-admin", "backup", "restore"])
        expect(help.stdout).toContain(command);
      const bad = await finished(runShipped(dir, ["serve"], { env: { PORT: "not-a-port" } }));
      expect(bad.code).toBe(2);
      expect(bad.stderr.trim()).toStartWith("config: PORT");
      expect(bad.stderr.trim().split("\n")).toHaveLength(1);
      rmSync(dir, { recursive: true, force: true });
    },
  );

  test.skipIf(!EMBEDDED_RUN)("a DATA_DIR that cannot be made or written → one line, exit 2", async () => {
    const dir = operatorDir();
    writeFileSync(join(dir, "a-file"), "");
    mkdirSync(join(dir, "readonly"));
    for (const [dataDir, setup] of [
      [join(dir, "a-file", "data"), undefined],
      [join(dir, "readonly", "data"), `mount -t tmpfs -o ro none ${join(dir, "readonly")}`],
    ] as const) {
      for (const command of ["serve", "migrate"]) {
        const result = await finished(runShipped(dir, [command], { env: { DATA_DIR: dataDir }, setup }));
        expect({ command, code: result.code }).toEqual({ command, code: 2 });
        expect(result.stderr.trim()).toStartWith(`DATA_DIR ${dataDir} cannot be used`);
        expect(result.stderr.trim().split("\n")).toHaveLength(1);
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test.skipIf(!EMBEDDED_RUN)(
    "DATA_DIR and everything in it is owner-only, even under umask 000",
    async () => {
      const dir = operatorDir();
      const dataDir = join(dir, "data");
      const result = await finished(
        runShipped(dir, ["migrate"], { env: { ENVIRONMENT: "development", DATA_DIR: dataDir }, setup: "umask 000" }),
      );
      expect(result.code).toBe(0);
      const entries = [
        dataDir,
        ...readdirSync(dataDir, { recursive: true }).map((name) => join(dataDir, String(name))),
      ];
      expect(entries.some((path) => path.endsWith("secret_key"))).toBe(true);
      expect(entries.some((path) => path.includes("pgdata"))).toBe(true);
      expect(entries.filter((path) => (statSync(path).mode & 0o077) !== 0)).toEqual([]);
      rmSync(dir, { recursive: true, force: true });
    },
    30_000,
  );

  test.skipIf(!EMBEDDED_RUN)(
    "killed with -9, the embedded server starts again at once (the kernel drops its lock with it)",
    async () => {
      const dir = operatorDir();
      const port = freePort();
      const env = { DATA_DIR: join(dir, "data"), PORT: String(port), HOST: "127.0.0.1", ENVIRONMENT: "development" };
      const first = runShipped(dir, ["serve"], { env });
      await untilReady(`http://127.0.0.1:${port}`, first);
      first.kill("SIGKILL");
      await first.exited;
      // At once: systemd restarts after 100 ms, and a refusal here would count against its start limit.
      const second = runShipped(dir, ["serve"], { env });
      await untilReady(`http://127.0.0.1:${port}`, second);
      second.kill("SIGTERM");
      expect(await second.exited).toBe(0);
      rmSync(dir, { recursive: true, force: true });
    },
    60_000,
  );

  // Each run its own database: the embedded one, or Postgres (a database of its own) + Redis.
  const kinds: [string, () => Promise<{ env: Record<string, string>; drop?: () => Promise<void> }>][] = EMBEDDED_RUN
    ? [["embedded database", async () => ({ env: {} })]]
    : [
        [
          "PostgreSQL + Redis",
          async () => {
            const scratch = await scratchPostgres("e2e");
            const env: Record<string, string> = { REVIEWPOINT_DB_URL: scratch.url };
            if (TEST_REDIS_URL) env.REDIS_URL = TEST_REDIS_URL;
            return { env, drop: scratch.drop };
          },
        ],
      ];

  for (const [kind, database] of kinds) {
    describe(`on the ${kind}`, () => {
      const embedded = kind === "embedded database";
      const dir = operatorDir();
      const port = freePort();
      const base = `http://127.0.0.1:${port}`;
      let dropDatabase: (() => Promise<void>) | undefined;
      let env: Record<string, string> = {
        DATA_DIR: join(dir, "data"),
        PORT: String(port),
        HOST: "127.0.0.1",
        // Slow enough (~300 ms a hash) that a login is still running when SIGTERM arrives.
        BCRYPT_ROUNDS: "12",
        ENVIRONMENT: "production",
        SECRET_KEY: "e2e-secret-e2e-secret-e2e-secret-e2e-secret",
      };
      let server: ReturnType<typeof runShipped> | undefined;
      let api: Client;
      const pdf = samplePdf(300_000);
      const username = `e2e${port}`;

      const serve = async (extra: Record<string, string> = {}) => {
        server = runShipped(dir, ["serve"], { env: { ...env, ...extra } });
        await untilReady(base, server);
      };

      beforeAll(async () => {
        const chosen = await database();
        env = { ...env, ...chosen.env };
        dropDatabase = chosen.drop;
        api = clientOf(base);
      }, 30_000);

      afterAll(async () => {
        server?.kill("SIGKILL");
        await server?.exited;
        await dropDatabase?.();
        rmSync(dir, { recursive: true, force: true });
      });

      test("first start on a fresh database applies every migration", async () => {
        server = runShipped(dir, ["serve"], { env: { ...env, LOG_LEVEL: "info" } });
        await untilReady(base, server);
        const output = server.stdout as ReadableStream<Uint8Array>;
        const lines = (await readLines(output, (line) => line.includes('"listening"'))).map((l) => JSON.parse(l));
        expect(lines.find((line) => line.msg === "listening")?.migrations_applied).toBe(JOURNAL.length);
      }, 60_000);

      test("serves health and the docs with their assets", async () => {
        const health = await fetch(`${base}${API}/health`);
        expect(health.status).toBe(200);
        expect(((await health.json()) as any).checks.database.ok).toBe(true);
        const docs = await fetch(`${base}/docs`);
        expect(docs.status).toBe(200);
        const html = await docs.text();
        const assets = [...html.matchAll(/(?:src|href)="(\/docs\/assets\/[^"]+)"/g)].map((match) => match[1]);
        expect(assets.length).toBeGreaterThanOrEqual(3);
        for (const asset of assets) {
          const res = await fetch(`${base}${asset}`);
          expect({ asset, status: res.status }).toEqual({ asset, status: 200 });
          expect((await res.arrayBuffer()).byteLength).toBeGreaterThan(100);
        }
        const redoc = await (await fetch(`${base}/redoc`)).text();
        for (const [, asset] of redoc.matchAll(/src="([^"]+)"/g))
          expect((await fetch(`${base}${asset}`)).status).toBe(200);
        expect(((await (await fetch(`${base}/openapi.json`)).json()) as any).openapi).toStartWith("3.");
      });

      test("register, login, upload, and a byte-identical download", async () => {
        const user = await api.signUp(username);
        const file = await api.upload(user.access, pdf, "paper.pdf", "application/pdf");
        expect(file.file_size).toBe(pdf.byteLength);
        expect(Buffer.from(await api.download(user.access, file.id)).equals(Buffer.from(pdf))).toBe(true);
        const refreshed = await fetch(`${base}${API}/auth/refresh`, {
          method: "POST",
          headers: { authorization: `Bearer ${user.refresh}` },
        });
        expect(refreshed.status).toBe(200);
      });

      // Postgres serves many processes at once; only the embedded database must refuse a second one.
      test.skipIf(!embedded)("a second process on the embedded database is refused", async () => {
        const second = await finished(runShipped(dir, ["migrate"], { env }));
        expect(second.code).toBe(1);
        expect(second.stderr).toContain("in use by process");
      });

      test("SIGTERM lets the running request finish, closes sockets with 1001, then exits 0", async () => {
        const { access } = await api.login(username);
        const socket = new WebSocket(`ws://127.0.0.1:${port}${API}/ws?token=${access}`);
        const established = new Promise((resolve) => {
          socket.onmessage = (event) => resolve(JSON.parse(String(event.data)).type);
        });
        const closed = new Promise<number>((resolve) => {
          socket.onclose = (event) => resolve(event.code);
        });
        expect(await established).toBe("connection.established");
        const login = api.login(username);
        // Accepted and hashing (a connection still in the listen queue is refused by a stopping server).
        await Bun.sleep(150);
        server?.kill("SIGTERM");
        expect((await login).access).toBeString();
        expect(await closed).toBe(1001);
        expect(await server?.exited).toBe(0);
        expect(await fetch(`${base}${API}/health/live`).catch(() => "refused")).toBe("refused");
      });

      test("then: migrate finds nothing pending, create-admin makes an admin who can export users", async () => {
        const migrate = await finished(runShipped(dir, ["migrate"], { env: { ...env, LOG_LEVEL: "info" } }));
        expect(migrate.code).toBe(0);
        expect(JSON.parse(migrate.stdout.trim().split("\n").at(-1) as string).applied).toBe(0);
        const admin = await finished(
          runShipped(dir, ["create-admin", "--username", "root", "--email", "root@example.com"], {
            env,
            stdin: `${ADMIN_PASSWORD}\n`,
          }),
        );
        expect(admin.code).toBe(0);
        await serve();
        const { access } = await api.login("root", ADMIN_PASSWORD);
        const exported = await fetch(`${base}${API}/users/export?q=e2e`, {
          headers: { authorization: `Bearer ${access}` },
        });
        expect(exported.status).toBe(200);
        expect(exported.headers.get("content-disposition")).toBe('attachment; filename="users.csv"');
        expect(await exported.text()).toContain(username);
      }, 60_000);

      test.skipIf(embedded)("backup and restore name what to use instead on PostgreSQL (exit 2)", async () => {
        for (const args of [["backup"], ["restore", "x.tar"]]) {
          const result = await finished(runShipped(dir, args, { env }));
          expect(result.code).toBe(2);
          expect(result.stderr.trim()).toContain("pg_dump");
          expect(result.stderr.trim().split("\n")).toHaveLength(1);
        }
      });

      test.skipIf(!embedded)(
        "backup while serving, restore into an empty DATA_DIR, and the copy serves the same",
        async () => {
          const backup = await finished(runShipped(dir, ["backup", "--output", "b.tar"], { env }));
          expect(backup.code).toBe(0);
          server?.kill("SIGTERM");
          expect(await server?.exited).toBe(0);
          const restoredEnv = { ...env, DATA_DIR: join(dir, "restored") };
          const restore = await finished(runShipped(dir, ["restore", "b.tar"], { env: restoredEnv }));
          expect(restore.code).toBe(0);
          server = runShipped(dir, ["serve"], { env: restoredEnv });
          await untilReady(base, server);
          const { access } = await api.login(username);
          const [file] = (await api.list(access)).items;
          if (!file) throw new Error("the restored copy has no file");
          expect(Buffer.from(await api.download(access, file.id)).equals(Buffer.from(pdf))).toBe(true);
          server.kill("SIGTERM");
          expect(await server.exited).toBe(0);
        },
        60_000,
      );

      test("SIGTERM with a slow upload in flight: 503 with Retry-After and Connection: close once the wait runs out, exit 0", async () => {
        if (server && server.exitCode === null) {
          server.kill("SIGTERM");
          await server.exited;
        }
        server = runShipped(dir, ["serve"], { env: { ...env, SHUTDOWN_TIMEOUT_SECONDS: "1", LOG_LEVEL: "info" } });
        await untilReady(base, server);
        const output = new Response(server.stdout as ReadableStream<Uint8Array>).text();
        const { access } = await api.signUp(`slow${port}`);
        const head =
          '--b\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\nContent-Type: text/plain\r\n\r\n';
        const answer = rawHttp(
          port,
          async (write) =>
            write(
              `POST ${API}/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${access}\r\n` +
                `Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n${head}${"s".repeat(1000)}`,
            ),
          20_000,
        );
        await Bun.sleep(300);
        server.kill("SIGTERM");
        const { status, headers } = await answer;
        expect({ status, retryAfter: headers["retry-after"], connection: headers.connection }).toEqual({
          status: 503,
          retryAfter: "5",
          connection: "close",
        });
        expect(await server.exited).toBe(0);
        const lines = (await output).split("\n");
        const logged = lines.filter((line) => line.includes('"msg":"request"') && line.includes("/uploads"));
        if (logged.length !== 1) console.error(lines.slice(-15).join("\n"));
        expect(logged.map((line) => JSON.parse(line).status)).toEqual([503]);
      }, 60_000);
    });
  }
});

/**
 * Lines of a process's output up to the first that matches; the rest is drained in the background, so a
 * full pipe never blocks the process's logging.
 */
async function readLines(stream: ReadableStream<Uint8Array>, until: (line: string) => boolean): Promise<string[]> {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  const lines: string[] = [];
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return lines;
    const parts = (buffer + decoder.decode(value)).split("\n");
    buffer = parts.pop() ?? "";
    lines.push(...parts);
    if (parts.some(until)) break;
  }
  void (async () => {
    while (!(await reader.read()).done);
  })();
  return lines;
}
