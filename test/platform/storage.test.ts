import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { diskStorage } from "../../src/platform/storage";

describe("disk storage", () => {
  test("written bytes stay temporary until committed; then read whole or by range, under a sharded path", async () => {
    const root = mkdtempSync(join(tmpdir(), "rp-storage-"));
    const storage = diskStorage(root);
    const key = crypto.randomUUID();
    const pending = await storage.begin(key);
    await pending.write(new TextEncoder().encode("0123"));
    await pending.write(new TextEncoder().encode("456789"));
    await pending.close();
    expect(await storage.stat(key)).toBeUndefined();
    expect((await storage.temporaries()).map((t) => t.key)).toEqual([key]);
    await storage.commit(key);
    expect(existsSync(join(root, "objects", key.slice(-2), key.slice(-4, -2), key))).toBe(true);
    expect(await storage.read(key).text()).toBe("0123456789");
    expect(await storage.read(key, { start: 3, end: 5 }).text()).toBe("345");
    expect(await storage.stat(key)).toEqual({ size: 10 });
    expect(await storage.temporaries()).toEqual([]);

    const dropped = await storage.begin(crypto.randomUUID());
    await dropped.write(new Uint8Array([1, 2, 3]));
    await dropped.discard();
    await dropped.discard();
    expect(readdirSync(join(root, "tmp"))).toEqual([]);

    await storage.delete(key, "../../etc/passwd");
    expect(await storage.stat(key)).toBeUndefined();
    expect(() => storage.read("../../etc/passwd")).toThrow();
    await expect(storage.begin("../escape")).rejects.toThrow();
    expect(await diskStorage(join(root, "never-used")).temporaries()).toEqual([]);
  });
});
