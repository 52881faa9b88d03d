import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "../../platform/logger";
import { backupFileName, pruneBackups, writeNewFile } from "./files";

/**
 * Backs up every `intervalMs` into `dir`, keeping the newest `keep` archives. A failed backup is logged
 * and leaves nothing; the next one tries again. Returns what stops the schedule.
 */
export function startBackupSchedule(options: {
  intervalMs: number;
  keep: number;
  dir: string;
  archive: () => Promise<ReadableStream<Uint8Array>>;
  logger: Logger;
}): () => void {
  const { dir, keep, logger } = options;
  let running = false;
  const backUp = async () => {
    // A backup slower than the interval is not started twice.
    if (running) return;
    running = true;
    const startedAt = performance.now();
    const file = join(dir, backupFileName());
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const bytes = await writeNewFile(file, await options.archive());
      const removed = await pruneBackups(dir, keep);
      logger.info("scheduled backup written", {
        file,
        bytes,
        duration_ms: Math.round(performance.now() - startedAt),
        removed: removed.length,
      });
    } catch (error) {
      logger.error("scheduled backup failed", { file, error: (error as Error).message });
    } finally {
      running = false;
    }
  };
  const timer = setInterval(() => void backUp(), options.intervalMs);
  timer.unref();
  return () => clearInterval(timer);
}
