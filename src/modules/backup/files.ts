import { link, open, readdir, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { BackupError } from "./model";

/** `reviewpoint-backup-20261205T153000Z.tar`: sorts by time. */
export const backupFileName = (at = new Date()) =>
  `reviewpoint-backup-${at
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z")}.tar`;
const BACKUP_NAME = /^reviewpoint-backup-\d{8}T\d{6}Z\.tar$/;

/** One line for a file-system failure the operator can act on. */
export function fileSystemProblem(command: string, path: string, error: unknown): Error {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOSPC")
    return new BackupError(`${command}: no space left on the device of ${path}; nothing was written`);
  if (code === "EEXIST") return new BackupError(`${command}: ${path} exists already; choose another file`);
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
    return new BackupError(`${command}: ${path} is not writable (${code})`);
  }
  if (code === "ENOENT" || code === "ENOTDIR")
    return new BackupError(`${command}: the folder of ${path} does not exist`);
  return error as Error;
}

/**
 * Writes `stream` to a new file at `path`, whole or not at all: into a temporary beside it, flushed to
 * disk, then linked into place (which refuses to replace an existing file). On any failure nothing is left.
 */
export async function writeNewFile(path: string, stream: ReadableStream<Uint8Array>): Promise<number> {
  const partial = join(dirname(path), `.${basename(path)}.partial-${process.pid}`);
  let bytes = 0;
  try {
    const handle = await open(partial, "wx", 0o600);
    try {
      for await (const chunk of stream) {
        await handle.write(chunk);
        bytes += chunk.byteLength;
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    await link(partial, path);
  } catch (error) {
    await stream.cancel().catch(() => {});
    throw fileSystemProblem("backup", path, error);
  } finally {
    await rm(partial, { force: true });
  }
  return bytes;
}

/** Removes the oldest scheduled backups in `dir` beyond the newest `keep`. */
export async function pruneBackups(dir: string, keep: number): Promise<string[]> {
  const names = (await readdir(dir)).filter((name) => BACKUP_NAME.test(name)).sort();
  const old = names.slice(0, Math.max(0, names.length - keep));
  await Promise.all(old.map((name) => rm(join(dir, name), { force: true })));
  return old;
}
