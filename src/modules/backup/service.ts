import { existsSync, readdirSync } from "node:fs";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeWebStream } from "node:stream/web";
import { Value } from "@sinclair/typebox/value";
import tar from "tar-stream";
import type { Database } from "../../db/client";
import { appliedCount, runMigrations } from "../../db/migrate";
import { JOURNAL } from "../../db/migrations";
import { isStorageKey, type ObjectStorage, type PendingObject } from "../../platform/storage";
import {
  ARCHIVE_FORMAT,
  BackupError,
  fileMember,
  MANIFEST_NAME,
  Manifest,
  SECRET_MEMBER,
  SEQUENCES_MEMBER,
  Sequences,
  tableMember,
} from "./model";
import { createBackupRepo, type StoredFileRef } from "./repo";

export interface BuildInfo {
  version: string;
  commit: string;
}

const sha256 = (bytes: Uint8Array | ArrayBuffer) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");
const major = (version: string) => version.split(".")[0];
/** The manifest is read whole: anything bigger is not one of ours. */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

interface Member {
  name: string;
  size: number;
  sha256: string;
  /** The bytes; a file's are read only when its turn comes. */
  body: () => Blob;
  /** Checked while streaming (a stored file whose bytes no longer match its row's hash). */
  verify?: boolean;
}

/**
 * Writes `member` into the archive, hashing what it sends when asked to. `closed` rejects once the archive
 * is closed early (its reader went away), so a writer waiting for room stops instead of waiting forever.
 */
async function packMember(pack: tar.Pack, closed: Promise<never>, member: Member, mtime: Date): Promise<void> {
  const entry = pack.entry({ name: member.name, size: member.size, mode: 0o600, mtime });
  const hasher = member.verify ? new Bun.CryptoHasher("sha256") : undefined;
  const written = new Promise<void>((resolve, reject) => {
    entry.once("finish", resolve);
    entry.once("error", reject);
  });
  for await (const chunk of member.body().stream()) {
    hasher?.update(chunk);
    if (!entry.write(chunk)) await Promise.race([new Promise((resolve) => entry.once("drain", resolve)), closed]);
  }
  entry.end();
  await Promise.race([written, closed]);
  if (hasher && hasher.digest("hex") !== member.sha256) {
    throw new BackupError(`backup: the stored bytes of ${member.name} no longer match their SHA-256`);
  }
}

/**
 * A consistent archive of the embedded database and the stored files, as a stream (tar): the manifest
 * first, then the tables as CSV, the sequences, the development secret if any, then every file. The
 * snapshot is taken before this returns (one PGlite transaction, in which the files' bytes are pinned), so
 * uploads and deletions may go on while the archive streams: it holds exactly the state of that moment.
 */
export async function openArchive(deps: {
  db: Database;
  storage: ObjectStorage;
  dataDir: string;
  build: BuildInfo;
}): Promise<{ manifest: Manifest; stream: ReadableStream<Uint8Array> }> {
  const { db, storage, dataDir, build } = deps;
  if (!db.pglite || !storage.pin) throw new BackupError("backup: only the embedded database on disk storage");
  const pin = storage.pin.bind(storage);
  const repo = createBackupRepo(db.pglite);
  const migrations = await appliedCount(db);
  const { snapshot, held: pinned } = await repo.snapshot((files) => pin(files.map((file) => file.key)));
  try {
    const byKey = new Map<string, StoredFileRef>(snapshot.files.map((file) => [file.key, file]));
    const members: Member[] = [];
    for (const table of snapshot.tables) {
      const bytes = await table.csv.arrayBuffer();
      members.push({
        name: tableMember(table.name),
        size: bytes.byteLength,
        sha256: sha256(bytes),
        body: () => new Blob([bytes]),
      });
    }
    const sequences = new TextEncoder().encode(JSON.stringify(snapshot.sequences));
    members.push({
      name: SEQUENCES_MEMBER,
      size: sequences.byteLength,
      sha256: sha256(sequences),
      body: () => new Blob([sequences]),
    });
    const secretFile = join(dataDir, SECRET_MEMBER);
    if (existsSync(secretFile)) {
      const secret = await readFile(secretFile);
      members.push({
        name: SECRET_MEMBER,
        size: secret.byteLength,
        sha256: sha256(secret),
        body: () => new Blob([secret]),
      });
    }
    let fileBytes = 0;
    for (const key of pinned.keys) {
      const file = byKey.get(key) as StoredFileRef;
      const body = pinned.read(key);
      fileBytes += body.size;
      members.push({ name: fileMember(key), size: body.size, sha256: file.hash, body: () => body, verify: true });
    }
    const manifest: Manifest = {
      format: ARCHIVE_FORMAT,
      app: "reviewpoint",
      version: build.version,
      commit: build.commit,
      created_at: new Date().toISOString(),
      migrations,
      tables: Object.fromEntries(snapshot.tables.map((table) => [table.name, table.rows])),
      files: pinned.keys.length,
      file_bytes: fileBytes,
      members: members.map(({ name, size, sha256 }) => ({ name, size, sha256 })),
    };
    const manifestBytes = new TextEncoder().encode(JSON.stringify(manifest, null, 1));
    const pack = tar.pack();
    // Failures reach the reader through the stream; an unheard 'error' event would end the process.
    pack.on("error", () => {});
    const closed = new Promise<never>((_, reject) => pack.once("close", () => reject(new Error("archive closed"))));
    closed.catch(() => {});
    const mtime = new Date(manifest.created_at);
    const fill = async () => {
      const manifestMember = { name: MANIFEST_NAME, size: manifestBytes.byteLength, sha256: "" };
      await packMember(pack, closed, { ...manifestMember, body: () => new Blob([manifestBytes]) }, mtime);
      for (const member of members) await packMember(pack, closed, member, mtime);
      pack.finalize();
    };
    fill()
      .catch((error: Error) => pack.destroy(error))
      .finally(() => void pinned.release());
    return { manifest, stream: webStream(pack) };
  } catch (error) {
    await pinned.release();
    throw error;
  }
}

/** tar-stream's pack (a streamx stream) as a web stream, pulled as the reader reads. */
function webStream(pack: tar.Pack): ReadableStream<Uint8Array> {
  const chunks = (pack as unknown as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await chunks.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    cancel() {
      pack.destroy();
    },
  });
}

function parseManifest(bytes: Uint8Array, build: BuildInfo): Manifest {
  let parsed: unknown;
  try {
    parsed = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new BackupError("restore: the archive's manifest is not JSON; is this a reviewpoint backup?");
  }
  if (!Value.Check(Manifest, parsed)) throw new BackupError("restore: the archive's manifest is not one of ours");
  if (parsed.format !== ARCHIVE_FORMAT) {
    throw new BackupError(
      `restore: archive format ${parsed.format} is not ${ARCHIVE_FORMAT}; restore it with the version that made it`,
    );
  }
  if (major(parsed.version) !== major(build.version)) {
    throw new BackupError(
      `restore: the archive was made by reviewpoint ${parsed.version}, another major version than ${build.version}; restore it with a ${major(parsed.version)}.x binary`,
    );
  }
  if (parsed.migrations > JOURNAL.length) {
    throw new BackupError(
      `restore: the archive was made by a newer reviewpoint (${parsed.version}); upgrade this binary first`,
    );
  }
  return parsed;
}

/** Folders this restore fills: each must be empty (or missing) first, and is left so on failure. */
function emptyTarget(dir: string, ignored: string[] = []): { existed: boolean } {
  if (!existsSync(dir)) return { existed: false };
  const entries = readdirSync(dir).filter((name) => !ignored.includes(name));
  if (entries.length > 0)
    throw new BackupError(`restore: ${dir} is not empty; restore needs an empty DATA_DIR (and UPLOAD_DIR)`);
  return { existed: true };
}

/**
 * Restores an archive into an empty DATA_DIR (and UPLOAD_DIR): every member is checked against the
 * manifest's size and SHA-256 as it streams, the database is rebuilt (migrated to the archive's level,
 * loaded, then migrated to this version's), and the files are committed last. A wrong, truncated or
 * altered archive leaves both folders as they were.
 */
export async function restoreArchive(
  source: ReadableStream<Uint8Array>,
  deps: {
    dataDir: string;
    /** Where the files go: the disk storage over UPLOAD_DIR. */
    storage: ObjectStorage;
    uploadDir: string;
    /** Opens the (new, empty) embedded database under DATA_DIR. */
    openDatabase: () => Promise<Database>;
    build: BuildInfo;
    /** Names in DATA_DIR that may be there already (the data directory's lock file). */
    ignored: string[];
  },
): Promise<Manifest> {
  const { dataDir, storage, uploadDir, build } = deps;
  const targets = [dataDir, uploadDir].map((dir) => ({
    dir,
    ...emptyTarget(dir, dir === dataDir ? deps.ignored : []),
  }));
  const staging = join(dataDir, "restore");
  const pending = new Map<string, PendingObject>();
  let db: Database | undefined;
  try {
    let manifest: Manifest | undefined;
    const expected = new Map<string, { size: number; sha256: string }>();
    const seen = new Set<string>();
    let secret: Uint8Array | undefined;
    const extract = tar.extract();
    const piped = pipeline(Readable.fromWeb(source as NodeWebStream), extract as unknown as NodeJS.WritableStream);
    piped.catch(() => {});
    try {
      for await (const entry of extract) {
        const { name, size = 0, type } = entry.header;
        if (!manifest) {
          if (name !== MANIFEST_NAME || size > MAX_MANIFEST_BYTES)
            throw new BackupError("restore: this is not a reviewpoint backup (no manifest first)");
          manifest = parseManifest(await collect(entry), build);
          for (const member of manifest.members) expected.set(member.name, member);
          continue;
        }
        const want = expected.get(name);
        if (type !== "file" || !want || seen.has(name))
          throw new BackupError(`restore: unexpected member ${JSON.stringify(name)} in the archive`);
        seen.add(name);
        const hasher = new Bun.CryptoHasher("sha256");
        let length = 0;
        const check = (chunk: Uint8Array) => {
          hasher.update(chunk);
          length += chunk.byteLength;
        };
        if (name.startsWith("files/")) {
          const key = name.slice("files/".length);
          if (!isStorageKey(key))
            throw new BackupError(`restore: unexpected member ${JSON.stringify(name)} in the archive`);
          const object = await storage.begin(key);
          pending.set(key, object);
          for await (const chunk of entry as AsyncIterable<Buffer>) {
            check(chunk);
            await object.write(chunk);
          }
          await object.close();
        } else if (name === SECRET_MEMBER) {
          secret = await collect(entry);
          check(secret);
        } else {
          const bytes = await collect(entry);
          check(bytes);
          await Bun.write(join(staging, name), bytes, { createPath: true, mode: 0o600 });
        }
        if (length !== want.size || hasher.digest("hex") !== want.sha256) {
          throw new BackupError(`restore: ${name} does not match the manifest (altered or damaged archive)`);
        }
      }
    } catch (error) {
      // A file-system error (a full disk) says what it is; anything else the parser threw means a damaged archive.
      if (error instanceof BackupError || /^E[A-Z]+$/.test((error as NodeJS.ErrnoException).code ?? "")) throw error;
      throw new BackupError(`restore: the archive is damaged or truncated (${(error as Error).message})`);
    }
    if (!manifest) throw new BackupError("restore: the archive is empty");
    const missing = [...expected.keys()].filter((name) => !seen.has(name));
    if (missing.length)
      throw new BackupError(
        `restore: the archive is truncated (${missing.length} of ${expected.size} members missing)`,
      );

    db = await deps.openDatabase();
    await runMigrations(db, manifest.migrations);
    const tables = Object.keys(manifest.tables).map((name) => ({
      name,
      csv: Bun.file(join(staging, tableMember(name))),
    }));
    const sequences = JSON.parse(await Bun.file(join(staging, SEQUENCES_MEMBER)).text());
    if (!Value.Check(Sequences, sequences)) throw new BackupError("restore: the archive's sequences are not ours");
    const counts = await createBackupRepo(db.pglite as NonNullable<Database["pglite"]>).load(tables, sequences);
    for (const [table, rows] of Object.entries(manifest.tables)) {
      if (counts[table] !== rows)
        throw new BackupError(`restore: table ${table} has ${counts[table]} rows, the manifest says ${rows}`);
    }
    await runMigrations(db);
    await db.close();
    db = undefined;
    for (const key of pending.keys()) await storage.commit(key);
    if (secret) await writeFile(join(dataDir, SECRET_MEMBER), secret, { mode: 0o600 });
    await rm(staging, { recursive: true, force: true });
    return manifest;
  } catch (error) {
    await db?.close().catch(() => {});
    for (const { dir, existed } of targets) {
      if (!existed) await rm(dir, { recursive: true, force: true });
      else
        for (const name of readdirSync(dir))
          if (!(dir === dataDir && deps.ignored.includes(name)))
            await rm(join(dir, name), { recursive: true, force: true });
    }
    throw error;
  }
}

async function collect(stream: AsyncIterable<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  return Buffer.concat(chunks);
}
