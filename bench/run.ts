/**
 * `bun run bench`: builds the binary, measures it against a bare Bun.serve and the Fastify peer
 * (bench/peer) on this machine, prints a table and writes bench/results/latest.json. Exits 0 when
 * targets fail (it is a report) and non-zero only when the bench itself could not run.
 * `bun run bench uploads` runs only the upload rows (a couple of minutes), `bun run bench audit` the audit log's; `bun run bench profile` profiles
 * our upload path (the server from source under `bun --cpu-prof`) and counts what one upload costs.
 * BENCH_DATABASE and BENCH_REDIS_DB choose the database it recreates and the Redis db it flushes;
 * BENCH_UPLOAD_ROOT where the upload rows' servers store (default: the scratch folder under the temp dir).
 * This machine's ext4 has no journal, and there creating a file among many deleted in the last 1-5
 * minutes (a previous bench's scratch, another test suite's) costs several times more: for quick
 * iterations BENCH_UPLOAD_ROOT=/dev/shm measures the upload path without that.
 */
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Redis from "ioredis";
import postgres from "postgres";
import { startClamd } from "../test/clamd";
import { startTestBucket } from "../test/s3";
import { SCANNED_FILE_BYTES, type ScanLoads, scanLoads } from "./antivirus";
import {
  BACKUP_FILE_BYTES,
  BACKUP_USERS,
  type BackupResults,
  backupRows,
  type StartupResults,
  startupRows,
} from "./backup";
import {
  BIG_FILE_BYTES,
  byRate,
  curlUpload,
  type FilesResults,
  filesLoads,
  LIST_FILES,
  LIST_SHAPE,
  MiB,
  SMALL_FILE_BYTES,
  SMALL_UPLOAD_SHAPE,
  type Transfer,
  UPLOAD_LIMIT_BYTES,
  UPLOADS,
  writeMultipartBody,
  writeTextFile,
} from "./files";
import {
  byRequestRate,
  type Measured,
  type MedianPair,
  median,
  medianPair,
  type Pair,
  pairedLoad,
  processCpuUs,
} from "./load";
import { killChildren, type Launch, run, type Service, startService, stop, tail, timedStarts } from "./process";
import {
  formatProfile,
  postgresCounter,
  redisCommandsDuring,
  straceWorks,
  summarizeProfile,
  syscallsDuring,
} from "./profile";
import { type Delivery, eventDelivery, HELD_SOCKETS, type HeldSockets, heldSockets } from "./realtime";
import { type ResumableResults, resumableVsMultipart } from "./resumable";
import { pairedDownloads, S3_DOWNLOAD_ROUNDS, type S3Download } from "./storage";
import { BIG_ROUNDS, type UploadResults, type UploadServer, type UploadTarget, uploadLoads } from "./uploads";
import { type VictimResult, victimLatency } from "./victim";
import { runWrk, type WrkResult } from "./wrk";

const ROOT = resolve(import.meta.dir, "..");
const BINARY = join(ROOT, "dist", "reviewpoint");
const PEER_DIR = join(import.meta.dir, "peer");
const RESULTS = join(import.meta.dir, "results", "latest.json");
const ADMIN_DB_URL = "postgres://postgres@127.0.0.1:5432/postgres";
const BENCH_DB = process.env.BENCH_DATABASE ?? "reviewpoint_bench";
const BENCH_DB_URL = `postgresql://postgres@127.0.0.1:5432/${BENCH_DB}`;
const REDIS_DB = process.env.BENCH_REDIS_DB ?? "14";
const REDIS_URL = `redis://127.0.0.1:6379/${REDIS_DB}`;
const MODE = process.argv[2];
/** USER_STORAGE_QUOTA of the quota variant: set, and far above anything the bench stores. */
const UNREACHED_QUOTA = 2 ** 50;
/** `bun run bench profile quota`: the profiled server with a quota. */
const PROFILED_VARIANTS: Record<string, Record<string, string>> = {
  quota: { USER_STORAGE_QUOTA: String(UNREACHED_QUOTA) },
};
const VARIANT = MODE === "profile" ? process.argv[3] : undefined;
if (
  (MODE !== undefined && MODE !== "uploads" && MODE !== "audit" && MODE !== "profile") ||
  (VARIANT !== undefined && !PROFILED_VARIANTS[VARIANT])
) {
  console.error("usage: bun run bench [uploads | audit | profile [quota]]");
  process.exit(2);
}
/** `bun run bench uploads`: the upload rows alone. */
const ONLY_UPLOADS = MODE === "uploads";
/** A part of the bench run alone (`uploads`, `audit`), or undefined for all of it. */
const ONLY = MODE === "uploads" || MODE === "audit" ? MODE : undefined;

const LIVE = "/api/v1/health/live";
const READY = "/api/v1/health/ready";
type BenchUser = { username: string; email: string; password: string };
const USER: BenchUser = { username: "benchuser", email: "bench@example.com", password: "benchpass123" };
/** Uploads to our servers in the upload rows, so their files do not swell the bench user's list. */
const UPLOADER: BenchUser = { username: "benchuploader", email: "uploader@example.com", password: "benchpass123" };
const CREDENTIALS = { username: USER.username, password: USER.password };
const LOGIN_BODY = JSON.stringify(CREDENTIALS);

const STARTS = 3;
/** Users holding the bench's sockets: a user may hold 20 on an instance. */
const SOCKET_USERS = 50;
const BCRYPT_COST = 12;
const BCRYPT_SAMPLES = 10;
// Each of the 4 probe connections sends one request per 10 ms: ~400 req/s of liveness checks.
const PROBE_DELAY_MS = 10;
// Postgres, Redis and clamd are counted apart (the files rows keep Postgres busy); anything else over this
// means something else was running.
const OTHER_CPU_WARNING = 0.1;
/** Processes that work for the server under test, by /proc/PID/stat name. */
const STORES = new Set(["postgres", "redis-server", "clamd"]);

const benchStart = performance.now();
const scratch = mkdtempSync(join(tmpdir(), "reviewpoint-bench-"));
const uploadRoot = process.env.BENCH_UPLOAD_ROOT
  ? mkdtempSync(join(process.env.BENCH_UPLOAD_ROOT, "reviewpoint-bench-"))
  : scratch;
const workDir = join(scratch, "cwd");
const secretKey = randomBytes(32).toString("hex");
const peerToken = randomBytes(32).toString("hex");

function progress(message: string): void {
  console.error(`[${((performance.now() - benchStart) / 1000).toFixed(1).padStart(5)}s] ${message}`);
}

process.on("exit", () => {
  killChildren();
  rmSync(scratch, { recursive: true, force: true });
  rmSync(uploadRoot, { recursive: true, force: true });
});
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    progress(`${signal}: stopping children`);
    process.exit(130);
  });
}

// ---------------------------------------------------------------- preparation

/** utime stime cutime cstime of every Postgres and Redis process: exited backends land in the postmaster's cutime. */
function storeTicks(): number {
  let ticks = 0;
  for (const pid of readdirSync("/proc").filter((name) => /^\d+$/.test(name))) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue; // exited meanwhile
    }
    if (!STORES.has(stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")))) continue;
    const fields = stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
    for (const field of fields.slice(11, 15)) ticks += Number(field);
  }
  return ticks;
}

/** CPU ticks of the whole machine, of this process plus its reaped children, and of Postgres and Redis. */
function cpuTicks() {
  const sum = (ticks: number[]) => ticks.reduce((total, n) => total + n, 0);
  // /proc/stat "cpu" line: user nice system idle iowait irq softirq steal.
  const machine = (readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1, 9).map(Number);
  // /proc/self/stat after "(comm) ": utime stime cutime cstime are the 12th to 15th fields.
  const self = readFileSync("/proc/self/stat", "utf8");
  const own = self
    .slice(self.lastIndexOf(") ") + 2)
    .split(" ")
    .slice(11, 15)
    .map(Number);
  return {
    busy: sum(machine) - (machine[3] ?? 0) - (machine[4] ?? 0),
    total: sum(machine),
    own: sum(own),
    stores: storeTicks(),
  };
}

/**
 * Shares of the machine used since `from` by Postgres + Redis, and by every other process but this one
 * and its children: anything else running skews every row.
 */
function foreignCpuShare(from: ReturnType<typeof cpuTicks>) {
  const now = cpuTicks();
  const total = Math.max(1, now.total - from.total);
  const stores = now.stores - from.stores;
  return { stores: stores / total, other: (now.busy - from.busy - (now.own - from.own) - stores) / total };
}

async function ensureWrk(): Promise<void> {
  if (Bun.which("wrk")) return;
  progress("installing wrk");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  const install = () => run(["apt-get", "install", "-y", "wrk"], { env, timeoutMs: 180_000 });
  if ((await install()).code === 0) return;
  await run(["apt-get", "update"], { env, timeoutMs: 180_000 });
  const retry = await install();
  if (retry.code !== 0) throw new Error(`apt-get install wrk failed:\n${tail(retry.output)}`);
}

/** The peer's pinned dependencies (npm ci from its lockfile), installed once; returns the machine's Node version. */
async function ensurePeer(): Promise<string> {
  if (!Bun.which("node") || !Bun.which("npm")) throw new Error("the peer needs node and npm on the PATH");
  const version = (await run(["node", "--version"], { timeoutMs: 10_000 })).output.trim();
  if (existsSync(join(PEER_DIR, "node_modules", ".package-lock.json"))) return version;
  progress("installing the peer's dependencies (npm ci in bench/peer)");
  const install = await run(["npm", "ci", "--no-audit", "--no-fund"], {
    cwd: PEER_DIR,
    env: process.env,
    timeoutMs: 300_000,
  });
  if (install.code !== 0) throw new Error(`npm ci in bench/peer failed:\n${tail(install.output)}`);
  return version;
}

async function build(): Promise<void> {
  progress("building dist/reviewpoint");
  const { code, output } = await run([process.execPath, "run", "build"], { cwd: ROOT, timeoutMs: 180_000 });
  if (code !== 0 || !existsSync(BINARY)) throw new Error(`bun run build failed (${code}):\n${tail(output)}`);
}

async function resetStores(): Promise<void> {
  progress(`recreating database ${BENCH_DB}, flushing Redis db ${REDIS_DB}`);
  const sql = postgres(ADMIN_DB_URL, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    // FORCE: a server left over from an interrupted run may still hold connections.
    await sql.unsafe(`drop database if exists ${BENCH_DB} with (force)`);
    await sql.unsafe(`create database ${BENCH_DB}`);
  } finally {
    await sql.end();
  }
  const redis = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 5000, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    await redis.flushdb();
  } finally {
    redis.disconnect();
  }
}

/** What the login route could reach if bcrypt were its only cost and every core verified. */
async function bcryptCeiling() {
  progress(`timing bcrypt (cost ${BCRYPT_COST})`);
  const hash = await Bun.password.hash(USER.password, { algorithm: "bcrypt", cost: BCRYPT_COST });
  const startedAt = performance.now();
  for (let i = 0; i < BCRYPT_SAMPLES; i++) await Bun.password.verify(USER.password, hash);
  const perThread = BCRYPT_SAMPLES / ((performance.now() - startedAt) / 1000);
  const cores = cpus().length;
  return { cores, perThread, ceiling: cores * perThread };
}

// ---------------------------------------------------------------- launches

/** The bare Bun.serve; with `file`, it also serves that file at GET /file. */
const baselineLaunch = (file?: string, storeDir?: string): Launch => ({
  name: "baseline",
  cwd: workDir,
  readyPath: READY,
  timeoutMs: 30_000,
  command: (port) => ({
    cmd: [process.execPath, join(import.meta.dir, "baseline.ts"), String(port), ...(file ? [file] : [])],
    env: { PATH: process.env.PATH, HOME: process.env.HOME, ...(storeDir ? { BASELINE_STORE_DIR: storeDir } : {}) },
  }),
});

/**
 * The binary (or `command`) with the given database: Postgres + Redis when `external`, embedded PGlite
 * otherwise.
 */
function serverLaunch(
  name: string,
  dataDir: string,
  external: boolean,
  env: Record<string, string> = {},
  command = [BINARY, "serve"],
): Launch {
  return {
    name,
    cwd: workDir,
    readyPath: READY,
    // PGlite's first start runs initdb, which takes seconds on 2 cores.
    timeoutMs: external ? 30_000 : 120_000,
    command: (port) => ({
      cmd: command,
      env: {
        PATH: process.env.PATH,
        HOME: process.env.HOME,
        HOST: "127.0.0.1",
        PORT: String(port),
        LOG_LEVEL: "warn",
        ENVIRONMENT: "production",
        SECRET_KEY: secretKey,
        DATA_DIR: dataDir,
        // Limits high enough never to block, so the limiter's cost is still measured.
        RATE_LIMIT_DEFAULT: "100000000/second",
        RATE_LIMIT_LOGIN: "100000000/second",
        RATE_LIMIT_LOGIN_IP: "100000000/second",
        RATE_LIMIT_REGISTER: "100000000/second",
        RATE_LIMIT_UPLOAD: "100000000/second",
        ...(external ? { REVIEWPOINT_DB_URL: BENCH_DB_URL, REDIS_URL } : {}),
        ...env,
      },
    }),
  };
}

/** The Fastify peer under Node, on the bench database, with our server's upload limit. */
const peerLaunch = (uploadDir: string): Launch => ({
  name: "peer",
  cwd: workDir,
  readyPath: READY,
  timeoutMs: 30_000,
  command: (port) => ({
    cmd: ["node", join(PEER_DIR, "server.js")],
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      NODE_ENV: "production",
      HOST: "127.0.0.1",
      PORT: String(port),
      LOG_LEVEL: "warn",
      DATABASE_URL: BENCH_DB_URL,
      PEER_TOKEN: peerToken,
      UPLOAD_DIR: uploadDir,
      MAX_UPLOAD_SIZE: String(UPLOAD_LIMIT_BYTES),
    },
  }),
});

// ---------------------------------------------------------------- measurements

/** Serves ~100 requests, lets the process settle, then reads its resident set. */
async function idleRssMb(service: Service): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const response = await fetch(service.url + (i % 2 ? LIVE : READY), { signal: AbortSignal.timeout(5000) });
    await response.arrayBuffer();
  }
  await Bun.sleep(2000);
  const status = readFileSync(`/proc/${service.child.pid}/status`, "utf8");
  const kb = status.match(/^VmRSS:\s+(\d+) kB/m)?.[1];
  if (!kb) throw new Error(`no VmRSS for pid ${service.child.pid}`);
  return Number(kb) / 1024;
}

/** A reason the row could not be measured, printed in place of the value. */
type Unavailable = string;
const routeReturned = (status: number): Unavailable => `n/a (route returned ${status})`;
const ifMeasured = <T>(value: T | Unavailable, toMeasure: (value: T) => Measure): Measure | Unavailable =>
  typeof value === "string" ? value : toMeasure(value);

async function postJson(url: string, body: unknown) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: response.status, body: (await response.json().catch(() => null)) as unknown };
}

async function authLoads(url: string, baselineUrl: string, serverPid: number, baselinePid: number) {
  const register = await postJson(`${url}/api/v1/auth/register`, USER);
  if (register.status !== 201) return { me: routeReturned(register.status), login: routeReturned(register.status) };
  const login = await postJson(`${url}/api/v1/auth/login`, CREDENTIALS);
  const token = (login.body as { access_token?: unknown } | null)?.access_token;
  if (login.status !== 200 || typeof token !== "string") {
    return { me: routeReturned(login.status), login: routeReturned(login.status) };
  }

  const authorization = `Bearer ${token}`;
  const probe = await fetch(`${url}/api/v1/users/me`, {
    headers: { authorization },
    signal: AbortSignal.timeout(5000),
  });
  await probe.arrayBuffer();
  progress("load: GET /users/me");
  const me =
    probe.status === 200
      ? await pairedLoad(
          { url: `${url}/api/v1/users/me`, authorization, pid: serverPid },
          { url: baselineUrl + LIVE, pid: baselinePid },
        )
      : routeReturned(probe.status);

  progress("load: POST /auth/login, with GET /health/live alongside");
  const [storm, live] = await Promise.all([
    runWrk({
      url: `${url}/api/v1/auth/login`,
      threads: 2,
      connections: 16,
      seconds: 10,
      method: "POST",
      body: LOGIN_BODY,
    }),
    // Paced: an unpaced probe would take a core from bcrypt and sink the ceiling comparison.
    runWrk({ url: url + LIVE, threads: 1, connections: 4, seconds: 10, delayMs: PROBE_DELAY_MS }),
  ]);
  return { me, login: { storm, live } };
}

/** A bearer token of the user (the bench user is registered by the auth loads; anyone is registered here if not yet). */
async function signIn(url: string, user = USER): Promise<string | Unavailable> {
  const credentials = { username: user.username, password: user.password };
  let login = await postJson(`${url}/api/v1/auth/login`, credentials);
  if (login.status === 401) {
    const register = await postJson(`${url}/api/v1/auth/register`, user);
    if (register.status !== 201) return routeReturned(register.status);
    login = await postJson(`${url}/api/v1/auth/login`, credentials);
  }
  const token = (login.body as { access_token?: unknown } | null)?.access_token;
  return login.status === 200 && typeof token === "string" ? token : routeReturned(login.status);
}

/** The big file both file stages send, written once. */
const bigFile = join(scratch, "big.txt");
function writeBigFile(): void {
  if (existsSync(bigFile)) return;
  progress(`writing a ${BIG_FILE_BYTES / MiB} MiB text file`);
  writeTextFile(bigFile, BIG_FILE_BYTES);
}

/**
 * The upload rows: four servers started fresh (so the resident set the big uploads watch is not what
 * earlier loads left) and loaded in turn, beside a baseline. Ours as shipped, ours with a quota, ours with
 * metrics off (on one database, one Redis and one upload folder, as instances of one service), the peer.
 */
async function uploadsStage(): Promise<{ uploads: UploadResults | Unavailable; busy: MachineShare; log: string }> {
  writeBigFile();
  const uploadDir = join(uploadRoot, "uploads");
  const ours = (name: string, env: Record<string, string> = {}) =>
    serverLaunch(`server (${name})`, join(scratch, `data-uploads-${name}`), true, {
      MAX_UPLOAD_SIZE: String(UPLOAD_LIMIT_BYTES),
      UPLOAD_DIR: uploadDir,
      ...env,
    });
  const cpuAtStart = cpuTicks();
  const bareStoreDir = join(uploadRoot, "uploads-bare");
  mkdirSync(bareStoreDir, { recursive: true });
  // A failed start ends the bench; the exit handler stops whatever is still running.
  const baseline = await startService(baselineLaunch());
  // A process of its own, so its resident set holds what the durable stores left, as ours does.
  const bareStore = await startService(baselineLaunch(undefined, bareStoreDir));
  const services: Record<UploadServer, Service> = {
    ours: await startService(ours("uploads")),
    peer: await startService(peerLaunch(join(uploadRoot, "uploads-peer"))),
    quota: await startService(ours("quota", { USER_STORAGE_QUOTA: String(UNREACHED_QUOTA) })),
    metricsOff: await startService(ours("metrics-off", { METRICS_ENABLED: "false" })),
  };
  let uploads: UploadResults | Unavailable;
  try {
    const token = await signIn(services.ours.url, UPLOADER);
    if (typeof token === "string") {
      const bearer = `Bearer ${token}`;
      const targets: Record<UploadServer, UploadTarget> = {
        ours: { service: services.ours, authorization: bearer },
        peer: { service: services.peer, authorization: `Bearer ${peerToken}` },
        quota: { service: services.quota, authorization: bearer },
        metricsOff: { service: services.metricsOff, authorization: bearer },
      };
      uploads = await uploadLoads({
        targets,
        baseline,
        bareStore,
        bigFile,
        scratch,
        uploadDir,
        dbUrl: BENCH_DB_URL,
        username: UPLOADER.username,
        progress,
      });
    } else uploads = token;
  } finally {
    for (const service of Object.values(services)) await stop(service.child);
    await stop(baseline.child);
    await stop(bareStore.child);
  }
  const logs = await Promise.all(
    Object.entries(services).map(async ([name, service]) => {
      const output = tail(await service.output);
      return output && `${name}:\n${output}`;
    }),
  );
  return { uploads, busy: foreignCpuShare(cpuAtStart), log: logs.filter(Boolean).join("\n") };
}

const PROFILE_DIR = join(import.meta.dir, "results", "profile");
/** Sequential uploads whose statements, commands and system calls are counted. */
const COUNTED_UPLOADS = 200;
const PROFILED_SECONDS = 10;

/** Per upload, to one decimal: `name count` pairs, most frequent first, those under `floor` left out. */
function perUpload(counts: Map<string, number>, uploads: number, floor = 0): string[] {
  return [...counts.entries()]
    .map(([name, n]) => [name, n / uploads] as const)
    .filter(([, n]) => n >= floor)
    .sort((a, b) => b[1] - a[1])
    .map(([name, n]) => `  ${n.toFixed(2).padStart(7)}  ${name}`);
}

/** `uploads` sequential uploads of the small body (fetch, one connection). */
async function sequentialUploads(
  url: string,
  authorization: string,
  body: { file: string; type: string },
  uploads: number,
) {
  for (let i = 0; i < uploads; i++) {
    const response = await fetch(url, {
      method: "POST",
      headers: { authorization, "content-type": body.type },
      body: Bun.file(body.file),
      signal: AbortSignal.timeout(10_000),
    });
    await response.arrayBuffer();
    if (response.status !== 201) throw new Error(`upload returned ${response.status}`);
  }
}

/**
 * `bun run bench profile [quota]`: our server (with USER_STORAGE_QUOTA set for `quota`) run from source
 * under `bun --cpu-prof`, behind a proxy that counts its Postgres statements, loaded with 10 KiB uploads
 * (wrk, as row p2) and then 200 MiB uploads (curl); the profile is summed over each load's window. Then
 * COUNTED_UPLOADS sequential small uploads and one big one under strace and Redis MONITOR count what one
 * upload costs. Prints it all and keeps the profile (for DevTools) and the report in bench/results/profile/.
 */
async function profileStage(): Promise<void> {
  writeBigFile();
  rmSync(PROFILE_DIR, { recursive: true, force: true });
  mkdirSync(PROFILE_DIR, { recursive: true });
  const postgresProxy = await postgresCounter({ host: "127.0.0.1", port: 5432 });
  const source = [
    process.execPath,
    "--cpu-prof",
    `--cpu-prof-dir=${PROFILE_DIR}`,
    join(ROOT, "src", "index.ts"),
    "serve",
  ];
  const server = await startService(
    serverLaunch(
      "server (profiled)",
      join(scratch, "data-profiled"),
      true,
      {
        MAX_UPLOAD_SIZE: String(UPLOAD_LIMIT_BYTES),
        UPLOAD_DIR: join(uploadRoot, "uploads-profiled"),
        REVIEWPOINT_DB_URL: `postgresql://postgres@127.0.0.1:${postgresProxy.port}/${BENCH_DB}`,
        ...(VARIANT ? PROFILED_VARIANTS[VARIANT] : {}),
      },
      source,
    ),
  );
  const pid = server.child.pid;
  const report: string[] = [];
  const say = (line: string) => {
    report.push(line);
    console.log(line);
  };
  const windows: { name: string; fromUs: number; toUs: number; cpuMs: number; uploads: number }[] = [];
  /** Runs `work` (which makes `uploads` uploads), noting its wall-clock window and the server's CPU time. */
  const timed = async (name: string, uploads: () => Promise<number>) => {
    const cpuBefore = processCpuUs(pid);
    const fromUs = Date.now() * 1000;
    const count = await uploads();
    windows.push({
      name,
      fromUs,
      toUs: Date.now() * 1000,
      cpuMs: (processCpuUs(pid) - cpuBefore) / 1000,
      uploads: count,
    });
  };
  try {
    const token = await signIn(server.url, UPLOADER);
    if (typeof token !== "string") throw new Error(`sign-in failed: ${token}`);
    const authorization = `Bearer ${token}`;
    const url = server.url + UPLOADS;
    const bodyFile = join(scratch, "small-upload.body");
    const small = { file: bodyFile, type: writeMultipartBody(bodyFile, SMALL_FILE_BYTES) };
    const wrkLoad = (seconds: number) =>
      runWrk({ ...SMALL_UPLOAD_SHAPE, seconds, url, method: "POST", bodyFile, contentType: small.type, authorization });

    progress(
      `profile: warm-up, then ${PROFILED_SECONDS} s of ${SMALL_FILE_BYTES / 1024} KiB uploads at ${SMALL_UPLOAD_SHAPE.connections} connections`,
    );
    await wrkLoad(SMALL_UPLOAD_SHAPE.warmupSeconds);
    await timed(`${SMALL_FILE_BYTES / 1024} KiB uploads, wrk ${SMALL_UPLOAD_SHAPE.connections} conns`, async () => {
      const result = await wrkLoad(PROFILED_SECONDS);
      if (result.non2xx || result.socketErrors) throw new Error(`wrk: ${wrkProblems(result).join(", ")}`);
      return result.requests;
    });
    progress(`profile: ${BIG_ROUNDS} uploads of ${BIG_FILE_BYTES / MiB} MiB`);
    await timed(`${BIG_FILE_BYTES / MiB} MiB uploads, curl -F`, async () => {
      for (let i = 0; i < BIG_ROUNDS; i++) {
        const upload = await curlUpload(url, bigFile, ["-H", `Authorization: ${authorization}`]);
        if (upload.status !== 201) throw new Error(`big upload returned ${upload.status}`);
      }
      return BIG_ROUNDS;
    });

    const strace = await straceWorks();
    const counted = async <T>(work: () => Promise<T>) =>
      strace ? syscallsDuring(pid, work) : { result: await work(), calls: new Map<string, number>() };
    for (const [name, uploads, work] of [
      [
        `${SMALL_FILE_BYTES / 1024} KiB`,
        COUNTED_UPLOADS,
        () => sequentialUploads(url, authorization, small, COUNTED_UPLOADS),
      ],
      [
        `${BIG_FILE_BYTES / MiB} MiB`,
        1,
        async () => {
          const upload = await curlUpload(url, bigFile, ["-H", `Authorization: ${authorization}`]);
          if (upload.status !== 201) throw new Error(`big upload returned ${upload.status}`);
        },
      ],
    ] as const) {
      progress(`profile: counting ${uploads} sequential ${name} upload(s)`);
      postgresProxy.reset();
      const { result, calls } = await counted(() => redisCommandsDuring(REDIS_DB, work));
      const postgresCounts = postgresProxy.counts();
      const statements = [...postgresCounts.statements.values()].reduce((sum, n) => sum + n, 0);
      say(`\n== per ${name} upload (${uploads} sequential uploads counted) ==`);
      say(
        `Postgres: ${(statements / uploads).toFixed(2)} statements, ${(postgresCounts.roundTrips / uploads).toFixed(2)} round trips, ${(postgresCounts.parses / uploads).toFixed(2)} parses (on the wire; trigger bodies run inside the server):`,
      );
      for (const line of perUpload(postgresCounts.statements, uploads)) say(line);
      say("Redis commands:");
      for (const line of perUpload(result.commands, uploads)) say(line);
      say(
        strace
          ? "system calls (every thread, strace -f -c; at least 0.5 per upload):"
          : "system calls: strace cannot attach here",
      );
      for (const line of perUpload(calls, uploads, 0.5)) say(line);
    }
  } finally {
    await stop(server.child);
    await postgresProxy.close();
  }
  for (const window of windows) {
    const summary = summarizeProfile(PROFILE_DIR, ROOT, window.fromUs, window.toUs);
    say(`\n== CPU profile: ${window.name} ==`);
    say(
      `${window.uploads} uploads in ${((window.toUs - window.fromUs) / 1e6).toFixed(1)} s; server CPU ${window.cpuMs.toFixed(0)} ms (${((window.cpuMs * 1000) / window.uploads).toFixed(0)} µs per upload), of which sampled in JavaScript (1 ms samples) ${summary.samples} ms`,
    );
    say(formatProfile(summary));
  }
  writeFileSync(join(PROFILE_DIR, "report.txt"), `${report.join("\n")}\n`);
  console.log(`\nprofile and report in ${PROFILE_DIR}`);
}

/** The download and list rows, on a server of their own allowed big uploads, beside a baseline that also serves the file. */
async function filesStage(): Promise<{ files: FilesResults | Unavailable; log: string }> {
  writeBigFile();
  const dataDir = join(scratch, "data-files");
  const baseline = await startService(baselineLaunch(bigFile));
  const server = await startService(
    serverLaunch("server (files)", dataDir, true, {
      MAX_UPLOAD_SIZE: String(UPLOAD_LIMIT_BYTES),
      UPLOAD_DIR: join(dataDir, "uploads"),
    }),
  );
  let files: FilesResults | Unavailable;
  try {
    const token = await signIn(server.url);
    files =
      typeof token === "string"
        ? await filesLoads({
            server,
            baseline,
            token,
            bigFile,
            dbUrl: BENCH_DB_URL,
            username: USER.username,
            progress,
          })
        : token;
  } finally {
    await stop(server.child);
    await stop(baseline.child);
  }
  return { files, log: tail(await server.output) };
}

/**
 * The metrics hook's cost: /health/live on two servers alike but for METRICS_ENABLED. With it off (and
 * LOG_LEVEL=warn, so no access log) the observability hook is not installed at all.
 */
async function metricsStage(): Promise<{ pair: Pair; scrape: { ms: number; kib: number } | Unavailable }> {
  const off = await startService(
    serverLaunch("server (metrics off)", join(scratch, "data-metrics-off"), true, { METRICS_ENABLED: "false" }),
  );
  const on = await startService(serverLaunch("server (metrics on)", join(scratch, "data-metrics-on"), true));
  try {
    progress("load: GET /health/live, metrics on vs off");
    const pair = await pairedLoad(
      { url: on.url + LIVE, pid: on.child.pid },
      { url: off.url + LIVE, pid: off.child.pid },
    );
    const startedAt = performance.now();
    const response = await fetch(`${on.url}/api/v1/metrics`, { signal: AbortSignal.timeout(5000) });
    const body = await response.text();
    const ms = performance.now() - startedAt;
    return { pair, scrape: response.ok ? { ms, kib: body.length / 1024 } : routeReturned(response.status) };
  } finally {
    await stop(on.child);
    await stop(off.child);
  }
}

/** Two instances on one Postgres + Redis: sockets held by A, then events from uploads on A to a socket on B. */
async function realtimeStage(): Promise<{ held: HeldSockets | Unavailable; delivery: Delivery | Unavailable }> {
  // Cheap hashes: this stage registers a user per 20 sockets and measures no login.
  const fast = { BCRYPT_ROUNDS: "4" };
  const a = await startService(serverLaunch("server A (realtime)", join(scratch, "data-rt-a"), true, fast));
  const b = await startService(serverLaunch("server B (realtime)", join(scratch, "data-rt-b"), true, fast));
  try {
    const token = await signIn(a.url);
    if (typeof token !== "string") return { held: token, delivery: token };
    progress(`realtime: ${HELD_SOCKETS} sockets held by one instance (${SOCKET_USERS} users)`);
    const tokens = await Promise.all(
      Array.from({ length: SOCKET_USERS }, async (_, i) => {
        const user = { username: `socket${i}`, email: `socket${i}@example.com`, password: USER.password };
        await postJson(`${a.url}/api/v1/auth/register`, user);
        const login = await postJson(`${a.url}/api/v1/auth/login`, {
          username: user.username,
          password: user.password,
        });
        return (login.body as { access_token: string }).access_token;
      }),
    );
    const held = await heldSockets(a, tokens).catch((error: Error) => `n/a (${error.message})`);
    progress("realtime: uploads on A, file.uploaded on a socket of B");
    const delivery = await eventDelivery(a, b, token).catch((error: Error) => `n/a (${error.message})`);
    return { held, delivery };
  } finally {
    await stop(a.child);
    await stop(b.child);
  }
}

/**
 * The same bench on S3 storage (an s3rver bucket) and on the local disk, two servers alike but for
 * STORAGE_URL: /users/me (storage plays no part: the ratio shows the setting costs nothing elsewhere)
 * and a 10 MiB download, paired back to back.
 */
async function s3Stage(): Promise<{ me: Pair | Unavailable; download: S3Download | Unavailable }> {
  const bucket = await startTestBucket();
  const disk = await startService(serverLaunch("server (disk)", join(scratch, "data-disk"), true));
  const s3 = await startService(
    serverLaunch("server (S3)", join(scratch, "data-s3"), true, bucket.env(`bench-${Date.now()}/`)),
  );
  try {
    const token = await signIn(disk.url);
    if (typeof token !== "string") return { me: token, download: token };
    const authorization = `Bearer ${token}`;
    progress("S3: GET /users/me, S3 server vs disk server");
    const me = await pairedLoad(
      { url: `${s3.url}/api/v1/users/me`, authorization, pid: s3.child.pid },
      { url: `${disk.url}/api/v1/users/me`, authorization, pid: disk.child.pid },
    );
    progress(`S3: ${S3_DOWNLOAD_ROUNDS} downloads of 10 MiB from each`);
    const download = await pairedDownloads(disk, s3, authorization);
    return { me, download };
  } finally {
    await stop(s3.child);
    await stop(disk.child);
    await bucket.stop();
  }
}

/** Two servers alike but for CLAMAV_URL, beside a clamd with a one-signature database (test/clamd.ts). */
async function antivirusStage(): Promise<{ loads: ScanLoads | Unavailable; victim: VictimResult | Unavailable }> {
  const clamd = await startClamd({ streamMaxLength: "64M" }).catch((error: Error) => `n/a (clamd: ${error.message})`);
  if (typeof clamd === "string") return { loads: clamd, victim: clamd };
  const limit = { MAX_UPLOAD_SIZE: String(16 * MiB) };
  const scanning = await startService(
    serverLaunch("server (clamd)", join(scratch, "data-av-on"), true, { ...limit, CLAMAV_URL: clamd.url }),
  );
  const plain = await startService(serverLaunch("server (no scan)", join(scratch, "data-av-off"), true, limit));
  try {
    const token = await signIn(plain.url);
    if (typeof token !== "string") return { loads: token, victim: token };
    progress("antivirus: uploads of 10 KiB and 5 MiB, scanning vs not");
    const loads = await scanLoads(scanning, plain, token, scratch);
    progress("antivirus: a victim's upload while 2 accounts trickle 2 uploads each");
    const accounts = await Promise.all(
      ["trickler1", "trickler2", "victim"].map((name) =>
        signIn(scanning.url, { username: name, email: `${name}@example.com`, password: USER.password }),
      ),
    );
    const [first, second, victim] = accounts as [string, string, string];
    // A failed sign-in is a line saying why; a token is a JWT.
    const failure = accounts.find((account) => account.startsWith("n/a"));
    return { loads, victim: failure ?? (await victimLatency(scanning, [first, second], victim)) };
  } finally {
    await stop(scanning.child);
    await stop(plain.child);
    await clamd.dispose();
  }
}

/**
 * The audit log's cost: logins (bcrypt cost 4, so the audit insert is not lost in the hashing) and 10 KiB
 * uploads, each paired: a server with AUDIT_ENABLED against one without.
 */
async function auditStage(): Promise<{ login: Pair; upload: Pair } | Unavailable> {
  const cheap = { BCRYPT_ROUNDS: "4" };
  const on = await startService(serverLaunch("server (audit on)", join(scratch, "data-audit-on"), true, cheap));
  const off = await startService(
    serverLaunch("server (audit off)", join(scratch, "data-audit-off"), true, { ...cheap, AUDIT_ENABLED: "false" }),
  );
  try {
    const user = { username: "audituser", email: "audit@example.com", password: USER.password };
    const token = await signIn(on.url, user);
    if (typeof token !== "string") return token;
    progress("audit: logins and 10 KiB uploads, audit log on vs off");
    const body = JSON.stringify({ username: user.username, password: user.password });
    const login = await pairedLoad(
      { url: `${on.url}/api/v1/auth/login`, method: "POST", body, pid: on.child.pid },
      { url: `${off.url}/api/v1/auth/login`, method: "POST", body, pid: off.child.pid },
      SMALL_UPLOAD_SHAPE,
    );
    const bodyFile = join(scratch, "audit-upload.body");
    const contentType = writeMultipartBody(bodyFile, SMALL_FILE_BYTES);
    const upload = { method: "POST" as const, bodyFile, contentType, authorization: `Bearer ${token}` };
    const uploads = await pairedLoad(
      { ...upload, url: `${on.url}/api/v1/uploads`, pid: on.child.pid },
      { ...upload, url: `${off.url}/api/v1/uploads`, pid: off.child.pid },
      SMALL_UPLOAD_SHAPE,
    );
    return { login, upload: uploads };
  } finally {
    await stop(on.child);
    await stop(off.child);
  }
}

/** Resumable uploads: 20 MiB in 1 MiB tus chunks against one multipart upload of the same file. */
async function resumableStage(): Promise<ResumableResults | Unavailable> {
  const server = await startService(
    serverLaunch("server (resumable)", join(scratch, "data-tus"), true, { MAX_UPLOAD_SIZE: String(32 * MiB) }),
  );
  try {
    const token = await signIn(server.url);
    if (typeof token !== "string") return token;
    progress("resumable: 20 MiB in 1 MiB tus chunks vs one multipart upload");
    return await resumableVsMultipart({ url: server.url, token });
  } catch (error) {
    return `n/a (${(error as Error).message.split("\n")[0]})`;
  } finally {
    await stop(server.child);
  }
}

/** What ships: backup and restore of a sizeable embedded DATA_DIR, and start-up with and without bytecode. */
async function shipStage(): Promise<{ backup: BackupResults | Unavailable; startup: StartupResults | Unavailable }> {
  const unavailable = (error: Error) => `n/a (${error.message.split("\n")[0]})` as Unavailable;
  const startup = await startupRows(BINARY, progress).catch(unavailable);
  const backup = await backupRows(BINARY, progress).catch(unavailable);
  return { backup, startup };
}

// ---------------------------------------------------------------- report

/** What a row must reach; `report` rows only measure (the issue set no target for them). */
type Target = { on: "ratio" | "value"; op: ">=" | "<" | "<="; limit: number } | { on: "report" };

interface Row {
  id: string;
  name: string;
  unit: string;
  measured: number | null;
  baseline: number | null;
  ratio: number | null;
  target: string;
  result: "PASS" | "FAIL" | "n/a" | "report";
  note: string;
}

interface Measure {
  value: number;
  baseline?: number;
  /** Failed requests (non-2xx, socket errors) fail the row whatever the numbers say. */
  wrk?: WrkResult;
  note?: string;
}

function wrkProblems(result: WrkResult): string[] {
  return [
    result.non2xx ? `${result.non2xx} non-2xx` : "",
    result.socketErrors ? `${result.socketErrors} socket errors` : "",
  ].filter(Boolean);
}

function row(id: string, name: string, unit: string, target: Target, measure: Measure | Unavailable): Row {
  const targetText =
    target.on === "report"
      ? "none set"
      : target.on === "ratio"
        ? `ratio ${target.op} ${target.limit.toFixed(2)}`
        : `${target.op} ${target.limit} ${unit}`;
  if (typeof measure === "string") {
    return {
      id,
      name,
      unit,
      measured: null,
      baseline: null,
      ratio: null,
      target: targetText,
      result: "n/a",
      note: measure,
    };
  }
  const ratio = measure.baseline ? measure.value / measure.baseline : null;
  const subject = target.on === "ratio" ? ratio : measure.value;
  const reached = (value: number, { op, limit }: { op: ">=" | "<" | "<="; limit: number }) =>
    op === ">=" ? value >= limit : op === "<=" ? value <= limit : value < limit;
  const met = target.on === "report" || (subject !== null && reached(subject, target));
  const problems = measure.wrk ? wrkProblems(measure.wrk) : [];
  return {
    id,
    name,
    unit,
    measured: measure.value,
    baseline: measure.baseline ?? null,
    ratio,
    target: targetText,
    result: problems.length > 0 || !met ? "FAIL" : target.on === "report" ? "report" : "PASS",
    note: [measure.note ?? "", ...problems].filter(Boolean).join("; "),
  };
}

const ms = (value: number): string => `${value.toFixed(1)} ms`;
const percent = (share: number): string => `${(share * 100).toFixed(0)}%`;
const ratiosNote = (ratios: number[]) => `median of ratios ${ratios.map((r) => r.toFixed(2)).join(", ")}`;

/** A wrk row against its baseline: the median round's rates, both sides' CPU per request. */
function againstBaseline(pair: Pair, note = ""): Measure {
  return {
    value: pair.server.requestsPerSec,
    baseline: pair.baseline.requestsPerSec,
    wrk: pair.server,
    note: [
      note,
      ratiosNote(pair.ratios),
      `server ${pair.server.cpuUsPerRequest.toFixed(1)} CPU-µs/req (baseline ${pair.baseline.cpuUsPerRequest.toFixed(1)})`,
    ]
      .filter(Boolean)
      .join("; "),
  };
}

/** A big-file row against its baseline: the median round's rates, and CPU per file where measured. */
function transferAgainst(pair: MedianPair<Transfer>, note = ""): Measure {
  const { server, baseline } = pair;
  const cpu =
    server.cpuMs === undefined
      ? ""
      : `server ${server.cpuMs.toFixed(0)} CPU-ms per file${baseline.cpuMs === undefined ? "" : ` (baseline ${baseline.cpuMs.toFixed(0)})`}`;
  return {
    value: server.mibPerSec,
    baseline: baseline.mibPerSec,
    note: [note, ratiosNote(pair.ratios), cpu].filter(Boolean).join("; "),
  };
}

/** The issue's targets for uploads, against the peer and for our variants. */
const UPLOAD_TARGETS = {
  peerRate: { on: "ratio", op: ">=", limit: 1.5 },
  peerCpu: { on: "ratio", op: "<=", limit: 0.7 },
  variant: { on: "ratio", op: ">=", limit: 0.9 },
} as const satisfies Record<string, Target>;

type MachineShare = ReturnType<typeof foreignCpuShare>;

/** The upload rows: g1, g2 and g4 (ours against the floors), p1-p3 (against the peer), u1-u4 (our variants). */
function uploadRows(results: UploadResults | Unavailable, busy: MachineShare, node: string): Row[] {
  const big = typeof results === "string" ? results : results.big;
  const small = typeof results === "string" ? results : results.small;
  const mib = BIG_FILE_BYTES / MiB;
  const conns = SMALL_UPLOAD_SHAPE.connections;
  const meanwhile = `machine meanwhile: other processes ${percent(busy.other)}, Postgres + Redis ${percent(busy.stores)} of the CPU`;
  const growths = (values: number[]) => values.map((v) => `+${v.toFixed(1)}`).join(", ");
  const bigPair = (server: UploadServer, baseline: UploadServer, note = "") =>
    ifMeasured(big, ({ uploads }) => transferAgainst(medianPair(uploads[server], uploads[baseline], byRate), note));
  const smallPair = (server: UploadServer, baseline: UploadServer | "baseline", note = "") =>
    ifMeasured(small, ({ runs }) => againstBaseline(medianPair(runs[server], runs[baseline], byRequestRate), note));
  const byCpu = (run: Measured) => run.cpuUsPerRequest;
  return [
    row(
      "g1",
      `${mib} MiB upload: peak RSS growth`,
      "MiB",
      { on: "value", op: "<", limit: 48 },
      ifMeasured(big, ({ uploads, rssMiB, floors }) => ({
        value: Math.max(...uploads.ours.map((upload) => upload.growthMiB)),
        note: `per upload ${growths(uploads.ours.map((upload) => upload.growthMiB))} MiB over ${rssMiB.ours.before.toFixed(1)} MiB (VmRSS every 20 ms + VmHWM); ${rssMiB.ours.after.toFixed(1)} MiB after; the peer ${growths(uploads.peer.map((upload) => upload.growthMiB))} MiB over ${rssMiB.peer.before.toFixed(1)}; a bare Bun.serve storing it durably ${growths(floors.bareStore.map((store) => store.growthMiB))} MiB`,
      })),
    ),
    row(
      "g2",
      `${mib} MiB upload (curl -F) vs cp`,
      "MiB/s",
      { on: "ratio", op: ">=", limit: 0.5 },
      ifMeasured(big, ({ uploads, floors }) => {
        const vsCp = (transfers: Transfer[]) => medianPair(transfers, floors.cp, byRate).ratio.toFixed(2);
        return transferAgainst(
          medianPair(uploads.ours, floors.cp, byRate),
          `ceilings vs cp: SHA-256 alone in one process ${vsCp(floors.sha256)}, a bare Bun.serve reading the same upload ${vsCp(floors.bareUpload)}`,
        );
      }),
    ),
    row(
      "p1",
      `${mib} MiB upload (curl -F) vs the peer`,
      "MiB/s",
      UPLOAD_TARGETS.peerRate,
      ifMeasured(big, ({ uploads, floors }) => {
        const pair = medianPair(uploads.ours, uploads.peer, byRate);
        const bare = medianPair(floors.bareStore, uploads.peer, byRate);
        return transferAgainst(
          pair,
          `baseline: Fastify + @fastify/multipart on Node ${node}; ${meanwhile}; JavaScript thread ${pair.server.mainThreadCpuMs.toFixed(0)} CPU-ms per file (peer ${pair.baseline.mainThreadCpuMs.toFixed(0)}); the floor, a bare Bun.serve that only hashes and durably writes the body: ${bare.server.mibPerSec.toFixed(0)} MiB/s, ${bare.ratio.toFixed(2)}x the peer`,
        );
      }),
    ),
    row(
      "u1",
      `${mib} MiB upload, USER_STORAGE_QUOTA set vs not`,
      "MiB/s",
      UPLOAD_TARGETS.variant,
      bigPair("quota", "ours"),
    ),
    row("u2", `${mib} MiB upload, metrics on vs off`, "MiB/s", UPLOAD_TARGETS.variant, bigPair("ours", "metricsOff")),
    row(
      "g4",
      `POST /uploads 10 KiB, ${conns} conns`,
      "req/s",
      { on: "report" },
      ifMeasured(small, ({ runs, piledUp }) =>
        againstBaseline(
          medianPair(runs.ours, runs.baseline, byRequestRate),
          `vs a bare POST reading its body; ${piledUp.rows} files stored by our three servers (${piledUp.objects.count} objects in ${piledUp.objects.folders} shard folders, fullest ${piledUp.objects.fullest}; ${piledUp.objects.temporaries} temporaries)`,
        ),
      ),
    ),
    row(
      "p2",
      `POST /uploads 10 KiB, ${conns} conns, vs the peer`,
      "req/s",
      UPLOAD_TARGETS.peerRate,
      smallPair("ours", "peer", meanwhile),
    ),
    row(
      "p3",
      `POST /uploads 10 KiB: server CPU per upload vs the peer`,
      "CPU-µs",
      UPLOAD_TARGETS.peerCpu,
      ifMeasured(small, ({ runs }) => {
        const pair = medianPair(runs.ours, runs.peer, byCpu);
        return {
          value: pair.server.cpuUsPerRequest,
          baseline: pair.baseline.cpuUsPerRequest,
          wrk: pair.server,
          note: `${ratiosNote(pair.ratios)}; the server process alone (not Postgres); of which the JavaScript thread ${pair.server.mainThreadCpuUsPerRequest.toFixed(0)} (peer ${pair.baseline.mainThreadCpuUsPerRequest.toFixed(0)}), the other threads (I/O pool, JIT, GC) ${(pair.server.cpuUsPerRequest - pair.server.mainThreadCpuUsPerRequest).toFixed(0)} (peer ${(pair.baseline.cpuUsPerRequest - pair.baseline.mainThreadCpuUsPerRequest).toFixed(0)})`,
        };
      }),
    ),
    row(
      "u3",
      `POST /uploads 10 KiB, USER_STORAGE_QUOTA set vs not`,
      "req/s",
      UPLOAD_TARGETS.variant,
      smallPair("quota", "ours"),
    ),
    row(
      "u4",
      `POST /uploads 10 KiB, metrics on vs off`,
      "req/s",
      UPLOAD_TARGETS.variant,
      smallPair("ours", "metricsOff"),
    ),
  ];
}

function formatTable(rows: Row[]): string {
  const number = (value: number | null, unit: string) =>
    value === null ? "-" : `${value.toFixed(unit === "req/s" && value >= 100 ? 0 : 1)} ${unit}`;
  const header = ["Id", "Row", "Measured", "Baseline", "Ratio", "Target", "Result", "Note"];
  const cells = rows.map((r) => [
    r.id,
    r.name,
    r.result === "n/a" ? r.note : number(r.measured, r.unit),
    number(r.baseline, r.unit),
    r.ratio === null ? "-" : r.ratio.toFixed(3),
    r.target,
    r.result,
    r.result === "n/a" ? "" : r.note,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]?.length ?? 0)));
  const numeric = new Set([2, 3, 4]);
  const line = (c: string[]) =>
    c
      .map((text, i) => (numeric.has(i) ? text.padStart(widths[i] ?? 0) : text.padEnd(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...cells.map(line)].join("\n");
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const cpuAtStart = cpuTicks();
  mkdirSync(workDir, { recursive: true });
  await ensureWrk();
  const node = await ensurePeer();
  await build();
  await resetStores();

  if (MODE === "profile") return profileStage();
  if (ONLY_UPLOADS) {
    const { uploads, busy, log } = await uploadsStage();
    report(cpuAtStart, uploadRows(uploads, busy, node), { uploads, uploadsBusy: busy }, { "upload servers": log });
    return;
  }
  if (MODE === "audit") {
    const audit = await auditStage();
    report(cpuAtStart, auditRows(audit), { audit }, {});
    return;
  }

  const bcrypt = await bcryptCeiling();
  progress("baseline: starts, idle RSS");
  const baseline = await timedStarts(baselineLaunch(), STARTS);
  let baselineRss: number;
  let serverRss: number;
  let live: Pair;
  let auth: Awaited<ReturnType<typeof authLoads>>;
  // The baseline stays up (idle) beside the server, so each load can be paired with its own.
  progress("server on Postgres: starts, idle RSS");
  const server = await timedStarts(serverLaunch("server (Postgres)", join(scratch, "data-pg"), true), STARTS);
  try {
    baselineRss = await idleRssMb(baseline.service);
    serverRss = await idleRssMb(server.service);
    progress("load: GET /health/live");
    const pids = { server: server.service.child.pid, baseline: baseline.service.child.pid };
    live = await pairedLoad(
      { url: server.service.url + LIVE, pid: pids.server },
      { url: baseline.service.url + LIVE, pid: pids.baseline },
    );
    auth = await authLoads(server.service.url, baseline.service.url, pids.server, pids.baseline);
  } finally {
    await stop(server.service.child);
    await stop(baseline.service.child);
  }
  const serverLog = tail(await server.service.output);

  const { uploads, busy: uploadsBusy, log: uploadsLog } = await uploadsStage();
  const { files, log: filesLog } = await filesStage();
  const metrics = await metricsStage();
  const realtime = await realtimeStage();
  const storage = await s3Stage();
  const antivirus = await antivirusStage();
  const audit = await auditStage();
  const resumable = await resumableStage();
  const ship = await shipStage();

  progress("server on PGlite: first start (initdb), then timed starts");
  const pgliteLaunch = serverLaunch("server (PGlite)", join(scratch, "data-pglite"), false);
  const pgliteInit = await startService(pgliteLaunch);
  await stop(pgliteInit.child);
  const pglite = await timedStarts(pgliteLaunch, STARTS);
  await stop(pglite.service.child);

  const filesRows = typeof files === "string" ? { download: files, list: files, listed: undefined } : files;
  const rows: Row[] = [
    row(
      "a",
      "GET /health/live",
      "req/s",
      { on: "ratio", op: ">=", limit: 0.7 },
      againstBaseline(live, `p99 ${ms(live.server.p99Ms)} (baseline ${ms(live.baseline.p99Ms)})`),
    ),
    row(
      "b",
      "start-up to ready, Postgres",
      "ms",
      { on: "value", op: "<", limit: 300 },
      {
        value: median(server.samples),
        baseline: median(baseline.samples),
        note: `median of ${server.samples.map((s) => s.toFixed(0)).join(", ")} (first applies migrations)`,
      },
    ),
    row(
      "c",
      "start-up to ready, existing PGlite",
      "ms",
      { on: "value", op: "<", limit: 2000 },
      {
        value: median(pglite.samples),
        note: `median of ${pglite.samples.map((s) => s.toFixed(0)).join(", ")}; initdb start ${pgliteInit.readyMs.toFixed(0)} ms`,
      },
    ),
    row(
      "d",
      "idle RSS, Postgres",
      "MB",
      { on: "value", op: "<", limit: 80 },
      { value: serverRss, baseline: baselineRss },
    ),
    row(
      "e1",
      "GET /users/me (bearer)",
      "req/s",
      { on: "ratio", op: ">=", limit: 0.35 },
      ifMeasured(auth.me, (me) => againstBaseline(me)),
    ),
    row(
      "e2",
      "GET /users/me p99",
      "ms",
      { on: "value", op: "<", limit: 25 },
      ifMeasured(auth.me, (me) => ({ value: me.server.p99Ms, baseline: me.baseline.p99Ms, wrk: me.server })),
    ),
    row(
      "f1",
      "POST /auth/login vs bcrypt ceiling",
      "req/s",
      { on: "ratio", op: ">=", limit: 0.85 },
      ifMeasured(auth.login, ({ storm }) => ({
        value: storm.requestsPerSec,
        baseline: bcrypt.ceiling,
        wrk: storm,
        note: `ceiling = ${bcrypt.cores} cores x ${bcrypt.perThread.toFixed(2)}/s; p99 ${ms(storm.p99Ms)}`,
      })),
    ),
    row(
      "f2",
      "GET /health/live p99 during login",
      "ms",
      { on: "value", op: "<", limit: 20 },
      ifMeasured(auth.login, ({ live }) => ({
        value: live.p99Ms,
        wrk: live,
        note: `${live.requestsPerSec.toFixed(0)} req/s alongside`,
      })),
    ),
    row(
      "g3",
      `${BIG_FILE_BYTES / MiB} MiB download vs bare Bun.file`,
      "MiB/s",
      { on: "ratio", op: ">=", limit: 0.8 },
      ifMeasured(filesRows.download, (download) => transferAgainst(download)),
    ),
    row(
      "g5",
      `GET /uploads p99, ${LIST_FILES.toLocaleString("en")} files`,
      "ms",
      { on: "value", op: "<", limit: 25 },
      ifMeasured(filesRows.list, (list) => ({
        value: list.server.p99Ms,
        baseline: list.baseline.p99Ms,
        wrk: list.server,
        note: `${filesRows.listed?.files} files (${filesRows.listed?.seeded} by SQL); ${list.server.requestsPerSec.toFixed(0)} req/s at ${LIST_SHAPE.connections} conns; server ${list.server.cpuUsPerRequest.toFixed(1)} CPU-µs/req (baseline /health/live ${list.baseline.cpuUsPerRequest.toFixed(1)})`,
      })),
    ),
    ...uploadRows(uploads, uploadsBusy, node),
    row(
      "m",
      "GET /health/live, metrics on vs off",
      "req/s",
      { on: "ratio", op: ">=", limit: 0.95 },
      againstBaseline(
        metrics.pair,
        `baseline: METRICS_ENABLED=false; a scrape after it ${typeof metrics.scrape === "string" ? metrics.scrape : `${metrics.scrape.ms.toFixed(1)} ms, ${metrics.scrape.kib.toFixed(1)} KiB`}`,
      ),
    ),
    row(
      "r1",
      `${HELD_SOCKETS.toLocaleString("en")} sockets held: server RSS`,
      "MB",
      { on: "value", op: "<", limit: 150 },
      ifMeasured(realtime.held, (held) => ({
        value: held.rssMiB,
        note: `${held.sockets} authenticated sockets of ${SOCKET_USERS} users; ${held.rssBeforeMiB.toFixed(1)} MB before them`,
      })),
    ),
    row(
      "r2",
      `${HELD_SOCKETS.toLocaleString("en")} sockets held: idle server CPU`,
      "% core",
      { on: "value", op: "<", limit: 5 },
      ifMeasured(realtime.held, (held) => ({ value: held.idleCpuPercent, note: "over 10 s with every socket idle" })),
    ),
    row(
      "r3",
      "event from an upload on A to a socket on B, p99",
      "ms",
      { on: "value", op: "<", limit: 50 },
      ifMeasured(realtime.delivery, (delivery) => ({
        value: delivery.p99Ms,
        note: `p50 ${ms(delivery.p50Ms)} over ${delivery.rounds} uploads, from sending the upload (so it includes it) to the event on B; Redis pub/sub`,
      })),
    ),
    row(
      "s1",
      "GET /users/me, S3 storage vs disk",
      "req/s",
      { on: "report" },
      ifMeasured(storage.me, (me) => againstBaseline(me, "baseline: the same server on the local disk")),
    ),
    row(
      "s2",
      "10 MiB download, S3 (s3rver) vs disk",
      "MiB/s",
      { on: "report" },
      ifMeasured(storage.download, (download) => ({
        value: download.s3MibPerSec,
        baseline: download.diskMibPerSec,
        note: `median of ${download.rounds} pairs; s3rver is a single Node process writing files: it bounds this row, not the server`,
      })),
    ),
    ...auditRows(audit),
    row(
      "t1",
      "20 MiB in 1 MiB tus chunks vs one multipart upload",
      "MiB/s",
      { on: "report" },
      ifMeasured(resumable, (tus) => ({
        value: tus.tusMibPerSec,
        baseline: tus.multipartMibPerSec,
        note: `medians of ${tus.rounds} alternating rounds; each PATCH is a request of its own (auth, limits, a lease in the database, an fsync)`,
      })),
    ),
    row(
      "v3",
      "12-byte upload while 2 accounts trickle 2 uploads each (clamd, 4 connections), worst of 10",
      "ms",
      { on: "value", op: "<", limit: 2000 },
      ifMeasured(antivirus.victim, (victim) => ({
        value: victim.worstMs,
        note: `median ${ms(victim.medianMs)}; statuses ${[...new Set(victim.statuses)].join(", ")}; the four trickles send 4 KB every 100 ms each`,
      })),
    ),
    row(
      "x1",
      `reviewpoint backup, ${BACKUP_USERS.toLocaleString("en")} users and ${BACKUP_FILE_BYTES / MiB} MiB of files`,
      "MiB/s",
      { on: "report" },
      ifMeasured(ship.backup, (backup) => ({
        value: backup.backupMiBs,
        note: `${(backup.archiveBytes / MiB).toFixed(0)} MiB archive in ${backup.backupSeconds.toFixed(1)} s (the binary, server stopped)`,
      })),
    ),
    row(
      "x2",
      "reviewpoint restore of that archive",
      "MiB/s",
      { on: "report" },
      ifMeasured(ship.backup, (backup) => ({
        value: backup.restoreMiBs,
        note: `${backup.restoreSeconds.toFixed(1)} s, a new embedded database (initdb) included`,
      })),
    ),
    row(
      "x3",
      "reviewpoint --version, with vs without --bytecode",
      "ms",
      { on: "report" },
      ifMeasured(ship.startup, (startup) => ({
        value: startup.versionMs.bytecode,
        baseline: startup.versionMs.plain,
        note: "medians; the whole program loaded, nothing opened",
      })),
    ),
    row(
      "x4",
      "serve to ready (existing PGlite), with vs without --bytecode",
      "ms",
      { on: "report" },
      ifMeasured(ship.startup, (startup) => ({
        value: startup.readyMs.bytecode,
        baseline: startup.readyMs.plain,
        note: "medians",
      })),
    ),
    row(
      "v1",
      `POST /uploads ${SMALL_UPLOAD_SHAPE.connections} conns, 10 KiB, clamd on vs off`,
      "req/s",
      { on: "report" },
      ifMeasured(antivirus.loads, ({ small }) =>
        againstBaseline(small, `p99 ${ms(small.server.p99Ms)} scanning (${ms(small.baseline.p99Ms)} without)`),
      ),
    ),
    row(
      "v2",
      `POST /uploads ${SCANNED_FILE_BYTES / MiB} MiB, clamd on vs off`,
      "MiB/s",
      { on: "report" },
      ifMeasured(antivirus.loads, ({ big }) => ({
        value: (big.server.requestsPerSec * SCANNED_FILE_BYTES) / MiB,
        baseline: (big.baseline.requestsPerSec * SCANNED_FILE_BYTES) / MiB,
        wrk: big.server,
        note: `4 connections; p99 ${ms(big.server.p99Ms)} scanning (${ms(big.baseline.p99Ms)} without); median of ratios ${big.ratios.map((r) => r.toFixed(2)).join(", ")}; server ${(big.server.cpuUsPerRequest / 1000).toFixed(1)} CPU-ms/upload (${(big.baseline.cpuUsPerRequest / 1000).toFixed(1)} without)`,
      })),
    ),
  ].sort((a, b) => a.id.localeCompare(b.id, "en", { numeric: true }));

  report(
    cpuAtStart,
    rows,
    {
      bcrypt,
      startupMs: {
        baseline: baseline.samples,
        postgres: server.samples,
        pgliteInit: pgliteInit.readyMs,
        pglite: pglite.samples,
      },
      rssMb: { baseline: baselineRss, postgres: serverRss },
      wrk: { live, ...auth },
      uploads,
      uploadsBusy,
      files,
      metrics,
      realtime,
      storage,
      antivirus,
      audit,
      resumable,
      ship,
    },
    { server: serverLog, "upload servers": uploadsLog, "files server": filesLog },
  );
}

/** Prints the table (and the servers' output tails) and writes bench/results/latest.json. */
/** The audit log's cost: rows h1 and h2. */
function auditRows(audit: Awaited<ReturnType<typeof auditStage>>): Row[] {
  return [
    row(
      "h1",
      "POST /auth/login, audit log on vs off (bcrypt cost 4)",
      "req/s",
      { on: "ratio", op: ">=", limit: 0.95 },
      ifMeasured(audit, ({ login }) => againstBaseline(login, "baseline: AUDIT_ENABLED=false")),
    ),
    row(
      "h2",
      "POST /uploads 10 KiB, audit log on vs off",
      "req/s",
      { on: "ratio", op: ">=", limit: 0.95 },
      ifMeasured(audit, ({ upload }) => againstBaseline(upload, "baseline: AUDIT_ENABLED=false")),
    ),
  ];
}

function report(
  cpuAtStart: ReturnType<typeof cpuTicks>,
  rows: Row[],
  raw: Record<string, unknown>,
  logs: Record<string, string>,
): void {
  const durationSeconds = (performance.now() - benchStart) / 1000;
  const { stores: storesCpu, other: otherCpu } = foreignCpuShare(cpuAtStart);
  const machine = {
    cores: cpus().length,
    bun: Bun.version,
    otherProcessesCpuShare: otherCpu,
    postgresRedisCpuShare: storesCpu,
  };
  console.log(
    `\nReViewPoint bench${ONLY ? ` (${ONLY} rows only)` : ""}: ${machine.cores} cores, Bun ${machine.bun}, Postgres, Redis and clamd used ${percent(storesCpu)} of the CPU, other processes ${percent(otherCpu)}, ${durationSeconds.toFixed(0)} s\n`,
  );
  console.log(formatTable(rows));
  if (otherCpu > OTHER_CPU_WARNING) {
    console.log(`\nWARNING: other processes used ${percent(otherCpu)} of the CPU; every row is distorted.`);
  }
  for (const [name, log] of Object.entries(logs)) if (log) console.log(`\n${name} output (tail):\n${log}`);

  mkdirSync(join(import.meta.dir, "results"), { recursive: true });
  const results = { date: new Date().toISOString(), only: ONLY, machine, durationSeconds, rows, raw };
  writeFileSync(RESULTS, `${JSON.stringify(results, null, 2)}\n`);
  console.log(`\nwritten to ${RESULTS}`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(`bench failed: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
