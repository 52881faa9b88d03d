/**
 * Uploads through a real listening socket (not `app.handle`): a client that hangs up mid-body, every
 * oversize body answered with the contract's JSON 413 (never Bun's bare one), and a large file round trip.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listenOptions } from "../../../src/app";
import { API, eventually, expectError, makeApp, rawHttp, signUp, type TestContext } from "../../support";
import { NOTHING, sha256, stored } from "./fixtures";

const CURL = Bun.which("curl");
// Real sockets, a first database start and a 20 MiB round trip: more than the 5 s default on a slow runner.
setDefaultTimeout(30_000);
const MiB = 1024 * 1024;

interface Server {
  ctx: TestContext;
  base: string;
  port: number;
  token: string;
}

/**
 * A fresh app (its own upload folder) listening as the binary does, on a free port; stopped afterwards
 * the way the binary's shutdown ends, closing what is left: after an early 413 to a keep-alive client
 * (Bun's fetch) Bun keeps the socket with its unread body open, and a graceful stop would wait on it
 * forever (oven-sh/bun#35283).
 */
async function withServer(
  overrides: Record<string, string>,
  run: (server: Server) => Promise<void>,
  listen: { idleTimeout?: number } = {},
): Promise<void> {
  const ctx = await makeApp(overrides);
  ctx.app.listen({ ...listenOptions(ctx.deps.config), port: 0, hostname: "127.0.0.1", ...listen });
  try {
    const port = ctx.app.server?.port as number;
    const { access } = await signUp(ctx.app);
    await run({ ctx, port, base: `http://127.0.0.1:${port}`, token: access });
  } finally {
    await ctx.app.stop(true);
  }
}

/** What a client saw: a status and body, or the transport error it got instead (EPIPE, ECONNRESET…). */
type Outcome = { status: number; text: string; json: any } | { failure: string };

function parsed(status: number, text: string): Outcome {
  let json: any;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status, text, json };
}

async function viaFetch(url: string, init: RequestInit): Promise<Outcome> {
  try {
    const res = await fetch(url, init);
    return parsed(res.status, await res.text());
  } catch (error) {
    const { code, name, message } = error as { code?: string; name?: string; message?: string };
    return { failure: `${code ?? name}: ${message}` };
  }
}

/** curl as a user would run it; the body is printed, then the status on a line of its own. */
const LIMIT = MiB;

/** curl -F of a text file of 4 × the limit, with `extra` arguments. */
function curlUpload(base: string, token: string, extra: string[]) {
  const file = join(scratch(), "big.txt");
  writeFileSync(file, new Uint8Array(4 * LIMIT).fill(0x61));
  return viaCurl([
    "-H",
    `Authorization: Bearer ${token}`,
    ...extra,
    "-F",
    `file=@${file};type=text/plain`,
    `${base}${API}/uploads`,
  ]);
}

async function viaCurl(args: string[]): Promise<Outcome & { exitCode: number; stderr: string }> {
  const proc = Bun.spawn([CURL as string, "-s", "-S", "-o", "-", "-w", "\n%{http_code}", ...args], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const [out, stderr, exitCode] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  const cut = out.lastIndexOf("\n");
  const status = Number(out.slice(cut + 1));
  if (!status) return { failure: `curl exit ${exitCode}: ${stderr.trim()}`, exitCode, stderr };
  return { ...parsed(status, out.slice(0, cut)), exitCode, stderr };
}

/** The contract's 413; a transport failure (or a bare 413) shows up in the first assertion, named by `label`. */
function expectJson413(label: string, outcome: Outcome) {
  const seen =
    "failure" in outcome
      ? { failure: outcome.failure }
      : {
          status: outcome.status,
          code: outcome.json?.error?.code ?? `(not the JSON error) ${outcome.text.slice(0, 200)}`,
        };
  expect({ case: label, ...seen }).toEqual({ case: label, status: 413, code: "PAYLOAD_TOO_LARGE" });
  if (!("failure" in outcome)) expectError(outcome, 413, "PAYLOAD_TOO_LARGE");
}

/** A multipart body as a browser builds it, around `size` bytes of text in the part `file`. */
function multipart(size: number, boundary = "X") {
  const head = new TextEncoder().encode(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\nContent-Type: text/plain\r\n\r\n`,
  );
  const tail = new TextEncoder().encode(`\r\n--${boundary}--\r\n`);
  return { head, tail, length: head.byteLength + size + tail.byteLength };
}

/** Sends `total` bytes in 64 KiB chunks: a body without a length, so fetch sends it chunked. */
function streamOf(parts: { head?: Uint8Array; fill: number; total: number; tail?: Uint8Array }) {
  const chunk = new Uint8Array(64 * 1024).fill(parts.fill);
  let sent = 0;
  let started = false;
  let ended = false;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!started && parts.head) {
        started = true;
        controller.enqueue(parts.head);
        return;
      }
      if (sent < parts.total) {
        const n = Math.min(chunk.byteLength, parts.total - sent);
        sent += n;
        controller.enqueue(chunk.subarray(0, n));
        return;
      }
      if (!ended && parts.tail) {
        ended = true;
        controller.enqueue(parts.tail);
        return;
      }
      controller.close();
    },
  });
}

/** Folders for the big files curl sends, removed after the run. */
const scratchDirs: string[] = [];
const scratch = () => {
  const dir = mkdtempSync(join(tmpdir(), "rp-server-test-"));
  scratchDirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of scratchDirs) rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!CURL)(`files through a real socket${CURL ? "" : " (skipped: curl is not on PATH)"}`, () => {
  test("a client that hangs up mid-upload leaves no object, no temporary and no row; the server goes on", async () => {
    await withServer({}, async ({ ctx, port, base, token }) => {
      const size = 4 * MiB;
      const { head, length } = multipart(size);
      const socket = net.connect(port, "127.0.0.1");
      await new Promise<void>((resolve, reject) => {
        socket.once("connect", resolve);
        socket.once("error", reject);
      });
      let received = "";
      socket.on("data", (data) => {
        received += data.toString();
      });
      socket.on("error", () => {});
      socket.write(
        [
          `POST ${API}/uploads HTTP/1.1`,
          `Host: 127.0.0.1:${port}`,
          `Authorization: Bearer ${token}`,
          "Content-Type: multipart/form-data; boundary=X",
          `Content-Length: ${length}`,
          "",
          "",
        ].join("\r\n"),
      );
      socket.write(head);
      // Past the first write to disk (1 MiB is gathered before it).
      socket.write(new Uint8Array(1536 * 1024).fill(0x61));
      // The upload is under way: its temporary exists (so the clean-up below is really exercised).
      expect(await eventually(async () => (await stored(ctx)).temporaries === 1, 5000)).toBe(true);
      expect(received).toBe("");
      socket.destroy();

      const cleaned = await eventually(async () => {
        const now = await stored(ctx);
        return now.objects === 0 && now.temporaries === 0 && now.rows === 0;
      }, 1000);
      expect({ cleanedWithinOneSecond: cleaned, stored: await stored(ctx) }).toEqual({
        cleanedWithinOneSecond: true,
        stored: NOTHING,
      });

      // The server still answers, and still stores uploads.
      const live = await fetch(`${base}${API}/health/live`);
      expect(live.status).toBe(200);
      await live.text();
      const form = new FormData();
      form.append("file", new File(["still here\n"], "after.txt", { type: "text/plain" }));
      const after = await viaFetch(`${base}${API}/uploads`, {
        method: "POST",
        body: form,
        headers: { authorization: `Bearer ${token}` },
      });
      expect("status" in after ? after.status : after.failure).toBe(201);
      expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });
    });
  });

  describe("no bare 413: every oversize body gets the contract's JSON error (MAX_UPLOAD_SIZE=1 MiB)", () => {
    const small = { MAX_UPLOAD_SIZE: String(LIMIT) };
    /** ~2 MiB of valid JSON for register, over the 1 MiB JSON cap. */
    const bigJson = () => JSON.stringify({ username: "big", email: "big@example.com", password: "x".repeat(2 * MiB) });

    test("(a) a ~2 MiB JSON register body with Content-Length, by Bun's fetch: the JSON 413", async () => {
      await withServer(small, async ({ ctx, base }) => {
        expectJson413(
          "fetch JSON Content-Length",
          await viaFetch(`${base}${API}/auth/register`, {
            method: "POST",
            body: bigJson(),
            headers: { "content-type": "application/json" },
          }),
        );
        expect(await stored(ctx)).toEqual(NOTHING);
      });
    });

    test("(a) the same ~2 MiB JSON register body by curl --data-binary: the JSON 413", async () => {
      await withServer(small, async ({ ctx, base }) => {
        const file = join(scratch(), "big.json");
        writeFileSync(file, bigJson());
        const curl = await viaCurl([
          "-H",
          "Content-Type: application/json",
          "--data-binary",
          `@${file}`,
          `${base}${API}/auth/register`,
        ]);
        expectJson413("curl JSON Content-Length", curl);
        expect(await stored(ctx)).toEqual(NOTHING);
      });
    });

    test("(c) the same JSON body chunked: Bun's fetch (stream, duplex half) and curl read the JSON 413", async () => {
      await withServer(small, async ({ ctx, base }) => {
        const body = new TextEncoder().encode(bigJson());
        const url = `${base}${API}/auth/register`;
        const stream = new ReadableStream<Uint8Array>({
          start(controller) {
            for (let at = 0; at < body.byteLength; at += 64 * 1024)
              controller.enqueue(body.subarray(at, at + 64 * 1024));
            controller.close();
          },
        });
        expectJson413(
          "fetch JSON chunked",
          await viaFetch(url, {
            method: "POST",
            body: stream,
            headers: { "content-type": "application/json" },
            duplex: "half",
          } as RequestInit),
        );
        const file = join(scratch(), "big.json");
        writeFileSync(file, body);
        const curl = await viaCurl([
          "-H",
          "Content-Type: application/json",
          "-H",
          "Transfer-Encoding: chunked",
          "--data-binary",
          `@${file}`,
          url,
        ]);
        expectJson413("curl JSON chunked", curl);
        expect(await stored(ctx)).toEqual(NOTHING);
      });
    });

    test("(b) an authenticated upload of 4 × the limit: Bun's fetch (FormData) reads the JSON 413", async () => {
      await withServer(small, async ({ ctx, base, token }) => {
        const form = new FormData();
        form.append("file", new File([new Uint8Array(4 * LIMIT).fill(0x61)], "big.txt", { type: "text/plain" }));
        const outcome = await viaFetch(`${base}${API}/uploads`, {
          method: "POST",
          body: form,
          headers: { authorization: `Bearer ${token}` },
        });
        expectJson413("fetch upload Content-Length", outcome);
        expect(await stored(ctx)).toEqual(NOTHING);
      });
    });

    test("(b) an authenticated upload of 4 × the limit: curl -F reads the JSON 413", async () => {
      await withServer(small, async ({ ctx, base, token }) => {
        expectJson413("curl upload Content-Length", await curlUpload(base, token, []));
        expect(await stored(ctx)).toEqual(NOTHING);
      });
    });

    test("(c) the 4 × upload chunked: Bun's fetch (ReadableStream, duplex half) reads the JSON 413", async () => {
      await withServer(small, async ({ ctx, base, token }) => {
        const { head, tail } = multipart(4 * LIMIT);
        const outcome = await viaFetch(`${base}${API}/uploads`, {
          method: "POST",
          body: streamOf({ head, fill: 0x61, total: 4 * LIMIT, tail }),
          headers: { authorization: `Bearer ${token}`, "content-type": "multipart/form-data; boundary=X" },
          duplex: "half",
        } as RequestInit);
        expectJson413("fetch upload chunked", outcome);
        expect(await stored(ctx)).toEqual(NOTHING);
      });
    });

    test("(c) the 4 × upload chunked: curl -H 'Transfer-Encoding: chunked' -F reads the JSON 413", async () => {
      await withServer(small, async ({ ctx, base, token }) => {
        const curl = await curlUpload(base, token, ["-H", "Transfer-Encoding: chunked"]);
        expectJson413("curl upload chunked", curl);
        expect(await stored(ctx)).toEqual(NOTHING);
      });
    });

    test("(d) after all of them on one server, nothing is stored and the server still serves", async () => {
      await withServer(small, async ({ ctx, base, token }) => {
        const file = join(scratch(), "big.txt");
        writeFileSync(file, new Uint8Array(4 * LIMIT).fill(0x61));
        const auth = `Authorization: Bearer ${token}`;
        const url = `${base}${API}/uploads`;
        const { head, tail } = multipart(4 * LIMIT);
        const form = new FormData();
        form.append("file", Bun.file(file, { type: "text/plain" }), "big.txt");
        const outcomes = {
          fetchLength: await viaFetch(url, {
            method: "POST",
            body: form,
            headers: { authorization: `Bearer ${token}` },
          }),
          curlLength: await viaCurl(["-H", auth, "-F", `file=@${file};type=text/plain`, url]),
          fetchChunked: await viaFetch(url, {
            method: "POST",
            body: streamOf({ head, fill: 0x61, total: 4 * LIMIT, tail }),
            headers: { authorization: `Bearer ${token}`, "content-type": "multipart/form-data; boundary=X" },
            duplex: "half",
          } as RequestInit),
          curlChunked: await viaCurl([
            "-H",
            auth,
            "-H",
            "Transfer-Encoding: chunked",
            "-F",
            `file=@${file};type=text/plain`,
            url,
          ]),
        };
        const statuses = Object.fromEntries(
          Object.entries(outcomes).map(([name, o]) => [name, "failure" in o ? o.failure : o.status]),
        );
        expect(statuses).toEqual({ fetchLength: 413, curlLength: 413, fetchChunked: 413, curlChunked: 413 });
        expect(
          await eventually(async () => {
            const now = await stored(ctx);
            return now.objects === 0 && now.temporaries === 0 && now.rows === 0;
          }, 1000),
        ).toBe(true);
        expect(await stored(ctx)).toEqual(NOTHING);
        const live = await fetch(`${base}${API}/health/live`);
        expect(live.status).toBe(200);
        await live.text();
      });
    });
  });

  // Bun does not count body bytes as activity: its idle timeout cut uploads still sending (at 10 KB/s, its
  // 30 s). Scaled: 500 bytes every 250 ms for 5 s against a 2 s idle timeout.
  test("an upload still moving outlives the server's idle timeout", async () => {
    await withServer(
      { UPLOAD_IDLE_SECONDS: "2" },
      async ({ port, token }) => {
        const boundary = "slowboundary";
        const head = `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\nContent-Type: text/plain\r\n\r\n`;
        const tail = `\r\n--${boundary}--\r\n`;
        const size = 10_000;
        const answer = await rawHttp(
          port,
          async (write) => {
            write(
              `POST ${API}/uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n` +
                `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: ${head.length + size + tail.length}\r\n\r\n${head}`,
            );
            for (let sent = 0; sent < size; sent += 500) {
              write("s".repeat(500));
              await Bun.sleep(250);
            }
            write(tail);
          },
          20_000,
        );
        expect(answer.status).toBe(201);
        expect(answer.json.file_size).toBe(size);
      },
      { idleTimeout: 2 },
    );
  });

  test("a 20 MiB upload is stored intact: same SHA-256 and length; a Range gets 206", async () => {
    await withServer({ MAX_UPLOAD_SIZE: String(32 * MiB) }, async ({ ctx, base, token }) => {
      const size = 20 * MiB;
      const bytes = new Uint8Array(size);
      for (let at = 0; at < size; at += 65536) crypto.getRandomValues(bytes.subarray(at, at + 65536));
      // Random lowercase letters: valid UTF-8, so it passes as text/plain.
      for (let i = 0; i < size; i++) bytes[i] = 0x61 + ((bytes[i] as number) % 26);
      const digest = sha256(bytes);

      const form = new FormData();
      form.append("file", new File([bytes], "big.txt", { type: "text/plain" }));
      const created = await viaFetch(`${base}${API}/uploads`, {
        method: "POST",
        body: form,
        headers: { authorization: `Bearer ${token}` },
      });
      expect("status" in created ? created.status : created.failure).toBe(201);
      const info = (created as { json: any }).json;
      expect({ size: info.file_size, hash: info.file_hash }).toEqual({ size, hash: digest });
      expect(await stored(ctx)).toEqual({ objects: 1, temporaries: 0, rows: 1 });

      const read = async (headers: Record<string, string> = {}) => {
        const res = await fetch(`${base}${API}/uploads/${info.id}/download`, {
          headers: { authorization: `Bearer ${token}`, ...headers },
        });
        const hasher = new Bun.CryptoHasher("sha256");
        let length = 0;
        for await (const chunk of res.body as ReadableStream<Uint8Array>) {
          hasher.update(chunk);
          length += chunk.byteLength;
        }
        return { res, length, hash: hasher.digest("hex") };
      };

      // On the wire from disk (sendfile) and from a bucket (spooled first: Bun drops the length of a
      // streamed body, oven-sh/bun#10507).
      const whole = await read();
      expect(whole.res.status).toBe(200);
      expect(whole.res.headers.get("content-length")).toBe(String(size));
      expect({ length: whole.length, hash: whole.hash }).toEqual({ length: size, hash: digest });

      const from = 10 * MiB;
      const part = await read({ range: `bytes=${from}-` });
      expect(part.res.status).toBe(206);
      expect(part.res.headers.get("content-length")).toBe(String(size - from));
      expect(part.res.headers.get("content-range")).toBe(`bytes ${from}-${size - 1}/${size}`);
      expect({ length: part.length, hash: part.hash }).toEqual({
        length: size - from,
        hash: sha256(bytes.subarray(from)),
      });
    });
  });
});
