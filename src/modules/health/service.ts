import { type Database, pingDatabase } from "../../db/client";
import { migrationsApplied } from "../../db/migrate";
import type { KeyValueStore } from "../../platform/kv";

const CHECK_TIMEOUT_MS = 2000;

function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

export interface HealthDeps {
  db: Database;
  kv: KeyValueStore;
  version: string;
  startedAt: number;
}

export function createHealthService({ db, kv, version, startedAt }: HealthDeps) {
  async function database() {
    const start = performance.now();
    const ok = await withTimeout(pingDatabase(db), CHECK_TIMEOUT_MS).then(
      () => true,
      () => false,
    );
    return { ok, latency_ms: Math.round((performance.now() - start) * 100) / 100 };
  }

  return {
    async report() {
      const [databaseCheck, cacheOk] = await Promise.all([
        database(),
        withTimeout(kv.ping(), CHECK_TIMEOUT_MS).catch(() => false),
      ]);
      return {
        status: databaseCheck.ok && cacheOk ? ("ok" as const) : ("degraded" as const),
        version,
        uptime_seconds: Math.floor((Date.now() - startedAt) / 1000),
        checks: { database: databaseCheck, cache: { ok: cacheOk, backend: kv.backend } },
      };
    },

    async readiness() {
      const databaseCheck = await database();
      const migrations = databaseCheck.ok
        ? await withTimeout(migrationsApplied(db), CHECK_TIMEOUT_MS).catch(() => false)
        : false;
      return {
        status: databaseCheck.ok && migrations ? ("ready" as const) : ("not_ready" as const),
        checks: { database: databaseCheck.ok, migrations },
      };
    },
  };
}

export type HealthService = ReturnType<typeof createHealthService>;
