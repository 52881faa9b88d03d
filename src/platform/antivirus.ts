import net from "node:net";
import { withTimeout } from "./timeout";

export type Verdict = { infected: false } | { infected: true; signature: string };

/** The scanner could not give a verdict: unreachable, too slow, busy, or it answered an error. */
export class ScannerUnavailableError extends Error {}

/** One upload's bytes on their way to the scanner, while they also go to storage. */
export interface ScanSession {
  /**
   * Resolves once the scanner took the chunk (backpressure: a slow scanner slows the upload). Never
   * throws: a failure is kept and reported by `verdict()`, so an upload may go on without a scan.
   */
  write(chunk: Uint8Array): Promise<void>;
  /** Set once a write failed: no verdict will come. */
  readonly failure: ScannerUnavailableError | undefined;
  /** Ends the stream and waits for the answer; throws ScannerUnavailableError. */
  verdict(): Promise<Verdict>;
  /** Drops the scan (the upload failed); frees the connection. */
  abort(): void;
}

export interface Scanner {
  /**
   * Waits for one of the bounded connections (at most the timeout) and opens a scan. Scans of one `owner`
   * also wait for one of the owner's few slots, so one user's slow uploads cannot hold every connection.
   */
  start(owner?: string): Promise<ScanSession>;
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
            reject(new ScannerUnavailableError("virus scanner busy"));
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

  return {
    async start(owner) {
      const release = await acquire(owner);
      let socket: net.Socket;
      try {
        socket = await connect(address, timeoutMs);
      } catch (error) {
        release();
        throw error;
      }
      const answer = answerOf(socket);
      answer.catch(() => {});
      let failure: ScannerUnavailableError | undefined;
      let finished = false;
      const send = async (bytes: Uint8Array) => {
        if (socket.write(bytes)) return;
        // clamd stops reading when it refuses the stream (size limit): the answer comes instead of a drain.
        const drained = new Promise<void>((resolve) => socket.once("drain", resolve));
        await within(
          Promise.race([drained, answer.then(() => Promise.reject(new Error("closed")))]),
          timeoutMs,
          "read",
        );
      };
      const end = () => {
        finished = true;
        socket.destroy();
        release();
      };
      try {
        socket.write("zINSTREAM\0");
      } catch (error) {
        end();
        throw new ScannerUnavailableError(`virus scanner failed: ${(error as Error).message}`);
      }
      return {
        get failure() {
          return failure;
        },
        async write(chunk) {
          if (failure || finished || chunk.byteLength === 0) return;
          const length = Buffer.alloc(4);
          length.writeUInt32BE(chunk.byteLength);
          try {
            await send(Buffer.concat([length, chunk]));
          } catch (error) {
            failure = error instanceof ScannerUnavailableError ? error : new ScannerUnavailableError("stream refused");
          }
        },
        async verdict() {
          try {
            if (!failure) socket.write(Buffer.alloc(4));
            // An early answer (clamd refusing the stream) says why; otherwise the failure does.
            const text = await within(answer, timeoutMs, "answer");
            if (failure && !text) throw failure;
            return readVerdict(text);
          } finally {
            end();
          }
        },
        abort: end,
      };
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
    async start() {
      let tail: Buffer = Buffer.alloc(0);
      let found: string | undefined;
      return {
        failure: undefined,
        async write(chunk) {
          if (found) return;
          const window = Buffer.concat([tail, chunk]);
          found = patterns.find((p) => window.includes(p.bytes))?.name;
          tail = window.subarray(Math.max(0, window.byteLength - overlap));
        },
        async verdict() {
          return found ? { infected: true, signature: found } : { infected: false };
        },
        abort() {},
      };
    },
    async ping() {
      return 0;
    },
  };
}
