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
import type { Config } from "../config";
import type { Logger } from "../platform/logger";
import { type Admission, createAdmission } from "./admission";
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
  /** One connection attempt at most (DB_CONNECT_TIMEOUT_MS). */
  connectTimeoutMs?: number;
  /** The longest a query waits for a free connection while the database answers (DB_POOL_TIMEOUT_MS). */
  poolTimeoutMs?: number;
  /** How soon requests learn that the database does not answer (DB_UNAVAILABLE_MS). */
  unavailableMs?: number;
  /** Told when the database stops answering and when it answers again. */
  onAvailabilityChange?: (up: boolean) => void;
}

/**
 * What Drizzle is handed instead of PGlite's client: the client itself (as prototype) with the two kinds of
 * call Drizzle makes counted: a query (`query`) and a transaction (`transaction`, whose inner queries run on
 * the transaction's own client).
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
        work.then(release, release);
        return work;
      },
    });
  }
  return { client: facade, pool };
}

/** The pool's settings from the configuration; the database going away and coming back is logged once each. */
export function postgresOptions(
  url: string,
  config: Pick<Config, "DB_POOL_MAX" | "DB_CONNECT_TIMEOUT_MS" | "DB_POOL_TIMEOUT_MS" | "DB_UNAVAILABLE_MS">,
  logger: Logger,
): PostgresOptions {
  return {
    url,
    max: config.DB_POOL_MAX,
    connectTimeoutMs: config.DB_CONNECT_TIMEOUT_MS,
    poolTimeoutMs: config.DB_POOL_TIMEOUT_MS,
    unavailableMs: config.DB_UNAVAILABLE_MS,
    onAvailabilityChange: (up) =>
      up
        ? logger.info("database answers again")
        : logger.error("database unavailable: requests that need it get 503 until it answers"),
  };
}

/**
 * The driver's client with its two entry points for Drizzle (a query, `unsafe`, and a transaction, `begin`)
 * passed through the admission; queries inside a transaction run on its own client, already admitted.
 * Not patched into the client, whose own inner calls (postgres.js sends BEGIN through `unsafe`) would then be
 * admitted twice.
 */
function admitted(client: postgres.Sql, admission: Admission): postgres.Sql {
  const facade = Object.create(client) as postgres.Sql;
  Object.defineProperty(facade, "unsafe", {
    // Drizzle calls `.values()` on the query at once (rows as arrays), then awaits it; the driver's query is
    // made only once admitted (it is sent on its first `then`).
    value: (...args: Parameters<postgres.Sql["unsafe"]>) => {
      let asArrays = false;
      const result = admission.run(() => {
        const query = client.unsafe(...args);
        return asArrays ? query.values() : query;
      });
      return Object.assign(result, {
        values() {
          asArrays = true;
          return result;
        },
      });
    },
  });
  Object.defineProperty(facade, "begin", {
    value: (...args: Parameters<postgres.Sql["begin"]>) => admission.run(() => client.begin(...args)),
  });
  return facade;
}

export function connectPostgres(options: PostgresOptions): Database {
  const connectTimeoutMs = options.connectTimeoutMs ?? 2000;
  const client = postgres(options.url, {
    max: options.max,
    idle_timeout: 30,
    connect_timeout: connectTimeoutMs / 1000,
    // The driver waits up to 20 s between attempts after repeated failures, and a query that needs a
    // connection waits with it: the admission's probe paces the attempts instead.
    backoff: () => 0,
    onnotice: () => {},
  });
  // The probe's own connection, opened only while it probes: a pool held by long queries still gets an answer.
  const prober = postgres(options.url, {
    max: 1,
    idle_timeout: 1,
    connect_timeout: connectTimeoutMs / 1000,
    backoff: () => 0,
    onnotice: () => {},
  });
  const admission = createAdmission({
    size: options.max,
    poolTimeoutMs: options.poolTimeoutMs ?? 3000,
    unavailableMs: options.unavailableMs ?? 2000,
    probe: () => prober`select 1`,
    probeTimeoutMs: connectTimeoutMs,
    onChange: options.onAvailabilityChange,
  });
  return {
    kind: "postgres",
    orm: drizzlePostgres(admitted(client, admission), { schema }),
    pool: admission,
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
    close: async () => {
      admission.close();
      await Promise.all([client.end({ timeout: 5 }), prober.end({ timeout: 1 })]);
    },
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
