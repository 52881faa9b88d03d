import { chmodSync, readdirSync } from "node:fs";
import { join } from "node:path";
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
/** An open transaction, as `orm.transaction` hands it to its callback. */
export type Tx = Parameters<Parameters<Orm["transaction"]>[0]>[0];
/** What a query can run on: the database, or a transaction in progress. */
export type Executor = Orm | Tx;

/** Database work in flight, for the metrics: neither driver reports its pool's state. */
export interface PoolUsage {
  /** Connections the pool may hold (DB_POOL_MAX; PGlite has one). */
  readonly size: number;
  /** Queries running or queued, a transaction counting once for its whole length (it holds one connection). */
  readonly active: number;
}

export interface Database {
  kind: "postgres" | "pglite";
  /** The embedded database itself, for what Drizzle cannot do (COPY to and from blobs, for backups). */
  pglite?: PGlite;
  orm: Orm;
  pool: PoolUsage;
  /** Runs `work` while holding a cluster-wide lock (a Postgres advisory lock on one connection). */
  exclusive<T>(lockKey: number, work: (orm: Orm) => Promise<T>): Promise<T>;
  /**
   * Runs `work` unless another instance holds `lockKey` (then undefined): periodic jobs that one instance
   * at a time should do. The embedded database has one process, so it just runs.
   */
  whenFree<T>(lockKey: number, work: () => Promise<T>): Promise<T | undefined>;
  close(): Promise<void>;
}

export interface PostgresOptions {
  url: string;
  max: number;
  connectTimeoutSeconds?: number;
}

/**
 * What Drizzle is handed instead of the driver's client: the client itself (as prototype) with the two kinds
 * of call Drizzle makes counted: a query (`unsafe`/`query`) and a transaction (`begin`/`transaction`, whose
 * inner queries run on the transaction's own client). Not patched into the client, whose own inner calls
 * (postgres.js sends BEGIN through `unsafe`) would then count twice.
 */
function counted<C extends object>(client: C, size: number, methods: (keyof C)[]): { client: C; pool: PoolUsage } {
  const pool = { size, active: 0 };
  const release = () => {
    pool.active--;
  };
  const facade = Object.create(client) as C;
  for (const name of methods) {
    const original = (client[name] as (...args: unknown[]) => PromiseLike<unknown>).bind(client);
    Object.defineProperty(facade, name, {
      value: (...args: unknown[]) => {
        const work = original(...args);
        pool.active++;
        // A postgres.js query starts on its first `then`; Drizzle awaits each at once, and `.values()`, which it
        // calls right after `unsafe`, still applies (the query is sent a microtask later).
        work.then(release, release);
        return work;
      },
    });
  }
  return { client: facade, pool };
}

export function connectPostgres(options: PostgresOptions): Database {
  const client = postgres(options.url, {
    max: options.max,
    idle_timeout: 30,
    connect_timeout: options.connectTimeoutSeconds ?? 5,
    onnotice: () => {},
  });
  const { client: countedClient, pool } = counted(client, options.max, ["unsafe", "begin"]);
  return {
    kind: "postgres",
    orm: drizzlePostgres(countedClient, { schema }),
    pool,
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
    async whenFree(lockKey, work) {
      // A transaction-scoped lock on one pooled connection, held while `work` runs on the others.
      const result = client.begin(async (tx) => {
        const [row] = await tx`select pg_try_advisory_xact_lock(${lockKey}) as locked`;
        return row?.locked ? work() : undefined;
      });
      return result as Promise<Awaited<ReturnType<typeof work>> | undefined>;
    },
    close: () => client.end({ timeout: 5 }),
  };
}

/**
 * PGlite's file system layer sets the mode of what it creates itself (0666), whatever the umask, so the
 * data dir is made owner-only on open and on close. The 0700 directory around it is what keeps a file
 * created in between private.
 */
function makeOwnerOnly(dir: string) {
  chmodSync(dir, 0o700);
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) makeOwnerOnly(path);
    else if (entry.isFile()) chmodSync(path, 0o600);
  }
}

/**
 * `dataDir` is a folder (kept across restarts) or "memory://" for a throwaway database. PGlite has no
 * server: the caller holds the data directory's lock (`lockDataDir`) so no second process opens it.
 */
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
  const onDisk = !dataDir.startsWith("memory://");
  if (onDisk) makeOwnerOnly(dataDir);
  const { client: countedClient, pool } = counted(client, 1, ["query", "transaction"]);
  const orm = drizzlePglite(countedClient, { schema }) as unknown as Orm;
  return {
    kind: "pglite",
    pglite: client,
    orm,
    pool,
    // The data directory's lock already keeps every other process out.
    exclusive: (_lockKey, work) => work(orm),
    whenFree: (_lockKey, work) => work(),
    close: async () => {
      await client.close();
      if (onDisk) makeOwnerOnly(dataDir);
    },
  };
}

export async function pingDatabase(db: Database): Promise<void> {
  await db.orm.execute(sql`select 1`);
}
