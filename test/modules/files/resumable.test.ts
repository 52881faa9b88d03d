/**
 * Resumable uploads (tus 1.0.0) with the real client, tus-js-client, over real sockets; refusals and races
 * with hand-made requests. On disk and (TEST_STORAGE=s3) in a bucket, on PGlite and on Postgres.
 */
import { describe, expect, setDefaultTimeout, test } from "bun:test";
import net from "node:net";
import { eq, sql } from "drizzle-orm";
import { createServices } from "../../../src/app";
import { files, resumableUploads } from "../../../src/db/schema";
import { memoryPubSub } from "../../../src/platform/pubsub";
import { API, call, eventually, expectError, makeApp, signUp } from "../../support";
import { SAMPLES, sha256, upload } from "./fixtures";
import {
  appWithUser,
  b64,
  EMPTY,
  ENDPOINT,
  holdings,
  listening,
  MiB,
  sibling,
  textBytes,
  tusHeaders,
  tusUpload,
} from "./tus";

// Real sockets and uploads of tens of MiB on a shared, slow runner.
setDefaultTimeout(60_000);

const metadata = (filetype = "text/plain", filename = "paper.txt", extra = "") =>
  `filename ${b64(filename)},filetype ${b64(filetype)}${extra}`;

/** POST /uploads/resumable by hand; returns the response and the upload's path. */
async function create(
  app: Parameters<typeof call>[0],
  token: string,
  length: number,
  headers: Record<string, string> = {},
  body?: Uint8Array,
) {
  const res = await call(app, "POST", ENDPOINT, {
    token,
    body,
    headers: tusHeaders(token, {
      "upload-length": String(length),
      "upload-metadata": metadata(),
      ...(body ? { "content-type": "application/offset+octet-stream" } : {}),
      ...headers,
    }),
  });
  return { res, path: res.headers.get("location") ?? "" };
}

const patch = (app: Parameters<typeof call>[0], token: string, path: string, offset: number, body: unknown) =>
  call(app, "PATCH", path, {
    token,
    body,
    headers: tusHeaders(token, { "upload-offset": String(offset), "content-type": "application/offset+octet-stream" }),
  });

const head = (app: Parameters<typeof call>[0], token: string, path: string) =>
  call(app, "HEAD", path, { token, headers: tusHeaders(token) });

describe("tus protocol", () => {
  test("OPTIONS needs no token and says what the server supports", async () => {
    const { ctx } = await appWithUser({ MAX_UPLOAD_SIZE: "5000000" });
    const res = await call(ctx.app, "OPTIONS", ENDPOINT);
    expect(res.status).toBe(204);
    expect(
      Object.fromEntries(
        ["tus-resumable", "tus-version", "tus-extension", "tus-max-size"].map((h) => [h, res.headers.get(h)]),
      ),
    ).toEqual({
      "tus-resumable": "1.0.0",
      "tus-version": "1.0.0",
      "tus-extension": "creation,creation-with-upload,termination,expiration",
      "tus-max-size": "5000000",
    });
  });

  test("a request without Tus-Resumable: 1.0.0 gets 412 with Tus-Version and is not processed", async () => {
    const { ctx, user } = await appWithUser();
    for (const version of [undefined, "0.2.2"]) {
      const headers: Record<string, string> = { "upload-length": "10", "upload-metadata": metadata() };
      if (version) headers["tus-resumable"] = version;
      const res = await call(ctx.app, "POST", ENDPOINT, { token: user.access, headers });
      expectError(res, 412, "PRECONDITION_FAILED");
      expect(res.headers.get("tus-version")).toBe("1.0.0");
      expect(res.headers.get("tus-resumable")).toBe("1.0.0");
    }
    expect(await holdings(ctx)).toEqual(EMPTY);
    // Every answer under the path says the version, errors and unknown paths too.
    const unknown = await call(ctx.app, "GET", `${ENDPOINT}/${crypto.randomUUID()}`, { token: user.access });
    expectError(unknown, 404, "NOT_FOUND");
    expect(unknown.headers.get("tus-resumable")).toBe("1.0.0");
    expectError(
      await call(ctx.app, "POST", ENDPOINT, { headers: tusHeaders("x", { "upload-length": "1" }) }),
      401,
      "INVALID_TOKEN",
    );
  });

  test("creation refusals: no or bad Upload-Length 400, over MAX_UPLOAD_SIZE 413, a type not allowed 415, bad metadata 400/422; nothing kept", async () => {
    const { ctx, user } = await appWithUser({ MAX_UPLOAD_SIZE: "1000" });
    const attempt = (headers: Record<string, string>) =>
      call(ctx.app, "POST", ENDPOINT, { token: user.access, headers: tusHeaders(user.access, headers) });
    expectError(await attempt({ "upload-metadata": metadata() }), 400, "BAD_REQUEST");
    expectError(await attempt({ "upload-length": "-1", "upload-metadata": metadata() }), 400, "BAD_REQUEST");
    expectError(await attempt({ "upload-defer-length": "1", "upload-metadata": metadata() }), 400, "BAD_REQUEST");
    expectError(await attempt({ "upload-length": "1001", "upload-metadata": metadata() }), 413, "PAYLOAD_TOO_LARGE");
    expectError(
      await attempt({ "upload-length": "10", "upload-metadata": metadata("application/x-msdownload") }),
      415,
      "UNSUPPORTED_MEDIA_TYPE",
    );
    expectError(
      await attempt({ "upload-length": "10", "upload-metadata": `filename ${b64("a.txt")}` }),
      415,
      "UNSUPPORTED_MEDIA_TYPE",
    );
    expectError(await attempt({ "upload-length": "10", "upload-metadata": "filename not*base64" }), 400, "BAD_REQUEST");
    expectError(
      await attempt({ "upload-length": "10", "upload-metadata": `${metadata()},filename ${b64("b")}` }),
      400,
      "BAD_REQUEST",
    );
    const maybe = await attempt({
      "upload-length": "10",
      "upload-metadata": metadata("text/plain", "a.txt", `,is_public ${b64("maybe")}`),
    });
    expectError(maybe, 422, "VALIDATION_ERROR", ["Upload-Metadata.is_public"]);
    expect(await holdings(ctx)).toEqual(EMPTY);
  });
});

describe("uploads with tus-js-client", () => {
  test("20 MiB in 1 MiB chunks becomes a file: same bytes and SHA-256, its id in Upload-File-Id and in the status; event and metrics as POST /uploads", async () => {
    const pubsub = memoryPubSub();
    const events: string[] = [];
    await pubsub.subscribe((message) => void events.push(message));
    const ctx = await makeApp({ MAX_UPLOAD_SIZE: String(32 * MiB) }, { pubsub });
    const user = await signUp(ctx.app);
    const server = await listening(ctx);
    try {
      const bytes = textBytes(20 * MiB);
      const run = await tusUpload(bytes, { endpoint: server.base + ENDPOINT, token: user.access, chunkSize: MiB });
      expect(run.error).toBeUndefined();
      expect(run.log.filter((entry) => entry.method === "PATCH").map((entry) => entry.status)).toEqual(
        Array(20).fill(204),
      );
      const file = await call(ctx.app, "GET", `${API}/uploads/${run.fileId}`, { token: user.access });
      expect(file.json).toMatchObject({
        file_size: bytes.length,
        file_hash: sha256(bytes),
        content_type: "text/plain",
        filename: "paper.txt",
        owner_id: user.id,
      });
      const downloaded = await fetch(`${server.base}${API}/uploads/${run.fileId}/download`, {
        headers: { authorization: `Bearer ${user.access}` },
      });
      expect(sha256(new Uint8Array(await downloaded.arrayBuffer()))).toBe(sha256(bytes));
      const status = await call(ctx.app, "GET", new URL(run.url as string).pathname, { token: user.access });
      expect(status.json).toMatchObject({
        state: "complete",
        offset: bytes.length,
        length: bytes.length,
        file_id: run.fileId,
      });
      expect(await holdings(ctx)).toEqual({
        objects: 1,
        temporaries: 0,
        rows: 1,
        uploads: 1,
        waiting: 0,
        multipart: 0,
      });
      expect(
        await eventually(() => events.some((m) => m.includes("file.uploaded") && m.includes(run.fileId as string))),
      ).toBe(true);
      const metrics = (await call(ctx.app, "GET", `${API}/metrics`)).text;
      expect(metrics).toContain("reviewpoint_uploads_total 1");
      expect(metrics).toContain(`reviewpoint_upload_bytes_total ${bytes.length}`);
    } finally {
      await server.stop();
    }
  });

  test("creation-with-upload: a small file is complete in its POST; an empty text file too", async () => {
    const { ctx, user } = await appWithUser();
    const server = await listening(ctx);
    try {
      const bytes = textBytes(3000);
      const run = await tusUpload(bytes, {
        endpoint: server.base + ENDPOINT,
        token: user.access,
        uploadDataDuringCreation: true,
      });
      expect(run.error).toBeUndefined();
      expect(run.log.map((entry) => `${entry.method} ${entry.status}`)).toEqual(["POST 201"]);
      expect((await call(ctx.app, "GET", `${API}/uploads/${run.fileId}`, { token: user.access })).json.file_hash).toBe(
        sha256(bytes),
      );
      const empty = await create(ctx.app, user.access, 0);
      expect(empty.res.status).toBe(201);
      expect(empty.res.json).toMatchObject({ state: "complete", offset: 0, length: 0 });
      expect(empty.res.headers.get("upload-file-id")).toBe(empty.res.json.file_id);
    } finally {
      await server.stop();
    }
  });

  test("through POST with X-HTTP-Method-Override (overridePatchMethod), for proxies that drop PATCH and DELETE", async () => {
    const { ctx, user } = await appWithUser();
    const server = await listening(ctx);
    try {
      const bytes = textBytes(2 * MiB + 7);
      const run = await tusUpload(bytes, {
        endpoint: server.base + ENDPOINT,
        token: user.access,
        chunkSize: MiB,
        overridePatchMethod: true,
      });
      expect(run.error).toBeUndefined();
      expect(run.log.map((entry) => `${entry.method} ${entry.status}`)).toEqual([
        "POST 201",
        "POST 204",
        "POST 204",
        "POST 204",
      ]);
      expect((await call(ctx.app, "GET", `${API}/uploads/${run.fileId}`, { token: user.access })).json.file_hash).toBe(
        sha256(bytes),
      );
      const { path } = await create(ctx.app, user.access, 10);
      const post = (override?: string) =>
        call(ctx.app, "POST", path, {
          token: user.access,
          headers: tusHeaders(user.access, override ? { "x-http-method-override": override } : {}),
        });
      expectError(await post(), 400, "BAD_REQUEST");
      expectError(await post("GET"), 400, "BAD_REQUEST");
      expect((await post("DELETE")).status).toBe(204);
      expect((await head(ctx.app, user.access, path)).status).toBe(404);
    } finally {
      await server.stop();
    }
  });

  test("a connection cut mid-chunk: what arrived is kept and the client resumes from the offset the server reports", async () => {
    const { ctx, user } = await appWithUser();
    const server = await listening(ctx);
    const target = new URL(server.base);
    // Forwards every connection; once 1.5 MiB of requests went through, forwards no more of the one carrying
    // them and drops it a moment later (when the server is surely reading that body).
    let forwarded = 0;
    let cut = false;
    const proxy = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      upstream.on("data", (data) => client.write(data));
      let dropping = false;
      client.on("data", (data: Buffer) => {
        if (dropping) return;
        const room = 1.5 * MiB - forwarded;
        forwarded += data.length;
        if (cut || room > data.length) {
          upstream.write(data);
          return;
        }
        cut = true;
        dropping = true;
        upstream.write(data.subarray(0, room));
        setTimeout(close, 500);
      });
      const close = () => {
        client.destroy();
        upstream.destroy();
      };
      client.on("error", close).on("close", close);
      upstream.on("error", close).on("close", close);
    });
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    try {
      const port = (proxy.address() as net.AddressInfo).port;
      const bytes = textBytes(4 * MiB);
      const run = await tusUpload(bytes, {
        endpoint: `http://127.0.0.1:${port}${ENDPOINT}`,
        token: user.access,
        chunkSize: MiB,
        retryDelays: [300, 1000, 2000],
      });
      expect(cut).toBe(true);
      expect(run.error).toBeUndefined();
      // After the cut the client asked where the upload stood (past the first chunk, inside the second:
      // what arrived of the cut one was kept), and went on from there.
      const resumed = run.log.findIndex((entry, i) => entry.method === "HEAD" && run.log[i + 1]?.status === 204);
      const reported = Number(run.log[resumed]?.gotOffset);
      expect(reported).toBeGreaterThan(MiB);
      expect(reported).toBeLessThan(2 * MiB);
      expect(run.log[resumed + 1]).toMatchObject({ method: "PATCH", sentOffset: String(reported) });
      const file = await call(ctx.app, "GET", `${API}/uploads/${run.fileId}`, { token: user.access });
      expect(file.json.file_hash).toBe(sha256(bytes));
      expect(await holdings(ctx)).toEqual({
        objects: 1,
        temporaries: 0,
        rows: 1,
        uploads: 1,
        waiting: 0,
        multipart: 0,
      });
    } finally {
      proxy.close();
      await server.stop();
    }
  });

  test("resumed after the server restarts (a new process: no state but the database and storage)", async () => {
    const { ctx, user } = await appWithUser();
    const first = await listening(ctx);
    const bytes = textBytes(6 * MiB);
    const started = await tusUpload(bytes, {
      endpoint: first.base + ENDPOINT,
      token: user.access,
      chunkSize: MiB,
      stopAfterChunks: 3,
    });
    await first.stop();
    expect(started.stopped).toBe(true);
    const path = new URL(started.url as string).pathname;
    const restarted = await listening(await sibling(ctx));
    try {
      const run = await tusUpload(bytes, { uploadUrl: restarted.base + path, token: user.access, chunkSize: MiB });
      expect(run.error).toBeUndefined();
      expect(run.log[0]).toMatchObject({ method: "HEAD", gotOffset: String(3 * MiB) });
      // The SHA-256 is of every byte, those the first process took included.
      const file = await call(restarted.ctx.app, "GET", `${API}/uploads/${run.fileId}`, { token: user.access });
      expect(file.json.file_hash).toBe(sha256(bytes));
    } finally {
      await restarted.stop();
    }
  });

  test("started on instance A, finished on instance B (one database, one storage)", async () => {
    const { ctx, user } = await appWithUser();
    const [a, b] = [await listening(ctx), await listening(await sibling(ctx))];
    try {
      const bytes = textBytes(7 * MiB + 5);
      const started = await tusUpload(bytes, {
        endpoint: a.base + ENDPOINT,
        token: user.access,
        chunkSize: MiB,
        stopAfterChunks: 2,
      });
      const path = new URL(started.url as string).pathname;
      // One chunk by hand on B, then the client goes on at A and ends on B.
      expect((await patch(b.ctx.app, user.access, path, 2 * MiB, bytes.subarray(2 * MiB, 3 * MiB))).status).toBe(204);
      const more = await tusUpload(bytes, {
        uploadUrl: a.base + path,
        token: user.access,
        chunkSize: MiB,
        stopAfterChunks: 2,
      });
      expect(more.log[0]).toMatchObject({ method: "HEAD", gotOffset: String(3 * MiB) });
      const run = await tusUpload(bytes, { uploadUrl: b.base + path, token: user.access, chunkSize: MiB });
      expect(run.error).toBeUndefined();
      expect(run.log[0]).toMatchObject({ method: "HEAD", gotOffset: String(5 * MiB) });
      const file = await call(b.ctx.app, "GET", `${API}/uploads/${run.fileId}`, { token: user.access });
      expect(file.json).toMatchObject({ file_size: bytes.length, file_hash: sha256(bytes) });
      expect(await holdings(ctx)).toEqual({
        objects: 1,
        temporaries: 0,
        rows: 1,
        uploads: 1,
        waiting: 0,
        multipart: 0,
      });
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});

describe("refusals leave the upload as it was, or nothing at all", () => {
  test("a PATCH at the wrong offset: 409 and nothing changes", async () => {
    const { ctx, user } = await appWithUser();
    const { path } = await create(ctx.app, user.access, 20);
    expect((await patch(ctx.app, user.access, path, 0, "0123456789")).status).toBe(204);
    for (const offset of [0, 5, 15]) {
      const res = await patch(ctx.app, user.access, path, offset, "abcde");
      expectError(res, 409, "CONFLICT", ["Upload-Offset"]);
    }
    const now = await head(ctx.app, user.access, path);
    expect([now.status, now.headers.get("upload-offset"), now.headers.get("cache-control")]).toEqual([
      200,
      "10",
      "no-store",
    ]);
    expect(now.headers.get("upload-length")).toBe("20");
    expect(now.headers.get("upload-metadata")).toBe(metadata());
    expect(Date.parse(now.headers.get("upload-expires") as string)).toBeGreaterThan(Date.now());
    expect((await patch(ctx.app, user.access, path, 10, "abcdefghij")).headers.get("upload-offset")).toBe("20");
  });

  test("another user's upload does not exist for them (404), and stays intact", async () => {
    const { ctx, user } = await appWithUser();
    const other = await signUp(ctx.app);
    const { path } = await create(ctx.app, user.access, 20);
    await patch(ctx.app, user.access, path, 0, "0123456789");
    expect((await head(ctx.app, other.access, path)).status).toBe(404);
    expectError(await call(ctx.app, "GET", path, { token: other.access }), 404, "NOT_FOUND");
    expectError(await patch(ctx.app, other.access, path, 10, "abcdefghij"), 404, "NOT_FOUND");
    expectError(
      await call(ctx.app, "DELETE", path, { token: other.access, headers: tusHeaders(other.access) }),
      404,
      "NOT_FOUND",
    );
    expect((await head(ctx.app, user.access, path)).headers.get("upload-offset")).toBe("10");
  });

  test("content not of the declared type is refused on its first bytes (415) and the upload is gone", async () => {
    const { ctx, user } = await appWithUser();
    const length = 10_000;
    const { path } = await create(ctx.app, user.access, length, {
      "upload-metadata": metadata("application/pdf", "paper.pdf"),
    });
    // The type is decided as soon as the first 4100 bytes are in, long before the last byte.
    const res = await patch(ctx.app, user.access, path, 0, textBytes(5000));
    expectError(res, 415, "UNSUPPORTED_MEDIA_TYPE");
    expect((await head(ctx.app, user.access, path)).status).toBe(404);
    expect(await holdings(ctx)).toEqual(EMPTY);
    // A real PDF head passes, split across requests.
    const pdf = new Uint8Array(length).fill(0x20);
    pdf.set(SAMPLES.pdf);
    const ok = await create(ctx.app, user.access, length, {
      "upload-metadata": metadata("application/pdf", "paper.pdf"),
    });
    expect((await patch(ctx.app, user.access, ok.path, 0, pdf.subarray(0, 3))).status).toBe(204);
    expect((await patch(ctx.app, user.access, ok.path, 3, pdf.subarray(3, 5000))).status).toBe(204);
    expect(
      (await patch(ctx.app, user.access, ok.path, 5000, pdf.subarray(5000))).headers.get("upload-file-id"),
    ).toBeTruthy();
  });

  test("text is checked as UTF-8 as it arrives, a character cut between requests included", async () => {
    const { ctx, user } = await appWithUser();
    const text = new TextEncoder().encode("✓é𝄞".repeat(100)); // 900 bytes of 3-, 2- and 4-byte characters
    const { path } = await create(ctx.app, user.access, text.length);
    for (const [from, to] of [
      [0, 1],
      [1, 450],
      [450, 451],
      [451, 900],
    ]) {
      expect((await patch(ctx.app, user.access, path, from as number, text.subarray(from, to))).status).toBe(204);
    }
    const bad = await create(ctx.app, user.access, 100);
    expect((await patch(ctx.app, user.access, bad.path, 0, textBytes(50))).status).toBe(204);
    expectError(await patch(ctx.app, user.access, bad.path, 50, SAMPLES.invalidUtf8), 415, "UNSUPPORTED_MEDIA_TYPE");
    expect((await head(ctx.app, user.access, bad.path)).status).toBe(404);
    // A text ending inside a character: refused when the last byte arrives.
    const cut = await create(ctx.app, user.access, 4);
    expectError(
      await patch(ctx.app, user.access, cut.path, 0, new Uint8Array([0x61, 0xf0, 0x9d, 0x84])),
      415,
      "UNSUPPORTED_MEDIA_TYPE",
    );
    expect((await holdings(ctx)).uploads).toBe(1);
  });

  test("bad UTF-8 after a whole part went to storage in the same request: 415 and nothing left, no multipart upload either", async () => {
    const { ctx, user } = await appWithUser();
    const { path } = await create(ctx.app, user.access, 7 * MiB);
    const bytes = textBytes(6 * MiB);
    bytes.set(SAMPLES.invalidUtf8, 5.5 * MiB);
    // In 1 MiB pieces, as a socket delivers them: the first 5 MiB make a part before the bad bytes arrive.
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let at = 0; at < bytes.length; at += MiB) controller.enqueue(bytes.subarray(at, at + MiB));
        controller.close();
      },
    });
    expectError(await patch(ctx.app, user.access, path, 0, body), 415, "UNSUPPORTED_MEDIA_TYPE");
    expect(await holdings(ctx)).toEqual(EMPTY);
  });

  test("bytes past Upload-Length: 413, the upload as it was", async () => {
    const { ctx, user } = await appWithUser();
    const { path } = await create(ctx.app, user.access, 10);
    expectError(await patch(ctx.app, user.access, path, 0, "0123456789ABC"), 413, "PAYLOAD_TOO_LARGE");
    expect((await head(ctx.app, user.access, path)).headers.get("upload-offset")).toBe("0");
    // Without a Content-Length the body is counted as it arrives.
    const chunked = new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("0123456789ABC"));
        controller.close();
      },
    });
    expectError(await patch(ctx.app, user.access, path, 0, chunked), 413, "PAYLOAD_TOO_LARGE");
    expect((await patch(ctx.app, user.access, path, 0, "0123456789")).status).toBe(204);
  });

  test("the quota: refused at creation counting unfinished uploads, and when the last byte arrives; nothing kept", async () => {
    const { ctx, user } = await appWithUser({ USER_STORAGE_QUOTA: "1000" });
    const first = await create(ctx.app, user.access, 600);
    expect(first.res.status).toBe(201);
    const over = await create(ctx.app, user.access, 500);
    expectError(over.res, 413, "PAYLOAD_TOO_LARGE");
    expect(over.res.json.error.message).toContain("1000");
    // The first upload's room is taken by a file meanwhile (its 600 bytes were reserved, not stored).
    await patch(ctx.app, user.access, first.path, 0, textBytes(300));
    const res = await call(ctx.app, "DELETE", first.path, { token: user.access, headers: tusHeaders(user.access) });
    expect(res.status).toBe(204);
    const second = await create(ctx.app, user.access, 600);
    expect((await upload(ctx, textBytes(500), { token: user.access })).status).toBe(201);
    await patch(ctx.app, user.access, second.path, 0, textBytes(300));
    expectError(await patch(ctx.app, user.access, second.path, 300, textBytes(300)), 413, "PAYLOAD_TOO_LARGE");
    expect(await holdings(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1, uploads: 0, waiting: 0, multipart: 0 });
  });

  test("PATCH needs application/offset+octet-stream (415) and a numeric Upload-Offset (400)", async () => {
    const { ctx, user } = await appWithUser();
    const { path } = await create(ctx.app, user.access, 10);
    const wrongType = await call(ctx.app, "PATCH", path, {
      token: user.access,
      body: "0123456789",
      headers: tusHeaders(user.access, { "upload-offset": "0", "content-type": "text/plain" }),
    });
    expectError(wrongType, 415, "UNSUPPORTED_MEDIA_TYPE");
    expectError(await patch(ctx.app, user.access, path, Number.NaN, "0123456789"), 400, "BAD_REQUEST");
    expect((await head(ctx.app, user.access, path)).headers.get("upload-offset")).toBe("0");
  });
});

describe("one writer at a time", () => {
  test("two PATCHes at once on one upload: one writes, the other gets 423; then the upload goes on", async () => {
    const { ctx, user } = await appWithUser();
    const { path } = await create(ctx.app, user.access, 20);
    const id = path.split("/").at(-1) as string;
    let finish = () => {};
    const slow = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode("01234"));
        finish = () => {
          controller.enqueue(new TextEncoder().encode("56789"));
          controller.close();
        };
      },
    });
    const first = patch(ctx.app, user.access, path, 0, slow);
    const locked = async () =>
      (await ctx.deps.db.orm.select().from(resumableUploads).where(eq(resumableUploads.id, id)))[0]?.lockToken !== null;
    expect(await eventually(locked)).toBe(true);
    const second = await patch(ctx.app, user.access, path, 0, "0123456789");
    expectError(second, 423, "LOCKED");
    expectError(
      await call(ctx.app, "DELETE", path, { token: user.access, headers: tusHeaders(user.access) }),
      423,
      "LOCKED",
    );
    finish();
    expect((await first).status).toBe(204);
    expect((await head(ctx.app, user.access, path)).headers.get("upload-offset")).toBe("10");
  });

  test("a lock whose lease ran out (its instance crashed) is taken over; a live one is not", async () => {
    const { ctx, user } = await appWithUser();
    const { path } = await create(ctx.app, user.access, 10);
    const id = path.split("/").at(-1) as string;
    const hold = (until: string) =>
      ctx.deps.db.orm
        .update(resumableUploads)
        .set({ lockToken: crypto.randomUUID(), lockedUntil: sql.raw(`now() + interval '${until}'`) })
        .where(eq(resumableUploads.id, id));
    await hold("1 minute");
    expectError(await patch(ctx.app, user.access, path, 0, "01234"), 423, "LOCKED");
    await hold("-1 second");
    expect((await patch(ctx.app, user.access, path, 0, "01234")).status).toBe(204);
  });
});

describe("an instance that crashed while making the file", () => {
  test("left it stored: the upload is complete with that file; left nothing: the upload is gone, its bytes swept", async () => {
    const { ctx, user } = await appWithUser();
    const crashed = (path: string, set: Partial<typeof resumableUploads.$inferInsert> = {}) =>
      ctx.deps.db.orm
        .update(resumableUploads)
        .set({
          state: "completing",
          lockToken: crypto.randomUUID(),
          lockedUntil: sql`now() - interval '1 second'`,
          ...set,
        })
        .where(eq(resumableUploads.id, path.split("/").at(-1) as string));
    const stored = await upload(ctx, textBytes(100), { token: user.access });
    const [file] = await ctx.deps.db.orm.select().from(files).where(eq(files.id, stored.json.id));
    const made = await create(ctx.app, user.access, 100);
    await crashed(made.path, { storageKey: file?.storageKey });
    const status = await head(ctx.app, user.access, made.path);
    expect([status.status, status.headers.get("upload-offset"), status.headers.get("upload-file-id")]).toEqual([
      200,
      "100",
      stored.json.id,
    ]);

    const lost = await create(ctx.app, user.access, 100);
    await patch(ctx.app, user.access, lost.path, 0, textBytes(40));
    await crashed(lost.path);
    expect((await head(ctx.app, user.access, lost.path)).status).toBe(404);
    expect(await createServices(ctx.deps).resumable.sweep()).toBe(1);
    expect(await holdings(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1, uploads: 1, waiting: 0, multipart: 0 });
  });
});

describe("termination and expiry", () => {
  test("DELETE terminates: 204, then 404, and the bytes are gone", async () => {
    const { ctx, user } = await appWithUser();
    const { path } = await create(ctx.app, user.access, 10 * MiB);
    await patch(ctx.app, user.access, path, 0, textBytes(6 * MiB));
    await patch(ctx.app, user.access, path, 6 * MiB, textBytes(MiB));
    expect((await holdings(ctx)).waiting).toBeGreaterThan(0);
    const res = await call(ctx.app, "DELETE", path, { token: user.access, headers: tusHeaders(user.access) });
    expect(res.status).toBe(204);
    expect(res.headers.get("tus-resumable")).toBe("1.0.0");
    expect((await head(ctx.app, user.access, path)).status).toBe(404);
    expect(await holdings(ctx)).toEqual(EMPTY);
  });

  test("expired uploads, and those of a deleted user, are swept with their bytes; a complete one is forgotten", async () => {
    const { ctx, user } = await appWithUser({ RESUMABLE_EXPIRE_HOURS: "2" });
    const gone = await signUp(ctx.app);
    const expiring = await create(ctx.app, user.access, 100);
    const res = await patch(ctx.app, user.access, expiring.path, 0, textBytes(40));
    const expires = Date.parse(res.headers.get("upload-expires") as string);
    expect(expires - Date.now()).toBeGreaterThan(1.9 * 3_600_000);
    expect(expires - Date.now()).toBeLessThan(2.1 * 3_600_000);
    const orphan = await create(ctx.app, gone.access, 100);
    await patch(ctx.app, gone.access, orphan.path, 0, textBytes(40));
    const kept = await create(ctx.app, user.access, 100);
    await patch(ctx.app, user.access, kept.path, 0, textBytes(40));
    const done = await create(ctx.app, user.access, 10, {}, textBytes(10));
    expect(done.res.json.state).toBe("complete");
    const idOf = (path: string) => path.split("/").at(-1) as string;
    await ctx.deps.db.orm
      .update(resumableUploads)
      .set({ expiresAt: sql`now() - interval '1 second'` })
      .where(sql`${resumableUploads.id} in (${idOf(expiring.path)}, ${idOf(done.path)})`);
    const admin = await signUp(ctx.app);
    await ctx.deps.db.orm.execute(sql`update users set role = 'admin' where id = ${admin.id}`);
    expect((await call(ctx.app, "DELETE", `${API}/users/${gone.id}`, { token: admin.access })).status).toBe(204);
    expect((await head(ctx.app, user.access, expiring.path)).status).toBe(404);
    const swept = await createServices(ctx.deps).resumable.sweep();
    expect(swept).toBe(3);
    expect(await holdings(ctx)).toMatchObject({ uploads: 1, rows: 1, objects: 1, temporaries: 0 });
    expect((await head(ctx.app, user.access, kept.path)).headers.get("upload-offset")).toBe("40");
    // The file of the complete upload stays: it is a file like any other.
    expect((await call(ctx.app, "GET", `${API}/uploads/${done.res.json.file_id}`, { token: user.access })).status).toBe(
      200,
    );
  });
});
