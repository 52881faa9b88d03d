import { join } from "node:path";
import { run, tail } from "./process";

const SCRIPT = join(import.meta.dir, "request.lua");

export interface WrkLoad {
  url: string;
  threads: number;
  connections: number;
  seconds: number;
  method?: "GET" | "POST";
  /** JSON body; sent with Content-Type: application/json unless `contentType` says otherwise. */
  body?: string;
  /** A file whose bytes are the body (a multipart upload), read once by each wrk thread. */
  bodyFile?: string;
  contentType?: string;
  authorization?: string;
  /** Pause before each request on a connection, in ms; unset means as fast as possible. */
  delayMs?: number;
}

export interface WrkResult {
  requests: number;
  requestsPerSec: number;
  p99Ms: number;
  non2xx: number;
  socketErrors: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

export function parseWrk(output: string): WrkResult {
  const rps = output.match(/Requests\/sec:\s+([\d.]+)/);
  const p99 = output.match(/^\s*99%\s+([\d.]+)(us|ms|s|m)\b/m);
  if (!rps?.[1] || !p99?.[1] || !p99[2]) throw new Error(`unreadable wrk output:\n${tail(output)}`);
  const socket = output.match(/Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/);
  return {
    requests: Number(output.match(/(\d+) requests in/)?.[1] ?? 0),
    requestsPerSec: Number(rps[1]),
    p99Ms: Number(p99[1]) * (UNIT_MS[p99[2]] ?? Number.NaN),
    non2xx: Number(output.match(/Non-2xx or 3xx responses:\s+(\d+)/)?.[1] ?? 0),
    socketErrors: socket ? socket.slice(1).reduce((sum, n) => sum + Number(n), 0) : 0,
  };
}

export async function runWrk(load: WrkLoad): Promise<WrkResult> {
  const cmd = ["wrk", `-t${load.threads}`, `-c${load.connections}`, `-d${load.seconds}s`, "--latency", "-s", SCRIPT];
  // Login requests queue behind bcrypt for seconds; wrk's default 2 s timeout would drop them.
  cmd.push("--timeout", "10s", load.url);
  const { code, output } = await run(cmd, {
    env: {
      PATH: process.env.PATH,
      WRK_METHOD: load.method,
      WRK_BODY: load.body,
      WRK_BODY_FILE: load.bodyFile,
      WRK_CONTENT_TYPE: load.contentType,
      WRK_AUTHORIZATION: load.authorization,
      WRK_DELAY_MS: load.delayMs?.toString(),
    },
    timeoutMs: (load.seconds + 30) * 1000,
  });
  if (code !== 0) throw new Error(`wrk exited ${code}:\n${tail(output)}`);
  return parseWrk(output);
}
