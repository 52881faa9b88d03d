import { join } from "node:path";
import type { Config } from "../config";
import { lockDataDir } from "../platform/data-dir";
import type { Logger } from "../platform/logger";
import { connectPostgres, type Database, openPglite, postgresOptions } from "./client";

/** Where the embedded database lives in DATA_DIR. */
export const pgdataOf = (config: Config) => join(config.DATA_DIR, "pgdata");

/** Postgres, or the embedded database under DATA_DIR's lock (released when it is closed). */
export async function openDatabase(config: Config, logger: Logger): Promise<Database> {
  if (config.databaseUrl) return connectPostgres(postgresOptions(config.databaseUrl, config, logger));
  const lock = lockDataDir(config.DATA_DIR);
  try {
    const db = await openPglite(pgdataOf(config));
    return {
      ...db,
      close: async () => {
        await db.close();
        lock.release();
      },
    };
  } catch (error) {
    lock.release();
    throw error;
  }
}
