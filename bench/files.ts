/**
 * The files rows but the uploads (`uploads.ts`): one big text file downloaded with curl (against a bare
 * Bun.serve of the same file) and the list under wrk; and what both stages use (files, bodies, curl, RSS).
 */
import { randomBytes } from "node:crypto";
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import postgres from "postgres";
import { LOAD, type MedianPair, medianPair, type Pair, pairedLoad, processCpuUs, type Shape } from "./load";
import { run, type Service, tail } from "./process";

export const MiB = 1024 * 1024;
export const BIG_FILE_BYTES = 200 * MiB;
/** MAX_UPLOAD_SIZE of the files server: room for the big file. */
export const UPLOAD_LIMIT_BYTES = 256 * MiB;
export const SMALL_FILE_BYTES = 10 * 1024;
/** Files of the bench user while its list is loaded. */
export const LIST_FILES = 10_000;
/** Big downloads, each paired with the bare server's. */
const DOWNLOAD_ROUNDS = 7;
const RSS_SAMPLE_MS = 20;
export const UPLOADS = "/api/v1/uploads";
// Shorter than the other rows' loads, to keep the whole bench within a few minutes.
export const SMALL_UPLOAD_SHAPE: Shape = { threads: 2, connections: 16, seconds: 3, warmupSeconds: 1, rounds: 3 };
export const LIST_SHAPE: Shape = { ...LOAD, seconds: 3, warmupSeconds: 1 };

/** ASCII lines (valid UTF-8, so `text/plain` passes the content check) of random letters, `bytes` long. */
export function writeTextFile(path: string, bytes: number): void {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789 ";
  const random = randomBytes(Math.min(bytes, MiB));
  const chunk = random.map((byte, i) => (i % 64 === 63 ? 0x0a : alphabet.charCodeAt(byte % alphabet.length)));
  const fd = openSync(path, "w");
  try {
    for (let written = 0; written < bytes; )
      written += writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - written));
  } finally {
    closeSync(fd);
  }
}

/** A multipart body as curl builds it, one text part `file`; returns its Content-Type. */
export function writeMultipartBody(path: string, fileBytes: number): string {
  const boundary = "------------------------reviewpointbench";
  const content = Buffer.alloc(fileBytes, "0123456789abcdef\n");
  writeFileSync(
    path,
    Buffer.concat([
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="small.txt"\r\nContent-Type: text/plain\r\n\r\n`,
      ),
      content,
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]),
  );
  return `multipart/form-data; boundary=${boundary}`;
}

// ---------------------------------------------------------------- resident set

export function statusKb(pid: number, field: "VmRSS" | "VmHWM"): number {
  const kb = readFileSync(`/proc/${pid}/status`, "utf8").match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"))?.[1];
  if (!kb) throw new Error(`no ${field} for pid ${pid}`);
  return Number(kb);
}

/** Resets VmHWM to the current RSS (Linux ≥ 4.0, same user); false where that is not allowed. */
function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** The process's peak RSS while `work` runs: VmRSS sampled every 20 ms, and VmHWM reset before. */
export async function peakRssDuring<T>(pid: number, work: () => Promise<T>): Promise<{ result: T; peakKb: number }> {
  const hwm = resetPeak(pid);
  let peak = statusKb(pid, "VmRSS");
  const timer = setInterval(() => {
    peak = Math.max(peak, statusKb(pid, "VmRSS"));
  }, RSS_SAMPLE_MS);
  let result: T;
  try {
    result = await work();
  } finally {
    clearInterval(timer);
  }
  peak = Math.max(peak, statusKb(pid, "VmRSS"), hwm ? statusKb(pid, "VmHWM") : 0);
  return { result, peakKb: peak };
}

// ---------------------------------------------------------------- transfers

/** curl, the body to `output` (`-` for stdout): the status, curl's own total time, the bytes received. */
export async function curl(output: string, args: string[]) {
  const { code, output: text } = await run(
    ["curl", "-sS", "-o", output, "-w", "\n%{http_code} %{time_total} %{size_download}", ...args],
    { env: { PATH: process.env.PATH }, timeoutMs: 120_000 },
  );
  const cut = text.lastIndexOf("\n");
  const [status = 0, seconds = 0, received = 0] = text
    .slice(cut + 1)
    .split(" ")
    .map(Number);
  if (code !== 0 || !status || !seconds) throw new Error(`curl exited ${code}:\n${tail(text)}`);
  return { status, seconds, received, body: text.slice(0, cut) };
}

export const mibPerSec = (bytes: number, seconds: number) => bytes / MiB / seconds;

/** One transfer of the big file: its rate, and the CPU time the process serving it spent (ms) where measured. */
export interface Transfer {
  mibPerSec: number;
  cpuMs?: number;
}

export const byRate = (transfer: Transfer) => transfer.mibPerSec;

/** A reason the row could not be measured, printed in place of the value. */
export type Unavailable = string;
export const failed = (what: string, status: number, body = ""): Unavailable =>
  `n/a (${what} returned ${status}${body ? `: ${body.slice(0, 80)}` : ""})`;

export const curlUpload = (url: string, file: string, headers: string[] = []) =>
  // Expect: curl would wait for a 100 Continue before sending a big body.
  curl("-", [...headers, "-H", "Expect:", "-F", `file=@${file};type=text/plain`, url]);

/** DOWNLOAD_ROUNDS downloads of the big file from the server, each after one from the bare server. */
async function bigDownloads(server: Service, baseline: Service, authorization: string, fileId: string) {
  const served: Transfer[] = [];
  const bare: Transfer[] = [];
  const timed = async (service: Service, path: string, headers: string[]) => {
    const cpuBefore = processCpuUs(service.child.pid);
    const download = await curl("/dev/null", [...headers, service.url + path]);
    return { ...download, cpuMs: (processCpuUs(service.child.pid) - cpuBefore) / 1000 };
  };
  for (let i = 0; i < DOWNLOAD_ROUNDS; i++) {
    const base = await timed(baseline, "/file", []);
    const ours = await timed(server, `${UPLOADS}/${fileId}/download`, ["-H", authorization]);
    for (const [what, download] of [
      ["bare download", base],
      ["download", ours],
    ] as const) {
      if (download.status !== 200) return failed(what, download.status);
      if (download.received !== BIG_FILE_BYTES) return `n/a (${what} sent ${download.received} bytes)`;
    }
    served.push({ mibPerSec: mibPerSec(BIG_FILE_BYTES, ours.seconds), cpuMs: ours.cpuMs });
    bare.push({ mibPerSec: mibPerSec(BIG_FILE_BYTES, base.seconds), cpuMs: base.cpuMs });
  }
  return medianPair(served, bare, byRate);
}

// ---------------------------------------------------------------- database

/**
 * Rows straight into Postgres until the user has `total` files (no bytes: listing never reads them),
 * then VACUUM ANALYZE, as autovacuum would have done by the time a table is this full.
 */
async function seedFiles(dbUrl: string, username: string, total: number): Promise<number> {
  const sql = postgres(dbUrl, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    const [user] = await sql<{ id: string }[]>`select id from users where username = ${username}`;
    if (!user) throw new Error(`no user ${username} in the bench database`);
    const [existing] = await sql<{ n: number }[]>`select count(*)::int as n from files where owner_id = ${user.id}`;
    const missing = Math.max(0, total - (existing?.n ?? 0));
    await sql`
      insert into files (owner_id, filename, content_type, file_size, file_hash, storage_key, uploaded_at)
      select ${user.id}, 'seeded-' || i || '.txt', 'text/plain', 1000 + i,
             encode(sha256(convert_to(i::text, 'UTF8')), 'hex'), gen_random_uuid()::text,
             now() - make_interval(secs => i)
      from generate_series(1, ${missing}::int) as i`;
    await sql.unsafe("vacuum analyze files");
    return missing;
  } finally {
    await sql.end();
  }
}

export async function countFiles(dbUrl: string, username: string): Promise<number> {
  const sql = postgres(dbUrl, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from files join users on users.id = files.owner_id where username = ${username}`;
    return row?.n ?? 0;
  } finally {
    await sql.end();
  }
}

// ---------------------------------------------------------------- all of it

export interface FilesResults {
  download: MedianPair<Transfer> | Unavailable;
  list: Pair | Unavailable;
  /** Files of the user while the list was loaded; rows inserted by SQL to get there. */
  listed: { files: number; seeded: number };
}

export async function filesLoads(options: {
  server: Service;
  baseline: Service;
  token: string;
  bigFile: string;
  dbUrl: string;
  username: string;
  progress: (message: string) => void;
}): Promise<FilesResults> {
  const { server, baseline, bigFile, progress } = options;
  const authorization = `Authorization: Bearer ${options.token}`;

  progress(`files: ${DOWNLOAD_ROUNDS} downloads of ${BIG_FILE_BYTES / MiB} MiB, paired with a bare Bun.serve`);
  const upload = await curlUpload(server.url + UPLOADS, bigFile, ["-H", authorization]);
  const download =
    upload.status === 201
      ? await bigDownloads(server, baseline, authorization, (JSON.parse(upload.body) as { id: string }).id)
      : failed("upload", upload.status, upload.body);

  const seeded = await seedFiles(options.dbUrl, options.username, LIST_FILES);
  const listedFiles = await countFiles(options.dbUrl, options.username);
  progress(`files: GET /uploads with ${listedFiles} files (${seeded} inserted by SQL)`);
  const bearer = `Bearer ${options.token}`;
  const probe = await fetch(server.url + UPLOADS, {
    headers: { authorization: bearer },
    signal: AbortSignal.timeout(10_000),
  });
  await probe.arrayBuffer();
  const list =
    probe.status === 200
      ? await pairedLoad(
          { url: server.url + UPLOADS, authorization: bearer, pid: server.child.pid },
          { url: `${baseline.url}/api/v1/health/live`, pid: baseline.child.pid },
          LIST_SHAPE,
        )
      : failed("list", probe.status);
  return { download, list, listed: { files: listedFiles, seeded } };
}
