import { closeSync, fdatasync, fsync, open as openCallback, write } from "node:fs";
import { link, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";

/** Bytes being written under a key chosen beforehand; nobody reads them before their row exists. */
export interface PendingObject {
  /**
   * Takes the next bytes; resolves when more may come (a slow disk slows the upload instead of filling
   * memory). A failed write (StorageFullError when there is no room) rejects this call or a later one, at
   * the latest `close()`.
   */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Makes what was written durable (flushed and fsynced on disk; on S3 every part confirmed) and returns
   * the size stored, for the caller to compare with what it sent. The bytes stay a temporary until
   * `commit(key)`.
   */
  close(): Promise<number>;
  /** The bytes written, once closed (the virus scan reads them back from storage). */
  read(): ReadableStream<Uint8Array>;
  /** Removes whatever was written; harmless after a commit or a second call. */
  discard(): Promise<void>;
}

/** No room left for the bytes (a full disk or quota): a 507, with nothing of the upload kept. */
export class StorageFullError extends Error {
  constructor(cause: unknown) {
    super("storage full", { cause });
  }
}

/** A storage fault past the client's control: a full disk becomes StorageFullError, anything else stays. */
export function storageFault(error: unknown): unknown {
  const code = (error as NodeJS.ErrnoException | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT" ? new StorageFullError(error) : error;
}

/** The storage itself failed (a bucket that is down or refuses us): a 503, not the client's fault. */
export class StorageUnavailableError extends Error {
  constructor(
    readonly operation: string,
    cause: unknown,
  ) {
    const code = (cause as { code?: unknown } | null)?.code;
    super(`storage ${operation} failed${typeof code === "string" ? `: ${code}` : ""}`, { cause });
  }
}

/** Bytes held as they were when pinned (a deletion meanwhile does not touch them), until released. */
export interface PinnedObjects {
  /** The pinned keys: those asked for that had bytes. */
  readonly keys: string[];
  read(key: string): Blob;
  release(): Promise<void>;
}

/** A temporary object: what an upload cut short left, or one waiting for its commit. */
export interface Temporary {
  key: string;
  modifiedAt: number;
}

/**
 * The one seam over stored bytes: opaque, server-chosen keys (UUIDs). Nothing else in the code
 * touches stored bytes: the disk (below) and an S3 bucket (`s3-storage.ts`) sit behind the same calls.
 * Writing is two-phase: bytes go to a temporary object under their final key, and `commit` ends the
 * temporary state, so a crash in between leaves a temporary that a sweep can finish or remove.
 */
export interface ObjectStorage {
  readonly kind: "disk" | "s3";
  begin(key: string): Promise<PendingObject>;
  /**
   * Ends the temporary state of `key`: on disk the bytes move to their key; on S3 they are already
   * there once closed, and the marker that made them a temporary goes. `retired`: the temporary may be a
   * retired object's (the sweep's case), which takes one more step on disk.
   */
  commit(key: string, options?: { retired?: boolean }): Promise<void>;
  /**
   * Makes a stored object a temporary again while it stays readable, before its row goes: if deleting
   * its bytes then fails, the start-up sweep finds a temporary without a row and removes it. A commit
   * undoes it. Nothing to do for a key with no object.
   */
  retire(key: string): Promise<void>;
  /** The object's bytes, or the inclusive byte range [start, end], streamed when sent as a body. */
  read(key: string, range?: { start: number; end: number }): Blob | ReadableStream<Uint8Array>;
  stat(key: string): Promise<{ size: number } | undefined>;
  /**
   * S3 only: a URL at which the bucket itself serves the object for `seconds`, answering with this
   * Content-Type and Content-Disposition. Signed locally: no request is made.
   */
  presign?(key: string, options: { seconds: number; contentType: string; contentDisposition: string }): string;
  /** Removes objects, and temporaries of the same keys. */
  delete(...keys: string[]): Promise<void>;
  /** Every temporary object, for the start-up sweep. */
  temporaries(): Promise<Temporary[]>;
  /**
   * Holds the bytes of `keys` as they are now until released, so a backup can read them after its
   * database snapshot even if they are deleted meanwhile. Disk only (a bucket has its own versioning).
   */
  pin?(keys: string[]): Promise<PinnedObjects>;
  /** Removes pins older than `olderThanMs`: a backup that died with its process never released them. */
  releaseStalePins?(olderThanMs: number): Promise<void>;
}

const KEY = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Keys are ours (UUIDs); nothing else ever names a stored object. */
export const isStorageKey = (key: string) => KEY.test(key);

/**
 * Runs `work`, which creates `path`; when its folder is missing (ENOENT), makes the folder and runs it
 * again. Optimistic: a mkdir on every upload was 5-7% of a small upload's CPU, and folders exist but once.
 */
export async function inFolder<T>(path: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    return work();
  }
}

/** The temporary of `key` under a disk storage's `root`: where an upload's bytes wait for their commit. */
export function diskTemporaryPath(root: string, key: string): string {
  if (!isStorageKey(key)) throw new Error("invalid storage key");
  return join(root, "tmp", key);
}

/** Bytes gathered into one write to disk. */
const GATHER = 1024 * 1024;
// Raw descriptors, not FileHandles: closing is a plain close(2) then, not one more trip to the file pool.
const openFile = promisify(openCallback) as (path: string, flags: string, mode: number) => Promise<number>;
const fsyncFile = promisify(fsync);
const dataSyncFile = promisify(fdatasync);
/** Bytes written between two background data syncs of a big upload. */
const SYNC_STEP = 16 * GATHER;
const writeFile = promisify(write);

/** Writes all of `bytes`; a write that takes only part (a disk filling up) is continued. */
async function writeAll(fd: number, bytes: Uint8Array): Promise<number> {
  let done = 0;
  while (done < bytes.byteLength) done += (await writeFile(fd, bytes, done, bytes.byteLength - done)).bytesWritten;
  return done;
}

/**
 * Write buffers shared by every upload: taking one costs nothing once a few exist (allocating two 1 MiB
 * buffers per upload was a tenth of a small upload's JavaScript time), and at most POOLED are kept.
 */
const POOLED = 8;
const buffers = (() => {
  const free: Buffer[] = [];
  return {
    take: () => free.pop() ?? Buffer.allocUnsafe(GATHER),
    release(buffer: Buffer) {
      if (free.length < POOLED && !free.includes(buffer)) free.push(buffer);
    },
  };
})();
/** Links made at once when pinning many objects. */
const PIN_BATCH = 64;

/**
 * Files under `root`: `objects/<last 2>/<2 before>/<key>` (two levels of shards, so no folder holds millions of
 * entries) and `tmp/<key>` until committed. A rename inside one file system makes
 * the commit atomic: a reader sees the whole object or none.
 */
export function diskStorage(root: string): ObjectStorage {
  const tmpDir = join(root, "tmp");
  const pinnedDir = join(root, "pinned");
  const objectsDir = join(root, "objects");
  // Folders are made on first use: building the storage does no I/O.

  const temporaryOf = (key: string) => diskTemporaryPath(root, key);
  const pathOf = (key: string) => {
    // Keys are ours, but a key never becomes a path unless it is one of ours.
    if (!isStorageKey(key)) throw new Error("invalid storage key");
    // Sharded on the key's random tail: a v7 UUID starts with a timestamp that barely moves.
    return join(objectsDir, key.slice(-2), key.slice(-4, -2), key);
  };

  return {
    kind: "disk",

    async begin(key) {
      const temp = temporaryOf(key);
      // Opened on the first write to disk: an upload that fits in one buffer costs one open, one write,
      // one fsync and one close, all at its end (each call on Bun's file pool is ~60 CPU-µs).
      let fd: number | undefined;
      let buffer: Buffer | undefined;
      let filled = 0;
      let written = 0;
      let writing: Promise<void> = Promise.resolve();
      // Durable in steps while a big upload arrives, so the last fsync has only the tail left to flush
      // (one at the end made a 200 MiB upload wait ~0.4 s for the disk after its last byte).
      let syncing: Promise<void> = Promise.resolve();
      let syncedUpTo = 0;
      let open = true;
      /** Writes the filled buffer once the write before it is done: one write in flight, two buffers. */
      const flush = async () => {
        const full = buffer;
        const length = filled;
        buffer = undefined;
        filled = 0;
        await writing;
        writing = (async () => {
          fd ??= await inFolder(temp, () => openFile(temp, "wx", 0o600));
          if (full) written += await writeAll(fd, full.subarray(0, length));
          if (written - syncedUpTo >= SYNC_STEP) {
            syncedUpTo = written;
            const file = fd;
            await syncing;
            syncing = dataSyncFile(file);
            syncing.catch(() => {});
          }
        })()
          .catch((error) => {
            throw storageFault(error);
          })
          .finally(() => full && buffers.release(full));
        writing.catch(() => {});
      };
      const release = () => {
        if (fd !== undefined) closeSync(fd);
        fd = undefined;
        if (buffer) buffers.release(buffer);
        buffer = undefined;
      };
      return {
        async write(chunk) {
          if (!open) throw new Error("object already closed");
          // Copied into a pooled buffer at once: a network chunk held until its write outlived the young
          // generation, and the resident set grew with what the collector then kept (bench row g1).
          for (let at = 0; at < chunk.byteLength; ) {
            buffer ??= buffers.take();
            const taken = Math.min(chunk.byteLength - at, GATHER - filled);
            buffer.set(chunk.subarray(at, at + taken), filled);
            filled += taken;
            at += taken;
            if (filled === GATHER) await flush();
          }
        },
        async close() {
          if (!open) throw new Error("object already closed");
          open = false;
          try {
            if (filled > 0 || fd === undefined) await flush();
            await writing;
            await syncing;
            // On disk before the row exists: a crash after the commit must not find a hole where bytes were.
            await fsyncFile(fd as number);
            return written;
          } catch (error) {
            throw storageFault(error);
          } finally {
            release();
          }
        },
        read: () => Bun.file(temp).stream(),
        async discard() {
          open = false;
          await writing.catch(() => {});
          await syncing.catch(() => {});
          release();
          await rm(temp, { force: true });
        },
      };
    },

    async commit(key, options) {
      const target = pathOf(key);
      await inFolder(target, () => rename(temporaryOf(key), target));
      // A retired object's temporary is a second link to the same file, which rename leaves in place.
      if (options?.retired) await rm(temporaryOf(key), { force: true });
    },

    async retire(key) {
      // A key that is not one of ours names nothing stored here (as for `delete`).
      if (!isStorageKey(key)) return;
      // A hard link: the object stays where readers find it, and the temporary names the same bytes.
      try {
        await inFolder(temporaryOf(key), () => link(pathOf(key), temporaryOf(key)));
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === "EEXIST") return; // retired already
        // No object under the key: nothing to retire.
        if (code === "ENOENT" && !(await stat(pathOf(key)).catch(() => undefined))) return;
        throw error;
      }
    },

    read(key, range) {
      // A fresh Bun.file each time: a cached size would serve a later read truncated.
      const file = Bun.file(pathOf(key));
      return range ? file.slice(range.start, range.end + 1) : file;
    },

    async stat(key) {
      const info = await stat(pathOf(key)).catch(() => undefined);
      return info?.isFile() ? { size: info.size } : undefined;
    },

    async delete(...keys) {
      // A key that is not one of ours names nothing stored here.
      const ours = keys.filter(isStorageKey);
      await Promise.all(
        ours.flatMap((key) => [pathOf(key), temporaryOf(key)].map((path) => rm(path, { force: true }))),
      );
    },

    async temporaries() {
      const names = await readdir(tmpDir).catch(() => [] as string[]);
      const found = await Promise.all(
        names.filter(isStorageKey).map(async (key) => {
          const info = await stat(temporaryOf(key)).catch(() => undefined);
          return info ? { key, modifiedAt: info.mtimeMs } : undefined;
        }),
      );
      return found.filter((entry): entry is Temporary => entry !== undefined);
    },

    async pin(keys) {
      // Hard links: no copy, and the bytes stay on disk while a link names them. A row's bytes are still a
      // temporary between its insert and its commit.
      const dir = join(pinnedDir, Bun.randomUUIDv7());
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const pinOne = async (key: string) => {
        for (const source of [pathOf(key), temporaryOf(key)]) {
          try {
            await link(source, join(dir, key));
            return key;
          } catch (error) {
            if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
          }
        }
        return undefined;
      };
      const pinned: string[] = [];
      try {
        for (let at = 0; at < keys.length; at += PIN_BATCH) {
          const done = await Promise.all(
            keys
              .slice(at, at + PIN_BATCH)
              .filter(isStorageKey)
              .map(pinOne),
          );
          for (const key of done) if (key) pinned.push(key);
        }
      } catch (error) {
        await rm(dir, { recursive: true, force: true });
        throw error;
      }
      return {
        keys: pinned,
        read: (key) => Bun.file(join(dir, key)),
        release: () => rm(dir, { recursive: true, force: true }),
      };
    },

    async releaseStalePins(olderThanMs) {
      const cutoff = Date.now() - olderThanMs;
      for (const name of await readdir(pinnedDir).catch(() => [] as string[])) {
        const info = await stat(join(pinnedDir, name)).catch(() => undefined);
        if (info && info.mtimeMs < cutoff) await rm(join(pinnedDir, name), { recursive: true, force: true });
      }
    },
  };
}
