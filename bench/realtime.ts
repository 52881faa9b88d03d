/** The real-time rows: many sockets held by one instance, and event delivery from one instance to another. */
import { readFileSync } from "node:fs";
import { median, processCpuUs } from "./load";
import type { Service } from "./process";

export const HELD_SOCKETS = 1000;
const IDLE_SECONDS = 10;
const LATENCY_ROUNDS = 200;

function rssMiB(pid: number): number {
  const kb = readFileSync(`/proc/${pid}/status`, "utf8").match(/^VmRSS:\s+(\d+) kB/m)?.[1];
  return Number(kb ?? 0) / 1024;
}

const socketUrl = (server: Service, token: string) =>
  `${server.url.replace(/^http/, "ws")}/api/v1/ws?token=${encodeURIComponent(token)}`;

/** Opens a socket and resolves once the server said `connection.established`. */
function openSocket(url: string, onMessage?: (message: { type: string; data: any }) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    const timer = setTimeout(() => reject(new Error("socket did not open within 10 s")), 10_000);
    socket.onmessage = (event) => {
      const message = JSON.parse(String(event.data));
      if (message.type === "connection.established") {
        clearTimeout(timer);
        resolve(socket);
      }
      onMessage?.(message);
    };
    socket.onerror = () => reject(new Error("socket failed"));
  });
}

export interface HeldSockets {
  sockets: number;
  rssBeforeMiB: number;
  rssMiB: number;
  /** Server CPU while the sockets sat idle, in % of one core. */
  idleCpuPercent: number;
}

/**
 * HELD_SOCKETS authenticated sockets on one instance, spread over `tokens` (a user may hold 20 on an
 * instance): its resident set, then its CPU while they idle.
 */
export async function heldSockets(server: Service, tokens: string[]): Promise<HeldSockets> {
  const pid = server.child.pid;
  const rssBeforeMiB = rssMiB(pid);
  const sockets: WebSocket[] = [];
  try {
    // In batches: a thousand handshakes at once would measure the accept queue, not the holding.
    for (let i = 0; i < HELD_SOCKETS; i += 50) {
      const batch = Array.from({ length: Math.min(50, HELD_SOCKETS - i) }, (_, j) =>
        openSocket(socketUrl(server, tokens[(i + j) % tokens.length] as string)),
      );
      sockets.push(...(await Promise.all(batch)));
    }
    await Bun.sleep(2000);
    const rss = rssMiB(pid);
    const before = processCpuUs(pid);
    await Bun.sleep(IDLE_SECONDS * 1000);
    const idleCpuPercent = ((processCpuUs(pid) - before) / (IDLE_SECONDS * 1e6)) * 100;
    return { sockets: sockets.length, rssBeforeMiB, rssMiB: rss, idleCpuPercent };
  } finally {
    for (const socket of sockets) socket.close();
  }
}

export interface Delivery {
  rounds: number;
  p50Ms: number;
  p99Ms: number;
}

/**
 * LATENCY_ROUNDS uploads of a small file to A, one after another, each timed from sending the upload
 * to the `file.uploaded` event arriving on a socket held by B (so it includes the upload itself).
 */
export async function eventDelivery(a: Service, b: Service, token: string): Promise<Delivery> {
  const waiting = new Map<string, (at: number) => void>();
  const early = new Map<string, number>();
  const socket = await openSocket(socketUrl(b, token), (message) => {
    if (message.type !== "file.uploaded") return;
    const at = performance.now();
    const resolve = waiting.get(message.data.id);
    if (resolve) resolve(at);
    else early.set(message.data.id, at);
  });
  const samples: number[] = [];
  try {
    for (let i = 0; i < LATENCY_ROUNDS; i++) {
      const form = new FormData();
      form.append("file", new File([`round ${i}\n`.repeat(100)], "event.txt", { type: "text/plain" }));
      const sentAt = performance.now();
      const response = await fetch(`${a.url}/api/v1/uploads`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}` },
        body: form,
        signal: AbortSignal.timeout(10_000),
      });
      if (response.status !== 201) throw new Error(`upload returned ${response.status}`);
      const { id } = (await response.json()) as { id: string };
      const arrivedAt =
        early.get(id) ??
        (await new Promise<number>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error("no file.uploaded event within 5 s")), 5000);
          waiting.set(id, (at) => {
            clearTimeout(timer);
            resolve(at);
          });
        }));
      samples.push(arrivedAt - sentAt);
    }
  } finally {
    socket.close();
  }
  const sorted = [...samples].sort((x, y) => x - y);
  return {
    rounds: samples.length,
    p50Ms: median(samples),
    p99Ms: sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)] ?? 0,
  };
}
