/**
 * The files rows: one big text file uploaded and downloaded with curl (against `cp` and a bare
 * Bun.serve of the same file), small uploads and the list under wrk.
 */
import { randomBytes } from "node:crypto";
import { closeSync, openSync, readdirSync, readFileSync, readSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import postgres from "postgres";
import { LOAD, median, type Pair, pairedLoad, processCpuUs, type Shape } from "./load";
import { run, type Service, tail } from "./process";

export const MiB = 1024 * 1024;
export const BIG_FILE_BYTES = 200 * MiB;
/** MAX_UPLOAD_SIZE of the files server: room for the big file. */
export const UPLOAD_LIMIT_BYTES = 256 * MiB;
export const SMALL_FILE_BYTES = 10 * 1024;
/** Files of the bench user while its list is loaded. */
export const LIST_FILES = 10_000;
/** Big uploads (each paired with a `cp`) and big downloads (each paired with the bare server's). */
const BIG_ROUNDS = 3;
const DOWNLOAD_ROUNDS = 7;
const RSS_SAMPLE_MS = 20;
const UPLOADS = "/api/v1/uploads";
// Shorter than the other rows' loads, to keep the whole bench within a few minutes.
export const SMALL_UPLOAD_SHAPE: Shape = { threads: 2, connections: 16, seconds: 3, warmupSeconds: 1, pairs: 3 };
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

function statusKb(pid: number, field: "VmRSS" | "VmHWM"): number {
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
async function peakRssDuring<T>(pid: number, work: () => Promise<T>): Promise<{ result: T; peakKb: number }> {
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
async function curl(output: string, args: string[]) {
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

const mibPerSec = (bytes: number, seconds: number) => bytes / MiB / seconds;

/** A transfer of the big file by the server, with the one it is compared with. */
interface Transfer {
  mibPerSec: number;
  baselineMibPerSec: number;
  /** Server CPU time for the transfer, ms. */
  cpuMs: number;
  baselineCpuMs?: number;
}

interface Transfers {
  median: Transfer;
  ratios: number[];
}

function medianTransfer(transfers: Transfer[]): Transfers {
  const ratios = transfers.map((t) => t.mibPerSec / t.baselineMibPerSec);
  const middle = transfers[ratios.indexOf(median(ratios))] as Transfer;
  return { median: middle, ratios };
}

/** A reason the row could not be measured, printed in place of the value. */
type Unavailable = string;
const failed = (what: string, status: number, body = ""): Unavailable =>
  `n/a (${what} returned ${status}${body ? `: ${body.slice(0, 80)}` : ""})`;

export interface BigUploads {
  transfers: Transfers;
  /**
   * What bounds the upload on this machine, each as a ratio to the same round's `cp` (medians): SHA-256 of
   * the same bytes in this process (the upload must hash every byte, on one core), and a bare Bun.serve
   * reading the same curl upload and discarding it (the transport alone).
   */
  ceilings: { sha256: number; bareUpload: number };
  /** RSS just before the first upload, MiB. */
  rssBeforeMiB: number;
  /** Peak RSS during each upload minus `rssBeforeMiB`, MiB. */
  growthMiB: number[];
  rssAfterMiB: number;
  fileId: string;
}

/** SHA-256 of the file, read in 1 MiB pieces, in this process: MiB/s. */
function sha256MibPerSec(path: string): number {
  const piece = Buffer.allocUnsafe(MiB);
  const hash = new Bun.CryptoHasher("sha256");
  const fd = openSync(path, "r");
  const startedAt = performance.now();
  try {
    for (let read = readSync(fd, piece); read > 0; read = readSync(fd, piece)) hash.update(piece.subarray(0, read));
  } finally {
    closeSync(fd);
  }
  hash.digest();
  return mibPerSec(BIG_FILE_BYTES, (performance.now() - startedAt) / 1000);
}

const curlUpload = (url: string, file: string, headers: string[] = []) =>
  // Expect: curl would wait for a 100 Continue before sending a big body.
  curl("-", [...headers, "-H", "Expect:", "-F", `file=@${file};type=text/plain`, url]);

/**
 * BIG_ROUNDS uploads of the big file, each after a `cp` of it on the same disk, with the server's
 * resident set watched throughout; each round also times the ceilings (SHA-256 alone, a bare upload).
 */
async function bigUploads(server: Service, baseline: Service, authorization: string, bigFile: string, scratch: string) {
  const pid = server.child.pid;
  const rssBeforeKb = statusKb(pid, "VmRSS");
  const transfers: Transfer[] = [];
  const growthMiB: number[] = [];
  const ceilings = { sha256: [] as number[], bareUpload: [] as number[] };
  let fileId = "";
  for (let i = 0; i < BIG_ROUNDS; i++) {
    // --reflink=never: a copy-on-write file system would otherwise copy nothing.
    const copy = join(scratch, "copy.txt");
    const startedAt = performance.now();
    const cp = await run(["cp", "--reflink=never", bigFile, copy], { timeoutMs: 120_000 });
    const cpSeconds = (performance.now() - startedAt) / 1000;
    if (cp.code !== 0) throw new Error(`cp failed:\n${tail(cp.output)}`);
    await run(["rm", "-f", copy], { timeoutMs: 60_000 });

    const cpuBefore = processCpuUs(pid);
    const { result: upload, peakKb } = await peakRssDuring(pid, () =>
      curlUpload(server.url + UPLOADS, bigFile, ["-H", authorization]),
    );
    if (upload.status !== 201) return failed("upload", upload.status, upload.body);
    const bare = await curlUpload(`${baseline.url}/stream`, bigFile);
    if (bare.status !== 201) return failed("bare upload", bare.status, bare.body);
    const cpMibPerSec = mibPerSec(BIG_FILE_BYTES, cpSeconds);
    ceilings.bareUpload.push(mibPerSec(BIG_FILE_BYTES, bare.seconds) / cpMibPerSec);
    ceilings.sha256.push(sha256MibPerSec(bigFile) / cpMibPerSec);
    fileId = (JSON.parse(upload.body) as { id: string }).id;
    growthMiB.push((peakKb - rssBeforeKb) / 1024);
    transfers.push({
      mibPerSec: mibPerSec(BIG_FILE_BYTES, upload.seconds),
      baselineMibPerSec: cpMibPerSec,
      cpuMs: (processCpuUs(pid) - cpuBefore) / 1000,
    });
  }
  return {
    transfers: medianTransfer(transfers),
    ceilings: { sha256: median(ceilings.sha256), bareUpload: median(ceilings.bareUpload) },
    rssBeforeMiB: rssBeforeKb / 1024,
    growthMiB,
    rssAfterMiB: statusKb(pid, "VmRSS") / 1024,
    fileId,
  } satisfies BigUploads;
}

/** DOWNLOAD_ROUNDS downloads of the big file from the server, each after one from the bare server. */
async function bigDownloads(server: Service, baseline: Service, authorization: string, fileId: string) {
  const transfers: Transfer[] = [];
  const timed = async (service: Service, path: string, headers: string[]) => {
    const cpuBefore = processCpuUs(service.child.pid);
    const download = await curl("/dev/null", [...headers, service.url + path]);
    return { ...download, cpuMs: (processCpuUs(service.child.pid) - cpuBefore) / 1000 };
  };
  for (let i = 0; i < DOWNLOAD_ROUNDS; i++) {
    const base = await timed(baseline, "/file", []);
    const served = await timed(server, `${UPLOADS}/${fileId}/download`, ["-H", authorization]);
    for (const [what, download] of [
      ["bare download", base],
      ["download", served],
    ] as const) {
      if (download.status !== 200) return failed(what, download.status);
      if (download.received !== BIG_FILE_BYTES) return `n/a (${what} sent ${download.received} bytes)`;
    }
    transfers.push({
      mibPerSec: mibPerSec(BIG_FILE_BYTES, served.seconds),
      baselineMibPerSec: mibPerSec(BIG_FILE_BYTES, base.seconds),
      cpuMs: served.cpuMs,
      baselineCpuMs: base.cpuMs,
    });
  }
  return medianTransfer(transfers);
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

async function countFiles(dbUrl: string, username: string): Promise<number> {
  const sql = postgres(dbUrl, { max: 1, connect_timeout: 5, onnotice: () => {} });
  try {
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from files join users on users.id = files.owner_id where username = ${username}`;
    return row?.n ?? 0;
  } finally {
    await sql.end();
  }
}

/** Objects stored under `objects/ab/cd/`: how many, in how many folders, the fullest folder. */
function objectFolders(uploadDir: string) {
  const objects = join(uploadDir, "objects");
  const list = (dir: string) => readdirSync(dir, { withFileTypes: true });
  let count = 0;
  let folders = 0;
  let fullest = 0;
  for (const first of list(objects).filter((entry) => entry.isDirectory())) {
    for (const second of list(join(objects, first.name)).filter((entry) => entry.isDirectory())) {
      const entries = list(join(objects, first.name, second.name)).length;
      count += entries;
      folders++;
      fullest = Math.max(fullest, entries);
    }
  }
  const temporaries = readdirSync(join(uploadDir, "tmp")).length;
  return { count, folders, fullest, temporaries };
}

// ---------------------------------------------------------------- all of it

export interface FilesResults {
  big: BigUploads | Unavailable;
  download: Transfers | Unavailable;
  list: Pair | Unavailable;
  /** Files of the user while the list was loaded; rows inserted by SQL to get there. */
  listed: { files: number; seeded: number };
  small: Pair | Unavailable;
  /** What the small uploads left: rows of the user beyond the listed ones, and the objects on disk. */
  piledUp: { rows: number; objects: ReturnType<typeof objectFolders> };
}

export async function filesLoads(options: {
  server: Service;
  baseline: Service;
  token: string;
  bigFile: string;
  scratch: string;
  uploadDir: string;
  dbUrl: string;
  username: string;
  progress: (message: string) => void;
}): Promise<FilesResults> {
  const { server, baseline, bigFile, scratch, progress } = options;
  const authorization = `Authorization: Bearer ${options.token}`;
  const pids = { server: server.child.pid, baseline: baseline.child.pid };

  progress(`files: ${BIG_ROUNDS} uploads of ${BIG_FILE_BYTES / MiB} MiB (each after a cp), RSS sampled`);
  const big = await bigUploads(server, baseline, authorization, bigFile, scratch);
  progress(`files: ${DOWNLOAD_ROUNDS} downloads of ${BIG_FILE_BYTES / MiB} MiB, paired with a bare Bun.serve`);
  const download = typeof big === "string" ? big : await bigDownloads(server, baseline, authorization, big.fileId);

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
          { url: server.url + UPLOADS, authorization: bearer, pid: pids.server },
          { url: `${baseline.url}/api/v1/health/live`, pid: pids.baseline },
          LIST_SHAPE,
        )
      : failed("list", probe.status);

  progress(`files: POST /uploads of ${SMALL_FILE_BYTES / 1024} KiB at ${SMALL_UPLOAD_SHAPE.connections} connections`);
  const bodyFile = join(scratch, "small-upload.body");
  const contentType = writeMultipartBody(bodyFile, SMALL_FILE_BYTES);
  const once = await curl("-", [
    "-H",
    authorization,
    "-H",
    `Content-Type: ${contentType}`,
    "--data-binary",
    `@${bodyFile}`,
    server.url + UPLOADS,
  ]);
  const upload = { method: "POST" as const, bodyFile, contentType };
  const small =
    once.status === 201
      ? await pairedLoad(
          { ...upload, url: server.url + UPLOADS, authorization: bearer, pid: pids.server },
          { ...upload, url: baseline.url + UPLOADS, pid: pids.baseline },
          SMALL_UPLOAD_SHAPE,
        )
      : failed("upload", once.status, once.body);
  const piledUp = {
    rows: (await countFiles(options.dbUrl, options.username)) - listedFiles,
    objects: objectFolders(options.uploadDir),
  };
  return { big, download, list, listed: { files: listedFiles, seeded }, small, piledUp };
}
