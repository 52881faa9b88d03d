import { expect } from "bun:test";
import { copyFileSync, existsSync, linkSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eq, sql } from "drizzle-orm";
import postgres from "postgres";
import { API_PREFIX, type AppDeps, createApp } from "../src/app";
import { type Config, loadConfig } from "../src/config";
import { connectPostgres, type Database, openPglite } from "../src/db/client";
import { runMigrations } from "../src/db/migrate";
import { users } from "../src/db/schema";
import { type KeyValueStore, MemoryStore, RedisStore } from "../src/platform/kv";
import { createLogger, type Logger } from "../src/platform/logger";
import { startTestBucket, type TestBucket } from "./s3";

/** The run's database: real Postgres when TEST_DATABASE_URL is set, in-memory PGlite otherwise. */
export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL;
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL;
/** TEST_STORAGE=s3: apps from makeApp store in a bucket of an s3rver this run starts; on disk otherwise. */
export const TEST_STORAGE = process.env.TEST_STORAGE === "s3" ? "s3" : "disk";

let bucket: Promise<TestBucket> | undefined;

/** The run's s3rver, started on first use, gone with the process. */
export async function testBucket(): Promise<TestBucket> {
  bucket ??= startTestBucket();
  const started = await bucket;
  await started.ensureRunning();
  return started;
}

/** A new, empty Postgres database beside TEST_DATABASE_URL's, for tests that need one to themselves. */
export async function scratchPostgres(label: string): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `rp_${label}_${crypto.randomUUID().replaceAll("-", "")}`;
  const admin = postgres(TEST_DATABASE_URL as string, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(TEST_DATABASE_URL as string);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

let shared: Promise<Database> | undefined;

export function testDatabase(): Promise<Database> {
  shared ??= (async () => {
    const db = TEST_DATABASE_URL ? connectPostgres({ url: TEST_DATABASE_URL, max: 10 }) : await openPglite("memory://");
    if (TEST_DATABASE_URL) {
      // Start every run from an empty database, so migrations are exercised from scratch.
      await db.orm.execute(sql`drop schema if exists drizzle cascade`);
      await db.orm.execute(sql`drop schema public cascade`);
      await db.orm.execute(sql`create schema public`);
    }
    await runMigrations(db);
    return db;
  })();
  return shared;
}

export async function truncateAll(db: Database): Promise<void> {
  await db.orm.execute(
    sql`truncate table users, files, auth_sessions, revoked_tokens, used_password_reset_tokens, email_verifications,
      user_mfa, mfa_recovery_codes, used_mfa_tokens, passkeys, webauthn_challenges, audit_events, share_links, idempotency_keys restart identity cascade`,
  );
}

const scratchDirs: string[] = [];

/** A folder of the test's own under the system's temporary folder, removed by `removeScratchDirs`. */
export function scratchDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  scratchDirs.push(dir);
  return dir;
}

export function removeScratchDirs(): void {
  for (const dir of scratchDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

export function testConfig(overrides: Record<string, string> = {}): Config {
  return loadConfig({
    ENVIRONMENT: "test",
    BCRYPT_ROUNDS: "4",
    RATE_LIMIT_ENABLED: "false",
    DATA_DIR: "/tmp/reviewpoint-test",
    // Each app its own upload folder, so a test can count what was stored.
    UPLOAD_DIR: scratchDir("rp-uploads-"),
    ...overrides,
  });
}

/** A logger that keeps its lines, so tests can read what would have reached the log. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({ level: "debug", format: "json", write: (line) => lines.push(line) });
  return Object.assign(logger, { lines });
}

const redisStores: RedisStore[] = [];

export async function testStore(): Promise<KeyValueStore> {
  if (!TEST_REDIS_URL) return new MemoryStore();
  const store = new RedisStore(TEST_REDIS_URL, memoryLogger());
  await store.connect();
  redisStores.push(store);
  return store;
}

export async function closeTestStores(): Promise<void> {
  await Promise.all(redisStores.splice(0).map((store) => store.close()));
}

export interface TestContext {
  app: ReturnType<typeof createApp>;
  deps: AppDeps;
  logs: string[];
}

/** The whole app on the run's database and a fresh store, in one line. */
export async function makeApp(
  overrides: Record<string, string> = {},
  deps: Partial<AppDeps> = {},
): Promise<TestContext> {
  const logger = memoryLogger();
  // Each app its own prefix, as each its own upload folder.
  const storage = TEST_STORAGE === "s3" ? (await testBucket()).env(`app-${crypto.randomUUID()}`) : {};
  const full: AppDeps = {
    config: testConfig({ ...storage, ...overrides }),
    db: await testDatabase(),
    kv: await testStore(),
    logger,
    ...deps,
  };
  return { app: createApp(full), deps: full, logs: logger.lines };
}

export interface CallOptions {
  body?: unknown;
  token?: string;
  headers?: Record<string, string>;
}

/** Sends one request through `app.handle`; an object body goes as JSON, anything else (text, form, stream, bytes) as given. */
export async function call(
  app: { handle(request: Request): Promise<Response> },
  method: string,
  path: string,
  options: CallOptions = {},
) {
  const headers = new Headers(options.headers);
  let body: RequestInit["body"];
  const raw =
    typeof options.body === "string" ||
    options.body instanceof URLSearchParams ||
    options.body instanceof FormData ||
    options.body instanceof ReadableStream ||
    options.body instanceof Blob ||
    ArrayBuffer.isView(options.body);
  if (raw) {
    body = options.body as RequestInit["body"];
  } else if (options.body !== undefined) {
    body = JSON.stringify(options.body);
    headers.set("content-type", "application/json");
  }
  if (options.token) headers.set("authorization", `Bearer ${options.token}`);
  const response = await app.handle(new Request(`http://localhost${path}`, { method, headers, body }));
  const text = await response.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

type Handler = { handle(request: Request): Promise<Response> };

/** The API's base path, for every test. */
export const API = API_PREFIX;
export const PASSWORD = "secret123";

export interface Account {
  id: string;
  username: string;
  email: string;
  password: string;
  access: string;
  refresh: string;
  /** The User the API returned at registration. */
  user: { id: string; username: string; email: string; role: string };
}

let accountSeq = 0;

/** Registers a user and logs in; returns the user and its tokens. */
export async function signUp(
  app: Handler,
  fields: { username?: string; email?: string; password?: string; name?: string } = {},
): Promise<Account> {
  accountSeq += 1;
  const username = fields.username ?? `user${accountSeq}_${crypto.randomUUID().slice(0, 8)}`;
  const email = fields.email ?? `${username}@example.com`;
  const password = fields.password ?? PASSWORD;
  const registered = await call(app, "POST", `${API}/auth/register`, {
    body: { username, email, password, name: fields.name },
  });
  if (registered.status !== 201) throw new Error(`register failed: ${registered.status} ${registered.text}`);
  const tokens = await login(app, username, password);
  return {
    id: registered.json.id,
    username,
    email,
    password,
    access: tokens.access_token,
    refresh: tokens.refresh_token,
    user: registered.json,
  };
}

export async function login(app: Handler, username: string, password = PASSWORD) {
  const res = await call(app, "POST", `${API}/auth/login`, { body: { username, password } });
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${res.text}`);
  return res.json as { access_token: string; refresh_token: string; token_type: string; expires_in: number };
}

/** Promotes an account to admin straight in the database (there is no API for a first admin). */
export async function promote(db: Database, id: string): Promise<void> {
  await db.orm.update(users).set({ role: "admin" }).where(eq(users.id, id));
}

const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

/** The contract's error body, with this status and code (and, if given, exactly these fields in `details`). */
export function expectError(res: { status: number; json: any }, status: number, code: string, fields?: string[]) {
  expect({ status: res.status, code: res.json?.error?.code }).toEqual({ status, code });
  expect(typeof res.json.error.message).toBe("string");
  expect(res.json.error.timestamp).toMatch(ISO_UTC);
  expect(Array.isArray(res.json.error.details)).toBe(true);
  if (fields) expect(res.json.error.details.map((d: { field: string }) => d.field).sort()).toEqual([...fields].sort());
}

/** 401 with the bearer challenge, as every rejected token must answer. */
export function expectUnauthorized(res: { status: number; json: any; headers: Headers }, code = "INVALID_TOKEN") {
  expectError(res, 401, code);
  expect(res.headers.get("www-authenticate")).toBe("Bearer");
}

/** What came back over a raw socket: the status line's code, the headers (lower-case names) and the body. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
  json: any;
}

/**
 * Sends `request` byte for byte over a new TCP connection, as no HTTP client would (a made-up Host, a
 * malformed head, a body trickling in: `request` may be a function that writes at its own pace), and
 * reads until the server closes (send `Connection: close`) or `ms` pass.
 */
export function rawHttp(
  port: number,
  request: string | Uint8Array | ((write: (bytes: string | Uint8Array) => void) => Promise<void>),
  ms = 5000,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const socket = net.connect(port, "127.0.0.1", () => {
      if (typeof request === "function") {
        void request((bytes) => {
          if (!socket.destroyed) socket.write(bytes);
        });
      } else socket.write(request);
    });
    const timer = setTimeout(() => socket.destroy(new Error(`no end of response within ${ms} ms`)), ms);
    socket.on("data", (chunk: Buffer) => chunks.push(chunk));
    socket.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on("close", () => {
      clearTimeout(timer);
      const bytes = Buffer.concat(chunks);
      const end = bytes.indexOf("\r\n\r\n");
      const head = bytes.subarray(0, end === -1 ? undefined : end).toString("latin1");
      const [statusLine = "", ...lines] = head.split("\r\n");
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(":");
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const body = end === -1 ? "" : bytes.subarray(end + 4).toString("utf8");
      let json: any;
      try {
        json = body ? JSON.parse(body) : undefined;
      } catch {
        json = undefined;
      }
      resolve({ status: Number(statusLine.split(" ")[1]), headers, body, json });
    });
  });
}

/** A port nobody listens on right now. */
export function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const { port } = probe;
  probe.stop(true);
  return port;
}

export interface ThrowawayRedis {
  url: string;
  /** Runs one redis-cli command against it. */
  cli(...args: string[]): Promise<string>;
  /** Freezes (SIGSTOP) or thaws (SIGCONT) the server: a hung Redis. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void;
  /** Stops it (by PID) without saving; `start()` runs it again on the same port and folder. */
  stop(): Promise<void>;
  start(): Promise<void>;
}

/** Whether this machine can start a redis-server of a test's own. */
export const HAS_REDIS_SERVER = Bun.which("redis-server") !== null;

/** A redis-server of the test's own, on a free port, keeping snapshots (SAVE) in a folder of its own. */
export async function throwawayRedis(): Promise<ThrowawayRedis> {
  const port = freePort();
  const dir = mkdtempSync(join(tmpdir(), "rp-redis-"));
  let server: ReturnType<typeof Bun.spawn> | undefined;
  const cli = async (...args: string[]) => {
    const proc = Bun.spawn(["redis-cli", "-p", String(port), ...args], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(proc.stdout).text();
    await proc.exited;
    return out.trim();
  };
  const redis: ThrowawayRedis = {
    url: `redis://127.0.0.1:${port}/0`,
    cli,
    signal: (signal) => server?.kill(signal),
    async start() {
      server = Bun.spawn(
        ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"].concat([
          "--dir",
          dir,
          "--dbfilename",
          "dump.rdb",
          "--logfile",
          "",
        ]),
        { stdout: "ignore", stderr: "ignore" },
      );
      for (let i = 0; i < 100 && (await cli("ping")) !== "PONG"; i++) await Bun.sleep(20);
    },
    async stop() {
      server?.kill("SIGCONT");
      server?.kill("SIGKILL");
      await server?.exited;
    },
  };
  await redis.start();
  return redis;
}

/** Polls `check` until it holds (at most `ms`); returns whether it did. */
export async function eventually(check: () => Promise<boolean> | boolean, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await Bun.sleep(50);
  }
  return check();
}

/** The checkout's root. */
export const REPO_ROOT = join(import.meta.dir, "..");
/** The repository's compiled binary, built once per test run (the e2e files share it). */
export const BINARY = join(REPO_ROOT, "dist", "reviewpoint");
let built: Promise<void> | undefined;

export function buildBinary(): Promise<void> {
  built ??= (async () => {
    const build = Bun.spawn(["bun", "run", "build"], { cwd: REPO_ROOT, stdout: "ignore", stderr: "pipe" });
    if ((await build.exited) !== 0) throw new Error(await new Response(build.stderr).text());
  })();
  return built;
}

/**
 * A new empty folder outside the checkout, for the binary as an operator copies it to a VM. The binary
 * goes in at the first `runShipped` (after `buildBinary`, which describe-time callers precede).
 */
export function operatorDir(prefix = "rp-bin-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

function installBinary(dir: string): void {
  const target = join(dir, "reviewpoint");
  if (existsSync(target)) return;
  try {
    linkSync(BINARY, target);
  } catch {
    copyFileSync(BINARY, target);
  }
}

export interface ShippedOptions {
  env?: Record<string, string>;
  stdin?: string;
  /** Shell run first inside the binary's mount namespace (e.g. a small tmpfs: a full disk). */
  setup?: string;
  stdout?: "pipe" | "ignore";
}

/**
 * Runs `dir/reviewpoint` from `dir` as it ships: in a mount namespace of its own where the checkout is
 * hidden under an empty tmpfs, so anything it would read from its build tree is not there. The process
 * is the binary itself (sh execs it): signals reach it directly.
 */
export function runShipped(dir: string, args: string[], options: ShippedOptions = {}) {
  installBinary(dir);
  const script = `mount -t tmpfs none "$0" && ${options.setup ? `${options.setup} && ` : ""}exec "$@"`;
  return Bun.spawn(["unshare", "-m", "sh", "-c", script, REPO_ROOT, "./reviewpoint", ...args], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? "", LOG_LEVEL: "warn", ...options.env },
    stdin: options.stdin === undefined ? "ignore" : new TextEncoder().encode(options.stdin),
    stdout: options.stdout ?? "pipe",
    stderr: "pipe",
  });
}

/** Exit code and output of a finished process. */
export async function finished(proc: {
  exited: Promise<number>;
  stdout: ReadableStream<Uint8Array> | number | undefined | null;
  stderr: ReadableStream<Uint8Array> | number | undefined | null;
}) {
  const text = (stream: unknown) => (stream instanceof ReadableStream ? new Response(stream).text() : "");
  const [code, stdout, stderr] = await Promise.all([proc.exited, text(proc.stdout), text(proc.stderr)]);
  return { code, stdout, stderr };
}
