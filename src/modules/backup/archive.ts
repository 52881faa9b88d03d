import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import tar from "tar-stream";
import type { Database } from "../../db/client";
import { appliedCount } from "../../db/migrate";
import type { ObjectStorage } from "../../platform/storage";
import {
  ARCHIVE_FORMAT,
  BackupError,
  fileMember,
  MANIFEST_NAME,
  type Manifest,
  SECRET_MEMBER,
  SEQUENCES_MEMBER,
  tableMember,
} from "./model";
import { createBackupRepo, type StoredFileRef } from "./repo";

export interface BuildInfo {
  version: string;
  commit: string;
}

const sha256 = (bytes: Uint8Array | ArrayBuffer) => new Bun.CryptoHasher("sha256").update(bytes).digest("hex");

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
