/**
 * Tools of `bun run bench profile`: where a server's CPU goes (a `bun --cpu-prof` profile summed by
 * function and by module, self and inclusive, over a time window), and what one request costs in
 * Postgres statements (counted on the wire by a proxy), Redis commands (MONITOR) and system calls (strace).
 */
import { readdirSync, readFileSync } from "node:fs";
import net from "node:net";
import { join, relative } from "node:path";
import { run, spawnTracked, tail } from "./process";

// ---------------------------------------------------------------- Postgres statements

/** Frontend messages of a Postgres connection as they pass: what each one runs. */
export interface PostgresCounts {
  /** Statements executed, by text: Bind of a prepared statement, or a simple Query. */
  statements: Map<string, number>;
  /** Round trips: each Sync or simple Query waits for the server's ReadyForQuery. */
  roundTrips: number;
  /** Parse messages: statements prepared (a prepared statement is parsed once per connection). */
  parses: number;
}

const SSL_REQUEST = 80877103;

/** Reads a connection's frontend messages (type byte, int32 length including itself) as they arrive. */
function frontendParser(counts: () => PostgresCounts) {
  let pending: Buffer = Buffer.alloc(0);
  let started = false;
  /** Statement name → text, per connection (names are the connection's own). */
  const prepared = new Map<string, string>();
  const cString = (body: Buffer, from: number) => {
    const end = body.indexOf(0, from);
    return { text: body.toString("utf8", from, end), next: end + 1 };
  };
  const count = (text: string) => {
    const statement = text.replace(/\s+/g, " ").trim();
    const { statements } = counts();
    statements.set(statement, (statements.get(statement) ?? 0) + 1);
  };
  return (chunk: Buffer) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    for (;;) {
      if (!started) {
        // Startup and SSLRequest messages have no type byte.
        if (pending.length < 8) return;
        const length = pending.readInt32BE(0);
        if (pending.length < length) return;
        started = pending.readInt32BE(4) !== SSL_REQUEST;
        pending = pending.subarray(length);
        continue;
      }
      if (pending.length < 5) return;
      const length = pending.readInt32BE(1);
      if (pending.length < length + 1) return;
      const type = String.fromCharCode(pending[0] as number);
      const body = pending.subarray(5, length + 1);
      pending = pending.subarray(length + 1);
      const current = counts();
      if (type === "Q") {
        current.roundTrips++;
        count(cString(body, 0).text);
      } else if (type === "P") {
        current.parses++;
        const name = cString(body, 0);
        prepared.set(name.text, cString(body, name.next).text);
      } else if (type === "B") {
        const portal = cString(body, 0);
        count(prepared.get(cString(body, portal.next).text) ?? "(unknown statement)");
      } else if (type === "S") {
        current.roundTrips++;
      }
    }
  };
}

/** A TCP proxy in front of Postgres that counts what goes through it; `reset` starts a new count. */
export async function postgresCounter(target: { host: string; port: number }) {
  let counts: PostgresCounts = { statements: new Map(), roundTrips: 0, parses: 0 };
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    const parse = frontendParser(() => counts);
    client.on("data", (chunk: Buffer) => parse(chunk));
    client.pipe(upstream);
    upstream.pipe(client);
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", close);
    upstream.on("error", close);
    client.on("close", close);
    upstream.on("close", close);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    port,
    reset(): void {
      counts = { statements: new Map(), roundTrips: 0, parses: 0 };
    },
    counts: () => counts,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

// ---------------------------------------------------------------- Redis commands and system calls

/** Redis commands sent to database `db` while `work` runs (MONITOR sees every database; lines name theirs). */
export async function redisCommandsDuring<T>(db: string, work: () => Promise<T>) {
  const { child, output } = spawnTracked(["redis-cli", "monitor"], { env: { PATH: process.env.PATH } });
  await Bun.sleep(300);
  const result = await work();
  await Bun.sleep(300);
  child.kill("SIGTERM");
  const commands = new Map<string, number>();
  for (const line of (await output).split("\n")) {
    const match = line.match(/^\d+\.\d+ \[(\d+) [^\]]+\] "([^"]+)"/);
    if (match?.[1] !== db || !match[2]) continue;
    const name = match[2].toUpperCase();
    commands.set(name, (commands.get(name) ?? 0) + 1);
  }
  return { result, commands };
}

/** System calls of every thread of `pid` while `work` runs (`strace -f -c`), by name. */
export async function syscallsDuring<T>(pid: number, work: () => Promise<T>) {
  const { child, output } = spawnTracked(["strace", "-f", "-c", "-p", String(pid)], {
    env: { PATH: process.env.PATH },
  });
  // strace reports on stderr once it has attached; give it a moment.
  await Bun.sleep(500);
  const result = await work();
  child.kill("SIGINT");
  const text = await output;
  const calls = new Map<string, number>();
  for (const line of text.split("\n")) {
    // % time  seconds  usecs/call  calls  [errors]  syscall
    const fields = line.trim().split(/\s+/);
    const name = fields.at(-1);
    if (fields.length < 5 || !name || !/^\d/.test(fields[0] ?? "") || name === "total") continue;
    calls.set(name, Number(fields[3]));
  }
  if (calls.size === 0) throw new Error(`strace counted nothing:\n${tail(text)}`);
  return { result, calls };
}

// ---------------------------------------------------------------- CPU profiles

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface Cost {
  name: string;
  self: number;
  total: number;
}

export interface ProfileSummary {
  /** Samples in the window; each stands for one sampling interval spent in JavaScript (or native code it called). */
  samples: number;
  functions: Cost[];
  modules: Cost[];
}

/** Where a frame's code lives: a package, a file of ours, or Bun's own (built-in or native). */
function moduleOf(url: string, root: string): string {
  if (!url || url === "[native code]") return "(native)";
  const path = url.replace(/^file:\/\//, "");
  const packaged = path.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (packaged?.[1]) return packaged[1];
  if (path.startsWith("/")) return relative(root, path);
  return `(bun ${path.replace(/^builtin:\/\//, "")})`;
}

/**
 * The newest `.cpuprofile` in `dir`, summed over the samples taken in [fromUs, toUs] (epoch µs, the
 * profile's clock): each function's and module's own samples (self) and the samples it was on the stack for.
 */
export function summarizeProfile(dir: string, root: string, fromUs: number, toUs: number): ProfileSummary {
  const file = readdirSync(dir)
    .filter((name) => name.endsWith(".cpuprofile"))
    .sort()
    .at(-1);
  if (!file) throw new Error(`no .cpuprofile in ${dir}`);
  const profile = JSON.parse(readFileSync(join(dir, file), "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const functionOf = ({ callFrame: frame }: ProfileNode) => {
    const where = moduleOf(frame.url, root);
    return `${frame.functionName || "(anonymous)"} ${where}${frame.lineNumber >= 0 && !where.startsWith("(") ? `:${frame.lineNumber + 1}` : ""}`;
  };
  const functions = new Map<string, Cost>();
  const modules = new Map<string, Cost>();
  const cost = (table: Map<string, Cost>, name: string) => {
    let entry = table.get(name);
    if (!entry) {
      entry = { name, self: 0, total: 0 };
      table.set(name, entry);
    }
    return entry;
  };
  let at = profile.startTime;
  let samples = 0;
  profile.samples.forEach((id, i) => {
    at += profile.timeDeltas[i] ?? 0;
    if (at < fromUs || at > toUs) return;
    const leaf = byId.get(id);
    if (!leaf || leaf.callFrame.functionName === "(root)") return;
    samples++;
    cost(functions, functionOf(leaf)).self++;
    cost(modules, moduleOf(leaf.callFrame.url, root)).self++;
    const seen = new Set<string>();
    for (let node: ProfileNode | undefined = leaf; node; node = byId.get(parent.get(node.id) ?? -1)) {
      if (node.callFrame.functionName === "(root)") break;
      for (const [table, name] of [
        [functions, functionOf(node)],
        [modules, `${moduleOf(node.callFrame.url, root)}`],
      ] as const) {
        if (seen.has(`${table === functions}${name}`)) continue;
        seen.add(`${table === functions}${name}`);
        cost(table, name).total++;
      }
    }
  });
  const sorted = (table: Map<string, Cost>) => [...table.values()].sort((a, b) => b.self - a.self);
  return { samples, functions: sorted(functions), modules: sorted(modules) };
}

/** The summary as text: the top `count` functions by self and by inclusive samples, and every module. */
export function formatProfile(summary: ProfileSummary, count = 25): string {
  const share = (n: number) => `${((n / Math.max(1, summary.samples)) * 100).toFixed(1).padStart(5)}%`;
  const lines = (costs: Cost[]) => costs.map((c) => `  ${share(c.self)} self ${share(c.total)} incl  ${c.name}`);
  const byTotal = (costs: Cost[]) => [...costs].sort((a, b) => b.total - a.total);
  return [
    `${summary.samples} samples`,
    "by function, self:",
    ...lines(summary.functions.slice(0, count)),
    "by function, inclusive:",
    ...lines(byTotal(summary.functions).slice(0, count)),
    "by module:",
    ...lines(byTotal(summary.modules).filter((c) => c.total > 0)),
  ].join("\n");
}

/** Whether strace can attach here (ptrace may be forbidden in a container). */
export async function straceWorks(): Promise<boolean> {
  if (!Bun.which("strace")) return false;
  const probe = await run(["strace", "-c", "true"], { timeoutMs: 10_000 });
  return probe.code === 0;
}
