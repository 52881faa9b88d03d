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
   * Throughput is measured in baseline/server pairs run back to back, and the median pair is reported:
   * this machine's speed drifts by tens of percent within a minute, and a pair shares the drift.
   */
  pairs: number;
}

export const LOAD: Shape = { threads: 2, connections: 64, seconds: 5, warmupSeconds: 2, pairs: 3 };

/** A load on one server process, whose CPU time is read around the measured run. */
export type Load = Omit<WrkLoad, "threads" | "connections" | "seconds"> & { pid: number };

export type Measured = WrkResult & {
  /** The server process's CPU time (user + system) per request: steadier than req/s on a shared machine. */
  cpuUsPerRequest: number;
};

export const median = (values: number[]): number =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0;

/** utime + stime of a process, in µs (/proc/PID/stat fields 14 and 15, in clock ticks of 10 ms). */
export function processCpuUs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

export async function loadTest({ pid, ...load }: Load, shape: Shape = LOAD): Promise<Measured> {
  const { threads, connections, seconds, warmupSeconds } = shape;
  await runWrk({ ...load, threads, connections, seconds: warmupSeconds });
  const before = processCpuUs(pid);
  const result = await runWrk({ ...load, threads, connections, seconds });
  return { ...result, cpuUsPerRequest: (processCpuUs(pid) - before) / Math.max(1, result.requests) };
}

export interface Pair {
  server: Measured;
  baseline: Measured;
  ratio: number;
  /** Every pair's ratio, for the note. */
  ratios: number[];
}

/** `shape.pairs` back-to-back baseline/server loads; the pair with the median ratio. */
export async function pairedLoad(server: Load, baseline: Load, shape: Shape = LOAD): Promise<Pair> {
  const pairs: Omit<Pair, "ratios">[] = [];
  for (let i = 0; i < shape.pairs; i++) {
    const base = await loadTest(baseline, shape);
    const measured = await loadTest(server, shape);
    pairs.push({ server: measured, baseline: base, ratio: measured.requestsPerSec / base.requestsPerSec });
  }
  const ratios = pairs.map((pair) => pair.ratio);
  const middle = pairs.find((pair) => pair.ratio === median(ratios)) as Omit<Pair, "ratios">;
  return { ...middle, ratios };
}
