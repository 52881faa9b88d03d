/**
 * Two compiled binaries as one service: one fresh Postgres database (both migrating at the same
 * moment), this machine's Redis, one s3rver bucket. Whatever one instance does, the other sees at once.
 * Runs in the Postgres + Redis run (TEST_DATABASE_URL, TEST_REDIS_URL).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { countObjects, startTestBucket, type TestBucket } from "../s3";
import {
  API,
  BINARY,
  buildBinary,
  freePort,
  HAS_REDIS_SERVER,
  scratchPostgres,
  TEST_DATABASE_URL,
  TEST_REDIS_URL,
  type ThrowawayRedis,
  throwawayRedis,
} from "../support";

const PASSWORD = "secret123";
const MiB = 1024 * 1024;
setDefaultTimeout(60_000);

interface Instance {
  name: string;
  base: string;
  port: number;
  proc: ReturnType<typeof Bun.spawn>;
  stderr: Promise<string>;
  /** Its log lines so far (JSON, warn and above). */
  log: string[];
}

/** Keeps a stream's lines as they come. */
async function collect(stream: ReadableStream<Uint8Array>, lines: string[]) {
  const decoder = new TextDecoder();
  let rest = "";
  for await (const bytes of stream) {
    const parts = (rest + decoder.decode(bytes, { stream: true })).split("\n");
    rest = parts.pop() ?? "";
    lines.push(...parts);
  }
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const jsonPost = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});

// Once, in the Postgres + Redis run; with a Redis server of its own, which the test setup never flushes.
describe.skipIf(!TEST_DATABASE_URL || !TEST_REDIS_URL || !HAS_REDIS_SERVER)("two binaries, one service", () => {
  const dir = mkdtempSync(join(tmpdir(), "rp-instances-"));
  const prefix = `instances-${crypto.randomUUID()}/`;
  let bucket: TestBucket;
  let redis: ThrowawayRedis;
  let database: Awaited<ReturnType<typeof scratchPostgres>>;
  let env: Record<string, string>;
  let a: Instance;
  let b: Instance;

  function start(name: string): Instance {
    const port = freePort();
    const proc = Bun.spawn([BINARY, "serve"], {
      cwd: dir,
      env: { ...env, PORT: String(port), DATA_DIR: join(dir, name) },
      stdout: "pipe",
      stderr: "pipe",
    });
    const log: string[] = [];
    void collect(proc.stdout, log);
    const stderr = new Response(proc.stderr).text();
    return { name, port, base: `http://127.0.0.1:${port}${API}`, proc, stderr, log };
  }

  async function ready(instance: Instance) {
    for (let i = 0; i < 400; i++) {
      if ((await fetch(`${instance.base}/health/ready`).catch(() => undefined))?.ok) return;
      if (instance.proc.exitCode !== null) break;
      await Bun.sleep(25);
    }
    throw new Error(`${instance.name} never became ready: ${await instance.stderr}`);
  }

  async function register(on: Instance, username: string) {
    const res = await fetch(
      `${on.base}/auth/register`,
      jsonPost({ username, email: `${username}@example.com`, password: PASSWORD }),
    );
    expect(res.status).toBe(201);
    return ((await res.json()) as { id: string }).id;
  }

  async function login(on: Instance, username: string, password = PASSWORD) {
    const res = await fetch(`${on.base}/auth/login`, jsonPost({ username, password }));
    return { status: res.status, tokens: (await res.json()) as { access_token: string; refresh_token: string } };
  }

  const me = (on: Instance, token: string) => fetch(`${on.base}/users/me`, { headers: bearer(token) });

  beforeAll(async () => {
    [bucket, database, redis] = await Promise.all([
      startTestBucket(),
      scratchPostgres("instances"),
      throwawayRedis(),
      buildBinary(),
    ]);
    env = {
      PATH: process.env.PATH ?? "",
      ENVIRONMENT: "production",
      SECRET_KEY: "instances-secret-instances-secret-0123456789",
      REVIEWPOINT_DB_URL: database.url,
      REDIS_URL: redis.url,
      ...bucket.env(prefix),
      HOST: "127.0.0.1",
      BCRYPT_ROUNDS: "4",
      LOG_LEVEL: "warn",
      REFRESH_GRACE_SECONDS: "0",
      RATE_LIMIT_REGISTER: "100/hour",
      RATE_LIMIT_LOGIN_IP: "1000/minute",
      SHUTDOWN_TIMEOUT_SECONDS: "20",
    };
    // Both at once on the empty database: the migration lock makes one apply and the other wait.
    [a, b] = [start("a"), start("b")];
    await Promise.all([ready(a), ready(b)]);
  });

  afterAll(async () => {
    for (const instance of [a, b]) instance?.proc.kill("SIGKILL");
    await Promise.all([a?.proc.exited, b?.proc.exited]);
    await Promise.all([bucket?.stop(), database?.drop(), redis?.stop()]);
    rmSync(dir, { recursive: true, force: true });
  });

  test("both migrated at the same moment without an error, into one schema", async () => {
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    try {
      const [applied] = await sql`select count(*)::int as n from drizzle.__drizzle_migrations`;
      const [tables] = await sql`select count(*)::int as n from pg_tables where schemaname = 'public'`;
      expect(applied?.n).toBeGreaterThan(0);
      expect(tables?.n).toBeGreaterThan(0);
    } finally {
      await sql.end();
    }
    for (const instance of [a, b]) {
      expect(instance.proc.exitCode).toBeNull();
      expect(instance.log.filter((line) => line.includes('"level":"error"'))).toEqual([]);
    }
  });

  test("register on A, log in on B; a logout on A refuses both tokens on B at once", async () => {
    await register(a, "ann");
    const { status, tokens } = await login(b, "ann");
    expect(status).toBe(200);
    expect((await me(a, tokens.access_token)).status).toBe(200);
    const socket = new WebSocket(`${b.base.replace("http", "ws")}/ws?token=${tokens.access_token}`);
    const closed = new Promise<number>((resolve) => {
      socket.onclose = (event) => resolve(event.code);
    });
    await new Promise((resolve) => {
      socket.onmessage = resolve;
    });

    expect((await fetch(`${a.base}/auth/logout`, jsonPost({}, bearer(tokens.access_token)))).status).toBe(204);
    expect((await me(b, tokens.access_token)).status).toBe(401);
    const refresh = await fetch(`${b.base}/auth/refresh`, jsonPost({ refresh_token: tokens.refresh_token }));
    expect(refresh.status).toBe(401);
    const startedAt = Date.now();
    expect(await closed).toBe(4401);
    expect(Date.now() - startedAt).toBeLessThan(1000);
  });

  test("a refresh token rotated on A and replayed on B is refused, and ends the session", async () => {
    await register(a, "rita");
    const { tokens } = await login(a, "rita");
    const rotated = await fetch(`${a.base}/auth/refresh`, jsonPost({ refresh_token: tokens.refresh_token }));
    expect(rotated.status).toBe(200);
    const next = (await rotated.json()) as { access_token: string; refresh_token: string };

    const replay = await fetch(`${b.base}/auth/refresh`, jsonPost({ refresh_token: tokens.refresh_token }));
    expect(replay.status).toBe(401);
    expect((await fetch(`${a.base}/auth/refresh`, jsonPost({ refresh_token: next.refresh_token }))).status).toBe(401);
    expect((await me(b, next.access_token)).status).toBe(401);
  });

  test("a promotion and a deactivation on A hold on B's next request", async () => {
    const adminId = await register(a, "boss");
    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    await sql`update users set role = 'admin' where id = ${adminId}`;
    await sql.end();
    const admin = (await login(a, "boss")).tokens.access_token;
    const userId = await register(b, "uma");
    const user = (await login(b, "uma")).tokens.access_token;
    const change = (body: unknown) =>
      fetch(`${a.base}/users/${userId}`, {
        method: "PATCH",
        headers: { ...bearer(admin), "content-type": "application/json" },
        body: JSON.stringify(body),
      });

    expect((await fetch(`${b.base}/users?limit=1`, { headers: bearer(user) })).status).toBe(403);
    expect((await change({ role: "admin" })).status).toBe(200);
    expect((await fetch(`${b.base}/users?limit=1`, { headers: bearer(user) })).status).toBe(200);
    expect((await change({ is_active: false })).status).toBe(200);
    expect((await me(b, user)).status).toBe(401);
  });

  test("the login limit counts attempts on A and B together", async () => {
    await register(a, "lara");
    const statuses: number[] = [];
    // RATE_LIMIT_LOGIN defaults to 5 a minute per account.
    for (let i = 0; i < 6; i++) statuses.push((await login(i % 2 ? b : a, "lara", "wrong-password")).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429]);
    expect((await login(b, "lara")).status).toBe(429);
  });

  test("upload on A reaches the owner's socket on B; download byte for byte and delete on B", async () => {
    await register(a, "paula");
    const token = (await login(a, "paula")).tokens.access_token;
    const socket = new WebSocket(`${b.base.replace("http", "ws")}/ws?token=${token}`);
    const messages: { type: string; data: any }[] = [];
    socket.onmessage = (event) => messages.push(JSON.parse(String(event.data)));
    const arrived = async (type: string) => {
      for (let i = 0; i < 200 && !messages.some((m) => m.type === type); i++) await Bun.sleep(10);
      return messages.find((m) => m.type === type);
    };
    expect(await arrived("connection.established")).toBeDefined();

    const bytes = new Uint8Array(3 * MiB).map((_, i) => 32 + (i % 90));
    const form = new FormData();
    form.append("file", new File([bytes], "paper.txt", { type: "text/plain" }));
    const uploaded = await fetch(`${a.base}/uploads`, { method: "POST", headers: bearer(token), body: form });
    expect(uploaded.status).toBe(201);
    const file = (await uploaded.json()) as { id: string; file_hash: string };
    expect((await arrived("file.uploaded"))?.data.id).toBe(file.id);

    const download = await fetch(`${b.base}/uploads/${file.id}/download`, { headers: bearer(token) });
    expect(download.status).toBe(200);
    expect(download.headers.get("etag")).toBe(`"${file.file_hash}"`);
    expect(new Uint8Array(await download.arrayBuffer())).toEqual(bytes);
    const deleted = await fetch(`${b.base}/uploads/${file.id}`, { method: "DELETE", headers: bearer(token) });
    expect(deleted.status).toBe(204);
    expect((await fetch(`${a.base}/uploads/${file.id}`, { headers: bearer(token) })).status).toBe(404);
    expect((await arrived("file.deleted"))?.data.id).toBe(file.id);
    socket.close();
  });

  test("SIGTERM to A in the middle of an upload burst: each upload completes or leaves nothing", async () => {
    const userId = await register(b, "burst");
    const token = (await login(b, "burst")).tokens.access_token;
    const bytes = new Uint8Array(MiB).fill(97);
    const send = () => {
      const form = new FormData();
      form.append("file", new File([bytes], "burst.txt", { type: "text/plain" }));
      return fetch(`${a.base}/uploads`, { method: "POST", headers: bearer(token), body: form }).then(
        async (res) => ({ status: res.status, id: res.status === 201 ? ((await res.json()) as any).id : undefined }),
        () => ({ status: 0, id: undefined }),
      );
    };
    const burst: Promise<{ status: number; id?: string }>[] = [];
    for (let i = 0; i < 40; i++) {
      burst.push(send());
      if (i === 15) a.proc.kill("SIGTERM");
      await Bun.sleep(2);
    }
    const outcomes = await Promise.all(burst);
    expect(await a.proc.exited).toBe(0);
    const stored = outcomes.filter((o) => o.status === 201).map((o) => o.id as string);
    // Anything else is a refused connection (0) or an error answer; never a 5xx for an accepted upload.
    expect(outcomes.filter((o) => o.status !== 201 && o.status !== 0)).toEqual([]);
    expect(stored.length).toBeGreaterThan(0);

    const sql = postgres(database.url, { max: 1, onnotice: () => {} });
    const rows = await sql`select id from files where owner_id = ${userId}`;
    await sql.end();
    expect(rows.map((row) => row.id).sort()).toEqual([...stored].sort());
    for (const id of stored) {
      const download = await fetch(`${b.base}/uploads/${id}/download`, { headers: bearer(token) });
      expect(download.status).toBe(200);
      expect((await download.arrayBuffer()).byteLength).toBe(MiB);
    }
    // Only this test's objects remain (the one before deleted its own), and no upload is left half-done.
    expect(await countObjects(bucket.setting, `${prefix}objects/`)).toBe(stored.length);
    expect(await countObjects(bucket.setting, `${prefix}tmp/`)).toBe(0);
  });
});
