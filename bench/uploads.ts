/**
 * The upload rows: our binary against the Fastify peer (`bench/peer`) in the same rounds, beside two
 * variants of ours (USER_STORAGE_QUOTA set, metrics off) and the floors: `cp`, SHA-256 alone, a bare Bun.serve.
 */
import { closeSync, openSync, readdirSync, readSync } from "node:fs";
import { join } from "node:path";
import {
  BIG_FILE_BYTES,
  countFiles,
  curl,
  curlUpload,
  failed,
  MiB,
  mibPerSec,
  peakRssDuring,
  SMALL_FILE_BYTES,
  SMALL_UPLOAD_SHAPE,
  statusKb,
  type Transfer,
  type Unavailable,
  UPLOADS,
  writeMultipartBody,
} from "./files";
import { type Load, loadRounds, type Measured, mainThreadCpuUs, processCpuUs } from "./load";
import { run, type Service, tail } from "./process";
import { runWrk } from "./wrk";

/** Each round uploads the big file once to every server, after a `cp` of it. */
export const BIG_ROUNDS = 3;
/**
 * Small uploads each server gets before the first round: the JIT compilers (JSC's, V8's) are busy for
 * the first ~10 s of a load, and without this the first round measured them (the peer's CPU per
 * upload fell from 1,714 to 599 µs over three rounds, ours from 1,875 to 1,052).
 */
const SMALL_WARMUP_SECONDS = 5;
/** The servers compared: ours (metrics on, no quota, as shipped), the peer, and ours changed in one setting. */
export const UPLOAD_SERVERS = ["ours", "peer", "quota", "metricsOff"] as const;
export type UploadServer = (typeof UPLOAD_SERVERS)[number];

/** A server with the Authorization header its uploads carry. */
export interface UploadTarget {
  service: Service;
  authorization: string;
}

/**
 * A big upload: its rate, the server's CPU time and its main (JavaScript) thread's, and the server's
 * peak RSS over its RSS before the first.
 */
export interface BigUpload extends Transfer {
  mainThreadCpuMs: number;
  growthMiB: number;
}

export interface BigUploads {
  /** Each server's uploads, round by round. */
  uploads: Record<UploadServer, BigUpload[]>;
  /**
   * The floors, round by round: `cp` of the file on the same disk, SHA-256 of the same bytes in one process
   * (an upload must hash every byte, on one core), a bare Bun.serve reading the same upload (the transport),
   * and one storing it durably (hash, awaited writes, a data sync: what any upload server must do).
   */
  floors: Record<"cp" | "sha256" | "bareUpload", Transfer[]> & { bareStore: BareStore[] };
  /** RSS before the first upload and after the last, MiB. */
  rssMiB: Record<UploadServer, { before: number; after: number }>;
}

/** The bare durable store of the big file, and the baseline process's RSS growth over its idle RSS. */
export interface BareStore extends Transfer {
  growthMiB: number;
}

/** Objects stored under `objects/ab/cd/`: how many, in how many folders, the fullest folder; and temporaries. */
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

export interface SmallUploads {
  /** Each server's loads round by round; `baseline` is a bare Bun.serve reading the body. */
  runs: Record<UploadServer | "baseline", Measured[]>;
  /** Rows of the uploading user after the loads, and the objects our servers stored (they share a folder). */
  piledUp: { rows: number; objects: ReturnType<typeof objectFolders> };
}

export interface UploadResults {
  big: BigUploads | Unavailable;
  small: SmallUploads | Unavailable;
}

/** SHA-256 of the file, read in 1 MiB pieces, in this process. */
function sha256Transfer(path: string): Transfer {
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
  return { mibPerSec: mibPerSec(BIG_FILE_BYTES, (performance.now() - startedAt) / 1000) };
}

async function cpTransfer(bigFile: string, scratch: string): Promise<Transfer> {
  // --reflink=never: a copy-on-write file system would otherwise copy nothing.
  const copy = join(scratch, "copy.txt");
  const startedAt = performance.now();
  const cp = await run(["cp", "--reflink=never", bigFile, copy], { timeoutMs: 120_000 });
  const seconds = (performance.now() - startedAt) / 1000;
  if (cp.code !== 0) throw new Error(`cp failed:\n${tail(cp.output)}`);
  await run(["rm", "-f", copy], { timeoutMs: 60_000 });
  return { mibPerSec: mibPerSec(BIG_FILE_BYTES, seconds) };
}

/**
 * BIG_ROUNDS rounds: a `cp`, then the big file uploaded to every server (in an order rotated each round,
 * so none always follows the disk's write-back of another), each server's RSS watched, then the floors.
 */
async function bigUploads(
  targets: Record<UploadServer, UploadTarget>,
  baseline: Service,
  bareStore: Service,
  bigFile: string,
  scratch: string,
): Promise<BigUploads | Unavailable> {
  const pidOf = (server: UploadServer) => targets[server].service.child.pid;
  const rssBeforeKb = Object.fromEntries(UPLOAD_SERVERS.map((server) => [server, statusKb(pidOf(server), "VmRSS")]));
  const uploads = Object.fromEntries(UPLOAD_SERVERS.map((server) => [server, [] as BigUpload[]])) as Record<
    UploadServer,
    BigUpload[]
  >;
  const floors: BigUploads["floors"] = { cp: [], sha256: [], bareUpload: [], bareStore: [] };
  const bareStoreRssKb = statusKb(bareStore.child.pid, "VmRSS");
  for (let round = 0; round < BIG_ROUNDS; round++) {
    floors.cp.push(await cpTransfer(bigFile, scratch));
    const turn = round % UPLOAD_SERVERS.length;
    const order = [...UPLOAD_SERVERS.slice(turn), ...UPLOAD_SERVERS.slice(0, turn)];
    for (const server of order) {
      const { service, authorization } = targets[server];
      const pid = service.child.pid;
      const cpuBefore = { all: processCpuUs(pid), main: mainThreadCpuUs(pid) };
      const { result: upload, peakKb } = await peakRssDuring(pid, () =>
        curlUpload(service.url + UPLOADS, bigFile, ["-H", `Authorization: ${authorization}`]),
      );
      if (upload.status !== 201) return failed(`upload to ${server}`, upload.status, upload.body);
      uploads[server].push({
        mibPerSec: mibPerSec(BIG_FILE_BYTES, upload.seconds),
        cpuMs: (processCpuUs(pid) - cpuBefore.all) / 1000,
        mainThreadCpuMs: (mainThreadCpuUs(pid) - cpuBefore.main) / 1000,
        growthMiB: (peakKb - (rssBeforeKb[server] as number)) / 1024,
      });
    }
    const cpuBefore = processCpuUs(baseline.child.pid);
    const bare = await curlUpload(`${baseline.url}/stream`, bigFile);
    if (bare.status !== 201) return failed("bare upload", bare.status, bare.body);
    floors.bareUpload.push({
      mibPerSec: mibPerSec(BIG_FILE_BYTES, bare.seconds),
      cpuMs: (processCpuUs(baseline.child.pid) - cpuBefore) / 1000,
    });
    const storeCpuBefore = processCpuUs(bareStore.child.pid);
    const { result: stored, peakKb } = await peakRssDuring(bareStore.child.pid, () =>
      curlUpload(`${bareStore.url}/store`, bigFile),
    );
    if (stored.status !== 201) return failed("bare durable store", stored.status, stored.body);
    floors.bareStore.push({
      mibPerSec: mibPerSec(BIG_FILE_BYTES, stored.seconds),
      cpuMs: (processCpuUs(bareStore.child.pid) - storeCpuBefore) / 1000,
      growthMiB: (peakKb - bareStoreRssKb) / 1024,
    });
    floors.sha256.push(sha256Transfer(bigFile));
  }
  const rssMiB = Object.fromEntries(
    UPLOAD_SERVERS.map((server) => [
      server,
      { before: (rssBeforeKb[server] as number) / 1024, after: statusKb(pidOf(server), "VmRSS") / 1024 },
    ]),
  ) as BigUploads["rssMiB"];
  return { uploads, floors, rssMiB };
}

/** SMALL_UPLOAD_SHAPE rounds of 10 KiB uploads under wrk, every server and the bare baseline in turn. */
async function smallUploads(
  targets: Record<UploadServer, UploadTarget>,
  baseline: Service,
  scratch: string,
): Promise<Record<UploadServer | "baseline", Measured[]> | Unavailable> {
  const bodyFile = join(scratch, "small-upload.body");
  const contentType = writeMultipartBody(bodyFile, SMALL_FILE_BYTES);
  const upload = { method: "POST" as const, bodyFile, contentType };
  const loads = { baseline: { ...upload, url: baseline.url + UPLOADS, pid: baseline.child.pid } } as Record<
    UploadServer | "baseline",
    Load
  >;
  for (const server of UPLOAD_SERVERS) {
    const { service, authorization } = targets[server];
    const url = service.url + UPLOADS;
    const once = await curl("-", [
      ...["-H", `Authorization: ${authorization}`, "-H", `Content-Type: ${contentType}`],
      ...["--data-binary", `@${bodyFile}`, url],
    ]);
    if (once.status !== 201) return failed(`upload to ${server}`, once.status, once.body);
    loads[server] = { ...upload, url, authorization, pid: service.child.pid };
  }
  const { threads, connections } = SMALL_UPLOAD_SHAPE;
  for (const { pid: _, ...load } of Object.values<Load>(loads)) {
    await runWrk({ ...load, threads, connections, seconds: SMALL_WARMUP_SECONDS });
  }
  return loadRounds(loads, SMALL_UPLOAD_SHAPE);
}

export async function uploadLoads(options: {
  targets: Record<UploadServer, UploadTarget>;
  baseline: Service;
  /** A bare Bun.serve whose /store is the durable-store floor. */
  bareStore: Service;
  bigFile: string;
  scratch: string;
  /** The folder our servers store into (shared, as instances on one volume). */
  uploadDir: string;
  dbUrl: string;
  /** Who uploads to our servers. */
  username: string;
  progress: (message: string) => void;
}): Promise<UploadResults> {
  const { targets, baseline, scratch, progress } = options;
  progress(`uploads: ${BIG_ROUNDS} rounds of ${BIG_FILE_BYTES / MiB} MiB to ${UPLOAD_SERVERS.join(", ")}`);
  const big = await bigUploads(targets, baseline, options.bareStore, options.bigFile, scratch);
  progress(
    `uploads: ${SMALL_FILE_BYTES / 1024} KiB at ${SMALL_UPLOAD_SHAPE.connections} connections, ${SMALL_WARMUP_SECONDS} s of warm-up each, then ${SMALL_UPLOAD_SHAPE.rounds} rounds`,
  );
  const runs = await smallUploads(targets, baseline, scratch);
  const small =
    typeof runs === "string"
      ? runs
      : {
          runs,
          piledUp: {
            rows: await countFiles(options.dbUrl, options.username),
            objects: objectFolders(options.uploadDir),
          },
        };
  return { big, small };
}
