import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { API, BINARY, buildBinary, scratchPostgres, TEST_DATABASE_URL, TEST_REDIS_URL } from "../support";

const ADMIN_PASSWORD = "adminpass1";

/** Runs the binary from an empty directory, with nothing but the given environment. */
function run(args: string[], env: Record<string, string>, cwd: string, stdin?: string) {
  return Bun.spawn([BINARY, ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? "", LOG_LEVEL: "warn", ...env },
    stdin: stdin === undefined ? "ignore" : new TextEncoder().encode(stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
}

async function finished(proc: ReturnType<typeof run>) {
  const [code, stdout, stderr] = await Promise.all([
    proc.exited,
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
  ]);
  return { code, stdout, stderr };
}

beforeAll(buildBinary, 120_000);

describe("the compiled binary", () => {
  test("--version, --help, and a bad setting → one line, exit 2", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rp-bin-"));
    expect((await finished(run(["--version"], {}, dir))).stdout.trim()).toBe(pkg.version);
    const help = await finished(run(["--help"], {}, dir));
    expect(help.code).toBe(0);
    for (const command of ["serve", "migrate", "create-admin"]) expect(help.stdout).toContain(command);
    const bad = await finished(run(["serve"], { PORT: "not-a-port" }, dir));
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toStartWith("config: PORT");
    expect(bad.stderr.trim().split("\n")).toHaveLength(1);
    rmSync(dir, { recursive: true, force: true });
  });

  test("migrate applies the embedded migrations once, then nothing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rp-bin-"));
    const env = { DATA_DIR: join(dir, "data"), LOG_LEVEL: "info", ENVIRONMENT: "development" };
    const applied = async () => {
      const result = await finished(run(["migrate"], env, dir));
      expect(result.code).toBe(0);
      return JSON.parse(result.stdout.trim().split("\n").at(-1) as string).applied;
    };
    expect(await applied()).toBeGreaterThan(0);
    expect(await applied()).toBe(0);
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  test("DATA_DIR and everything in it is owner-only, even under umask 000", async () => {
    const dir = mkdtempSync(join(tmpdir(), "rp-bin-"));
    const dataDir = join(dir, "data");
    const proc = Bun.spawn(["sh", "-c", 'umask 000; exec "$0" migrate', BINARY], {
      cwd: dir,
      env: { PATH: process.env.PATH ?? "", LOG_LEVEL: "warn", ENVIRONMENT: "development", DATA_DIR: dataDir },
      stdout: "pipe",
      stderr: "pipe",
    });
    expect((await finished(proc)).code).toBe(0);
    const entries = [dataDir, ...readdirSync(dataDir, { recursive: true }).map((name) => join(dataDir, String(name)))];
    expect(entries.some((path) => path.endsWith("secret_key"))).toBe(true);
    expect(entries.some((path) => path.includes("pgdata"))).toBe(true);
    const open = entries.filter((path) => (statSync(path).mode & 0o077) !== 0);
    expect(open).toEqual([]);
    rmSync(dir, { recursive: true, force: true });
  }, 30_000);

  // The embedded database always; Postgres (a database of its own) + Redis when the run has them.
  const kinds: [string, () => Promise<{ env: Record<string, string>; drop?: () => Promise<void> }>][] = [
    ["embedded database", async () => ({ env: {} })],
  ];
  if (TEST_DATABASE_URL) {
    kinds.push([
      "PostgreSQL + Redis",
      async () => {
        const scratch = await scratchPostgres("e2e");
        const env: Record<string, string> = { REVIEWPOINT_DB_URL: scratch.url };
        if (TEST_REDIS_URL) env.REDIS_URL = TEST_REDIS_URL;
        return { env, drop: scratch.drop };
      },
    ]);
  }

  for (const [kind, database] of kinds) {
    describe(`on the ${kind}`, () => {
      const dir = mkdtempSync(join(tmpdir(), "rp-bin-"));
      const port = 20_000 + Math.floor(Math.random() * 20_000);
      let dropDatabase: (() => Promise<void>) | undefined;
      let env: Record<string, string> = {
        DATA_DIR: join(dir, "data"),
        PORT: String(port),
        HOST: "127.0.0.1",
        // Slow enough (~80 ms a hash) that a login is still running when SIGTERM arrives.
        BCRYPT_ROUNDS: "10",
        ENVIRONMENT: "production",
        SECRET_KEY: "e2e-secret-e2e-secret-e2e-secret-e2e-secret",
      };
      const base = `http://127.0.0.1:${port}`;
      let server: ReturnType<typeof run> | undefined;
      const api = (path: string, init: RequestInit = {}) => fetch(`${base}${API}${path}`, init);
      const json = (body: unknown, extra: Record<string, string> = {}) => ({
        method: "POST",
        headers: { "content-type": "application/json", ...extra },
        body: JSON.stringify(body),
      });

      beforeAll(async () => {
        const chosen = await database();
        env = { ...env, ...chosen.env };
        dropDatabase = chosen.drop;
        // PGlite is single-process: create-admin runs (and creates the database) before the server starts.
        const admin = await finished(
          run(["create-admin", "--username", "root", "--email", "root@example.com"], env, dir, `${ADMIN_PASSWORD}\n`),
        );
        if (admin.code !== 0) throw new Error(`create-admin failed: ${admin.stderr}`);
        server = run(["serve"], env, dir);
        for (let i = 0; i < 300; i++) {
          if ((await fetch(`${base}${API}/health/ready`).catch(() => undefined))?.ok) return;
          await Bun.sleep(50);
        }
        throw new Error(`server never became ready: ${await new Response(server.stderr).text()}`);
      }, 60_000);

      afterAll(async () => {
        server?.kill("SIGKILL");
        await server?.exited;
        await dropDatabase?.();
        rmSync(dir, { recursive: true, force: true });
      });

      test("serves health and the docs with their assets", async () => {
        const health = await api("/health");
        expect(health.status).toBe(200);
        expect(((await health.json()) as any).checks.database.ok).toBe(true);
        const docs = await fetch(`${base}/docs`);
        expect(docs.status).toBe(200);
        const html = await docs.text();
        for (const [, asset] of html.matchAll(/src="([^"]+)"/g))
          expect((await fetch(`${base}${asset}`)).status).toBe(200);
        expect((await fetch(`${base}/redoc`)).status).toBe(200);
        expect((await fetch(`${base}/openapi.json`)).status).toBe(200);
      });

      test("register, login, profile, refresh, logout; the admin from create-admin exports users", async () => {
        const username = `e2e${port}`;
        const registered = await api(
          "/auth/register",
          json({ username, email: `${username}@example.com`, password: "secret123" }),
        );
        expect(registered.status).toBe(201);
        const tokens: any = await (await api("/auth/login", json({ username, password: "secret123" }))).json();
        const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
        const me = await api("/users/me", { headers: bearer(tokens.access_token) });
        expect(me.status).toBe(200);
        expect(((await me.json()) as any).username).toBe(username);
        expect((await api("/users?limit=5", { headers: bearer(tokens.access_token) })).status).toBe(403);
        const refreshed = await api("/auth/refresh", { method: "POST", headers: bearer(tokens.refresh_token) });
        expect(refreshed.status).toBe(200);
        const next: any = await refreshed.json();
        expect((await api("/auth/logout", { method: "POST", headers: bearer(next.access_token) })).status).toBe(204);
        expect((await api("/users/me", { headers: bearer(next.access_token) })).status).toBe(401);

        const admin: any = await (
          await api("/auth/login", json({ username: "root", password: ADMIN_PASSWORD }))
        ).json();
        const exported = await api("/users/export?q=e2e", { headers: bearer(admin.access_token) });
        expect(exported.status).toBe(200);
        expect(exported.headers.get("content-disposition")).toBe('attachment; filename="users.csv"');
        const lines = (await exported.text()).trim().split("\n");
        expect(lines[0]).toStartWith("id,username,email");
        expect(lines.some((line) => line.includes(username))).toBe(true);
      });

      // Postgres serves many processes at once; only the embedded database must refuse a second one.
      test.skipIf(kind !== "embedded database")("a second process on the embedded database is refused", async () => {
        const second = await finished(run(["migrate"], env, dir));
        expect(second.code).toBe(1);
        expect(second.stderr).toContain("in use by process");
      });

      test("SIGTERM lets the running request finish, closes sockets with 1001, then exits 0", async () => {
        const admin: any = await (
          await api("/auth/login", json({ username: "root", password: ADMIN_PASSWORD }))
        ).json();
        const socket = new WebSocket(`ws://127.0.0.1:${port}${API}/ws?token=${admin.access_token}`);
        const established = new Promise((resolve) => {
          socket.onmessage = (event) => resolve(JSON.parse(String(event.data)).type);
        });
        const closed = new Promise<number>((resolve) => {
          socket.onclose = (event) => resolve(event.code);
        });
        expect(await established).toBe("connection.established");
        const login = api("/auth/login", json({ username: "root", password: ADMIN_PASSWORD }));
        await Bun.sleep(20);
        server?.kill("SIGTERM");
        expect((await login).status).toBe(200);
        expect(await closed).toBe(1001);
        expect(await server?.exited).toBe(0);
        expect(await fetch(`${base}${API}/health/live`).catch(() => "refused")).toBe("refused");
      });
    });
  }
});
