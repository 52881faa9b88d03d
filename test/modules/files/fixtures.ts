import { readdirSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { count, eq } from "drizzle-orm";
import { files } from "../../../src/db/schema";
import { countObjects } from "../../s3";
import { API, call, type TestContext, testBucket } from "../../support";

/** The first bytes of real files of each kind (enough for a magic-number check). */
export const SAMPLES = {
  png: new Uint8Array([
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1,
  ]),
  pdf: new TextEncoder().encode("%PDF-1.7\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"),
  jpeg: new Uint8Array([0xff, 0xd8, 0xff, 0xe0, 0, 0x10, 0x4a, 0x46, 0x49, 0x46, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0]),
  exe: new Uint8Array([0x4d, 0x5a, 0x90, 0, 3, 0, 0, 0, 4, 0, 0, 0, 0xff, 0xff, 0, 0]),
  text: new TextEncoder().encode("Reviewer notes: ✓ sound method, ✗ weak related work.\n"),
  invalidUtf8: new Uint8Array([0x48, 0x69, 0x20, 0xc3, 0x28, 0xa0, 0xa1, 0x0a]),
};

export interface UploadOptions {
  name?: string;
  type?: string;
  isPublic?: string;
  token?: string;
}

/** A multipart upload as a browser sends it: field `file` (name and declared type) and optional `is_public`. */
export function upload(ctx: TestContext, bytes: Uint8Array | string, options: UploadOptions = {}) {
  const form = new FormData();
  form.append("file", new File([bytes], options.name ?? "paper.txt", { type: options.type ?? "text/plain" }));
  if (options.isPublic !== undefined) form.append("is_public", options.isPublic);
  return call(ctx.app, "POST", `${API}/uploads`, { body: form, token: options.token });
}

function filesUnder(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((entry) => entry.isFile())
      .map((entry) => join(entry.parentPath, entry.name));
  } catch {
    return [];
  }
}

/** Stored objects and temporaries, asked of the app's disk folder or bucket prefix. */
async function countStored(ctx: TestContext) {
  const storage = ctx.deps.config.storage;
  if (storage.kind === "disk") {
    return {
      objects: filesUnder(join(storage.dir, "objects")).length,
      temporaries: filesUnder(join(storage.dir, "tmp")).length,
    };
  }
  const [objects, temporaries] = await Promise.all([countObjects(storage, "objects/"), countObjects(storage, "tmp/")]);
  return { objects, temporaries };
}

/** Makes a temporary look as old as `when` to the start-up sweep. */
export async function backdateTemporary(ctx: TestContext, key: string, when: Date) {
  const storage = ctx.deps.config.storage;
  if (storage.kind === "disk") utimesSync(join(storage.dir, "tmp", key), when, when);
  else (await testBucket()).backdate(`${storage.prefix}tmp/${key}`, when);
}

/** What the app has stored: objects, temporaries left behind, and rows (of one owner, if given). */
export async function stored(ctx: TestContext, ownerId?: string) {
  const [row] = await ctx.deps.db.orm
    .select({ total: count() })
    .from(files)
    .where(ownerId ? eq(files.ownerId, ownerId) : undefined);
  return { ...(await countStored(ctx)), rows: row?.total ?? 0 };
}

export const NOTHING = { objects: 0, temporaries: 0, rows: 0 };

export const sha256 = (bytes: Uint8Array | string) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
