/**
 * `bun bench/micro/storage.ts [DIR]`: the file-system calls of storing one 10 KiB upload, as
 * src/platform/storage.ts makes them and as they could be made, 16 at a time like the bench's small
 * uploads. Prints CPU-µs per upload (median of ROUNDS), split into the JavaScript thread and the
 * threads that run the calls (`Bun Pool`), from /proc/self/task.
 *
 * DIR defaults to a folder under the system temp dir. On a file system without a journal (this
 * machine's ext4) creating a file near many deleted in the last 1-5 minutes costs several times more:
 * compare with DIR=/dev/shm to see the calls' own cost.
 */
import {
  closeSync,
  fsync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { open, rename, rm, writeFile } from "node:fs/promises";
import { promisify } from "node:util";
import { inFolder } from "../../src/platform/storage";

const fsyncOnPool = promisify(fsync);

import { tmpdir } from "node:os";
import { join } from "node:path";

const UPLOADS = 4000;
const CONCURRENCY = 16;
const ROUNDS = 3;
const chunk = Buffer.alloc(10 * 1024, "0123456789abcdef\n");

/** One way to store an upload: bytes into `temporary`, then moved to `target`. */
type Store = (temporary: string, target: string) => Promise<void>;

const GATHER = 1024 * 1024;

/**
 * storage.ts as it is: `begin` opens (in a folder that may be missing) and takes two 1 MiB gather
 * buffers, `write` gathers, `close` writes, fsyncs and stats, `commit` renames (into a folder that may be
 * missing) and removes the temporary's name in case the object was retired.
 */
function ours({ gather = true, fsync = true, rmAfter = true } = {}): Store {
  return async (temporary, target) => {
    const handle = await inFolder(temporary, () => open(temporary, "wx", 0o600));
    const buffer = gather ? Buffer.allocUnsafe(GATHER) : undefined;
    if (gather) Buffer.allocUnsafe(GATHER);
    try {
      if (buffer) buffer.set(chunk, 0);
      await handle.write(buffer ? buffer.subarray(0, chunk.byteLength) : chunk);
      if (fsync) await handle.sync();
      await handle.stat();
    } finally {
      await handle.close();
    }
    await inFolder(target, () => rename(temporary, target));
    if (rmAfter) await rm(temporary, { force: true });
  };
}

const ways: Record<string, { store: Store; newFolder?: boolean }> = {
  "ours: open, 2 x 1 MiB buffers, write, fsync, stat, close, rename, rm": { store: ours() },
  "ours, a new shard folder each time (a young store)": { store: ours(), newFolder: true },
  "ours without the fsync": { store: ours({ fsync: false }) },
  "ours without the 1 MiB buffers": { store: ours({ gather: false }) },
  "ours without the rm after the rename": { store: ours({ rmAfter: false }) },
  "writeFile (one call), rename": {
    store: async (temporary, target) => {
      await writeFile(temporary, chunk, { flag: "wx", mode: 0o600 });
      await rename(temporary, target);
    },
  },
  "Bun.write, rename": {
    store: async (temporary, target) => {
      await Bun.write(temporary, chunk);
      await rename(temporary, target);
    },
  },
  "async open, write, fsync, close, rename (no buffers, stat or rm)": {
    store: async (temporary, target) => {
      const handle = await open(temporary, "wx", 0o600);
      try {
        await handle.write(chunk);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(temporary, target);
    },
  },
  "sync open, write, close and rename; the fsync on the pool": {
    store: async (temporary, target) => {
      const fd = openSync(temporary, "wx", 0o600);
      try {
        writeSync(fd, chunk);
        await fsyncOnPool(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(temporary, target);
    },
  },
  "sync calls on the JavaScript thread": {
    store: async (temporary, target) => {
      const fd = openSync(temporary, "wx", 0o600);
      try {
        writeSync(fd, chunk);
      } finally {
        closeSync(fd);
      }
      renameSync(temporary, target);
    },
  },
};

/** CPU ticks (10 ms) of this process's threads, the JavaScript thread apart from the rest. */
function threadTicks(): { main: number; others: number } {
  let main = 0;
  let others = 0;
  for (const tid of readdirSync("/proc/self/task")) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    if (Number(tid) === process.pid) main += ticks;
    else others += ticks;
  }
  return { main, others };
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

const root = mkdtempSync(join(process.argv[2] ?? tmpdir(), "storage-micro-"));
try {
  const results: Record<string, { main: number[]; others: number[] }> = {};
  // Rounds interleave the ways, so a drift of the machine touches them all alike.
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, { store, newFolder }] of Object.entries(ways)) {
      const dir = join(root, `r${round}-${Object.keys(ways).indexOf(name)}`);
      mkdirSync(join(dir, "tmp"), { recursive: true });
      mkdirSync(join(dir, "objects"), { recursive: true });
      const before = threadTicks();
      let next = 0;
      await Promise.all(
        Array.from({ length: CONCURRENCY }, async () => {
          for (let i = next++; i < UPLOADS; i = next++) {
            const key = `${i}`;
            const folder = newFolder ? join(dir, "objects", key) : join(dir, "objects");
            await store(join(dir, "tmp", key), join(folder, key));
          }
        }),
      );
      const after = threadTicks();
      const entry = results[name] ?? { main: [], others: [] };
      entry.main.push(((after.main - before.main) * 10_000) / UPLOADS);
      entry.others.push(((after.others - before.others) * 10_000) / UPLOADS);
      results[name] = entry;
    }
  }
  console.log(
    `${UPLOADS} uploads of 10 KiB, ${CONCURRENCY} at a time, in ${root}; CPU-µs per upload, median of ${ROUNDS}`,
  );
  for (const [name, { main, others }] of Object.entries(results)) {
    const [m, o] = [median(main), median(others)];
    console.log(
      `${(m + o).toFixed(0).padStart(5)}  (JS thread ${m.toFixed(0)}, other threads ${o.toFixed(0)})  ${name}`,
    );
  }
} finally {
  rmSync(root, { recursive: true, force: true });
}
