import net from "node:net";
import { withTimeout } from "./timeout";

export type Verdict = { infected: false } | { infected: true; signature: string };

/** The scanner could not give a verdict: unreachable, too slow, or it answered an error. */
export class ScannerUnavailableError extends Error {}

/**
 * Every scanner connection stayed taken for the whole wait: the scanner works, it is only busy. Never a
 * reason to store a file unscanned (fail-open is for a scanner that cannot answer): a 503 to retry later.
 */
export class ScannerBusyError extends Error {}

export interface Scanner {
  /**
   * Scans bytes already stored (read back at disk speed, so a slow client never holds a connection):
   * waits for one of the bounded connections, and, for an `owner`, one of the owner's few slots, so one
   * user's scans cannot hold every connection. Throws ScannerBusyError when none frees up in time, and
   * ScannerUnavailableError when the scanner cannot answer.
   */
  scan(bytes: ReadableStream<Uint8Array>, owner?: string): Promise<Verdict>;
  /** Round trip of a PING, in ms; throws ScannerUnavailableError. */
  ping(): Promise<number>;
}

export type ClamdAddress = { host: string; port: number } | { path: string };

/** `tcp://HOST:PORT` or `unix:///path/clamd.ctl`. */
export function parseClamdUrl(url: string): ClamdAddress {
  const parsed = new URL(url);
  if (parsed.protocol === "unix:") return { path: decodeURIComponent(parsed.pathname) };
  return { host: parsed.hostname, port: Number(parsed.port || 3310) };
}

/** At most `size` holders at once; the others queue, each for at most `timeoutMs`. */
function slots(size: number, timeoutMs: number) {
  let free = size;
  const queue: (() => void)[] = [];
  const release = () => {
    const next = queue.shift();
    if (next) next();
    else free++;
  };
  return {
    /** Nobody holds or waits for a slot. */
    idle: () => free === size && queue.length === 0,
    async acquire(): Promise<() => void> {
      if (free > 0) {
        free--;
      } else {
        await new Promise<void>((resolve, reject) => {
          const wake = () => {
            clearTimeout(timer);
            resolve();
          };
          const timer = setTimeout(() => {
            queue.splice(queue.indexOf(wake), 1);
            reject(new ScannerBusyError(`every virus scanner connection stayed busy for ${timeoutMs} ms`));
          }, timeoutMs);
          queue.push(wake);
        });
      }
      let released = false;
      return () => {
        if (released) return;
        released = true;
        release();
      };
    },
  };
}

/** Rejects with ScannerUnavailableError when `work` takes longer than `ms`. */
const within = <T>(work: Promise<T>, ms: number, what: string): Promise<T> =>
  withTimeout(work, ms, () => new ScannerUnavailableError(`virus scanner: no ${what} within ${ms} ms`));

function connect(address: ClamdAddress, timeoutMs: number): Promise<net.Socket> {
  const socket = "path" in address ? net.connect(address.path) : net.connect(address.port, address.host);
  const connected = new Promise<net.Socket>((resolve, reject) => {
    socket.once("connect", () => resolve(socket));
    socket.once("error", (error) => reject(new ScannerUnavailableError(`virus scanner unreachable: ${error.message}`)));
  });
  return within(connected, timeoutMs, "connection").catch((error) => {
    socket.destroy();
    throw error;
  });
}

/** clamd's answer to one INSTREAM: `stream: OK`, `stream: <name> FOUND`, or `<reason> ERROR`. */
function readVerdict(answer: string): Verdict {
  const text = answer.replace(/\0/g, "").trim();
  if (/^stream: OK$/.test(text)) return { infected: false };
  const found = text.match(/^stream: (.+) FOUND$/);
  if (found?.[1]) return { infected: true, signature: found[1] };
  throw new ScannerUnavailableError(`virus scanner error: ${text || "no answer"}`);
}

/**
 * ClamAV's daemon over its INSTREAM protocol: `zINSTREAM\0`, then chunks each prefixed by its length
 * (4 bytes, big-endian), then a zero length; clamd answers once and closes. At most `connections`
 * scans run at once; an upload waits for a free one (that wait, the connection, every chunk's
 * acceptance and the final answer are each bounded by `timeoutMs`).
 */
export function clamdScanner(options: {
  url: string;
  timeoutMs: number;
  connections: number;
  /** Scans of one owner at once; by default half the connections, so one user never holds them all. */
  perOwner?: number;
}): Scanner {
  const address = parseClamdUrl(options.url);
  const { timeoutMs } = options;
  const pool = slots(options.connections, timeoutMs);
  const owners = new Map<string, ReturnType<typeof slots>>();
  const perOwner = options.perOwner ?? Math.max(1, Math.floor(options.connections / 2));

  /** The owner's slot, then a connection slot; the release returns both. */
  async function acquire(owner: string | undefined): Promise<() => void> {
    if (owner === undefined) return pool.acquire();
    const own = owners.get(owner) ?? slots(perOwner, timeoutMs);
    owners.set(owner, own);
    const releaseOwn = await own.acquire().catch((error) => {
      if (own.idle()) owners.delete(owner);
      throw error;
    });
    const releaseOwnAndForget = () => {
      releaseOwn();
      if (own.idle()) owners.delete(owner);
    };
    try {
      const releaseConnection = await pool.acquire();
      return () => {
        releaseConnection();
        releaseOwnAndForget();
      };
    } catch (error) {
      releaseOwnAndForget();
      throw error;
    }
  }

  /** The whole answer, once clamd closes (or the socket fails). */
  function answerOf(socket: net.Socket): Promise<string> {
    let answer = "";
    socket.setEncoding("utf8");
    socket.on("data", (text: string) => {
      answer += text;
    });
    return new Promise((resolve, reject) => {
      socket.once("end", () => resolve(answer));
      socket.once("close", () => resolve(answer));
      socket.once("error", (error) =>
        answer ? resolve(answer) : reject(new ScannerUnavailableError(`virus scanner failed: ${error.message}`)),
      );
    });
  }

  /** Streams `bytes` to clamd as INSTREAM chunks and reads its verdict; every wait bounded by the timeout. */
  async function instream(socket: net.Socket, bytes: ReadableStream<Uint8Array>): Promise<Verdict> {
    const answer = answerOf(socket);
    answer.catch(() => {});
    // clamd answers early when it refuses the stream (size limit), and stops reading: stop sending then.
    let answered = false;
    answer.then(
      () => {
        answered = true;
      },
      () => {},
    );
    const send = async (chunk: Uint8Array) => {
      if (socket.write(chunk)) return;
      const drained = new Promise<void>((resolve) => socket.once("drain", resolve));
      await within(Promise.race([drained, answer]), timeoutMs, "read");
    };
    try {
      await send(Buffer.from("zINSTREAM\0"));
      for await (const chunk of bytes) {
        if (answered) break;
        if (chunk.byteLength === 0) continue;
        const length = Buffer.alloc(4);
        length.writeUInt32BE(chunk.byteLength);
        await send(Buffer.concat([length, chunk]));
      }
      if (!answered) await send(Buffer.alloc(4));
    } catch (error) {
      // A write meeting a socket clamd closed: its answer, if any, says why.
      if (!answered && error instanceof ScannerUnavailableError) throw error;
    }
    return readVerdict(await within(answer, timeoutMs, "answer"));
  }

  return {
    async scan(bytes, owner) {
      const release = await acquire(owner);
      try {
        const socket = await connect(address, timeoutMs);
        try {
          return await instream(socket, bytes);
        } finally {
          socket.destroy();
        }
      } finally {
        release();
        await bytes.cancel().catch(() => {});
      }
    },

    async ping() {
      const startedAt = performance.now();
      const socket = await connect(address, timeoutMs);
      try {
        const answer = answerOf(socket);
        socket.write("zPING\0");
        const text = (await within(answer, timeoutMs, "PONG")).replace(/\0/g, "").trim();
        if (text !== "PONG") throw new ScannerUnavailableError(`virus scanner answered ${text || "nothing"}`);
        return performance.now() - startedAt;
      } finally {
        socket.destroy();
      }
    },
  };
}

/**
 * The in-process twin for tests of other modules: "infected" when the bytes contain one of the given
 * markers (found across chunk boundaries too), under the marker's name.
 */
export function markerScanner(markers: Record<string, string>): Scanner {
  const patterns = Object.entries(markers).map(([name, text]) => ({ name, bytes: Buffer.from(text) }));
  const overlap = Math.max(0, ...patterns.map((p) => p.bytes.byteLength)) - 1;
  return {
    async scan(bytes) {
      let tail: Buffer = Buffer.alloc(0);
      for await (const chunk of bytes) {
        const window = Buffer.concat([tail, chunk]);
        const found = patterns.find((p) => window.includes(p.bytes))?.name;
        if (found) return { infected: true, signature: found };
        tail = window.subarray(Math.max(0, window.byteLength - overlap));
      }
      return { infected: false };
    },
    async ping() {
      return 0;
    },
  };
}
