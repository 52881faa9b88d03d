import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { type Config, ConfigError } from "../../config";
import { type Database, openPglite } from "../../db/client";
import { openDatabase, pgdataOf } from "../../db/open";
import { requestBackup } from "../../platform/control-socket";
import { controlSocketPath, DataDirInUseError, LOCK_FILE, lockDataDir } from "../../platform/data-dir";
import type { Logger } from "../../platform/logger";
import { diskStorage } from "../../platform/storage";
import { type BuildInfo, openArchive } from "./archive";
import { backupFileName, fileSystemProblem, writeNewFile } from "./files";
import { BackupError } from "./model";
import { restoreArchive } from "./restore";

/** `reviewpoint backup` and `reviewpoint restore`. */

/** Backups cover the embedded database and files on disk; elsewhere the operator uses the stores' own. */
function requireEmbedded(config: Config, command: "backup" | "restore") {
  if (config.databaseUrl) {
    throw new BackupError(
      `${command}: this deployment uses PostgreSQL; use pg_dump/pg_restore for the database (and a copy of UPLOAD_DIR or the bucket's own versioning for the files)`,
    );
  }
  if (config.storage.kind === "s3") {
    throw new BackupError(
      `${command}: the files are in an S3 bucket; use the bucket's own versioning or replication for them (and ${command} covers the embedded database only with files on disk)`,
    );
  }
}

export async function backupCommand(config: Config, logger: Logger, build: BuildInfo, output: string | undefined) {
  requireEmbedded(config, "backup");
  const file = resolve(output ?? backupFileName());
  if (existsSync(file)) throw new BackupError(`backup: ${file} exists already; choose another --output`);
  if (!existsSync(pgdataOf(config))) throw new BackupError(`backup: DATA_DIR ${config.DATA_DIR} holds no database`);
  let stream: ReadableStream<Uint8Array>;
  let db: Database | undefined;
  try {
    db = await openDatabase(config, logger);
    stream = (await openArchive({ db, storage: diskStorage(config.uploadDir), dataDir: config.DATA_DIR, build }))
      .stream;
  } catch (error) {
    if (!(error instanceof DataDirInUseError)) throw error;
    // The server has the database open: it makes the archive and streams it here.
    stream = await requestBackup(controlSocketPath(config.DATA_DIR)).catch((failure: Error) => {
      throw new BackupError(`backup: ${failure.message}`);
    });
  }
  try {
    const bytes = await writeNewFile(file, stream);
    logger.info("backup written", { file, bytes });
  } catch (error) {
    if (error instanceof BackupError) throw error;
    throw new BackupError(
      `backup: the archive could not be completed (${(error as Error).message}); nothing was written`,
    );
  } finally {
    await db?.close();
  }
}

export async function restoreCommand(config: Config, logger: Logger, build: BuildInfo, file: string | undefined) {
  if (!file) throw new ConfigError("restore needs the archive: reviewpoint restore FILE; see --help");
  requireEmbedded(config, "restore");
  if (!existsSync(file)) throw new BackupError(`restore: ${file} does not exist`);
  const dataDirExisted = existsSync(config.DATA_DIR);
  const lockExisted = existsSync(join(config.DATA_DIR, LOCK_FILE));
  const lock = lockDataDir(config.DATA_DIR);
  try {
    const manifest = await restoreArchive(Bun.file(file).stream(), {
      dataDir: config.DATA_DIR,
      storage: diskStorage(config.uploadDir),
      uploadDir: config.uploadDir,
      openDatabase: () => openPglite(pgdataOf(config)),
      build,
      ignored: [LOCK_FILE],
    });
    logger.info("restored", {
      file,
      made_by: manifest.version,
      created_at: manifest.created_at,
      files: manifest.files,
      tables: manifest.tables,
    });
  } catch (error) {
    // Nothing written: not even the folder or the lock file this command made.
    lock.release();
    if (!dataDirExisted) await rm(config.DATA_DIR, { recursive: true, force: true });
    else if (!lockExisted) await rm(join(config.DATA_DIR, LOCK_FILE), { force: true });
    throw error instanceof BackupError ? error : fileSystemProblem("restore", config.DATA_DIR, error);
  } finally {
    lock.release();
  }
}
