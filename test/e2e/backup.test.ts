import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import tar from "tar-stream";
import { buildBinary, finished, freePort, operatorDir, runShipped, TEST_DATABASE_URL } from "../support";
import { clientOf, gatedUpload, samplePdf, untilReady } from "./client";

const USERS = 6;
const FILES_PER_USER = 3;
const IN_FLIGHT = 4;

beforeAll(buildBinary, 120_000);

/** The members of a tar archive, in order. */
async function members(archive: Uint8Array): Promise<{ name: string; bytes: Buffer }[]> {
  const extract = tar.extract();
  const found: { name: string; bytes: Buffer }[] = [];
  const done = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      found.push({ name: entry.header.name, bytes: Buffer.concat(chunks) });
    }
  })();
  extract.end(Buffer.from(archive));
  await done;
  return found;
}

async function pack(entries: { name: string; bytes: Buffer }[]): Promise<Buffer> {
  const archive = tar.pack();
  for (const entry of entries) archive.entry({ name: entry.name }, entry.bytes);
  archive.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of archive) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

// Backups are of the embedded database: the PGlite run has them.
describe.skipIf(Boolean(TEST_DATABASE_URL))(
  "backup and restore with the shipped binary (embedded database; the PGlite run)",
  () => {
    const dir = operatorDir("rp-backup-");
    const port = freePort();
    const base = `http://127.0.0.1:${port}`;
    const env = {
      DATA_DIR: join(dir, "data"),
      PORT: String(port),
      HOST: "127.0.0.1",
      ENVIRONMENT: "production",
      SECRET_KEY: "backup-secret-backup-secret-backup-secret-0123",
      BCRYPT_ROUNDS: "4",
      RATE_LIMIT_REGISTER: "1000/hour",
    };
    const api = clientOf(base);
    let server: ReturnType<typeof runShipped> | undefined;
    const accounts: string[] = [];
    /** Every upload acknowledged before the backup started: id → bytes. */
    const acknowledged = new Map<string, Uint8Array>();

    beforeAll(async () => {
      server = runShipped(dir, ["serve"], { env });
      await untilReady(base, server);
    }, 60_000);

    afterAll(async () => {
      server?.kill("SIGKILL");
      await server?.exited;
      rmSync(dir, { recursive: true, force: true });
    });

    test("a backup taken while uploads stream holds every acknowledged one; restored, all log in and read the same bytes", async () => {
      const tokens: string[] = [];
      for (let u = 0; u < USERS; u++) {
        const username = `backup${u}_${port}`;
        accounts.push(username);
        const { access } = await api.signUp(username);
        tokens.push(access);
        for (let f = 0; f < FILES_PER_USER; f++) {
          const bytes = samplePdf(10_000 + (u * FILES_PER_USER + f) * 150_000);
          acknowledged.set((await api.upload(access, bytes, `paper-${u}-${f}.pdf`, "application/pdf")).id, bytes);
        }
      }
      let open = () => {};
      const gate = new Promise<void>((resolve) => {
        open = resolve;
      });
      const inFlight = tokens
        .slice(0, IN_FLIGHT)
        .map((token, i) => gatedUpload(base, token, samplePdf(400_000 + i), gate));
      await Bun.sleep(200);

      const backup = await finished(runShipped(dir, ["backup", "--output", "live.tar"], { env }));
      expect(backup.code).toBe(0);
      // The uploads were never stopped: they finish once released.
      open();
      for (const upload of inFlight) expect((await upload).status).toBe(201);
      server?.kill("SIGTERM");
      expect(await server?.exited).toBe(0);

      const restoredEnv = { ...env, DATA_DIR: join(dir, "restored") };
      const restore = await finished(runShipped(dir, ["restore", "live.tar"], { env: restoredEnv }));
      expect(restore.code).toBe(0);
      server = runShipped(dir, ["serve"], { env: restoredEnv });
      await untilReady(base, server);
      const restoredIds = new Set<string>();
      for (const username of accounts) {
        const { access } = await api.login(username);
        for (const item of (await api.list(access)).items) {
          restoredIds.add(item.id);
          const bytes = Buffer.from(await api.download(access, item.id));
          // An upload in flight during the backup may or may not be in it, but never broken.
          expect(new Bun.CryptoHasher("sha256").update(bytes).digest("hex")).toBe(item.file_hash);
          const original = acknowledged.get(item.id);
          if (original) expect(bytes.equals(Buffer.from(original))).toBe(true);
        }
      }
      expect([...acknowledged.keys()].filter((id) => !restoredIds.has(id))).toEqual([]);
      server.kill("SIGTERM");
      expect(await server.exited).toBe(0);
      server = undefined;
    }, 120_000);

    /** Runs a command expected to refuse: exit 2, one line on stderr. */
    async function refused(args: string[], extra: Record<string, string> = {}, setup?: string) {
      const result = await finished(runShipped(dir, args, { env: { ...env, ...extra }, setup }));
      expect({ args, code: result.code, lines: result.stderr.trim().split("\n").length }).toEqual({
        args,
        code: 2,
        lines: 1,
      });
      return result.stderr.trim();
    }

    test("a truncated, altered or foreign archive is refused and nothing is written", async () => {
      const archive = readFileSync(join(dir, "live.tar"));
      const target = join(dir, "target");
      const entries = await members(archive);
      const variants: [string, Buffer, RegExp][] = [
        ["truncated.tar", archive.subarray(0, Math.floor(archive.byteLength / 2)), /truncated|damaged/],
        ["cut-at-a-member.tar", archive.subarray(0, archive.byteLength - 512 * 40), /truncated|damaged/],
        [
          "not-a-tar.tar",
          Buffer.from("this is not an archive at all, not even close".repeat(20)),
          /not a reviewpoint backup|damaged/,
        ],
      ];
      const altered = Buffer.from(archive);
      // One byte inside the last file's bytes.
      const lastFile = (entries.at(-1) as { bytes: Buffer }).bytes;
      const at = altered.lastIndexOf(lastFile.subarray(-64)) + 10;
      altered.writeUInt8(altered.readUInt8(at) ^ 0xff, at);
      variants.push(["altered.tar", altered, /does not match the manifest/]);
      const manifest = JSON.parse((entries[0] as { bytes: Buffer }).bytes.toString());
      const rewrite = (changes: object) =>
        pack(
          entries.map((e, i) =>
            i === 0 ? { name: e.name, bytes: Buffer.from(JSON.stringify({ ...manifest, ...changes })) } : e,
          ),
        );
      variants.push(["next-major.tar", await rewrite({ version: "9.0.0" }), /another major version/]);
      variants.push([
        "more-users.tar",
        await rewrite({ tables: { ...manifest.tables, users: manifest.tables.users + 1 } }),
        /users/,
      ]);
      variants.push(["newer.tar", await rewrite({ migrations: manifest.migrations + 50 }), /newer/]);
      for (const [name, bytes, reason] of variants) {
        writeFileSync(join(dir, name), bytes);
        expect(await refused(["restore", name], { DATA_DIR: target })).toMatch(reason);
        expect({ name, written: existsSync(target) }).toEqual({ name, written: false });
      }
    }, 120_000);

    test("restoring into a non-empty DATA_DIR, or backing up over a file, is refused and changes nothing", async () => {
      const before = readdirSync(env.DATA_DIR).sort();
      expect(await refused(["restore", "live.tar"])).toContain("is not empty");
      expect(readdirSync(env.DATA_DIR).sort()).toEqual(before);
      const existing = readFileSync(join(dir, "live.tar"));
      expect(await refused(["backup", "--output", "live.tar"])).toContain("exists already");
      expect(readFileSync(join(dir, "live.tar")).equals(existing)).toBe(true);
      expect(await refused(["backup"], { DATA_DIR: join(dir, "nothing-here") })).toContain("holds no database");
    });

    test("a full disk while backing up → one line, exit 2, no partial archive", async () => {
      const small = join(dir, "small");
      mkdirSync(small);
      expect(
        await refused(["backup", "--output", "small/b.tar"], {}, `mount -t tmpfs -o size=256k none ${small}`),
      ).toContain("no space left");
      expect(readdirSync(small)).toEqual([]);
    });
  },
);
