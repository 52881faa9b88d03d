import type { FileRow } from "../../db/schema";
import { errors, loggableError } from "../../http/errors";
import type { RequestMeta } from "../../http/request-meta";
import { type Scanner, ScannerBusyError, ScannerUnavailableError } from "../../platform/antivirus";
import type { Logger } from "../../platform/logger";
import type { Metrics } from "../../platform/metrics";
import { type ObjectStorage, type PendingObject, StorageUnavailableError } from "../../platform/storage";
import type { AuditLog } from "../audit/service";
import type { Notify } from "../realtime/model";
import { cleanFilename, type FileInfo, toFileInfo } from "./model";
import type { FilesRepo, IdempotencyClaim } from "./repo";
import { type BodyWatch, MULTIPART_OVERHEAD, receiveUpload } from "./upload";

export interface FilesConfig {
  maxBytes: number;
  allowedTypes: readonly string[];
  /** Bytes a user may store in all; undefined: no quota. */
  quota: number | undefined;
  /** How long a body may go quiet, and take in all, before the upload ends (408). */
  idleMs: number;
  deadlineMs: number;
}

export interface IngestDeps {
  repo: FilesRepo;
  storage: ObjectStorage;
  config: FilesConfig;
  logger: Logger;
  metrics: Pick<Metrics, "uploadStored" | "uploadScanned">;
  /** Tells the owner's sockets; defaults to telling no one. */
  notify?: Notify;
  /** With CLAMAV_URL: every upload's stored bytes are scanned before its row; `failOpen` stores it unscanned when the scanner cannot answer. */
  antivirus?: { scanner: Scanner; failOpen: boolean };
  /** Aborted when the server stops waiting for in-flight requests: bodies still arriving get a 503. */
  shutdown?: AbortSignal;
  /** Records file deletions, downloads by others and malware found. */
  audit: Pick<AuditLog, "record" | "recordAlone" | "transaction">;
}

/** What an upload's bytes turned out to be, once inspected while they streamed. */
export interface InspectedFile {
  filename: string;
  contentType: string;
  size: number;
  hash: string;
  isPublic: boolean;
}

/** How long an upload's Idempotency-Key names its file. */
export const IDEMPOTENCY_KEY_TTL_MS = 24 * 3_600_000;

/** Bodies declared at most this long skip the quota's early check (the insert makes the real one). */
const QUOTA_PRECHECK_BYTES = 256 * 1024;

// Own keys only: `__proto__` or `constructor` must not read as a value.
const BOOLEAN_FIELD = new Map([
  ["true", true],
  ["false", false],
  ["1", true],
  ["0", false],
]);

/** `is_public` as a client sent it (a form field, a tus metadata value): false when absent, undefined when not a boolean. */
export const parsePublicFlag = (flag: string | undefined) => (flag === undefined ? false : BOOLEAN_FIELD.get(flag));

/**
 * How uploads become files: bytes streamed into a temporary object under a new key, inspected on the
 * way; then (`store`) made durable and size-checked, scanned from storage, inserted within the quota,
 * committed, announced. Any failure leaves neither an object nor a row.
 */
export function createIngest(deps: IngestDeps) {
  const { repo, storage, config, logger, metrics, notify = () => {}, antivirus, audit } = deps;

  /**
   * Scans the stored bytes, so a slow client never holds a scanner connection. Fail-open applies only to a
   * scanner that cannot answer; a busy one is a 503 with Retry-After, never a file stored unscanned.
   */
  async function requireClean(pending: PendingObject, ownerId: string, filename: string, meta: RequestMeta) {
    if (!antivirus) return;
    let verdict: Awaited<ReturnType<Scanner["scan"]>>;
    try {
      verdict = await antivirus.scanner.scan(pending.read(), ownerId);
    } catch (error) {
      if (error instanceof ScannerBusyError) {
        logger.warn("upload refused: every virus scanner connection stayed busy", { user_id: ownerId });
        throw errors.unavailable("The virus scanner is busy; try again shortly");
      }
      if (!(error instanceof ScannerUnavailableError)) throw error;
      if (!antivirus.failOpen) {
        logger.warn("upload refused: virus scanner unavailable", { user_id: ownerId, error: error.message });
        throw errors.unavailable("The virus scanner is unavailable; try again later");
      }
      logger.warn("upload stored unscanned: virus scanner unavailable (CLAMAV_FAIL_OPEN)", {
        user_id: ownerId,
        error: error.message,
      });
      metrics.uploadScanned("unscanned");
      return;
    }
    metrics.uploadScanned(verdict.infected ? "infected" : "clean");
    if (!verdict.infected) return;
    logger.warn("malware detected in an upload; not stored", {
      user_id: ownerId,
      signature: verdict.signature,
      filename: cleanFilename(filename),
    });
    await audit.recordAlone({
      action: "malware.detected",
      actorId: ownerId,
      target: { type: "user", id: ownerId },
      details: { signature: verdict.signature, filename: cleanFilename(filename) },
      meta,
    });
    throw errors.malware(verdict.signature);
  }

  /**
   * Removes what an upload left: its row (if any), its bytes and its temporary, in that order (a marker or
   * temporary going before its bytes could leave bytes the sweep never finds); each step is tried even if
   * one before it failed.
   */
  async function discard(key: string, pending: PendingObject, rowId?: string): Promise<void> {
    const steps: (() => Promise<unknown>)[] = [
      async () => rowId && (await repo.delete(rowId)),
      () => pending.discard(),
      () => storage.delete(key),
    ];
    for (const step of steps) {
      await step().catch((cleanup: Error) =>
        logger.error("upload cleanup failed", { storage_key: key, error: loggableError(cleanup) }),
      );
    }
  }

  /**
   * Ends an upload whose bytes are all in `pending` and inspected: durable and size-checked, scanned,
   * inserted within the quota, then committed and announced. On failure nothing is left. With `claim` (an
   * Idempotency-Key), a retry of an upload stored already gets that upload's file, these bytes dropped.
   */
  async function store(
    owner: { id: string },
    key: string,
    pending: PendingObject,
    file: InspectedFile,
    meta: RequestMeta,
    claim?: IdempotencyClaim,
  ) {
    let row: FileRow | undefined;
    const retried = async (earlier: FileRow) => {
      if (earlier.fileHash !== file.hash) {
        throw errors.validation([{ field: "Idempotency-Key", issue: "Already used for other content; use a new key" }]);
      }
      await discard(key, pending);
      return toFileInfo(earlier);
    };
    try {
      const stored = await pending.close();
      if (stored !== file.size) {
        throw new StorageUnavailableError("write", new Error(`${stored} of ${file.size} bytes stored`));
      }
      // Before the scan: a retry is answered without one.
      const earlier = claim && (await repo.fileOfKey(claim));
      if (earlier) return await retried(earlier);
      await requireClean(pending, owner.id, file.filename, meta);
      const inserted = await repo.insert(
        {
          ownerId: owner.id,
          filename: cleanFilename(file.filename),
          contentType: file.contentType,
          fileSize: file.size,
          fileHash: file.hash,
          storageKey: key,
          isPublic: file.isPublic,
        },
        config.quota,
        claim,
      );
      if (inserted === "over-quota") throw errors.overQuota(config.quota as number);
      if (inserted === "taken") throw errors.conflict("An upload with this Idempotency-Key was just deleted; retry");
      // The same key's upload committed while this one ran.
      if ("earlier" in inserted) return await retried(inserted.earlier);
      row = inserted;
      // Row first, then the bytes become readable: a crash in between leaves a temporary that the
      // sweep commits (it has a row), never a row whose bytes are gone.
      await storage.commit(key);
      metrics.uploadStored(file.size);
      const info = toFileInfo(row);
      notify(owner.id, "file.uploaded", info);
      return info;
    } catch (caught) {
      let error = caught;
      if (row) {
        // A sweep on another instance may have committed it meanwhile: then it is stored after all.
        if (await storage.stat(key).catch(() => undefined)) return toFileInfo(row);
        // Deleted (the file, or its owner) while it was being committed.
        if (!(await repo.findById(row.id))) error = errors.conflict("The file was deleted while it was being stored");
      }
      await discard(key, pending, row?.id);
      throw error;
    }
  }

  /** A user already at the quota is told before a byte is read. */
  async function requireRoom(ownerId: string): Promise<void> {
    if (config.quota !== undefined && (await repo.bytesOf(ownerId)) >= config.quota) {
      throw errors.overQuota(config.quota);
    }
  }

  const keyClaim = (userId: string, key: string): IdempotencyClaim => ({
    userId,
    key,
    since: new Date(Date.now() - IDEMPOTENCY_KEY_TTL_MS),
  });

  /** The bounds on a body's arrival, and the server's shutdown. */
  const watch: BodyWatch = { idleMs: config.idleMs, deadlineMs: config.deadlineMs, shutdown: deps.shutdown };

  return {
    store,
    discard,
    requireRoom,
    watch,

    /**
     * `POST /uploads`: one multipart body, its part `file` streamed into storage. With an `idempotencyKey`,
     * a retry (same user, key and bytes, within a day) gets the first upload's file instead of a copy.
     */
    async upload(
      owner: { id: string },
      request: { body: ReadableStream<Uint8Array> | null; contentType: string; contentLength: number | undefined },
      meta: RequestMeta,
      idempotencyKey?: string,
    ): Promise<FileInfo> {
      if (!request.contentType.toLowerCase().startsWith("multipart/form-data")) {
        throw errors.unsupportedMediaType("Send multipart/form-data with a part named 'file'");
      }
      if (request.contentLength !== undefined && request.contentLength > config.maxBytes + MULTIPART_OVERHEAD) {
        throw errors.tooLarge(config.maxBytes);
      }
      const claim = idempotencyKey === undefined ? undefined : keyClaim(owner.id, idempotencyKey);
      // A retry of an upload stored already is answered even when that upload filled the quota. A body
      // declared small is read without asking first: the insert checks the quota anyway, and for it the
      // extra round trip cost more than the bytes it could spare (a fifth of a 10 KiB upload's CPU).
      const small = request.contentLength !== undefined && request.contentLength <= QUOTA_PRECHECK_BYTES;
      if (!small && !(claim && (await repo.fileOfKey(claim)))) await requireRoom(owner.id);
      const key = Bun.randomUUIDv7();
      const pending = await storage.begin(key);
      let file: InspectedFile;
      try {
        const received = await receiveUpload(request.body, request.contentType, config, pending, watch);
        const isPublic = parsePublicFlag(received.fields.is_public);
        if (isPublic === undefined) throw errors.validation([{ field: "is_public", issue: "Must be true or false" }]);
        file = { ...received, isPublic };
      } catch (error) {
        await discard(key, pending);
        throw error;
      }
      return store(owner, key, pending, file, meta, claim);
    },
  };
}

export type Ingest = ReturnType<typeof createIngest>;
