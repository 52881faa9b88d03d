/**
 * `bun bench/micro/big-upload.ts [DIR]`: what each step of streaming a 200 MiB `curl -F` upload costs in
 * a bare Bun.serve, the steps added one at a time as src/modules/files/upload.ts takes them: reading the
 * body, SHA-256, the multipart parser, the file's bytes of each chunk written to a FileHandle and awaited.
 * Per step (median of ROUNDS): MiB/s, server CPU-ms split into the JavaScript thread and the others,
 * minor page faults, peak RSS growth. The server runs in a child process so that its threads are its own.
 *
 * Measured here on 2f6daf4 (busboy, and a `Bun.gc(true)` per 16 MiB of RSS growth), on this disk: reading
 * 170 ms of the JavaScript thread, SHA-256 +100, busboy +130, the writes +120 and +250 on the pool's
 * threads, the forced collections +90 and +100: ~980 ms of CPU per 200 MiB, as much as the server spent.
 */
import { randomBytes } from "node:crypto";
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from "node:fs";
import { open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMultipartParser, multipartBoundary } from "../../src/modules/files/multipart";

const MiB = 1024 * 1024;
const FILE_BYTES = 200 * MiB;
const ROUNDS = 3;
const STEPS = ["read", "hash", "parse", "write"] as const;
type Step = (typeof STEPS)[number];

/** The server: POST /<step> streams the body through every step up to that one. */
async function serve(dir: string): Promise<void> {
  const upTo = (step: Step, than: Step) => STEPS.indexOf(step) >= STEPS.indexOf(than);
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    maxRequestBodySize: Number.POSITIVE_INFINITY,
    async fetch(request) {
      const step = new URL(request.url).pathname.slice(1) as Step;
      const hash = new Bun.CryptoHasher("sha256");
      const path = join(dir, randomBytes(8).toString("hex"));
      const handle = upTo(step, "write") ? await open(path, "wx") : undefined;
      let size = 0;
      // As upload.ts: the file's bytes of a chunk are collected while it is parsed, then written in turn.
      const toWrite: Uint8Array[] = [];
      const take = (bytes: Uint8Array) => {
        size += bytes.byteLength;
        if (upTo(step, "hash")) hash.update(bytes);
        if (handle) toWrite.push(bytes);
      };
      const boundary = multipartBoundary(request.headers.get("content-type") ?? "") ?? "";
      const parser = createMultipartParser(boundary, () => ({ data: take, end() {} }));
      try {
        for await (const chunk of request.body ?? []) {
          if (upTo(step, "parse")) parser.push(chunk);
          else take(chunk);
          for (const bytes of toWrite.splice(0)) await handle?.write(bytes);
        }
        if (upTo(step, "parse")) parser.end();
      } finally {
        await handle?.close();
        await rm(path, { force: true });
      }
      return Response.json({ size, hash: hash.digest("hex") });
    },
  });
  console.log(server.port);
}

/** CPU ticks of a process's JavaScript thread and of its other threads; its minor faults. */
function usage(pid: number) {
  let main = 0;
  let others = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    const fields = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (Number(tid) === pid) main += ticks;
    else others += ticks;
  }
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return { main, others, minorFaults: Number(fields[7]) };
}

const rssKb = (pid: number) => Number(readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+)/m)?.[1]);
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

async function measure(dir: string): Promise<void> {
  const file = join(dir, "upload.txt");
  const fd = openSync(file, "w");
  // Valid UTF-8 text, as a text/plain upload must be.
  const line = Buffer.alloc(MiB, "abcdefghijklmnopqrstuvwxyz0123456789 \n");
  for (let i = 0; i < FILE_BYTES / MiB; i++) writeSync(fd, line);
  closeSync(fd);
  const child = Bun.spawn([process.execPath, import.meta.path, "--serve", dir], { stdout: "pipe", stderr: "inherit" });
  try {
    const reader = child.stdout.getReader();
    const port = new TextDecoder().decode((await reader.read()).value).trim();
    const results = new Map<
      Step,
      { mibPerSec: number[]; main: number[]; others: number[]; faults: number[]; rss: number[] }
    >();
    for (let round = 0; round < ROUNDS; round++) {
      for (const step of STEPS) {
        const before = usage(child.pid);
        const rssBefore = rssKb(child.pid);
        let peak = rssBefore;
        const timer = setInterval(() => {
          peak = Math.max(peak, rssKb(child.pid));
        }, 20);
        const curl = Bun.spawn(
          [
            ...["curl", "-sS", "-o", "/dev/null", "-w", "%{time_total}", "-H", "Expect:"],
            ...["-F", `file=@${file};type=text/plain`, `http://127.0.0.1:${port}/${step}`],
          ],
          { stdout: "pipe" },
        );
        const seconds = Number(await new Response(curl.stdout).text());
        clearInterval(timer);
        const after = usage(child.pid);
        const entry = results.get(step) ?? { mibPerSec: [], main: [], others: [], faults: [], rss: [] };
        entry.mibPerSec.push(FILE_BYTES / MiB / seconds);
        entry.main.push((after.main - before.main) * 10);
        entry.others.push((after.others - before.others) * 10);
        entry.faults.push(after.minorFaults - before.minorFaults);
        entry.rss.push((peak - rssBefore) / 1024);
        results.set(step, entry);
      }
    }
    console.log(
      `${FILE_BYTES / MiB} MiB curl -F upload into ${dir}, each step adding to the ones above; median of ${ROUNDS}`,
    );
    for (const [step, r] of results) {
      console.log(
        `${step.padEnd(7)} ${median(r.mibPerSec).toFixed(0).padStart(5)} MiB/s  CPU-ms JS thread ${median(r.main).toFixed(0).padStart(4)}, others ${median(r.others).toFixed(0).padStart(4)}  minor faults ${median(r.faults).toFixed(0).padStart(6)}  peak RSS +${median(r.rss).toFixed(0)} MiB`,
      );
    }
  } finally {
    child.kill();
  }
}

if (process.argv[2] === "--serve") await serve(process.argv[3] as string);
else {
  const dir = mkdtempSync(join(process.argv[2] ?? tmpdir(), "big-upload-micro-"));
  try {
    await measure(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
