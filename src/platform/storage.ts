import { type FileHandle, link, mkdir, open, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";

/** Bytes being written under a key chosen beforehand; nobody reads them before their row exists. */
export interface PendingObject {
  /**
   * Resolves once the chunk is written, so a slow disk slows the upload instead of filling memory; throws
   * StorageFullError when there is no room for it.
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
   * there once closed, and the marker that made them a temporary goes.
   */
  commit(key: string): Promise<void>;
  /**
   * Makes a stored object a temporary again while it stays readable, before its row goes: if deleting
   * its bytes then fails, the start-up sweep finds a temporary without a row and removes it. A commit
   * undoes it. Nothing to do for a key with no object.
   */
  retire(key: string): Promise<void>;
  /** The object's bytes, or the inclusive byte range [start, end], streamed when sent as a body. */
  read(key: string, range?: { start: number; end: number }): Blob | ReadableStream<Uint8Array>;
  stat(key: string): Promise<{ size: number } | undefined>;
  /** Removes objects, and temporaries of the same keys. */
  delete(...keys: string[]): Promise<void>;
  /** Every temporary object, for the start-up sweep. */
  temporaries(): Promise<Temporary[]>;
  /**
   * Holds the bytes of `keys` as they are now until released, so a backup can read them after its
   * database snapshot even if they are deleted meanwhile. Disk only (a bucket has its own versioning).
   */
  pin?(keys: string[]): Promise<PinnedObjects>;
}

const KEY = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Keys are ours (UUIDs); nothing else ever names a stored object. */
export const isStorageKey = (key: string) => KEY.test(key);

/**
 * Files under `root`: `objects/<last 2>/<2 before>/<key>` (two levels of shards, so no folder holds millions of
 * entries) and `tmp/<key>` until committed. A rename inside one file system makes
 * the commit atomic: a reader sees the whole object or none.
 */
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
/** Links made at once when pinning many objects. */
const PIN_BATCH = 64;

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
      let handle: FileHandle | undefined = await inFolder(temp, () => open(temp, "wx", 0o600)).catch((error) => {
        throw storageFault(error);
      });
      const release = async () => {
        // A FileHandle garbage-collected while open crashes Bun: always close it explicitly.
        const closing = handle;
        handle = undefined;
        await closing?.close();
      };
      // Small chunks are gathered into one write of up to GATHER bytes, with one write in flight: a
      // 64 KiB network chunk per write cost twice the CPU (bench/micro), and memory stays two buffers.
      let gather: Buffer = Buffer.allocUnsafe(GATHER);
      let spare: Buffer | undefined = Buffer.allocUnsafe(GATHER);
      let gathered = 0;
      let writing: Promise<void> = Promise.resolve();
      const writeAll = async (bytes: Uint8Array) => {
        const file = handle;
        if (!file) throw new Error("object already closed");
        try {
          // A write may take part of the bytes (a disk filling up): the rest goes next, or fails.
          for (let done = 0; done < bytes.byteLength; ) {
            done += (await file.write(bytes, done, bytes.byteLength - done)).bytesWritten;
          }
        } catch (error) {
          throw storageFault(error);
        }
      };
      /** Starts writing what was gathered once the write before it is done; its buffer is reused after. */
      const flushGathered = async () => {
        await writing;
        if (gathered === 0) return;
        const full = gather;
        const length = gathered;
        gather = spare ?? Buffer.allocUnsafe(GATHER);
        spare = undefined;
        gathered = 0;
        writing = writeAll(full.subarray(0, length)).then(() => {
          spare = full;
        });
        writing.catch(() => {});
      };
      return {
        async write(chunk) {
          if (!handle) throw new Error("object already closed");
          if (gathered + chunk.byteLength > GATHER) await flushGathered();
          if (chunk.byteLength >= GATHER) {
            await writing;
            writing = writeAll(chunk);
            writing.catch(() => {});
            return;
          }
          gather.set(chunk, gathered);
          gathered += chunk.byteLength;
        },
        async close() {
          if (!handle) throw new Error("object already closed");
          try {
            await flushGathered();
            await writing;
            // On disk before the row exists: a crash after the commit must not find a hole where bytes were.
            await handle.sync();
            return (await handle.stat()).size;
          } catch (error) {
            throw storageFault(error);
          } finally {
            await release();
          }
        },
        read: () => Bun.file(temp).stream(),
        async discard() {
          await writing.catch(() => {});
          await release().catch(() => {});
          await rm(temp, { force: true });
        },
      };
    },

    async commit(key) {
      const target = pathOf(key);
      await inFolder(target, () => rename(temporaryOf(key), target));
      // A retired object's temporary is a second link to the same file, which rename leaves in place.
      await rm(temporaryOf(key), { force: true });
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
  };
}
