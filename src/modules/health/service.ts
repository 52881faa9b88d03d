import { type Database, pingDatabase } from "../../db/client";
import { migrationsApplied } from "../../db/migrate";
import type { Scanner } from "../../platform/antivirus";
import type { KeyValueStore } from "../../platform/kv";
import { withTimeout } from "../../platform/timeout";

const CHECK_TIMEOUT_MS = 2000;
const SCANNER_CHECK_REUSE_MS = 1000;

export interface HealthDeps {
  db: Database;
  kv: KeyValueStore;
  version: string;
  startedAt: number;
  /** With CLAMAV_URL: checked by a PING; `required` (fail-open off) makes readiness depend on it. */
  antivirus?: { scanner: Scanner; required: boolean };
}

const round = (ms: number) => Math.round(ms * 100) / 100;

export function createHealthService({ db, kv, version, startedAt, antivirus }: HealthDeps) {
  async function database() {
    const start = performance.now();
    const ok = await withTimeout(pingDatabase(db), CHECK_TIMEOUT_MS).then(
      () => true,
      () => false,
    );
    return { ok, latency_ms: round(performance.now() - start) };
  }

  // The health routes are public and unlimited: one PING a second at most, whatever the polling.
  let lastScannerCheck: { at: number; result: Promise<{ ok: boolean; latency_ms: number }> } | undefined;
  function scanner() {
    if (!antivirus) return undefined;
    if (lastScannerCheck && Date.now() - lastScannerCheck.at < SCANNER_CHECK_REUSE_MS) return lastScannerCheck.result;
    const start = performance.now();
    const result = withTimeout(antivirus.scanner.ping(), CHECK_TIMEOUT_MS)
      .then(
        () => true,
        () => false,
      )
      .then((ok) => ({ ok, latency_ms: round(performance.now() - start) }));
    lastScannerCheck = { at: Date.now(), result };
    return result;
  }

  return {
    async report() {
      const [databaseCheck, cacheOk, antivirusCheck] = await Promise.all([
        database(),
        withTimeout(kv.ping(), CHECK_TIMEOUT_MS).catch(() => false),
        scanner(),
      ]);
      const healthy = databaseCheck.ok && cacheOk && antivirusCheck?.ok !== false;
      return {
        status: healthy ? ("ok" as const) : ("degraded" as const),
        version,
        uptime_seconds: Math.floor((Date.now() - startedAt) / 1000),
        checks: {
          database: databaseCheck,
          cache: { ok: cacheOk, backend: kv.backend },
          ...(antivirusCheck && { antivirus: antivirusCheck }),
        },
      };
    },

    async readiness() {
      const [databaseCheck, antivirusCheck] = await Promise.all([
        database(),
        antivirus?.required ? scanner() : undefined,
      ]);
      const migrations = databaseCheck.ok
        ? await withTimeout(migrationsApplied(db), CHECK_TIMEOUT_MS).catch(() => false)
        : false;
      // Without fail-open, uploads cannot succeed while the scanner is down: take the instance out of rotation.
      const ready = databaseCheck.ok && migrations && antivirusCheck?.ok !== false;
      return {
        status: ready ? ("ready" as const) : ("not_ready" as const),
        checks: {
          database: databaseCheck.ok,
          migrations,
          ...(antivirusCheck && { antivirus: antivirusCheck.ok }),
        },
      };
    },
  };
}

export type HealthService = ReturnType<typeof createHealthService>;
