/** A real S3-compatible server for tests: s3rver (npm) in a child process, on a port of its choosing. */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { S3Client } from "bun";
import type { S3Setting } from "../src/config";

export interface TestBucket {
  /** The bucket with no prefix; give each app a prefix of its own. */
  setting: S3Setting;
  /** The settings that point an app at `prefix` in this bucket. */
  env(prefix: string): Record<string, string>;
  /** Multipart uploads of keys under `prefix` begun and neither completed nor aborted (s3rver keeps them in a folder). */
  openMultipartUploads(prefix: string): number;
  /** Sets an object's Last-Modified (s3rver reads it from its file's mtime). */
  backdate(path: string, when: Date): void;
  /** Freezes (SIGSTOP) or thaws (SIGCONT) the server: a bucket that hangs. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void;
  /** Kills the server (by PID) as a crash would, keeping its data; `restart()` serves it again on the same port. */
  kill(): Promise<void>;
  restart(): Promise<void>;
  /** Stops the server (by PID) and removes its data. */
  stop(): Promise<void>;
  /**
   * Starts the server again if it has exited on its own (it did, once, in a long CI run), saying how it
   * ended and what it printed last, so one lost server fails one test instead of every one after it.
   */
  ensureRunning(): Promise<void>;
}

const BUCKET = "reviewpoint-test";
// s3rver's fixed credentials.
const CREDENTIALS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };
/**
 * s3rver on the given port, or one of its choosing (0); it says which. When its stdin closes it removes its
 * data and exits, so it never outlives the test process (bun test fires no "exit" event for a hook to kill it).
 */
const LAUNCHER = `
const S3rver = require(process.argv[1]);
new S3rver({ address: "127.0.0.1", port: Number(process.argv[4]), directory: process.argv[2], silent: true,
  configureBuckets: [{ name: process.argv[3], configs: [] }] })
  .run().then(({ port }) => console.log("listening on " + port));
process.stdin.on("end", () => {
  require("node:fs").rmSync(process.argv[2], { recursive: true, force: true });
  process.exit(0);
}).resume();
`;

/** Runs s3rver over `dir` on `port` (0: any); resolves once it listens, with its process and port. */
async function launch(dir: string, port: number) {
  // Node when present (s3rver's own runtime); it also runs under Bun.
  const runtime = Bun.which("node") ?? process.execPath;
  const server = Bun.spawn([runtime, "-e", LAUNCHER, require.resolve("s3rver"), dir, BUCKET, String(port)], {
    stdin: "pipe",
    stdout: "pipe",
    // A file, not a pipe nobody reads: it can neither fill up nor be lost when the server dies.
    stderr: Bun.file(`${dir}.stderr`),
  });
  const reader = server.stdout.getReader();
  let said = "";
  let listening: string | undefined;
  while (!listening) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`s3rver did not start: ${await Bun.file(`${dir}.stderr`).text()}`);
    said += new TextDecoder().decode(value);
    listening = said.match(/listening on (\d+)/)?.[1];
  }
  reader.releaseLock();
  return { server, port: Number(listening) };
}

export async function startTestBucket(): Promise<TestBucket> {
  const dir = mkdtempSync(join(tmpdir(), "rp-s3rver-"));
  let { server, port } = await launch(dir, 0);
  const endpoint = `http://127.0.0.1:${port}`;

  return {
    setting: { bucket: BUCKET, prefix: "", endpoint, region: "us-east-1", ...CREDENTIALS },
    env: (prefix) => ({
      STORAGE_URL: `s3://${BUCKET}/${prefix}`,
      S3_ENDPOINT: endpoint,
      S3_REGION: "us-east-1",
      S3_ACCESS_KEY_ID: CREDENTIALS.accessKeyId,
      S3_SECRET_ACCESS_KEY: CREDENTIALS.secretAccessKey,
    }),
    openMultipartUploads(prefix) {
      const uploads = join(dir, BUCKET, "._S3rver_uploads");
      const ids = existsSync(uploads) ? readdirSync(uploads) : [];
      return ids.filter((id) => readFileSync(join(uploads, id, "key"), "utf8").startsWith(prefix)).length;
    },
    backdate(path, when) {
      utimesSync(join(dir, BUCKET, `${path}._S3rver_object`), when, when);
    },
    signal: (signal) => server.kill(signal),
    async kill() {
      server.kill("SIGKILL");
      await server.exited;
    },
    async restart() {
      ({ server, port } = await launch(dir, port));
    },
    async stop() {
      server.kill("SIGKILL");
      await server.exited;
      rmSync(dir, { recursive: true, force: true });
      rmSync(`${dir}.stderr`, { force: true });
    },
    async ensureRunning() {
      if (server.exitCode === null && server.signalCode === null) return;
      const said = (await Bun.file(`${dir}.stderr`).text()).trim().split("\n").slice(-10).join("\n");
      console.error(
        `s3rver had exited (code ${server.exitCode}, signal ${server.signalCode}); restarting it. It said:\n${said}`,
      );
      ({ server, port } = await launch(dir, port));
    },
  };
}

/** How many objects lie under `path` (after the setting's prefix), asked of the bucket itself. */
export async function countObjects(setting: S3Setting, path: string): Promise<number> {
  const client = new S3Client(setting);
  const prefix = `${setting.prefix}${path}`;
  let count = 0;
  let continuationToken: string | undefined;
  do {
    const page = await client.list({ prefix, continuationToken });
    count += page.contents?.length ?? 0;
    continuationToken = page.isTruncated ? page.nextContinuationToken : undefined;
  } while (continuationToken);
  return count;
}
