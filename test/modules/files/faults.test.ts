/**
 * Uploads under faults and hostile clients: a full disk, a storage that fails or loses bytes, a scanner
 * that is busy or slow clients around it, bodies that stall, and form fields that name Object's own keys.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { files } from "../../../src/db/schema";
import { markerScanner, type Scanner, ScannerBusyError } from "../../../src/platform/antivirus";
import {
  diskStorage,
  type ObjectStorage,
  type PendingObject,
  StorageFullError,
  StorageUnavailableError,
} from "../../../src/platform/storage";
import { CLAMD, EICAR, startClamd, type TestClamd } from "../../clamd";
import { API, call, expectError, makeApp, scratchDir, signUp, type TestContext } from "../../support";
import { NOTHING, SAMPLES, sha256, stored, upload } from "./fixtures";

/** A disk storage whose pending objects misbehave as `fault` says. */
function faultyStorage(dir: string, fault: (pending: PendingObject) => Partial<PendingObject>): ObjectStorage {
  const disk = diskStorage(dir);
  return {
    ...disk,
    async begin(key) {
      const pending = await disk.begin(key);
      return { ...pending, ...fault(pending) };
    },
  };
}

/** A multipart body whose file part trickles `size` bytes, `step` at a time every `everyMs`, until told to finish. */
function tricklingBody(size: number, step: number, everyMs: number) {
  const boundary = `trickle${crypto.randomUUID()}`;
  const encoder = new TextEncoder();
  let sent = 0;
  let finish = false;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      controller.enqueue(
        encoder.encode(
          `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\nContent-Type: text/plain\r\n\r\n`,
        ),
      );
    },
    async pull(controller) {
      if (sent >= size || finish) {
        controller.enqueue(encoder.encode(`${"z".repeat(Math.max(0, size - sent))}\r\n--${boundary}--\r\n`));
        controller.close();
        return;
      }
      await Bun.sleep(everyMs);
      controller.enqueue(encoder.encode("z".repeat(step)));
      sent += step;
    },
  });
  return { body, contentType: `multipart/form-data; boundary=${boundary}`, finish: () => (finish = true) };
}

const rowsOf = async (ctx: TestContext, ownerId: string) =>
  ctx.deps.db.orm.select().from(files).where(eq(files.ownerId, ownerId));

describe("a full disk", () => {
  const mount = scratchDir("rp-full-");
  let mounted = false;
  beforeAll(async () => {
    // The tests run as root here: an 8 MiB tmpfs is the disk that fills up.
    mounted = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "size=8m", "none", mount]).exitCode === 0;
  });
  afterAll(() => {
    if (mounted) Bun.spawnSync(["umount", "-l", mount]);
  });

  test("uploads past the space left get 507 INSUFFICIENT_STORAGE and leave nothing; every 201 holds all its bytes", async () => {
    expect(mounted).toBe(true);
    const uploadDir = join(mount, "uploads");
    mkdirSync(uploadDir);
    const ctx = await makeApp({ UPLOAD_DIR: uploadDir, STORAGE_URL: "", MAX_UPLOAD_SIZE: String(2 * 1024 * 1024) });
    const user = await signUp(ctx.app);
    const statuses: number[] = [];
    for (let i = 0; i < 14; i++) {
      const bytes = new Uint8Array(1024 * 1024).fill(65 + i);
      const res = await upload(ctx, bytes, { token: user.access, name: `big-${i}.txt` });
      statuses.push(res.status);
      if (res.status === 507) expectError(res, 507, "INSUFFICIENT_STORAGE");
      else expect(res.status).toBe(201);
    }
    expect(statuses.filter((status) => status === 201).length).toBeGreaterThanOrEqual(4);
    expect(statuses.filter((status) => status === 507).length).toBeGreaterThanOrEqual(4);
    const rows = await rowsOf(ctx, user.id);
    expect(rows).toHaveLength(statuses.filter((status) => status === 201).length);
    for (const row of rows) {
      const path = join(uploadDir, "objects", row.storageKey.slice(-2), row.storageKey.slice(-4, -2), row.storageKey);
      expect(statSync(path).size).toBe(1024 * 1024);
      expect(sha256(readFileSync(path))).toBe(row.fileHash);
    }
    expect((await stored(ctx)).temporaries).toBe(0);
  }, 60_000);
});

describe("a storage that fails", () => {
  const body = new Uint8Array(300_000).fill(97);

  /** The multipart body of one file, sent in 64 KiB chunks as a network would. */
  async function chunkedForm(bytes: Uint8Array) {
    const form = new FormData();
    form.append("file", new File([bytes], "a.txt", { type: "text/plain" }));
    const encoded = new Response(form);
    // Read before the body: Bun's Response forgets it once the body is consumed.
    const contentType = encoded.headers.get("content-type") as string;
    const whole = new Uint8Array(await encoded.arrayBuffer());
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < whole.byteLength; at += 65_536) controller.enqueue(whole.slice(at, at + 65_536));
        controller.close();
      },
    });
    return { body, contentType };
  }

  test("a write failing at the Nth call: 507 for a full disk, 503 for a storage fault; no row, no bytes", async () => {
    for (const [failAt, failure, status] of [
      [1, () => new StorageFullError(new Error("ENOSPC")), 507],
      [3, () => new StorageFullError(new Error("ENOSPC")), 507],
      [5, () => new StorageUnavailableError("write", new Error("EIO")), 503],
    ] as const) {
      let calls = 0;
      const dir = scratchDir("rp-faulty-");
      const storage = faultyStorage(dir, (pending) => ({
        async write(chunk) {
          if (++calls === failAt) throw failure();
          return pending.write(chunk);
        },
      }));
      const ctx = await makeApp({ UPLOAD_DIR: dir, STORAGE_URL: "" }, { storage });
      const user = await signUp(ctx.app);
      const form = await chunkedForm(body);
      const res = await call(ctx.app, "POST", `${API}/uploads`, {
        body: form.body,
        token: user.access,
        headers: { "content-type": form.contentType },
      });
      expect({ failAt, status: res.status }).toEqual({ failAt, status });
      expect(await rowsOf(ctx, user.id)).toEqual([]);
      expect(await stored(ctx)).toEqual(NOTHING);
    }
  });

  test("bytes lost on the way (fewer stored than received): 503, no row, no bytes", async () => {
    const dir = scratchDir("rp-short-");
    const storage = faultyStorage(dir, (pending) => ({
      async close() {
        return (await pending.close()) - 1;
      },
    }));
    const ctx = await makeApp({ UPLOAD_DIR: dir, STORAGE_URL: "" }, { storage });
    const user = await signUp(ctx.app);
    const res = await upload(ctx, body, { token: user.access });
    expectError(res, 503, "SERVICE_UNAVAILABLE");
    expect(res.headers.get("retry-after")).toBe("5");
    expect(await stored(ctx)).toEqual(NOTHING);
  });
});

describe("form fields", () => {
  test("is_public is true or false, never a key of Object.prototype (with a quota set too)", async () => {
    const ctx = await makeApp({ USER_STORAGE_QUOTA: "1000000" });
    const user = await signUp(ctx.app);
    for (const flag of ["__proto__", "constructor", "toString", "valueOf", "hasOwnProperty"]) {
      const res = await upload(ctx, SAMPLES.text, { token: user.access, isPublic: flag });
      expectError(res, 422, "VALIDATION_ERROR", ["is_public"]);
    }
    expect((await upload(ctx, SAMPLES.text, { token: user.access, isPublic: "1" })).json.is_public).toBe(true);
    expect((await stored(ctx, user.id)).rows).toBe(1);
  });
});

describe("bodies that stall", () => {
  test("no byte for UPLOAD_IDLE_SECONDS: 408 REQUEST_TIMEOUT with Connection: close, nothing stored", async () => {
    const ctx = await makeApp({ UPLOAD_IDLE_SECONDS: "1" });
    const user = await signUp(ctx.app);
    const stalled = tricklingBody(10_000, 100, 60_000);
    const res = await call(ctx.app, "POST", `${API}/uploads`, {
      body: stalled.body,
      token: user.access,
      headers: { "content-type": stalled.contentType },
    });
    expectError(res, 408, "REQUEST_TIMEOUT");
    expect(res.headers.get("connection")).toBe("close");
    expect(await stored(ctx)).toEqual(NOTHING);
  });

  test("a body that keeps moving lives past the idle bound; one past UPLOAD_TIMEOUT_SECONDS does not", async () => {
    const ctx = await makeApp({ UPLOAD_IDLE_SECONDS: "1", UPLOAD_TIMEOUT_SECONDS: "3" });
    const user = await signUp(ctx.app);
    const moving = tricklingBody(2_000, 200, 250);
    const ok = await call(ctx.app, "POST", `${API}/uploads`, {
      body: moving.body,
      token: user.access,
      headers: { "content-type": moving.contentType },
    });
    expect(ok.status).toBe(201);
    expect(ok.json.file_size).toBe(2_000);
    const endless = tricklingBody(1_000_000, 100, 200);
    const late = await call(ctx.app, "POST", `${API}/uploads`, {
      body: endless.body,
      token: user.access,
      headers: { "content-type": endless.contentType },
    });
    expectError(late, 408, "REQUEST_TIMEOUT");
    expect((await stored(ctx, user.id)).rows).toBe(1);
  }, 20_000);
});

describe("the virus scanner", () => {
  test("busy (every connection taken for the whole wait) is a 503 with Retry-After, even with fail-open", async () => {
    const busy: Scanner = {
      scan: async () => {
        throw new ScannerBusyError("every connection stayed busy");
      },
      ping: async () => 1,
    };
    const ctx = await makeApp({ CLAMAV_URL: "tcp://127.0.0.1:1", CLAMAV_FAIL_OPEN: "true" }, { scanner: busy });
    const user = await signUp(ctx.app);
    const res = await upload(ctx, SAMPLES.text, { token: user.access });
    expectError(res, 503, "SERVICE_UNAVAILABLE");
    expect(res.headers.get("retry-after")).toBe("5");
    expect(await stored(ctx)).toEqual(NOTHING);
  });

  test("a user's own trickling uploads hold no scanner slot: the EICAR upload beside them is still scanned (fail-open on)", async () => {
    const ctx = await makeApp(
      { CLAMAV_URL: "tcp://127.0.0.1:1", CLAMAV_FAIL_OPEN: "true", CLAMAV_CONNECTIONS: "2" },
      { scanner: markerScanner({ "Eicar-Test-Signature": EICAR }) },
    );
    const user = await signUp(ctx.app);
    const slow = [tricklingBody(50_000, 500, 100), tricklingBody(50_000, 500, 100)];
    const holding = slow.map((s) =>
      call(ctx.app, "POST", `${API}/uploads`, {
        body: s.body,
        token: user.access,
        headers: { "content-type": s.contentType },
      }),
    );
    const eicar = await upload(ctx, EICAR, { token: user.access, name: "eicar.txt" });
    expectError(eicar, 422, "MALWARE_DETECTED");
    for (const s of slow) s.finish();
    expect((await Promise.all(holding)).map((res) => res.status)).toEqual([201, 201]);
  });

  describe.skipIf(!CLAMD)("with a real clamd (4 connections)", () => {
    let clamd: TestClamd;
    beforeAll(async () => {
      clamd = await startClamd();
    });
    afterAll(async () => {
      await clamd?.dispose();
    });

    test("2 accounts × 2 trickling uploads: a third user's 12-byte upload still completes in under 2 s", async () => {
      const ctx = await makeApp({ CLAMAV_URL: clamd.url, CLAMAV_CONNECTIONS: "4", CLAMAV_TIMEOUT_MS: "30000" });
      const [alice, bob, victim] = [await signUp(ctx.app), await signUp(ctx.app), await signUp(ctx.app)];
      const trickles = [alice, alice, bob, bob].map((who) => ({ who, body: tricklingBody(200_000, 400, 100) }));
      const holding = trickles.map(({ who, body }) =>
        call(ctx.app, "POST", `${API}/uploads`, {
          body: body.body,
          token: who.access,
          headers: { "content-type": body.contentType },
        }),
      );
      await Bun.sleep(300);
      const started = performance.now();
      const res = await upload(ctx, "twelve bytes", { token: victim.access });
      const took = performance.now() - started;
      expect(res.status).toBe(201);
      expect(took).toBeLessThan(2000);
      for (const { body } of trickles) body.finish();
      expect((await Promise.all(holding)).map((r) => r.status)).toEqual([201, 201, 201, 201]);
    }, 30_000);
  });
});
