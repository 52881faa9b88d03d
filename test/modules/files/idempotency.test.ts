/**
 * `Idempotency-Key` on POST /uploads (draft-ietf-httpapi-idempotency-key-header): a retry of an upload that
 * was stored gets that upload's File, never a copy; the key with other bytes is a 422; keys last 24 hours.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import { eq, sql } from "drizzle-orm";
import { createServices } from "../../../src/app";
import { idempotencyKeys } from "../../../src/db/schema";
import { markerScanner, type Scanner, ScannerUnavailableError } from "../../../src/platform/antivirus";
import { API, call, expectError, makeApp, signUp, type TestContext } from "../../support";
import { NOTHING, SAMPLES, sha256, stored } from "./fixtures";

// The preload's setDefaultTimeout reaches only the first file of a run (Bun 1.4.5): this file sets its own.
setDefaultTimeout(30_000);

const KEY = '"8e03978e-40d5-43e8-bc93-6894a57f9324"';

/** A multipart upload of `bytes` as `name`, with an Idempotency-Key header when `key` is given. */
function send(ctx: TestContext, token: string, bytes: Uint8Array | string, key?: string, name = "paper.txt") {
  const form = new FormData();
  form.append("file", new File([bytes], name, { type: "text/plain" }));
  return call(ctx.app, "POST", `${API}/uploads`, {
    body: form,
    token,
    headers: key === undefined ? {} : { "idempotency-key": key },
  });
}

const keyRows = (ctx: TestContext) => ctx.deps.db.orm.select().from(idempotencyKeys);

describe("Idempotency-Key on uploads", () => {
  test("a retry with the same key and bytes gets the first File with 201, and nothing is stored twice", async () => {
    const ctx = await makeApp();
    const user = await signUp(ctx.app);
    const first = await send(ctx, user.access, SAMPLES.text, KEY);
    expect(first.status).toBe(201);
    // Even under another name: the bytes are what is compared.
    const retry = await send(ctx, user.access, SAMPLES.text, KEY, "paper (1).txt");
    expect([retry.status, retry.json]).toEqual([201, first.json]);
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
    expect(await keyRows(ctx)).toEqual([
      {
        userId: user.id,
        key: "8e03978e-40d5-43e8-bc93-6894a57f9324",
        fileId: first.json.id,
        createdAt: expect.any(Date),
      },
    ]);
    // Without a key, the same bytes are another file, as before.
    expect((await send(ctx, user.access, SAMPLES.text)).status).toBe(201);
    expect((await stored(ctx)).rows).toBe(2);
  });

  test("the same key with other bytes is a 422 naming the header, and nothing is stored", async () => {
    const ctx = await makeApp();
    const user = await signUp(ctx.app);
    const first = await send(ctx, user.access, "first version\n", KEY);
    const other = await send(ctx, user.access, "second version\n", KEY);
    expectError(other, 422, "VALIDATION_ERROR", ["Idempotency-Key"]);
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
    const [row] = await keyRows(ctx);
    expect(row?.fileId).toBe(first.json.id);
  });

  test("keys are per user: another user's same key is a new upload of theirs", async () => {
    const ctx = await makeApp();
    const [alice, bob] = [await signUp(ctx.app), await signUp(ctx.app)];
    const mine = await send(ctx, alice.access, SAMPLES.text, KEY);
    const theirs = await send(ctx, bob.access, SAMPLES.text, KEY);
    expect([mine.status, theirs.status]).toEqual([201, 201]);
    expect(theirs.json.id).not.toBe(mine.json.id);
    expect(theirs.json.owner_id).toBe(bob.id);
    expect((await stored(ctx)).rows).toBe(2);
  });

  test("retries racing the original all get one File, whichever finishes first; other bytes racing get 422", async () => {
    const ctx = await makeApp();
    const user = await signUp(ctx.app);
    const answers = await Promise.all(Array.from({ length: 6 }, () => send(ctx, user.access, SAMPLES.text, KEY)));
    expect(answers.map((answer) => answer.status)).toEqual([201, 201, 201, 201, 201, 201]);
    expect(new Set(answers.map((answer) => answer.json.id)).size).toBe(1);
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });

    const other = '"another-key"';
    const bodies = ["one\n", "two\n", "one\n"];
    const mixed = await Promise.all(bodies.map((body) => send(ctx, user.access, body, other)));
    // Whichever won, the same bytes get its File and other bytes a 422: never two files under one key.
    const winner = mixed.find((answer) => answer.status === 201)?.json;
    expect(mixed.map((answer) => answer.status)).toEqual(
      bodies.map((body) => (sha256(body) === winner?.file_hash ? 201 : 422)),
    );
    expect(await stored(ctx)).toEqual({ objects: 2, temporaries: 0, rows: 2 });
  });

  test("a key lasts 24 hours: after that the same key stores anew (and names the new file); old keys are pruned", async () => {
    const ctx = await makeApp();
    const user = await signUp(ctx.app);
    const first = await send(ctx, user.access, SAMPLES.text, KEY);
    const dayAgo = new Date(Date.now() - 24 * 3_600_000 - 1000);
    await ctx.deps.db.orm.update(idempotencyKeys).set({ createdAt: dayAgo });
    const later = await send(ctx, user.access, SAMPLES.text, KEY);
    expect(later.status).toBe(201);
    expect(later.json.id).not.toBe(first.json.id);
    expect((await keyRows(ctx)).map((row) => row.fileId)).toEqual([later.json.id]);

    const another = await send(ctx, user.access, SAMPLES.text, '"kept"');
    await ctx.deps.db.orm
      .update(idempotencyKeys)
      .set({ createdAt: dayAgo })
      .where(eq(idempotencyKeys.fileId, later.json.id));
    expect(await createServices(ctx.deps).files.prune()).toEqual({ links: 0, keys: 1 });
    expect((await keyRows(ctx)).map((row) => row.fileId)).toEqual([another.json.id]);
  });

  test("a failed first upload leaves no key; a deleted file takes its key with it", async () => {
    const ctx = await makeApp(
      { CLAMAV_URL: "tcp://127.0.0.1:1" },
      { scanner: markerScanner({ "Test.Marker": "EVIL" }) },
    );
    const user = await signUp(ctx.app);
    expectError(await send(ctx, user.access, "an EVIL paper\n", KEY), 422, "MALWARE_DETECTED");
    expect(await keyRows(ctx)).toEqual([]);
    const clean = await send(ctx, user.access, "a clean paper\n", KEY);
    expect(clean.status).toBe(201);

    expect((await call(ctx.app, "DELETE", `${API}/uploads/${clean.json.id}`, { token: user.access })).status).toBe(204);
    expect(await keyRows(ctx)).toEqual([]);
    const again = await send(ctx, user.access, "a clean paper\n", KEY);
    expect(again.status).toBe(201);
    expect(again.json.id).not.toBe(clean.json.id);
  });

  test("the key is written in the file's transaction: when it cannot be, there is no file (nor bytes)", async () => {
    const ctx = await makeApp();
    const user = await signUp(ctx.app);
    const { db } = ctx.deps;
    await db.orm.execute(sql`create or replace function refuse_idempotency_keys() returns trigger language plpgsql as $$
      begin raise exception 'key refused'; end $$`);
    await db.orm.execute(sql`create trigger refuse_idempotency_keys before insert on idempotency_keys
      for each row execute function refuse_idempotency_keys()`);
    try {
      expectError(await send(ctx, user.access, SAMPLES.text, KEY), 500, "INTERNAL_ERROR");
    } finally {
      await db.orm.execute(sql`drop trigger refuse_idempotency_keys on idempotency_keys`);
      await db.orm.execute(sql`drop function refuse_idempotency_keys()`);
    }
    expect(await stored(ctx)).toEqual(NOTHING);
  });

  test("a retry is answered at the quota, and without a scan (the scanner may be down meanwhile)", async () => {
    let scannerUp = true;
    const clean = markerScanner({});
    const scanner: Scanner = {
      scan: (bytes, owner) =>
        scannerUp ? clean.scan(bytes, owner) : Promise.reject(new ScannerUnavailableError("down")),
      ping: async () => 0,
    };
    const ctx = await makeApp(
      { USER_STORAGE_QUOTA: String(SAMPLES.text.byteLength), CLAMAV_URL: "tcp://127.0.0.1:1" },
      { scanner },
    );
    const user = await signUp(ctx.app);
    const first = await send(ctx, user.access, SAMPLES.text, KEY);
    expect(first.status).toBe(201);
    scannerUp = false;
    const retry = await send(ctx, user.access, SAMPLES.text, KEY);
    expect([retry.status, retry.json]).toEqual([201, first.json]);
    // A new upload is refused, as it must be.
    expectError(await send(ctx, user.access, SAMPLES.text, '"new"'), 413, "PAYLOAD_TOO_LARGE");
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
  });

  test("the header is a quoted string (escapes allowed) or a bare token of visible ASCII; anything else is a 422", async () => {
    const ctx = await makeApp();
    const user = await signUp(ctx.app);
    const quoted = await send(ctx, user.access, "a\n", '"with \\"quotes\\" and \\\\"');
    expect(quoted.status).toBe(201);
    const [row] = await keyRows(ctx);
    expect(row?.key).toBe('with "quotes" and \\');
    expect((await send(ctx, user.access, "b\n", "bare-token_1")).status).toBe(201);
    for (const bad of ['""', '"unterminated', `"${"k".repeat(256)}"`, '"tab\there"', "two words", '"a"b']) {
      expectError(await send(ctx, user.access, "c\n", bad), 422, "VALIDATION_ERROR", ["Idempotency-Key"]);
    }
    expect((await stored(ctx)).rows).toBe(2);
  });
});
