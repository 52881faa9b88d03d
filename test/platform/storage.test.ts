import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStorage } from "../../src/app";
import { ConfigError, loadConfig } from "../../src/config";
import { files } from "../../src/db/schema";
import { s3Storage } from "../../src/platform/s3-storage";
import { diskStorage, type ObjectStorage, StorageUnavailableError } from "../../src/platform/storage";
import { SAMPLES, upload } from "../modules/files/fixtures";
import { countObjects } from "../s3";
import { API, call, expectError, freePort, makeApp, signUp, testBucket } from "../support";

const MiB = 1024 * 1024;
const text = (body: Blob | ReadableStream<Uint8Array>) => new Response(body).text();
const bytes = (value: string) => new TextEncoder().encode(value);

/** A storage of the test's own: a fresh folder, or a fresh prefix in the run's s3rver bucket. */
async function fresh(kind: "disk" | "s3"): Promise<ObjectStorage> {
  if (kind === "disk") return diskStorage(mkdtempSync(join(tmpdir(), "rp-storage-")));
  return s3Storage({ ...(await testBucket()).setting, prefix: `storage-${crypto.randomUUID()}/` });
}

describe.each(["disk", "s3"] as const)("%s storage", (kind) => {
  test("written bytes stay a temporary until committed; then read whole or by range, stat, delete", async () => {
    const storage = await fresh(kind);
    const key = crypto.randomUUID();
    const pending = await storage.begin(key);
    await pending.write(bytes("0123"));
    await pending.write(bytes("456789"));
    await pending.close();
    expect((await storage.temporaries()).map((t) => t.key)).toEqual([key]);
    // On S3 the bytes sit at their key once closed (there is no rename); the row is what makes them visible.
    expect(await storage.stat(key)).toEqual(kind === "disk" ? undefined : { size: 10 });
    await storage.commit(key);
    expect(await storage.temporaries()).toEqual([]);
    expect(await storage.stat(key)).toEqual({ size: 10 });
    expect(await text(storage.read(key))).toBe("0123456789");
    for (const [start, end, expected] of [
      [3, 5, "345"],
      [0, 0, "0"],
      [9, 9, "9"],
      [0, 9, "0123456789"],
    ] as const) {
      expect({ start, end, read: await text(storage.read(key, { start, end })) }).toEqual({
        start,
        end,
        read: expected,
      });
    }

    await storage.delete(key, "../../etc/passwd");
    expect(await storage.stat(key)).toBeUndefined();
    expect(() => storage.read("../../etc/passwd")).toThrow();
    await expect(storage.begin("../escape")).rejects.toThrow();
  });

  test("a discarded upload leaves nothing, also past the first multipart part; discarding twice is harmless", async () => {
    const storage = await fresh(kind);
    const key = crypto.randomUUID();
    const pending = await storage.begin(key);
    const chunk = new Uint8Array(MiB).fill(0x61);
    for (let i = 0; i < 6; i++) await pending.write(chunk); // over S3's 5 MiB part: a multipart upload began
    await pending.discard();
    await pending.discard();
    expect(await storage.stat(key)).toBeUndefined();
    expect(await storage.temporaries()).toEqual([]);
    await expect(pending.write(chunk)).rejects.toThrow();
  });

  test("temporaries are listed with their age, for the sweep; other keys and committed ones are not", async () => {
    const storage = await fresh(kind);
    const before = Date.now() - 2000; // S3 dates have whole seconds
    const [open, done] = [crypto.randomUUID(), crypto.randomUUID()];
    for (const key of [open, done]) await (await storage.begin(key)).close();
    await storage.commit(done);
    const found = await storage.temporaries();
    expect(found.map((t) => t.key)).toEqual([open]);
    expect(found[0]?.modifiedAt).toBeGreaterThan(before);
    // A storage elsewhere (another folder or prefix) sees none of them.
    expect(await (await fresh(kind)).temporaries()).toEqual([]);
  });
});

describe("disk storage", () => {
  test("objects are sharded on the key's random tail", async () => {
    const root = mkdtempSync(join(tmpdir(), "rp-storage-"));
    const storage = diskStorage(root);
    const key = crypto.randomUUID();
    await (await storage.begin(key)).close();
    await storage.commit(key);
    expect(existsSync(join(root, "objects", key.slice(-2), key.slice(-4, -2), key))).toBe(true);
    expect(await diskStorage(join(root, "never-used")).temporaries()).toEqual([]);
  });
});

describe("s3 storage", () => {
  test("a large upload streams into the bucket with bounded memory, in order", async () => {
    const bucket = await testBucket();
    const setting = { ...bucket.setting, prefix: `large-${crypto.randomUUID()}/` };
    const storage = s3Storage(setting);
    const key = crypto.randomUUID();
    const size = 64 * MiB;
    const chunk = new Uint8Array(64 * 1024);
    Bun.gc(true);
    const baseline = process.memoryUsage().rss;
    let peak = baseline;
    const pending = await storage.begin(key);
    for (let at = 0; at < size; at += chunk.byteLength) {
      chunk.fill(0x61 + ((at / MiB) % 26)); // one letter per MiB, so order shows
      await pending.write(chunk);
      peak = Math.max(peak, process.memoryUsage().rss);
    }
    await pending.close();
    await storage.commit(key);
    // Buffering the whole body would add its 64 MiB; the writer keeps about three 5 MiB parts.
    expect((peak - baseline) / MiB).toBeLessThan(48);
    expect(await storage.stat(key)).toEqual({ size });
    expect(await countObjects(setting, "objects/")).toBe(1);
    const boundary = 50 * MiB;
    expect(await text(storage.read(key, { start: boundary - 2, end: boundary + 1 }))).toBe("xxyy");
    expect(await text(storage.read(key, { start: size - 1, end: size - 1 }))).toBe("l");
  });

  test("an unreachable bucket is a StorageUnavailableError; the API answers 503 with the contract's body", async () => {
    const down = s3Storage({
      bucket: "nowhere",
      prefix: "",
      endpoint: `http://127.0.0.1:${freePort()}`,
      region: "us-east-1",
      accessKeyId: "id",
      secretAccessKey: "never-logged-secret",
    });
    await expect(down.begin(crypto.randomUUID())).rejects.toBeInstanceOf(StorageUnavailableError);
    await expect(down.stat(crypto.randomUUID())).rejects.toBeInstanceOf(StorageUnavailableError);
    await expect(down.temporaries()).rejects.toBeInstanceOf(StorageUnavailableError);

    const ctx = await makeApp({}, { storage: down });
    const user = await signUp(ctx.app);
    const res = await upload(ctx, SAMPLES.text, { token: user.access });
    expectError(res, 503, "SERVICE_UNAVAILABLE");
    expect(ctx.logs.some((line) => line.includes('"storage unavailable"'))).toBe(true);
    expect(ctx.logs.join("\n")).not.toContain("never-logged-secret");
    // A file whose row exists: its download needs the bucket too.
    const [row] = await ctx.deps.db.orm
      .insert(files)
      .values({
        ownerId: user.id,
        filename: "a.txt",
        contentType: "text/plain",
        fileSize: 1,
        fileHash: "0".repeat(64),
        storageKey: crypto.randomUUID(),
      })
      .returning();
    const download = await call(ctx.app, "GET", `${API}/uploads/${row?.id}/download`, { token: user.access });
    expectError(download, 503, "SERVICE_UNAVAILABLE");
    // What needs only the database still works.
    expect((await call(ctx.app, "GET", `${API}/uploads`, { token: user.access })).json.total).toBe(1);
  });
});

describe("STORAGE_URL", () => {
  const s3 = { S3_ACCESS_KEY_ID: "id", S3_SECRET_ACCESS_KEY: "a-secret-value", S3_ENDPOINT: "http://127.0.0.1:9000" };
  const storageOf = (env: Record<string, string>) => loadConfig({ ENVIRONMENT: "test", ...env }).storage;

  test("unset: the disk under UPLOAD_DIR; file:///path: that folder; s3://BUCKET/PREFIX: the bucket", () => {
    expect(storageOf({ UPLOAD_DIR: "/srv/uploads" })).toEqual({ kind: "disk", dir: "/srv/uploads" });
    expect(storageOf({ STORAGE_URL: "file:///srv/files", UPLOAD_DIR: "/srv/uploads" })).toEqual({
      kind: "disk",
      dir: "/srv/files",
    });
    expect(storageOf({ STORAGE_URL: "s3://papers/reviewpoint/prod/", S3_REGION: "eu-west-1", ...s3 })).toEqual({
      kind: "s3",
      bucket: "papers",
      prefix: "reviewpoint/prod/",
      endpoint: "http://127.0.0.1:9000",
      region: "eu-west-1",
      accessKeyId: "id",
      secretAccessKey: "a-secret-value",
    });
    expect(storageOf({ STORAGE_URL: "s3://papers", ...s3 })).toMatchObject({ bucket: "papers", prefix: "" });
    expect(openStorage(storageOf({ STORAGE_URL: "s3://papers", ...s3 })).kind).toBe("s3");
  });

  test("a bad value stops start-up with one line naming the variable, never showing a secret", () => {
    const failure = (env: Record<string, string>) => {
      try {
        storageOf(env);
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        return (error as Error).message;
      }
      throw new Error("accepted");
    };
    for (const [env, names] of [
      [{ STORAGE_URL: "s3://Bad_Bucket/x", ...s3 }, "STORAGE_URL"],
      [{ STORAGE_URL: "s3://id:a-secret-value@papers/x", ...s3 }, "STORAGE_URL"],
      [{ STORAGE_URL: "s3://papers/x", S3_ACCESS_KEY_ID: "id" }, "S3_SECRET_ACCESS_KEY"],
      [{ STORAGE_URL: "file://relative/path" }, "STORAGE_URL"],
      [{ STORAGE_URL: "gs://papers" }, "STORAGE_URL"],
      // A prefix that would leave the bucket (path-style requests) or alias another prefix.
      [{ STORAGE_URL: "s3://papers/../other-bucket", ...s3 }, "STORAGE_URL"],
      [{ STORAGE_URL: "s3://papers/a/../../other", ...s3 }, "STORAGE_URL"],
      [{ STORAGE_URL: "s3://papers/a//b", ...s3 }, "STORAGE_URL"],
      [{ STORAGE_URL: "s3://papers/./a", ...s3 }, "STORAGE_URL"],
      [{ STORAGE_URL: "s3://papers/a\\b", ...s3 }, "STORAGE_URL"],
      [{ STORAGE_URL: "s3://papers", ...s3, S3_ENDPOINT: "ftp://id:a-secret-value@host" }, "S3_ENDPOINT"],
    ] as const) {
      const message = failure(env);
      expect(message).toStartWith("config: ");
      expect(message).toContain(names);
      expect(message).not.toContain("\n");
      expect(message).not.toContain("a-secret-value");
    }
  });
});
