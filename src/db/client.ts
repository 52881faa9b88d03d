import { PGlite } from "@electric-sql/pglite";
import { sql } from "drizzle-orm";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { drizzle as drizzlePostgres, type PostgresJsDatabase } from "drizzle-orm/postgres-js";
import postgres from "postgres";
// PGlite's runtime files, embedded so the compiled binary needs nothing beside it.
import initdbWasmPath from "../../node_modules/@electric-sql/pglite/dist/initdb.wasm" with { type: "file" };
import pgliteDataPath from "../../node_modules/@electric-sql/pglite/dist/pglite.data" with { type: "file" };
import pgliteWasmPath from "../../node_modules/@electric-sql/pglite/dist/pglite.wasm" with { type: "file" };
import * as schema from "./schema";

/** Both drivers expose the same query builder; repos are written against this one type. */
export type Orm = PostgresJsDatabase<typeof schema>;

export interface Database {
  kind: "postgres" | "pglite";
  orm: Orm;
  /** Runs `work` while holding a cluster-wide lock (a Postgres advisory lock on one connection). */
  exclusive<T>(lockKey: number, work: (orm: Orm) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface PostgresOptions {
  url: string;
  max: number;
  connectTimeoutSeconds?: number;
}

export function connectPostgres(options: PostgresOptions): Database {
  const client = postgres(options.url, {
    max: options.max,
    idle_timeout: 30,
    connect_timeout: options.connectTimeoutSeconds ?? 5,
    onnotice: () => {},
  });
  return {
    kind: "postgres",
    orm: drizzlePostgres(client, { schema }),
    async exclusive(lockKey, work) {
      // A one-connection client: the advisory lock belongs to the session that took it.
      const single = postgres(options.url, { max: 1, connect_timeout: 10, onnotice: () => {} });
      try {
        await single`select pg_advisory_lock(${lockKey})`;
        return await work(drizzlePostgres(single, { schema }));
      } finally {
        await single.end({ timeout: 5 });
      }
    },
    close: () => client.end({ timeout: 5 }),
  };
}

/** `dataDir` is a folder (kept across restarts) or "memory://" for a throwaway database. */
export async function openPglite(dataDir: string): Promise<Database> {
  const [pgliteWasmModule, initdbWasmModule] = await Promise.all([
    WebAssembly.compile(await Bun.file(pgliteWasmPath).arrayBuffer()),
    WebAssembly.compile(await Bun.file(initdbWasmPath).arrayBuffer()),
  ]);
  const client = await PGlite.create({
    dataDir,
    pgliteWasmModule,
    initdbWasmModule,
    fsBundle: Bun.file(pgliteDataPath),
  });
  const orm = drizzlePglite(client, { schema }) as unknown as Orm;
  return {
    kind: "pglite",
    orm,
    // PGlite is single-process: nothing else can hold the database, so no lock is needed.
    exclusive: (_lockKey, work) => work(orm),
    close: () => client.close(),
  };
}

export async function pingDatabase(db: Database): Promise<void> {
  await db.orm.execute(sql`select 1`);
}
