import { existsSync, readdirSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as NodeWebStream } from "node:stream/web";
import { Value } from "@sinclair/typebox/value";
import tar from "tar-stream";
import type { Database } from "../../db/client";
import { runMigrations } from "../../db/migrate";
import { JOURNAL } from "../../db/migrations";
import { isStorageKey, type ObjectStorage, type PendingObject } from "../../platform/storage";
import type { BuildInfo } from "./archive";
import {
  ARCHIVE_FORMAT,
  BackupError,
  MANIFEST_NAME,
  Manifest,
  SECRET_MEMBER,
  SEQUENCES_MEMBER,
  Sequences,
  tableMember,
} from "./model";
import { createBackupRepo } from "./repo";

const major = (version: string) => version.split(".")[0];
/** The manifest is read whole: anything bigger is not one of ours. */
const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;

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
