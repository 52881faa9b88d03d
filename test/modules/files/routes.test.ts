import { describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { createServices, openStorage } from "../../../src/app";
import { files } from "../../../src/db/schema";
import { cleanFilename } from "../../../src/modules/files/model";
import { StorageUnavailableError } from "../../../src/platform/storage";
import { API, call, expectError, makeApp, promote, signUp, type TestContext } from "../../support";
import { backdateTemporary, NOTHING, SAMPLES, sha256, stored, upload } from "./fixtures";

async function withUser(overrides: Record<string, string> = {}) {
  const ctx = await makeApp(overrides);
  const user = await signUp(ctx.app);
  return { ctx, user };
}

const download = (ctx: TestContext, id: string, options: { token?: string; headers?: Record<string, string> } = {}) =>
  call(ctx.app, "GET", `${API}/uploads/${id}/download`, options);

describe("upload", () => {
  test("201 with the metadata; the bytes come back identical, hashed with SHA-256", async () => {
    const { ctx, user } = await withUser();
    const res = await upload(ctx, SAMPLES.text, { name: "notes.txt", token: user.access });
    expect(res.status).toBe(201);
    expect(res.json).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      filename: "notes.txt",
      content_type: "text/plain",
      file_size: SAMPLES.text.byteLength,
      file_hash: sha256(SAMPLES.text),
      is_public: false,
      uploaded_at: expect.stringMatching(/Z$/),
      owner_id: user.id,
    });
    const bytes = await download(ctx, res.json.id, { token: user.access });
    expect(bytes.status).toBe(200);
    expect(bytes.text).toBe(new TextDecoder().decode(SAMPLES.text));
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
    // The trailing-slash path is the same operation.
    const form = new FormData();
    form.append("file", new File([SAMPLES.pdf], "paper.pdf", { type: "application/pdf" }));
    expect((await call(ctx.app, "POST", `${API}/uploads/`, { body: form, token: user.access })).status).toBe(201);
  });

  test("exactly MAX_UPLOAD_SIZE is stored; one byte more is 413 and nothing is kept", async () => {
    const { ctx, user } = await withUser({ MAX_UPLOAD_SIZE: "4096" });
    expect((await upload(ctx, "a".repeat(4096), { token: user.access })).status).toBe(201);
    const over = await upload(ctx, "a".repeat(4097), { token: user.access });
    expectError(over, 413, "PAYLOAD_TOO_LARGE");
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
  });

  test("a type not allowed, or content that does not match the declared type → 415, nothing kept", async () => {
    const { ctx, user } = await withUser();
    const refused = [
      { bytes: SAMPLES.png, type: "application/pdf", name: "paper.pdf" },
      { bytes: SAMPLES.exe, type: "application/x-msdownload", name: "setup.exe" },
      { bytes: SAMPLES.invalidUtf8, type: "text/plain", name: "notes.txt" },
      { bytes: SAMPLES.text, type: "image/png", name: "chart.png" },
    ];
    for (const file of refused) {
      expectError(await upload(ctx, file.bytes, { ...file, token: user.access }), 415, "UNSUPPORTED_MEDIA_TYPE");
    }
    expect(await stored(ctx)).toEqual(NOTHING);
    for (const [bytes, type] of [
      [SAMPLES.png, "image/png"],
      [SAMPLES.jpeg, "image/jpeg"],
      [SAMPLES.pdf, "application/pdf"],
    ] as const) {
      expect((await upload(ctx, bytes, { type, name: "x", token: user.access })).status).toBe(201);
    }
  });

  test("text is checked as UTF-8 across chunk boundaries: split characters pass, a cut or bad byte does not", async () => {
    const { ctx, user } = await withUser({ MAX_UPLOAD_SIZE: String(8 * 1024 * 1024) });
    const text = "✓é𝄞a".repeat(400_000); // 3-, 2- and 4-byte characters across many chunk boundaries
    expect((await upload(ctx, text, { token: user.access })).status).toBe(201);
    const bytes = new TextEncoder().encode(text);
    const cut = new Uint8Array([...bytes.subarray(0, 100_000), 0xe2, 0x9c]); // ends inside a character
    expectError(await upload(ctx, cut, { token: user.access }), 415, "UNSUPPORTED_MEDIA_TYPE");
    const corrupt = bytes.slice();
    corrupt[70_001] = 0xff;
    expectError(await upload(ctx, corrupt, { token: user.access }), 415, "UNSUPPORTED_MEDIA_TYPE");
  });

  test("malformed multipart → 400, no file part → 422, not multipart → 415; nothing kept", async () => {
    const { ctx, user } = await withUser();
    const raw = (body: string, contentType: string) =>
      call(ctx.app, "POST", `${API}/uploads`, { body, token: user.access, headers: { "content-type": contentType } });
    const part =
      '--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhello\r\n';
    expectError(await raw(`${part}--B--\r\n`, "multipart/form-data"), 400, "BAD_REQUEST");
    expectError(await raw(`${part}--B--\r\n`, "multipart/form-data; boundary=OTHER"), 400, "BAD_REQUEST");
    expectError(await raw(part, "multipart/form-data; boundary=B"), 400, "BAD_REQUEST");
    const fieldOnly = '--B\r\nContent-Disposition: form-data; name="is_public"\r\n\r\ntrue\r\n--B--\r\n';
    expectError(await raw(fieldOnly, "multipart/form-data; boundary=B"), 422, "VALIDATION_ERROR", ["file"]);
    expectError(await raw("hello", "text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE");
    const badFlag = await upload(ctx, SAMPLES.text, { isPublic: "maybe", token: user.access });
    expectError(badFlag, 422, "VALIDATION_ERROR", ["is_public"]);
    expect(await stored(ctx)).toEqual(NOTHING);
    expectError(await upload(ctx, SAMPLES.text), 401, "AUTHENTICATION_REQUIRED");
  });

  test("file names are cleaned for display and never reach the storage key", async () => {
    const { ctx, user } = await withUser();
    const emoji = "📄".repeat(75); // 300 bytes of UTF-8
    const cases: [string, (name: string) => void][] = [
      ["../../etc/passwd", (name) => expect(name).toBe("passwd")],
      ["C:\\Users\\ada\\paper.txt", (name) => expect(name).toBe("paper.txt")],
      ["report\u202etxt.exe", (name) => expect(name).toBe("reporttxt.exe")],
      ["tab\there.txt", (name) => expect(name).toBe("tabhere.txt")],
      ["..", (name) => expect(name).toBe("file")],
      [
        emoji,
        (name) => {
          expect(new TextEncoder().encode(name).byteLength).toBeLessThanOrEqual(255);
          expect(name).toBe("📄".repeat(63));
        },
      ],
      ["Résumé – 論文.txt", (name) => expect(name).toBe("Résumé – 論文.txt")],
    ];
    for (const [raw, check] of cases) {
      const res = await upload(ctx, SAMPLES.text, { name: raw, token: user.access });
      expect(res.status).toBe(201);
      check(res.json.filename);
    }
    // Control characters cannot stand raw in a part header (400), but RFC 5987 can carry them encoded.
    const encoded =
      "--B\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''bell%07%00esc%1B.txt\r\n" +
      "Content-Type: text/plain\r\n\r\nhello\r\n--B--\r\n";
    const res = await call(ctx.app, "POST", `${API}/uploads`, {
      body: encoded,
      token: user.access,
      headers: { "content-type": "multipart/form-data; boundary=B" },
    });
    expect(res.status).toBe(201);
    expect(res.json.filename).toBe("bellesc.txt");
  });

  test("two users uploading identical bytes at once, and 20 uploads of one user at once", async () => {
    const { ctx, user } = await withUser();
    const other = await signUp(ctx.app);
    const pair = await Promise.all(
      [user, other].map((who) => upload(ctx, SAMPLES.pdf, { type: "application/pdf", token: who.access })),
    );
    expect(pair.map((r) => r.status)).toEqual([201, 201]);
    expect(pair[0]?.json.id).not.toBe(pair[1]?.json.id);
    expect(pair[0]?.json.file_hash).toBe(pair[1]?.json.file_hash as string);
    const burst = await Promise.all(
      Array.from({ length: 20 }, (_, i) => upload(ctx, `note ${i}\n`, { name: `n${i}.txt`, token: user.access })),
    );
    expect(burst.every((r) => r.status === 201)).toBe(true);
    expect(await stored(ctx, user.id)).toEqual({ objects: 22, temporaries: 0, rows: 21 });
    const listed = await call(ctx.app, "GET", `${API}/uploads?limit=100`, { token: user.access });
    expect(listed.json.total).toBe(21);
  });

  test("RATE_LIMIT_UPLOAD per user; USER_STORAGE_QUOTA → 413 naming the quota", async () => {
    const limited = await withUser({ RATE_LIMIT_ENABLED: "true", RATE_LIMIT_UPLOAD: "2/minute" });
    for (let i = 0; i < 2; i++)
      expect((await upload(limited.ctx, SAMPLES.text, { token: limited.user.access })).status).toBe(201);
    expectError(await upload(limited.ctx, SAMPLES.text, { token: limited.user.access }), 429, "RATE_LIMITED");
    const other = await signUp(limited.ctx.app);
    expect((await upload(limited.ctx, SAMPLES.text, { token: other.access })).status).toBe(201);

    const quota = await withUser({ USER_STORAGE_QUOTA: "100" });
    expect((await upload(quota.ctx, "a".repeat(60), { token: quota.user.access })).status).toBe(201);
    const over = await upload(quota.ctx, "b".repeat(41), { token: quota.user.access });
    expectError(over, 413, "PAYLOAD_TOO_LARGE");
    expect(over.json.error.message).toContain("100 bytes");
    expect(await stored(quota.ctx, quota.user.id)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
    expect((await upload(quota.ctx, "c".repeat(40), { token: quota.user.access })).status).toBe(201);
  });
});

describe("download", () => {
  test("headers: type as stored, attachment with ASCII and RFC 5987 names, length, ETag, sandbox, private cache", async () => {
    const { ctx, user } = await withUser();
    const up = await upload(ctx, SAMPLES.pdf, { name: "draft.pdf", type: "application/pdf", token: user.access });
    // Renamed to what a multipart header could not carry as is.
    await call(ctx.app, "PATCH", `${API}/uploads/${up.json.id}`, {
      token: user.access,
      body: { filename: 'Résumé "final".pdf' },
    });
    const res = await download(ctx, up.json.id, { token: user.access });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("application/pdf");
    expect(res.headers.get("content-length")).toBe(String(SAMPLES.pdf.byteLength));
    expect(res.headers.get("content-disposition")).toBe(
      `attachment; filename="R_sum_ _final_.pdf"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%22final%22.pdf`,
    );
    expect(res.headers.get("etag")).toBe(`"${sha256(SAMPLES.pdf)}"`);
    expect(res.headers.get("accept-ranges")).toBe("bytes");
    expect(res.headers.get("cache-control")).toStartWith("private");
    expect(res.headers.get("content-security-policy")).toBe("sandbox");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    const again = await download(ctx, up.json.id, {
      token: user.access,
      headers: { "if-none-match": res.headers.get("etag") as string },
    });
    expect(again.status).toBe(304);
    expect(again.text).toBe("");
  });

  test("ranges: first byte, last byte, open-ended, past the end (416), several (the whole file)", async () => {
    const { ctx, user } = await withUser();
    const text = "0123456789";
    const id = (await upload(ctx, text, { token: user.access })).json.id;
    const ranged = (range: string) => download(ctx, id, { token: user.access, headers: { range } });
    const cases: [string, number, string, string | null][] = [
      ["bytes=0-0", 206, "0", "bytes 0-0/10"],
      ["bytes=-1", 206, "9", "bytes 9-9/10"],
      ["bytes=5-", 206, "56789", "bytes 5-9/10"],
      ["bytes=8-20", 206, "89", "bytes 8-9/10"],
      ["bytes=0-1,4-5", 200, text, null],
      ["items=0-1", 200, text, null],
      // Invalid (last before first), so ignored: even when the first byte is past the end.
      ["bytes=3-2", 200, text, null],
      ["bytes=12-11", 200, text, null],
    ];
    for (const [range, status, body, contentRange] of cases) {
      const res = await ranged(range);
      expect({ range, status: res.status, body: res.text, contentRange: res.headers.get("content-range") }).toEqual({
        range,
        status,
        body,
        contentRange,
      });
      expect(res.headers.get("content-length")).toBe(String(body.length));
    }
    const beyond = await ranged("bytes=10-");
    expectError(beyond, 416, "RANGE_NOT_SATISFIABLE");
    expect(beyond.headers.get("content-range")).toBe("bytes */10");
  });
});

describe("who sees what", () => {
  test("another user's private file is 404 everywhere; a public one is readable without a token", async () => {
    const { ctx, user } = await withUser();
    const stranger = await signUp(ctx.app);
    const id = (await upload(ctx, SAMPLES.text, { token: user.access })).json.id;
    const asStranger = { token: stranger.access };
    for (const [method, path, body] of [
      ["GET", `/uploads/${id}`, undefined],
      ["GET", `/uploads/${id}/download`, undefined],
      ["PATCH", `/uploads/${id}`, { filename: "mine.txt" }],
      ["DELETE", `/uploads/${id}`, undefined],
    ] as const) {
      expectError(await call(ctx.app, method, `${API}${path}`, { ...asStranger, body }), 404, "NOT_FOUND");
      expectError(
        await call(ctx.app, method, `${API}${path}`, { body }),
        method === "GET" ? 404 : 401,
        method === "GET" ? "NOT_FOUND" : "AUTHENTICATION_REQUIRED",
      );
    }

    const published = await call(ctx.app, "PATCH", `${API}/uploads/${id}`, {
      token: user.access,
      body: { is_public: true },
    });
    expect(published.json.is_public).toBe(true);
    expect((await call(ctx.app, "GET", `${API}/uploads/${id}`)).status).toBe(200);
    const anonymous = await download(ctx, id);
    expect(anonymous.status).toBe(200);
    expect(anonymous.headers.get("cache-control")).toStartWith("public");
    // Readable is not writable.
    expectError(
      await call(ctx.app, "PATCH", `${API}/uploads/${id}`, { ...asStranger, body: { filename: "x" } }),
      403,
      "PERMISSION_DENIED",
    );
    expectError(await call(ctx.app, "DELETE", `${API}/uploads/${id}`, asStranger), 403, "PERMISSION_DENIED");
    // A bad token is refused even where none is needed.
    expectError(await download(ctx, id, { token: "garbage" }), 401, "INVALID_TOKEN");

    await call(ctx.app, "PATCH", `${API}/uploads/${id}`, { token: user.access, body: { is_public: false } });
    expectError(await download(ctx, id), 404, "NOT_FOUND");
  });

  test("list: own files with filters, sort and a true total; an admin may pass owner_id or all=true", async () => {
    const { ctx, user } = await withUser();
    const other = await signUp(ctx.app);
    await upload(ctx, "aaaa", { name: "alpha.txt", token: user.access });
    await upload(ctx, SAMPLES.pdf, { name: "beta.pdf", type: "application/pdf", token: user.access });
    await upload(ctx, "c", { name: "gamma.txt", token: user.access });
    await upload(ctx, "theirs", { name: "theirs.txt", token: other.access });
    const list = (query: string, token = user.access) => call(ctx.app, "GET", `${API}/uploads${query}`, { token });
    const names = (res: Awaited<ReturnType<typeof list>>) =>
      res.json.items.map((f: { filename: string }) => f.filename);

    const mine = await list("?sort=filename&order=asc");
    expect(names(mine)).toEqual(["alpha.txt", "beta.pdf", "gamma.txt"]);
    expect(mine.json.total).toBe(3);
    expect(names(await list("?q=ALP"))).toEqual(["alpha.txt"]);
    expect(names(await list("?content_type=application/pdf"))).toEqual(["beta.pdf"]);
    expect(names(await list("?sort=file_size&order=desc&limit=1"))).toEqual(["beta.pdf"]);
    expect((await list("?limit=1")).json.total).toBe(3);
    expectError(await list(`?owner_id=${other.id}`), 403, "PERMISSION_DENIED");
    expectError(await list("?all=true"), 403, "PERMISSION_DENIED");

    const admin = await signUp(ctx.app);
    await promote(ctx.deps.db, admin.id);
    expect(names(await list(`?owner_id=${other.id}`, admin.access))).toEqual(["theirs.txt"]);
    expect((await list("?all=true", admin.access)).json.total).toBe(4);
  });

  test("a user at the quota is refused before a big body is read; a small one is read and refused at the insert", async () => {
    const { ctx, user } = await withUser({ USER_STORAGE_QUOTA: "100" });
    expect((await upload(ctx, "q".repeat(100), { token: user.access })).status).toBe(201);
    let pulled = 0;
    const head = `--B\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n`;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(head));
      },
      pull(controller) {
        pulled++;
        controller.enqueue(new Uint8Array(64 * 1024).fill(0x61));
        if (pulled === 16) {
          controller.enqueue(new TextEncoder().encode("\r\n--B--\r\n"));
          controller.close();
        }
      },
    });
    const big = await call(ctx.app, "POST", `${API}/uploads`, {
      body,
      token: user.access,
      headers: {
        "content-type": "multipart/form-data; boundary=B",
        "content-length": String(head.length + 16 * 65_536 + 10),
      },
    });
    expectError(big, 413, "PAYLOAD_TOO_LARGE");
    expect(big.json.error.message).toContain("quota");
    expect(pulled).toBeLessThan(2);
    const small = await upload(ctx, "s", { token: user.access });
    expectError(small, 413, "PAYLOAD_TOO_LARGE");
    expect(await stored(ctx, user.id)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
  });

  test("uploads racing for the last of a quota: exactly as many fit as the quota holds, from a user's first upload on", async () => {
    const { ctx, user } = await withUser({ USER_STORAGE_QUOTA: "500" });
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, i) => upload(ctx, String(i % 10).repeat(100), { token: user.access })),
    );
    const statuses = answers.map((res) => res.status).sort();
    expect(statuses).toEqual([...Array(5).fill(201), ...Array(7).fill(413)]);
    expect(await stored(ctx, user.id)).toEqual({ objects: 5, temporaries: 0, rows: 5 });
  });

  test("the total and the quota follow deletions, of a file and of a user; a page past the end keeps the total", async () => {
    const { ctx, user } = await withUser({ USER_STORAGE_QUOTA: "10" });
    const other = await signUp(ctx.app);
    const admin = await signUp(ctx.app);
    await promote(ctx.deps.db, admin.id);
    const list = (query: string, token = user.access) => call(ctx.app, "GET", `${API}/uploads${query}`, { token });
    const ids: string[] = [];
    for (const text of ["aaa", "bbb", "ccc"]) ids.push((await upload(ctx, text, { token: user.access })).json.id);
    await upload(ctx, "ddd", { token: other.access });
    expectError(await upload(ctx, "dd", { token: user.access }), 413, "PAYLOAD_TOO_LARGE");

    await call(ctx.app, "DELETE", `${API}/uploads/${ids[0]}`, { token: user.access });
    const past = await list("?offset=5");
    expect([past.json.items.length, past.json.total]).toEqual([0, 2]);
    expect((await list("?limit=1")).json.total).toBe(2);
    // The freed bytes count again: 6 stored, 4 more fit.
    expect((await upload(ctx, "eeee", { token: user.access })).status).toBe(201);
    expect((await list("")).json.total).toBe(3);

    expect((await call(ctx.app, "DELETE", `${API}/users/${other.id}`, { token: admin.access })).status).toBe(204);
    expect((await list("?all=true", admin.access)).json.total).toBe(3);
    expect((await list(`?owner_id=${other.id}`, admin.access)).json.total).toBe(0);
  });

  test("delete removes row and bytes (owner, or an admin); deleting a user removes the user's bytes", async () => {
    const { ctx, user } = await withUser();
    const admin = await signUp(ctx.app);
    await promote(ctx.deps.db, admin.id);
    const first = (await upload(ctx, "one", { token: user.access })).json.id;
    const second = (await upload(ctx, "two", { token: user.access })).json.id;
    await upload(ctx, "three", { token: user.access });
    expect((await call(ctx.app, "DELETE", `${API}/uploads/${first}`, { token: user.access })).status).toBe(204);
    expect((await call(ctx.app, "DELETE", `${API}/uploads/${second}`, { token: admin.access })).status).toBe(204);
    expectError(await call(ctx.app, "GET", `${API}/uploads/${first}`, { token: user.access }), 404, "NOT_FOUND");
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
    expect((await call(ctx.app, "DELETE", `${API}/users/${user.id}`, { token: admin.access })).status).toBe(204);
    expect(await stored(ctx)).toEqual(NOTHING);
  });
});

describe("deleting while storage fails", () => {
  test("bytes a failed delete leaves are a temporary without a row, which the sweep removes; a failed retire changes nothing", async () => {
    const base = await makeApp();
    const real = openStorage(base.deps.config.storage);
    let failing: "retire" | "delete" | undefined;
    const broken = new StorageUnavailableError("write", new Error("bucket unreachable"));
    const storage = {
      ...real,
      retire: (key: string) => (failing === "retire" ? Promise.reject(broken) : real.retire(key)),
      delete: (...keys: string[]) => (failing === "delete" ? Promise.reject(broken) : real.delete(...keys)),
    };
    const ctx = await makeApp({}, { config: base.deps.config, storage });
    const user = await signUp(ctx.app);
    const kept = (await upload(ctx, "kept", { token: user.access })).json.id;
    const gone = (await upload(ctx, "gone", { token: user.access })).json.id;

    failing = "retire";
    expectError(
      await call(ctx.app, "DELETE", `${API}/uploads/${kept}`, { token: user.access }),
      503,
      "SERVICE_UNAVAILABLE",
    );
    expect(await stored(ctx)).toEqual({ objects: 2, temporaries: 0, rows: 2 });

    failing = "delete";
    expect((await call(ctx.app, "DELETE", `${API}/uploads/${gone}`, { token: user.access })).status).toBe(204);
    expect(await stored(ctx)).toEqual({ objects: 2, temporaries: 1, rows: 1 });
    expect(ctx.logs.some((line) => line.includes("left for the start-up sweep"))).toBe(true);

    failing = undefined;
    const services = createServices(ctx.deps);
    // Old enough for the sweep: on disk the temporary is the object's own (old) file; on S3 a fresh marker.
    expect(await services.files.recover(-60_000)).toEqual({ committed: 0, removed: 1 });
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
    const download = await call(ctx.app, "GET", `${API}/uploads/${kept}/download`, { token: user.access });
    expect(download.text).toBe("kept");

    // Retired, then the row's deletion failed: the sweep finds a row and commits it back.
    const [row] = await ctx.deps.db.orm.select().from(files).where(eq(files.id, kept));
    await real.retire(row?.storageKey as string);
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 1, rows: 1 });
    expect(await services.files.recover(-60_000)).toEqual({ committed: 1, removed: 0 });
    expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
    expect((await call(ctx.app, "GET", `${API}/uploads/${kept}/download`, { token: user.access })).text).toBe("kept");
  });
});

describe("recovery after a crash", () => {
  test("a temporary with a row is committed, an old one without a row removed, a fresh one kept", async () => {
    const { ctx, user } = await withUser();
    const services = createServices(ctx.deps);
    const storage = openStorage(ctx.deps.config.storage);
    // Crashed after the row was inserted, before the commit.
    const survivor = crypto.randomUUID();
    const written = await storage.begin(survivor);
    await written.write(new TextEncoder().encode("saved"));
    await written.close();
    await ctx.deps.db.orm.insert(files).values({
      ownerId: user.id,
      filename: "saved.txt",
      contentType: "text/plain",
      fileSize: 5,
      fileHash: sha256("saved"),
      storageKey: survivor,
    });
    // Crashed mid-body, long ago; and an upload in flight right now.
    const abandoned = crypto.randomUUID();
    await (await storage.begin(abandoned)).close();
    await backdateTemporary(ctx, abandoned, new Date(Date.now() - 2 * 3_600_000));
    const inFlight = crypto.randomUUID();
    await (await storage.begin(inFlight)).close();

    expect(await services.files.recover(3_600_000)).toEqual({ committed: 1, removed: 1 });
    expect((await storage.temporaries()).map((t) => t.key)).toEqual([inFlight]);
    const [row] = await ctx.deps.db.orm.select().from(files);
    const bytes = await download(ctx, row?.id as string, { token: user.access });
    expect(bytes.text).toBe("saved");
  });
});

describe("abuse", () => {
  test("a 16,000-character file name is cut to 255 bytes; an empty PATCH is a 422", async () => {
    const { ctx, user } = await withUser();
    const res = await upload(ctx, SAMPLES.text, { name: `${"a".repeat(16_000)}.txt`, token: user.access });
    expect(res.status).toBe(201);
    expect(res.json.filename).toBe("a".repeat(255));
    expect(cleanFilename("x\u200by\ufeffz")).toBe("xyz");
    expectError(
      await call(ctx.app, "PATCH", `${API}/uploads/${res.json.id}`, { token: user.access, body: {} }),
      422,
      "VALIDATION_ERROR",
    );
  });

  test("bytes outside the file part count too: a long preamble, epilogue or field is a 413, not read on", async () => {
    const { ctx, user } = await withUser({ MAX_UPLOAD_SIZE: "1024" });
    const part =
      '--B\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\nContent-Type: text/plain\r\n\r\nhi\r\n';
    const filler = "x".repeat(200 * 1024);
    let pulled = 0;
    /** A body that would go on for 50 MiB; counts how much of it the server pulled. */
    const endless = (head: string, tail: string) =>
      new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(head));
        },
        pull(controller) {
          pulled++;
          if (pulled > 250) {
            controller.enqueue(new TextEncoder().encode(tail));
            controller.close();
          } else controller.enqueue(new TextEncoder().encode(filler));
        },
      });
    for (const [head, tail, status] of [
      ["", `\r\n${part}--B--\r\n`, 413], // preamble
      [`${part}--B--\r\n`, "", 413], // epilogue
      [
        `--B\r\nContent-Disposition: form-data; name="other"; filename="o.txt"\r\nContent-Type: text/plain\r\n\r\n`,
        `\r\n${part}--B--\r\n`,
        413,
      ],
    ] as const) {
      pulled = 0;
      const res = await call(ctx.app, "POST", `${API}/uploads`, {
        body: endless(head, tail),
        token: user.access,
        headers: { "content-type": "multipart/form-data; boundary=B" },
      });
      expect(res.status).toBe(status);
      expect(pulled).toBeLessThan(10);
    }
    expect((await stored(ctx)).temporaries).toBe(0);
  });
});
