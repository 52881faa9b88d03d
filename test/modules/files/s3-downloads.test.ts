/**
 * Downloads from an S3 bucket through a real socket: the exact Content-Length in proxy mode (Bun drops it
 * from streamed bodies, oven-sh/bun#10507), S3_DOWNLOAD_MODE=redirect followed to the bucket, and a bucket
 * that dies mid-download (the server as it runs, in a process of its own, its stdout and stderr read).
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { readdirSync } from "node:fs";
import net from "node:net";
import { join } from "node:path";
import { listenOptions, spoolDir } from "../../../src/app";
import { clientOf, samplePdf, untilReady } from "../../e2e/client";
import { startTestBucket, type TestBucket } from "../../s3";
import {
  API,
  expectError,
  freePort,
  makeApp,
  REPO_ROOT,
  scratchDir,
  scratchPostgres,
  signUp,
  TEST_DATABASE_URL,
  type TestContext,
  testBucket,
} from "../../support";
import { sha256 } from "./fixtures";

// Real sockets, an s3rver of the test's own and a server process starting its database.
setDefaultTimeout(120_000);
const MiB = 1024 * 1024;

/** An app on the run's bucket (its own prefix) listening on a free port, with one user and one file. */
async function withS3Server(
  overrides: Record<string, string>,
  run: (server: {
    ctx: TestContext;
    base: string;
    token: string;
    file: { id: string };
    bytes: Uint8Array;
  }) => Promise<void>,
) {
  const bucket = await testBucket();
  const ctx = await makeApp({ ...bucket.env(`downloads-${crypto.randomUUID()}`), ...overrides });
  ctx.app.listen({ ...listenOptions(ctx.deps.config), port: 0, hostname: "127.0.0.1" });
  try {
    const base = `http://127.0.0.1:${ctx.app.server?.port}`;
    const { access } = await signUp(ctx.app);
    const bytes = samplePdf(3 * MiB + 12_345);
    const file = await clientOf(base).upload(access, bytes, "Résumé «final».pdf", "application/pdf");
    await run({ ctx, base, token: access, file, bytes });
  } finally {
    await ctx.app.stop(true);
  }
}

const spooled = (ctx: TestContext) => {
  try {
    return readdirSync(spoolDir(ctx.deps.config)).length;
  } catch {
    return 0;
  }
};

describe("S3 downloads through a real socket", () => {
  test("proxy (the default): exact Content-Length on 200 and 206, never chunked; the bytes as stored", async () => {
    await withS3Server({}, async ({ ctx, base, token, file, bytes }) => {
      const url = `${base}${API}/uploads/${file.id}/download`;
      const get = (headers: Record<string, string> = {}) =>
        fetch(url, { headers: { authorization: `Bearer ${token}`, ...headers } });

      const whole = await get();
      const body = new Uint8Array(await whole.arrayBuffer());
      expect({
        status: whole.status,
        length: whole.headers.get("content-length"),
        chunked: whole.headers.get("transfer-encoding"),
        type: whole.headers.get("content-type"),
        disposition: whole.headers.get("content-disposition"),
        csp: whole.headers.get("content-security-policy"),
        etag: whole.headers.get("etag"),
      }).toEqual({
        status: 200,
        length: String(bytes.byteLength),
        chunked: null,
        type: "application/pdf",
        disposition: `attachment; filename="R_sum_ _final_.pdf"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%C2%ABfinal%C2%BB.pdf`,
        csp: "sandbox",
        etag: `"${sha256(bytes)}"`,
      });
      expect(sha256(body)).toBe(sha256(bytes));

      const from = 2 * MiB + 7;
      const part = await get({ range: `bytes=${from}-` });
      expect({
        status: part.status,
        length: part.headers.get("content-length"),
        chunked: part.headers.get("transfer-encoding"),
        range: part.headers.get("content-range"),
        hash: sha256(new Uint8Array(await part.arrayBuffer())),
      }).toEqual({
        status: 206,
        length: String(bytes.byteLength - from),
        chunked: null,
        range: `bytes ${from}-${bytes.byteLength - 1}/${bytes.byteLength}`,
        hash: sha256(bytes.subarray(from)),
      });
      const one = await get({ range: "bytes=5-5" });
      expect([one.status, one.headers.get("content-length"), await one.text()]).toEqual([206, "1", "1"]);
      const unchanged = await get({ "if-none-match": `"${sha256(bytes)}"` });
      expect(unchanged.status).toBe(304);

      // What was spooled on the way is gone once sent.
      expect(spooled(ctx)).toBe(0);
    });
  });

  test("redirect: a 302 to a presigned URL that serves the same bytes, type and disposition; after the same checks", async () => {
    await withS3Server(
      { S3_DOWNLOAD_MODE: "redirect", S3_PRESIGN_SECONDS: "120" },
      async ({ base, token, file, bytes }) => {
        const url = `${base}${API}/uploads/${file.id}/download`;
        const redirected = await fetch(url, { headers: { authorization: `Bearer ${token}` }, redirect: "manual" });
        expect(redirected.status).toBe(302);
        expect(redirected.headers.get("cache-control")).toBe("private, no-store");
        const location = new URL(redirected.headers.get("location") as string);
        expect(location.origin).toBe(new URL((await testBucket()).setting.endpoint as string).origin);
        expect(location.searchParams.get("X-Amz-Expires")).toBe("120");

        // Followed, as a browser does (the bearer token stays behind: the URL is the credential).
        const followed = await fetch(location);
        const body = new Uint8Array(await followed.arrayBuffer());
        expect({
          status: followed.status,
          length: followed.headers.get("content-length"),
          type: followed.headers.get("content-type"),
          disposition: followed.headers.get("content-disposition"),
          hash: sha256(body),
        }).toEqual({
          status: 200,
          length: String(bytes.byteLength),
          type: "application/pdf",
          disposition: `attachment; filename="R_sum_ _final_.pdf"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%C2%ABfinal%C2%BB.pdf`,
          hash: sha256(bytes),
        });
        const ranged = await fetch(location, { headers: { range: "bytes=10-19" } });
        expect([ranged.status, sha256(new Uint8Array(await ranged.arrayBuffer()))]).toEqual([
          206,
          sha256(bytes.subarray(10, 20)),
        ]);

        // The access checks come first: someone else gets a 404, not a URL.
        const stranger = await fetch(url, { redirect: "manual" });
        expectError({ status: stranger.status, json: await stranger.json() }, 404, "NOT_FOUND");
        // And a validator that matches is still a 304, without a trip to the bucket.
        const unchanged = await fetch(url, {
          headers: { authorization: `Bearer ${token}`, "if-none-match": `"${sha256(bytes)}"` },
          redirect: "manual",
        });
        expect(unchanged.status).toBe(304);
      },
    );
  });
});

/**
 * A TCP relay in front of the bucket that calls `onFlowing` once a response has carried `threshold` bytes
 * through it, and passes a broken connection on as broken.
 */
function relayTo(port: number, threshold: number, onFlowing: () => void) {
  let fired = false;
  const server = net.createServer((client) => {
    const upstream = net.connect(port, "127.0.0.1");
    let carried = 0;
    upstream.on("data", (chunk: Buffer) => {
      carried += chunk.byteLength;
      if (!fired && carried >= threshold) {
        fired = true;
        onFlowing();
      }
    });
    client.pipe(upstream);
    upstream.pipe(client);
    upstream.on("error", () => client.destroy());
    upstream.on("close", () => client.destroy());
    client.on("error", () => upstream.destroy());
    client.on("close", () => upstream.destroy());
  });
  return new Promise<{ port: number; close(): void }>((resolve) =>
    server.listen(0, "127.0.0.1", () =>
      resolve({ port: (server.address() as net.AddressInfo).port, close: () => server.close() }),
    ),
  );
}

describe("a bucket failing mid-download", () => {
  let bucket: TestBucket | undefined;
  let database: Awaited<ReturnType<typeof scratchPostgres>> | undefined;
  afterAll(async () => {
    await Promise.all([bucket?.stop(), database?.drop()]);
  });

  test("the client gets a 503 with the contract's body, never a clean short body; one JSON log line with the request id; counted; nothing on stderr; once the bucket is back the download works", async () => {
    bucket = await startTestBucket();
    const bucketPort = Number(new URL(bucket.setting.endpoint as string).port);
    let bucketStopped: Promise<void> | undefined;
    const relay = await relayTo(bucketPort, MiB, () => {
      // The bucket's process dies while it sends: frozen first, so it stops mid-object.
      bucket?.signal("SIGSTOP");
      bucketStopped = bucket?.kill();
    });
    database = TEST_DATABASE_URL ? await scratchPostgres("download_failure") : undefined;
    const dataDir = scratchDir("rp-download-failure-");
    const port = freePort();
    const base = `http://127.0.0.1:${port}`;
    const proc = Bun.spawn(["bun", "src/index.ts", "serve"], {
      cwd: REPO_ROOT,
      env: {
        PATH: process.env.PATH ?? "",
        ENVIRONMENT: "test",
        DATA_DIR: dataDir,
        HOST: "127.0.0.1",
        PORT: String(port),
        BCRYPT_ROUNDS: "4",
        RATE_LIMIT_ENABLED: "false",
        MAX_UPLOAD_SIZE: String(96 * MiB),
        ...bucket.env("failure"),
        S3_ENDPOINT: `http://127.0.0.1:${relay.port}`,
        ...(database && { REVIEWPOINT_DB_URL: database.url }),
      },
      stdout: "pipe",
      stderr: "pipe",
    });
    const stdout = new Response(proc.stdout).text();
    const stderr = new Response(proc.stderr).text();
    try {
      await untilReady(base, proc);
      const client = clientOf(base);
      const user = await client.signUp("downloader");
      // Large enough that the bucket is still sending when it dies.
      const bytes = samplePdf(64 * MiB);
      // The upload's own traffic goes the other way: the relay fires on the download.
      const file = await client.upload(user.access, bytes, "big.pdf", "application/pdf");
      const url = `${base}${API}/uploads/${file.id}/download`;
      const headers = { authorization: `Bearer ${user.access}`, "x-request-id": "download-failure-1" };

      const failed = await fetch(url, { headers });
      const text = await failed.text().catch((error: Error) => `(the body broke off: ${error.message})`);
      // The bucket did die while sending.
      expect(bucketStopped).toBeDefined();
      await bucketStopped;
      expect({ status: failed.status, retryAfter: failed.headers.get("retry-after") }).toEqual({
        status: 503,
        retryAfter: "5",
      });
      const json = JSON.parse(text);
      expectError({ status: failed.status, json }, 503, "SERVICE_UNAVAILABLE");
      expect(json.error.request_id).toBe("download-failure-1");

      const metrics = await (await fetch(`${base}${API}/metrics`)).text();
      expect(metrics).toContain("reviewpoint_download_failures_total 1");

      // The bucket comes back: the same download works, whole and with its length.
      await bucket.restart();
      const again = await fetch(url, { headers });
      expect([again.status, again.headers.get("content-length")]).toEqual([200, String(bytes.byteLength)]);
      expect(sha256(new Uint8Array(await again.arrayBuffer()))).toBe(sha256(bytes));
    } finally {
      proc.kill("SIGTERM");
      await proc.exited;
      relay.close();
    }
    const lines = (await stdout)
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const aboutFailure = lines.filter((line) => line.request_id === "download-failure-1" && line.msg !== "request");
    expect(aboutFailure).toEqual([
      expect.objectContaining({
        level: "warn",
        msg: "download failed: the storage did not deliver the file",
        file_id: expect.any(String),
      }),
    ]);
    const logged = lines.filter((line) => line.msg === "request" && line.route === `${API}/uploads/:id/download`);
    expect(logged.map((line) => [line.status, line.request_id])).toEqual([
      [503, "download-failure-1"],
      [200, "download-failure-1"],
    ]);
    expect(await stderr).toBe("");
    expect(readdirSync(join(dataDir, "download-spool"))).toEqual([]);
  });
});
