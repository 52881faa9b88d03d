import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { diskStorage } from "../../src/platform/storage";

describe("disk storage", () => {
  test("a committed object is read whole or by range, under a sharded path; a discarded one leaves nothing", async () => {
    const root = mkdtempSync(join(tmpdir(), "rp-storage-"));
    const storage = diskStorage(root);
    const key = crypto.randomUUID();
    const pending = await storage.begin();
    await pending.write(new TextEncoder().encode("0123"));
    await pending.write(new TextEncoder().encode("456789"));
    await pending.commit(key);
    expect(existsSync(join(root, "objects", key.slice(0, 2), key.slice(2, 4), key))).toBe(true);
    expect(await storage.read(key).text()).toBe("0123456789");
    expect(await storage.read(key, { start: 3, end: 5 }).text()).toBe("345");
    expect(await storage.stat(key)).toEqual({ size: 10 });

    const dropped = await storage.begin();
    await dropped.write(new Uint8Array([1, 2, 3]));
    await dropped.discard();
    await dropped.discard();
    expect(readdirSync(join(root, "tmp"))).toEqual([]);

    await storage.delete(key, "../../etc/passwd");
    expect(await storage.stat(key)).toBeUndefined();
    expect(() => storage.read("../../etc/passwd")).toThrow();
  });

  test("the start-up sweep removes temporaries older than the cut-off, and only those", async () => {
    const root = mkdtempSync(join(tmpdir(), "rp-storage-"));
    const storage = diskStorage(root);
    const stale = await storage.begin();
    await stale.write(new Uint8Array([1]));
    const fresh = await storage.begin();
    await fresh.write(new Uint8Array([2]));
    const [first] = readdirSync(join(root, "tmp"));
    const twoHoursAgo = new Date(Date.now() - 2 * 3_600_000);
    utimesSync(join(root, "tmp", first as string), twoHoursAgo, twoHoursAgo);
    expect(await storage.sweep(3_600_000)).toBe(1);
    expect(readdirSync(join(root, "tmp"))).toHaveLength(1);
    await Promise.all([stale.discard(), fresh.discard()]);
    expect(await diskStorage(join(root, "never-used")).sweep(0)).toBe(0);
  });
});
