/**
 * Backup and restore throughput of the binary on a DATA_DIR of 10,000 users and 1 GiB of files, and its
 * start-up with and without bytecode. Run alone with `bun run bench/backup.ts`, or as rows of `bun run bench`.
 */
import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { openPglite } from "../src/db/client";
import { runMigrations } from "../src/db/migrate";
import { diskStorage } from "../src/platform/storage";
import { median } from "./load";
import { run } from "./process";

export const BACKUP_USERS = 10_000;
const MiB = 1024 * 1024;
const FILE_BYTES = 4 * MiB;
export const BACKUP_FILE_BYTES = 1024 * MiB;
const STARTS = 5;
// Any valid bcrypt hash: the rows are never logged in with.
const HASH = "$2b$04$C6UzMDM.H6dfI/f/IKcEeO5V8qkQ8Mg8J2f0tY9Rz6bU0r6yC5U1a";

export interface BackupResults {
  users: number;
  fileBytes: number;
  archiveBytes: number;
  backupSeconds: number;
  restoreSeconds: number;
  backupMiBs: number;
  restoreMiBs: number;
}

/** A DATA_DIR as a server leaves it: users, file rows, and the files' bytes under UPLOAD_DIR. */
async function fillDataDir(dataDir: string): Promise<void> {
  const db = await openPglite(join(dataDir, "pgdata"));
  try {
    await runMigrations(db);
    const pglite = db.pglite as NonNullable<typeof db.pglite>;
    await pglite.query(
      `insert into users (id, username, email, password_hash)
       select gen_random_uuid(), 'user' || n, 'user' || n || '@example.com', $1 from generate_series(1, ${BACKUP_USERS}) n`,
      [HASH],
    );
    const owners = (await pglite.query<{ id: string }>("select id from users limit 100")).rows;
    const storage = diskStorage(join(dataDir, "uploads"));
    const noise = crypto.getRandomValues(new Uint8Array(65_536));
    const block = new Uint8Array(FILE_BYTES);
    for (let at = 0; at < FILE_BYTES; at += noise.byteLength) block.set(noise, at);
    for (let n = 0; n < BACKUP_FILE_BYTES / FILE_BYTES; n++) {
      new DataView(block.buffer).setUint32(0, n);
      const key = Bun.randomUUIDv7();
      const pending = await storage.begin(key);
      await pending.write(block);
      await pending.close();
      await pglite.query(
        "insert into files (owner_id, filename, content_type, file_size, file_hash, storage_key) values ($1, $2, 'application/pdf', $3, $4, $5)",
        [
          owners[n % owners.length]?.id,
          `paper-${n}.pdf`,
          FILE_BYTES,
          new Bun.CryptoHasher("sha256").update(block).digest("hex"),
          key,
        ],
      );
      await storage.commit(key);
    }
  } finally {
    await db.close();
  }
}

async function timed(what: string, cmd: string[], env: Record<string, string>, cwd: string): Promise<number> {
  const started = performance.now();
  const result = await run(cmd, {
    cwd,
    env: { PATH: process.env.PATH, LOG_LEVEL: "warn", ...env },
    timeoutMs: 600_000,
  });
  if (result.code !== 0) throw new Error(`${what} failed (${result.code}): ${result.output}`);
  return (performance.now() - started) / 1000;
}

export async function backupRows(binary: string, progress: (message: string) => void): Promise<BackupResults> {
  const scratch = mkdtempSync(join(tmpdir(), "rp-bench-backup-"));
  try {
    const source = join(scratch, "source");
    progress(`backup: filling a DATA_DIR with ${BACKUP_USERS} users and ${BACKUP_FILE_BYTES / MiB} MiB of files`);
    mkdirSync(source, { mode: 0o700 });
    await fillDataDir(source);
    const archive = join(scratch, "b.tar");
    const env = { ENVIRONMENT: "development" };
    progress("backup: reviewpoint backup");
    const backupSeconds = await timed(
      "backup",
      [binary, "backup", "--output", archive],
      { ...env, DATA_DIR: source },
      scratch,
    );
    const archiveBytes = statSync(archive).size;
    progress("backup: reviewpoint restore");
    const restored = join(scratch, "restored");
    const restoreSeconds = await timed(
      "restore",
      [binary, "restore", archive],
      { ...env, DATA_DIR: restored },
      scratch,
    );
    return {
      users: BACKUP_USERS,
      fileBytes: BACKUP_FILE_BYTES,
      archiveBytes,
      backupSeconds,
      restoreSeconds,
      backupMiBs: archiveBytes / MiB / backupSeconds,
      restoreMiBs: archiveBytes / MiB / restoreSeconds,
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

export interface StartupResults {
  /** Median wall time of `--version` (the whole program loaded, nothing opened), ms. */
  versionMs: { bytecode: number; plain: number };
  /** Median spawn to first ready answer of `serve` on an existing embedded database, ms. */
  readyMs: { bytecode: number; plain: number };
}

async function readyAfter(binary: string, dataDir: string): Promise<number> {
  const port = 20_000 + Math.floor(Math.random() * 20_000);
  const started = performance.now();
  const child = Bun.spawn([binary, "serve"], {
    env: { PATH: process.env.PATH, DATA_DIR: dataDir, PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "warn" },
    stdout: "ignore",
    stderr: "ignore",
  });
  try {
    for (;;) {
      if ((await fetch(`http://127.0.0.1:${port}/api/v1/health/ready`).catch(() => undefined))?.ok) {
        return performance.now() - started;
      }
      if (child.exitCode !== null) throw new Error(`${binary} exited ${child.exitCode}`);
      await Bun.sleep(5);
    }
  } finally {
    child.kill("SIGTERM");
    await child.exited;
  }
}

/** Builds a second binary without bytecode and times both. */
export async function startupRows(binary: string, progress: (message: string) => void): Promise<StartupResults> {
  const scratch = mkdtempSync(join(tmpdir(), "rp-bench-startup-"));
  try {
    const plain = join(scratch, "reviewpoint-plain");
    progress("start-up: building a binary without --bytecode");
    const root = resolve(import.meta.dir, "..");
    await timed("build", ["bun", "run", "scripts/build.ts", "--no-bytecode", "--outfile", plain], {}, root);
    const dataDir = join(scratch, "data");
    mkdirSync(dataDir);
    await timed("migrate", [binary, "migrate"], { DATA_DIR: dataDir, ENVIRONMENT: "development" }, scratch);
    const versionMs = async (file: string) => {
      const times: number[] = [];
      for (let i = 0; i < STARTS * 3; i++)
        times.push(1000 * (await timed("--version", [file, "--version"], {}, scratch)));
      return median(times);
    };
    const ready = async (file: string) => {
      const times: number[] = [];
      for (let i = 0; i < STARTS; i++) times.push(await readyAfter(file, dataDir));
      return median(times);
    };
    progress("start-up: --version and serve, with and without bytecode");
    return {
      versionMs: { bytecode: await versionMs(binary), plain: await versionMs(plain) },
      readyMs: { bytecode: await ready(binary), plain: await ready(plain) },
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

if (import.meta.main) {
  const binary = resolve(import.meta.dir, "..", "dist", "reviewpoint");
  const log = (message: string) => console.error(message);
  console.log(
    JSON.stringify({ startup: await startupRows(binary, log), backup: await backupRows(binary, log) }, null, 2),
  );
}
