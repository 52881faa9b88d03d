import type { FileRow, Role } from "../../db/schema";
import { hasPermission } from "../../http/auth";
import { errors, loggableError } from "../../http/errors";
import { type Scanner, ScannerUnavailableError, type ScanSession, type Verdict } from "../../platform/antivirus";
import type { Logger } from "../../platform/logger";
import type { Metrics } from "../../platform/metrics";
import type { ObjectStorage } from "../../platform/storage";
import type { Notify } from "../realtime/model";
import { contentDisposition, matchesEtag, parseRange } from "./download";
import { cleanFilename, type FileChanges, type FileInfo, type FileListParams, toFileInfo } from "./model";
import type { FilesRepo } from "./repo";
import { MULTIPART_OVERHEAD, receiveUpload } from "./upload";

/** Who asks: a signed-in user, or nobody (public files only). */
export type Viewer = { id: string; role: Role } | undefined;

export interface FilesConfig {
  maxBytes: number;
  allowedTypes: readonly string[];
  /** Bytes a user may store in all; undefined: no quota. */
  quota: number | undefined;
}

/** What the route sends back for a download. */
export interface Download {
  status: 200 | 206 | 304;
  headers: Record<string, string>;
  body: ReturnType<ObjectStorage["read"]> | null;
}

/** Keys retired at once when a user is deleted (each an empty write on S3). */
const RETIRE_BATCH = 16;

const BOOLEAN_FIELD: Record<string, boolean> = { true: true, false: false, "1": true, "0": false };

export function createFilesService(deps: {
  repo: FilesRepo;
  storage: ObjectStorage;
  config: FilesConfig;
  logger: Logger;
  metrics: Pick<Metrics, "uploadStored" | "uploadScanned">;
  /** Tells the owner's sockets; defaults to telling no one. */
  notify?: Notify;
  /** With CLAMAV_URL: every upload is scanned while it streams; `failOpen` stores it unscanned when the scanner fails. */
  antivirus?: { scanner: Scanner; failOpen: boolean };
}) {
  const { repo, storage, config, logger, metrics, notify = () => {}, antivirus } = deps;

  /** The scanner could not answer: fail closed (503), or, with fail-open, say so and go on unscanned. */
  function scannerFailed(ownerId: string, error: ScannerUnavailableError): void {
    if (!antivirus?.failOpen) {
      logger.warn("upload refused: virus scanner unavailable", { user_id: ownerId, error: error.message });
      throw errors.unavailable("The virus scanner is unavailable; try again later");
    }
    logger.warn("upload stored unscanned: virus scanner unavailable (CLAMAV_FAIL_OPEN)", {
      user_id: ownerId,
      error: error.message,
    });
    metrics.uploadScanned("unscanned");
  }

  /**
   * A scan of the coming upload, taken before its first byte is read (a busy scanner holds the upload
   * back; the scanner also bounds each user's share of its connections).
   */
  async function startScan(ownerId: string): Promise<ScanSession | undefined> {
    if (!antivirus) return undefined;
    let session: ScanSession;
    try {
      session = await antivirus.scanner.start(ownerId);
    } catch (error) {
      if (!(error instanceof ScannerUnavailableError)) throw error;
      scannerFailed(ownerId, error);
      return undefined;
    }
    return session;
  }

  /**
   * Where the bytes go besides storage: the scan. Without fail-open a failed write ends the upload at
   * once (503) instead of reading the rest of a body nobody can scan.
   */
  function scanSink(scan: ScanSession | undefined, ownerId: string) {
    if (!scan || antivirus?.failOpen) return scan;
    return {
      async write(chunk: Uint8Array) {
        await scan.write(chunk);
        if (scan.failure) scannerFailed(ownerId, scan.failure);
      },
    };
  }

  /** Throws 422 MALWARE_DETECTED for an infected upload; logs the signature, never the bytes. */
  async function requireClean(scan: ScanSession | undefined, ownerId: string, filename: string): Promise<void> {
    if (!scan) return;
    let verdict: Verdict;
    try {
      verdict = await scan.verdict();
    } catch (error) {
      if (!(error instanceof ScannerUnavailableError)) throw error;
      return scannerFailed(ownerId, error);
    }
    metrics.uploadScanned(verdict.infected ? "infected" : "clean");
    if (!verdict.infected) return;
    logger.warn("malware detected in an upload; not stored", {
      user_id: ownerId,
      signature: verdict.signature,
      filename: cleanFilename(filename),
    });
    throw errors.malware(verdict.signature);
  }

  const isAdmin = (viewer: Viewer) => viewer !== undefined && hasPermission(viewer.role, "files:read");

  /** The row if the viewer may see it; another user's private file does not exist for them (404). */
  async function visible(viewer: Viewer, id: string) {
    const row = await repo.findById(id);
    if (!row || !(row.isPublic || row.ownerId === viewer?.id || isAdmin(viewer))) throw errors.notFound("File");
    return row;
  }

  /** The row if the viewer may change it (its owner, or an admin). */
  async function owned(viewer: Viewer, id: string, permission: "files:write" | "files:delete") {
    const row = await visible(viewer, id);
    if (row.ownerId !== viewer?.id && !(viewer && hasPermission(viewer.role, permission))) {
      // Readable (public) but not theirs.
      throw errors.forbidden();
    }
    return row;
  }

  return {
    /**
     * Streams the multipart body into a temporary object under a new key, inserts the row, then commits
     * the object. Any failure (a refused type or size, a malformed body, a client that hangs up, a
     * database error) leaves neither an object nor a row.
     */
    async upload(
      owner: { id: string },
      request: { body: ReadableStream<Uint8Array> | null; contentType: string; contentLength: number | undefined },
    ): Promise<FileInfo> {
      if (!request.contentType.toLowerCase().startsWith("multipart/form-data")) {
        throw errors.unsupportedMediaType("Send multipart/form-data with a part named 'file'");
      }
      if (request.contentLength !== undefined && request.contentLength > config.maxBytes + MULTIPART_OVERHEAD) {
        throw errors.tooLarge(config.maxBytes);
      }
      // A user already at the quota is told before a byte is read.
      if (config.quota !== undefined && (await repo.bytesOf(owner.id)) >= config.quota) {
        throw errors.overQuota(config.quota);
      }
      const scan = await startScan(owner.id);
      const key = Bun.randomUUIDv7();
      const pending = await storage.begin(key).catch((error) => {
        scan?.abort();
        throw error;
      });
      let row: FileRow | undefined;
      try {
        const received = await receiveUpload(
          request.body,
          request.contentType,
          config,
          pending,
          scanSink(scan, owner.id),
        );
        await requireClean(scan, owner.id, received.filename);
        const isPublic = received.fields.is_public === undefined ? false : BOOLEAN_FIELD[received.fields.is_public];
        if (isPublic === undefined) throw errors.validation([{ field: "is_public", issue: "Must be true or false" }]);
        await pending.close();
        const inserted = await repo.insert(
          {
            ownerId: owner.id,
            filename: cleanFilename(received.filename),
            contentType: received.contentType,
            fileSize: received.size,
            fileHash: received.hash,
            storageKey: key,
            isPublic,
          },
          config.quota,
        );
        if (inserted === "over-quota") throw errors.overQuota(config.quota as number);
        row = inserted;
        // Row first, then the bytes become readable: a crash in between leaves a temporary that the
        // start-up recovery commits (it has a row), never a row whose bytes are gone.
        await storage.commit(key);
        metrics.uploadStored(received.size);
        const stored = toFileInfo(row);
        notify(owner.id, "file.uploaded", stored);
        return stored;
      } catch (caught) {
        scan?.abort();
        let error = caught;
        if (row) {
          // A recovery on another instance may have committed it meanwhile: then it is stored after all.
          if (await storage.stat(key).catch(() => undefined)) return toFileInfo(row);
          // Deleted (the file, or its owner) while it was being committed.
          if (!(await repo.findById(row.id))) error = errors.conflict("The file was deleted while it was being stored");
        }
        await Promise.all([row ? repo.delete(row.id) : undefined, pending.discard(), storage.delete(key)]).catch(
          (cleanup: Error) =>
            logger.error("upload cleanup failed", { storage_key: key, error: loggableError(cleanup) }),
        );
        throw error;
      }
    },

    async list(viewer: NonNullable<Viewer>, params: FileListParams) {
      const wantsOthers = params.all || (params.owner_id !== undefined && params.owner_id !== viewer.id);
      if (wantsOthers && !isAdmin(viewer)) throw errors.forbidden("Only an admin may list other users' files");
      const owner = params.all ? undefined : (params.owner_id ?? viewer.id);
      const { rows, total } = await repo.list(params, owner);
      return { items: rows.map(toFileInfo), total, offset: params.offset, limit: params.limit };
    },

    get: async (viewer: Viewer, id: string) => toFileInfo(await visible(viewer, id)),

    /** The bytes with the headers a browser and a cache need: ranges, validators, a safe disposition. */
    async download(
      viewer: Viewer,
      id: string,
      conditions: { range: string | null; ifNoneMatch: string | null },
    ): Promise<Download> {
      const row = await visible(viewer, id);
      // Checked first: Bun answers a missing file with its own error page, past our error mapper. A row
      // without bytes is an upload being committed (or deleted) this instant.
      if (!(await storage.stat(row.storageKey))) throw errors.notFound("File");
      const etag = `"${row.fileHash}"`;
      const headers: Record<string, string> = {
        etag,
        "accept-ranges": "bytes",
        "cache-control": row.isPublic ? "public, no-cache" : "private, no-cache",
      };
      if (matchesEtag(conditions.ifNoneMatch, etag)) return { status: 304, headers, body: null };
      Object.assign(headers, {
        "content-type": row.contentType,
        "content-disposition": contentDisposition(row.filename),
      });
      const range = parseRange(conditions.range, row.fileSize);
      if (range === "unsatisfiable") {
        throw errors.rangeNotSatisfiable(row.fileSize);
      }
      if (!range) {
        return {
          status: 200,
          headers: { ...headers, "content-length": String(row.fileSize) },
          body: storage.read(row.storageKey),
        };
      }
      return {
        status: 206,
        headers: {
          ...headers,
          "content-length": String(range.end - range.start + 1),
          "content-range": `bytes ${range.start}-${range.end}/${row.fileSize}`,
        },
        body: storage.read(row.storageKey, range),
      };
    },

    async update(viewer: NonNullable<Viewer>, id: string, changes: FileChanges): Promise<FileInfo> {
      await owned(viewer, id, "files:write");
      const row = await repo.update(id, {
        filename: changes.filename === undefined ? undefined : cleanFilename(changes.filename),
        isPublic: changes.is_public,
      });
      if (!row) throw errors.notFound("File");
      return toFileInfo(row);
    },

    /** The row first, then the bytes: a failure in between leaves unreachable bytes, never a row without them. */
    async delete(viewer: NonNullable<Viewer>, id: string): Promise<void> {
      const found = await owned(viewer, id, "files:delete");
      // Retired first (a storage outage is a 503 with nothing changed): bytes a failed delete leaves
      // behind are then a temporary without a row, which the start-up sweep removes.
      await storage.retire(found.storageKey);
      const row = await repo.delete(id);
      if (!row) throw errors.notFound("File");
      await storage.delete(row.storageKey).catch((error: Error) =>
        logger.warn("a deleted file's bytes are left for the start-up sweep", {
          storage_key: row.storageKey,
          error: error.message,
        }),
      );
      notify(row.ownerId, "file.deleted", { id: row.id });
    },

    /**
     * For deleting a user: reads the user's keys now and returns what removes their bytes once the
     * user (and, by cascade, the rows) is gone.
     */
    async bytesRemover(ownerId: string): Promise<() => Promise<void>> {
      const keys = await repo.storageKeysOf(ownerId);
      // As for one file: whatever the removal afterwards fails to delete, the start-up sweep will.
      for (let at = 0; at < keys.length; at += RETIRE_BATCH) {
        await Promise.all(keys.slice(at, at + RETIRE_BATCH).map((key) => storage.retire(key)));
      }
      return () => storage.delete(...keys);
    },

    /**
     * Finishes what uploads cut short by a crash left (run at start-up): a temporary with a row is
     * committed (the upload had succeeded), one without a row and older than `olderThanMs` (so not an
     * upload in flight elsewhere) is removed. Returns how many of each.
     */
    async recover(olderThanMs: number): Promise<{ committed: number; removed: number }> {
      const cutoff = Date.now() - olderThanMs;
      const done = { committed: 0, removed: 0 };
      for (const temporary of await storage.temporaries()) {
        if (await repo.findByStorageKey(temporary.key)) {
          await storage.commit(temporary.key);
          done.committed++;
        } else if (temporary.modifiedAt < cutoff) {
          await storage.delete(temporary.key);
          done.removed++;
        }
      }
      return done;
    },
  };
}

export type FilesService = ReturnType<typeof createFilesService>;
