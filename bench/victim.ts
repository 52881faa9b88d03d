/**
 * The slow-client row: a victim's small upload while two accounts each trickle two uploads at 40 KB/s to a
 * server scanning with clamd (4 connections). When scans ran alongside bodies, the trickles held every
 * connection and the victim waited CLAMAV_TIMEOUT_MS for a 503; scans now read stored bytes after the body.
 */
import net from "node:net";
import { median } from "./load";
import type { Service } from "./process";

const TRICKLERS = 4;
/** 40 KB/s: 4 KB every 100 ms. */
const TRICKLE_BYTES = 4096;
const TRICKLE_EVERY_MS = 100;
const VICTIM_UPLOADS = 10;

export interface VictimResult {
  /** The victim's upload latency, ms: median and worst of VICTIM_UPLOADS while the trickles run. */
  medianMs: number;
  worstMs: number;
  statuses: number[];
}

/** An upload whose body drips until `stop()`; the socket is left for the server to answer or cut. */
function trickle(url: URL, token: string) {
  const socket = net.connect(Number(url.port), url.hostname);
  socket.on("error", () => {});
  const boundary = "trickle";
  socket.write(
    `POST /api/v1/uploads HTTP/1.1\r\nHost: ${url.host}\r\nAuthorization: Bearer ${token}\r\n` +
      `Content-Type: multipart/form-data; boundary=${boundary}\r\nContent-Length: 9000000\r\n\r\n` +
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="slow.txt"\r\nContent-Type: text/plain\r\n\r\n`,
  );
  const drip = setInterval(() => socket.write("t".repeat(TRICKLE_BYTES)), TRICKLE_EVERY_MS);
  return () => {
    clearInterval(drip);
    socket.destroy();
  };
}

export async function victimLatency(server: Service, tricklers: string[], victim: string): Promise<VictimResult> {
  const url = new URL(server.url);
  const stops = Array.from({ length: TRICKLERS }, (_, i) => trickle(url, tricklers[i % tricklers.length] as string));
  try {
    await Bun.sleep(1000);
    const times: number[] = [];
    const statuses: number[] = [];
    for (let i = 0; i < VICTIM_UPLOADS; i++) {
      const form = new FormData();
      form.append("file", new File(["twelve bytes"], "victim.txt", { type: "text/plain" }));
      const started = performance.now();
      const res = await fetch(`${server.url}/api/v1/uploads`, {
        method: "POST",
        headers: { authorization: `Bearer ${victim}` },
        body: form,
      });
      await res.arrayBuffer();
      times.push(performance.now() - started);
      statuses.push(res.status);
    }
    return { medianMs: median(times), worstMs: Math.max(...times), statuses };
  } finally {
    for (const stop of stops) stop();
  }
}
