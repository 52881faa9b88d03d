import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import tar from "tar-stream";
import { type Database, openPglite } from "../../../src/db/client";
import { runMigrations } from "../../../src/db/migrate";
import { openArchive } from "../../../src/modules/backup/archive";
import { startBackupSchedule } from "../../../src/modules/backup/schedule";
import { diskStorage } from "../../../src/platform/storage";
import {
  API,
  call,
  eventually,
  makeApp,
  memoryLogger,
  scratchDir,
  signUp,
  TEST_DATABASE_URL,
  type TestContext,
} from "../../support";
import { upload } from "../files/fixtures";
import { b64, ENDPOINT, tusHeaders } from "../files/tus";

const BUILD = { version: "0.1.0", commit: "test" };

/** Names and bytes of an archive's members. */
async function membersOf(stream: ReadableStream<Uint8Array>): Promise<Map<string, Buffer>> {
  const extract = tar.extract();
  const found = new Map<string, Buffer>();
  const reading = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      found.set(entry.header.name, Buffer.concat(chunks));
    }
  })();
  for await (const chunk of stream) extract.write(chunk);
  extract.end();
  await reading;
  return found;
}

// Backups are of the embedded database: these tests have one of their own, whatever the run's database.
describe.skipIf(Boolean(TEST_DATABASE_URL))("backup archives (embedded database; the PGlite run)", () => {
  let db: Database;
  let ctx: TestContext;
  let uploadDir: string;
  const archive = () =>
    openArchive({ db, storage: diskStorage(uploadDir), dataDir: scratchDir("rp-bk-data-"), build: BUILD });

  beforeAll(async () => {
    db = await openPglite("memory://");
    await runMigrations(db);
    uploadDir = scratchDir("rp-bk-uploads-");
    ctx = await makeApp({ UPLOAD_DIR: uploadDir, STORAGE_URL: "" }, { db, storage: diskStorage(uploadDir) });
  }, 60_000);

  afterAll(() => db.close());

  test("hold the moment of the snapshot: a file deleted afterwards is in it, one uploaded afterwards is not", async () => {
    const user = await signUp(ctx.app);
    const kept = await upload(ctx, "deleted after the snapshot\n", { token: user.access });
    expect(kept.status).toBe(201);
    const { manifest, stream } = await archive();
    expect(manifest.files).toBe(1);
    expect((await call(ctx.app, "DELETE", `${API}/uploads/${kept.json.id}`, { token: user.access })).status).toBe(204);
    const later = await upload(ctx, "uploaded after the snapshot\n", { token: user.access });
    expect(later.status).toBe(201);

    const members = await membersOf(stream);
    const files = [...members.entries()].filter(([name]) => name.startsWith("files/"));
    expect(files.map(([, bytes]) => bytes.toString())).toEqual(["deleted after the snapshot\n"]);
    expect(members.get("db/users.csv")?.toString()).toContain(user.username);
    expect(JSON.parse(members.get("manifest.json")?.toString() ?? "{}").tables.files).toBe(1);
    // The pins go with the archive.
    expect(await eventually(() => readdirSync(join(uploadDir, "pinned")).length === 0)).toBe(true);
  });

  test("resumable uploads: a complete one is archived, an unfinished one left out (its bytes are not)", async () => {
    const user = await signUp(ctx.app);
    const create = (length: number, first: string) =>
      call(ctx.app, "POST", ENDPOINT, {
        token: user.access,
        body: new TextEncoder().encode(first),
        headers: tusHeaders(user.access, {
          "upload-length": String(length),
          "upload-metadata": `filename ${b64("paper.txt")},filetype ${b64("text/plain")}`,
          "content-type": "application/offset+octet-stream",
        }),
      });
    const unfinished = await create(1000, "the first bytes\n");
    expect(unfinished.status).toBe(201);
    expect(unfinished.headers.get("upload-offset")).toBe("16");
    const complete = await create(16, "the whole file\n\n");
    expect(complete.status).toBe(201);
    const fileId = complete.headers.get("upload-file-id");
    expect(fileId).toBeString();
    const { manifest, stream } = await archive();
    expect(manifest.tables.resumable_uploads).toBe(1);
    const csv = (await membersOf(stream)).get("db/resumable_uploads.csv")?.toString() ?? "";
    const lines = csv.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[1]).toContain(fileId as string);
    expect(lines[1]).toContain("complete");
  });

  test("on a schedule, the newest BACKUP_KEEP archives are kept", async () => {
    const dir = join(scratchDir("rp-bk-scheduled-"), "backups");
    const logger = memoryLogger();
    const stop = startBackupSchedule({
      intervalMs: 1100,
      keep: 2,
      dir,
      archive: async () => (await archive()).stream,
      logger,
    });
    try {
      // Names carry the second they were made in: three ticks, three names.
      expect(
        await eventually(() => logger.lines.filter((l) => l.includes("scheduled backup written")).length >= 3, 10_000),
      ).toBe(true);
      expect(existsSync(dir)).toBe(true);
      expect(readdirSync(dir).filter((name) => name.endsWith(".tar"))).toHaveLength(2);
    } finally {
      stop();
    }
  }, 20_000);
});
