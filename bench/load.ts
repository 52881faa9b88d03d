import { readFileSync } from "node:fs";
import { runWrk, type WrkLoad, type WrkResult } from "./wrk";

/** How hard and how long a row is loaded. */
export interface Shape {
  threads: number;
  connections: number;
  seconds: number;
  /** Both servers get the same warm-up, so neither is measured cold (JIT, pools, caches). */
  warmupSeconds: number;
  /**
   * Throughput is measured in rounds (a baseline/server pair, or every server in turn) run back to back,
   * and the median round is reported: this machine's speed drifts by tens of percent within a minute, and
   * a round shares the drift.
   */
  rounds: number;
}

export const LOAD: Shape = { threads: 2, connections: 64, seconds: 5, warmupSeconds: 2, rounds: 3 };

/** A load on one server process, whose CPU time is read around the measured run. */
export type Load = Omit<WrkLoad, "threads" | "connections" | "seconds"> & { pid: number };

export type Measured = WrkResult & {
  /** The server process's CPU time (user + system) per request: steadier than req/s on a shared machine. */
  cpuUsPerRequest: number;
  /** Of which its main (JavaScript) thread's; the rest is its helpers' (I/O pool, JIT, GC). */
  mainThreadCpuUsPerRequest: number;
};

export const median = (values: number[]): number =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

/** utime + stime of a stat file, in µs (fields 14 and 15, in clock ticks of 10 ms). */
function statCpuUs(path: string): number {
  const fields = readFileSync(path, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** CPU time of a process (all its threads), in µs. */
export const processCpuUs = (pid: number): number => statCpuUs(`/proc/${pid}/stat`);

/** CPU time of a process's main thread (the one whose id is the process's), in µs. */
export const mainThreadCpuUs = (pid: number): number => statCpuUs(`/proc/${pid}/task/${pid}/stat`);

export async function loadTest({ pid, ...load }: Load, shape: Shape = LOAD): Promise<Measured> {
  const { threads, connections, seconds, warmupSeconds } = shape;
  await runWrk({ ...load, threads, connections, seconds: warmupSeconds });
  const before = { all: processCpuUs(pid), main: mainThreadCpuUs(pid) };
  const result = await runWrk({ ...load, threads, connections, seconds });
  const requests = Math.max(1, result.requests);
  return {
    ...result,
    cpuUsPerRequest: (processCpuUs(pid) - before.all) / requests,
    mainThreadCpuUsPerRequest: (mainThreadCpuUs(pid) - before.main) / requests,
  };
}

/** The round of a comparison whose ratio is the median, with every round's ratio (for the note). */
export interface MedianPair<T> {
  server: T;
  baseline: T;
  ratio: number;
  ratios: number[];
}

export type Pair = MedianPair<Measured>;

/**
 * `shape.rounds` rounds, each loading every server in turn: each server's runs by name, round by round.
 * Comparing runs of the same round cancels most of the machine's drift.
 */
export async function loadRounds<K extends string>(
  loads: Record<K, Load>,
  shape: Shape = LOAD,
): Promise<Record<K, Measured[]>> {
  const names = Object.keys(loads) as K[];
  const runs = Object.fromEntries(names.map((name) => [name, [] as Measured[]])) as Record<K, Measured[]>;
  for (let i = 0; i < shape.rounds; i++) {
    for (const name of names) runs[name].push(await loadTest(loads[name], shape));
  }
  return runs;
}

/** The round whose server/baseline ratio of `measure` is the median. */
export function medianPair<T>(server: T[], baseline: T[], measure: (run: T) => number): MedianPair<T> {
  const ratios = server.map((run, i) => measure(run) / measure(baseline[i] as T));
  const at = ratios.indexOf(median(ratios));
  return { server: server[at] as T, baseline: baseline[at] as T, ratio: ratios[at] as number, ratios };
}

export const byRequestRate = (run: Measured) => run.requestsPerSec;

/** `shape.rounds` back-to-back baseline/server loads; the pair with the median ratio. */
export async function pairedLoad(server: Load, baseline: Load, shape: Shape = LOAD): Promise<Pair> {
  const runs = await loadRounds({ baseline, server }, shape);
  return medianPair(runs.server, runs.baseline, byRequestRate);
}
