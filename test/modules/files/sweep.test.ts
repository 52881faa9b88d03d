/** The sweep of what dead uploads leave: periodic, and one instance at a time. */
import { describe, expect, test } from "bun:test";
import { createServices, openStorage } from "../../../src/app";
import { eventually, makeApp, TEST_DATABASE_URL, testDatabase } from "../../support";
import { backdateTemporary } from "./fixtures";

describe("sweep", () => {
  test("runs at start and then periodically: a temporary that dies after start is gone a round later", async () => {
    const ctx = await makeApp();
    const services = createServices(ctx.deps);
    const storage = openStorage(ctx.deps.config.storage);
    const stop = services.files.startSweep({
      everyMs: 200,
      orphanAgeMs: 3_600_000,
      exclusive: (work) => ctx.deps.db.whenFree(7_240_399, work),
    });
    try {
      // An upload cut short (its process killed) after the first round.
      await Bun.sleep(300);
      const dead = crypto.randomUUID();
      await (await storage.begin(dead)).close();
      await backdateTemporary(ctx, dead, new Date(Date.now() - 2 * 3_600_000));
      expect(await eventually(async () => (await storage.temporaries()).length === 0, 3000)).toBe(true);
    } finally {
      stop();
    }
  });

  // The embedded database has one process: nothing to exclude there.
  test.skipIf(!TEST_DATABASE_URL)(
    "one instance at a time: a round finds the lock taken and skips (PostgreSQL)",
    async () => {
      const db = await testDatabase();
      let release = () => {};
      const holding = db.whenFree(
        7_240_398,
        () => new Promise<string>((resolve) => (release = () => resolve("first"))),
      );
      await Bun.sleep(100);
      expect(await db.whenFree(7_240_398, async () => "second")).toBeUndefined();
      release();
      expect(await holding).toBe("first");
      expect(await db.whenFree(7_240_398, async () => "third")).toBe("third");
    },
  );
});
