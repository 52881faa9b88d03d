/** Helpers for the resumable-upload tests: a listening app, tus-js-client runs, what storage holds. */
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { count } from "drizzle-orm";
import { type DetailedError, type HttpRequest, type HttpResponse, Upload, type UploadOptions } from "tus-js-client";
import { listenOptions } from "../../../src/app";
import { resumableUploads } from "../../../src/db/schema";
import { countObjects } from "../../s3";
import { API, makeApp, signUp, type TestContext, testBucket } from "../../support";
import { stored } from "./fixtures";

export const MiB = 1024 * 1024;
export const ENDPOINT = `${API}/uploads/resumable`;

export interface Listening {
  ctx: TestContext;
  base: string;
  stop(): Promise<void>;
}

/** An app listening on a free port as the binary does (`overrides` for its config, `deps` to share a database's storage). */
export async function listening(ctx: TestContext): Promise<Listening> {
  ctx.app.listen({ ...listenOptions(ctx.deps.config), port: 0, hostname: "127.0.0.1" });
  const port = ctx.app.server?.port as number;
  return {
    ctx,
    base: `http://127.0.0.1:${port}`,
    stop: async () => {
      await ctx.app.stop(true);
    },
  };
}

/** A second app on the same database and the same storage (folder or bucket prefix): another instance. */
export function sibling(ctx: TestContext, overrides: Record<string, string> = {}) {
  const { config } = ctx.deps;
  const storage: Record<string, string> =
    config.storage.kind === "disk"
      ? { UPLOAD_DIR: config.storage.dir }
      : {
          STORAGE_URL: `s3://${config.storage.bucket}/${config.storage.prefix}`,
          S3_ENDPOINT: config.storage.endpoint as string,
          S3_REGION: config.storage.region as string,
          S3_ACCESS_KEY_ID: config.storage.accessKeyId,
          S3_SECRET_ACCESS_KEY: config.storage.secretAccessKey,
        };
  // The same secret: a token from one instance holds on the other.
  return makeApp({
    MAX_UPLOAD_SIZE: String(config.MAX_UPLOAD_SIZE),
    SECRET_KEY: config.secretKey,
    ...storage,
    ...overrides,
  });
}

/** ASCII text (valid UTF-8) of `bytes` bytes that differs from run to run. */
export function textBytes(bytes: number): Buffer {
  const line = Buffer.from(`${crypto.randomUUID()} reviewer notes, line of text\n`);
  const out = Buffer.alloc(bytes);
  for (let at = 0; at < bytes; at += line.length) line.copy(out, at, 0, Math.min(line.length, bytes - at));
  return out;
}

export interface TusRun {
  /** The upload's URL once created. */
  url?: string;
  /** The final response's Upload-File-Id. */
  fileId?: string | null;
  /** Every request the client sent and the status it got (0: no answer), with Upload-Offset both ways. */
  log: { method: string; status: number; sentOffset: string | null; gotOffset: string | null; at: number }[];
}

/** Runs tus-js-client to the end (success or error). */
export function tusUpload(
  bytes: Buffer,
  options: Partial<UploadOptions> & { token: string; type?: string; name?: string; stopAfterChunks?: number },
): Promise<TusRun & { error?: DetailedError; stopped?: boolean }> {
  const run: TusRun = { log: [] };
  const sent = new Map<HttpRequest, string | null>();
  let chunks = 0;
  return new Promise((resolve) => {
    const upload = new Upload(bytes, {
      retryDelays: [0, 100, 300, 1000],
      metadata: { filename: options.name ?? "paper.txt", filetype: options.type ?? "text/plain" },
      ...options,
      headers: { Authorization: `Bearer ${options.token}`, ...options.headers },
      onBeforeRequest: (req) => {
        sent.set(req, req.getHeader("Upload-Offset") ?? null);
      },
      onAfterResponse: (req: HttpRequest, res: HttpResponse) => {
        run.log.push({
          method: req.getMethod(),
          status: res.getStatus(),
          sentOffset: sent.get(req) ?? null,
          gotOffset: res.getHeader("Upload-Offset") ?? null,
          at: Date.now(),
        });
      },
      onChunkComplete: () => {
        chunks++;
        if (chunks === options.stopAfterChunks) {
          run.url = upload.url ?? undefined;
          void upload.abort().then(() => resolve({ ...run, stopped: true }));
        }
      },
      onSuccess: (payload) => {
        run.url = upload.url ?? undefined;
        run.fileId = payload.lastResponse.getHeader("Upload-File-Id") ?? null;
        resolve(run);
      },
      onError: (error) => {
        run.url = upload.url ?? undefined;
        resolve({ ...run, error: error as DetailedError });
      },
    });
    upload.start();
  });
}

function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((entry) => entry.isFile())
      .map((entry) => entry.name);
  } catch {
    return [];
  }
}

/**
 * Everything the app holds: files' objects, temporaries and rows, resumable rows, their waiting bytes (disk
 * files, S3 staged objects) and, on S3, multipart uploads left open.
 */
export async function holdings(ctx: TestContext) {
  const storage = ctx.deps.config.storage;
  const waiting =
    storage.kind === "disk"
      ? filesUnder(join(storage.dir, "resumable")).length
      : await countObjects(storage, "resumable/");
  const multipart = storage.kind === "disk" ? 0 : (await testBucket()).openMultipartUploads(storage.prefix);
  const [uploads] = await ctx.deps.db.orm.select({ n: count() }).from(resumableUploads);
  return { ...(await stored(ctx)), uploads: uploads?.n ?? 0, waiting, multipart };
}

export const EMPTY = { objects: 0, temporaries: 0, rows: 0, uploads: 0, waiting: 0, multipart: 0 };

/** An app and a signed-up user on it. */
export async function appWithUser(overrides: Record<string, string> = {}) {
  const ctx = await makeApp({ MAX_UPLOAD_SIZE: String(32 * MiB), ...overrides });
  const user = await signUp(ctx.app);
  return { ctx, user };
}

export const b64 = (text: string) => Buffer.from(text).toString("base64");

/** The tus headers of a hand-made request. */
export function tusHeaders(token: string, extra: Record<string, string> = {}): Record<string, string> {
  return { "tus-resumable": "1.0.0", authorization: `Bearer ${token}`, ...extra };
}
