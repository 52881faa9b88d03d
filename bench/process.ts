import type { Subprocess } from "bun";

type Child = Subprocess<"ignore", "pipe", "pipe">;

const children = new Set<Child>();

/** Kills whatever is still running; safe to call from an `exit` handler (it is synchronous). */
export function killChildren(): void {
  for (const child of children) child.kill("SIGKILL");
}

interface SpawnOptions {
  cwd?: string;
  env?: Record<string, string | undefined>;
  /** Kill the child after this long, so no step can hang the bench. */
  timeoutMs?: number;
}

/** Spawns a child that `killChildren` will reach if the bench dies before stopping it. */
export function spawnTracked(
  cmd: string[],
  { cwd, env, timeoutMs }: SpawnOptions,
): { child: Child; output: Promise<string> } {
  const child = Bun.spawn(cmd, { cwd, env, stdin: "ignore", stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  children.add(child);
  void child.exited.then(() => children.delete(child));
  // Drain both pipes from the start: a full pipe would stall the child.
  const output = Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]).then(
    ([stdout, stderr]) => stdout + stderr,
  );
  return { child, output };
}

export function tail(text: string, lines = 20): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

/** Runs a command to completion; `output` is stdout followed by stderr. */
export async function run(cmd: string[], options: SpawnOptions & { timeoutMs: number }) {
  const { child, output } = spawnTracked(cmd, options);
  const [code, text] = await Promise.all([child.exited, output]);
  return { code, output: text };
}

export interface Launch {
  name: string;
  cwd: string;
  readyPath: string;
  timeoutMs: number;
  command(port: number): { cmd: string[]; env: Record<string, string | undefined> };
}

export interface Service {
  child: Child;
  url: string;
  /** Spawn to first 200 from `readyPath`, in ms. */
  readyMs: number;
  output: Promise<string>;
}

function freePort(): number {
  const probe = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = probe.port;
  probe.stop(true);
  if (!port) throw new Error("no free port");
  return port;
}

/** SIGTERM, then SIGKILL if the child has not exited within `graceMs`. */
export async function stop(child: Child, graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const exited = await Promise.race([child.exited.then(() => true), Bun.sleep(graceMs).then(() => false)]);
  if (!exited) {
    console.error(`  (child ${child.pid} ignored SIGTERM for ${graceMs} ms; killed)`);
    child.kill("SIGKILL");
    await child.exited;
  }
}

/** Spawns on a free port and polls `readyPath` every 10 ms until it answers 200. */
export async function startService(launch: Launch): Promise<Service> {
  const port = freePort();
  const url = `http://127.0.0.1:${port}`;
  const { cmd, env } = launch.command(port);
  const startedAt = performance.now();
  const { child, output } = spawnTracked(cmd, { cwd: launch.cwd, env });
  while (performance.now() - startedAt < launch.timeoutMs) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(
        `${launch.name} exited (${child.exitCode ?? child.signalCode}) before ready:\n${tail(await output)}`,
      );
    }
    const status = await fetch(url + launch.readyPath, { signal: AbortSignal.timeout(1000) }).then(
      async (response) => {
        await response.arrayBuffer();
        return response.status;
      },
      () => 0,
    );
    if (status === 200) return { child, url, readyMs: performance.now() - startedAt, output };
    await Bun.sleep(10);
  }
  await stop(child);
  throw new Error(`${launch.name} not ready within ${launch.timeoutMs} ms:\n${tail(await output)}`);
}

/** Starts `count` times; every start but the last is stopped again, the last is returned running. */
export async function timedStarts(launch: Launch, count: number): Promise<{ samples: number[]; service: Service }> {
  const samples: number[] = [];
  for (;;) {
    const service = await startService(launch);
    samples.push(service.readyMs);
    if (samples.length >= count) return { samples, service };
    await stop(service.child);
  }
}
