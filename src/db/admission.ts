import { withTimeout } from "../platform/timeout";

/**
 * Driver and server codes that mean "the database cannot be reached right now" (not "the query was wrong"):
 * refused, reset or timed-out connections, a server shutting down or starting up, no connection slot left.
 */
const CONNECTION_FAILURES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EPIPE",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "57P01",
  "57P02",
  "57P03",
  "53300",
]);

export const isConnectionFailure = (code: string) => CONNECTION_FAILURES.has(code) || code.startsWith("08");

/** A call refused without asking the database: it is down (`down`), or no connection came free in time. */
export class DatabaseUnavailableError extends Error {
  static readonly code = "DATABASE_UNAVAILABLE";
  readonly code = DatabaseUnavailableError.code;
  constructor(
    message: string,
    readonly down: boolean,
  ) {
    super(message);
  }
}

export interface AdmissionOptions {
  /** Calls that may hold a connection at once (DB_POOL_MAX). */
  size: number;
  /** The longest a call waits for a free connection while the database answers (DB_POOL_TIMEOUT_MS). */
  poolTimeoutMs: number;
  /** A call waiting this long while nothing has answered takes the database as down (DB_UNAVAILABLE_MS). */
  unavailableMs: number;
  /** Asks the database something trivial on a connection of its own (not one a long query may hold). */
  probe: () => PromiseLike<unknown>;
  /** How long a probe may take; one that takes longer counts as failed. */
  probeTimeoutMs: number;
  probeIntervalMs?: number;
  /** Told when the database goes down and when it answers again. */
  onChange?: (up: boolean) => void;
}

interface Waiter {
  grant: () => void;
  refuse: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Admission to the Postgres pool, so that no request queues behind an outage. At most `size` calls hold a
 * connection; the others wait here rather than in the driver, where a queued query can be neither timed out
 * nor withdrawn (postgres.js keeps a cancelled query's connection stuck), so a call refused here was never sent.
 * - A connection failure marks the database down: every waiting and every new call is refused at once, and a
 *   probe asks the database every `probeIntervalMs` until it answers.
 * - A call that waited `unavailableMs` while nothing answered is refused, and a probe decides whether the
 *   database is down or only busy with long queries (the probe has its own connection).
 * - Otherwise a call waits for a free connection at most `poolTimeoutMs`.
 * The health check asks through the admission, so it knows what requests know.
 */
export function createAdmission(options: AdmissionOptions) {
  const { size, poolTimeoutMs, unavailableMs, probeIntervalMs = 250 } = options;
  const waiting: Waiter[] = [];
  let holding = 0;
  let up = true;
  let lastAnswer = performance.now();
  let suspicious = false;
  let closed = false;

  const down = () => new DatabaseUnavailableError("the database is unavailable", true);
  const answered = () => {
    lastAnswer = performance.now();
  };
  const probe = () =>
    withTimeout(Promise.resolve(options.probe()), options.probeTimeoutMs).then(
      () => true,
      () => false,
    );

  function markDown() {
    if (!up) return;
    up = false;
    options.onChange?.(false);
    for (const waiter of waiting.splice(0)) {
      clearTimeout(waiter.timer);
      waiter.refuse(down());
    }
    void probeUntilUp();
  }

  // One loop per outage: markDown starts it only when the database goes from up to down.
  async function probeUntilUp() {
    while (!closed) {
      const started = performance.now();
      if ((await probe()) && !closed) {
        answered();
        up = true;
        options.onChange?.(true);
        return;
      }
      await Bun.sleep(Math.max(0, probeIntervalMs - (performance.now() - started)));
    }
  }

  /** Nothing answered for a while: down, or only busy with long queries? One probe decides. */
  function suspect() {
    if (suspicious || !up) return;
    suspicious = true;
    void probe().then((ok) => {
      suspicious = false;
      if (ok) answered();
      else markDown();
    });
  }

  function release() {
    holding--;
    const next = waiting.shift();
    if (next) {
      clearTimeout(next.timer);
      holding++;
      next.grant();
    }
  }

  /** Resolves once a connection is free; refuses after the pool timeout, or at once while the database is down. */
  function acquire(): Promise<void> {
    if (!up) return Promise.reject(down());
    if (holding < size) {
      holding++;
      return Promise.resolve();
    }
    return new Promise((grant, refuse) => {
      const since = performance.now();
      const check = () => {
        const now = performance.now();
        const quiet = now - lastAnswer;
        const waited = now - since;
        if (quiet >= unavailableMs || waited >= poolTimeoutMs) {
          waiting.splice(waiting.indexOf(waiter), 1);
          // Nothing has answered for DB_UNAVAILABLE_MS while this call waited: perhaps an outage.
          if (quiet >= unavailableMs) suspect();
          return refuse(
            new DatabaseUnavailableError(`no database connection came free in ${Math.round(waited)} ms`, false),
          );
        }
        waiter.timer = setTimeout(check, Math.min(unavailableMs - quiet, poolTimeoutMs - waited));
      };
      const waiter: Waiter = { grant, refuse, timer: setTimeout(check, Math.min(unavailableMs, poolTimeoutMs)) };
      waiting.push(waiter);
    });
  }

  function settled(error?: unknown) {
    const code = (error as { code?: unknown } | undefined)?.code;
    if (typeof code === "string" && isConnectionFailure(code)) markDown();
    else answered();
  }

  return {
    size,
    /** Calls holding a connection or waiting for one (a transaction counts once for its whole length). */
    get active() {
      return holding + waiting.length;
    },
    get up() {
      return up;
    },
    /** Runs `work` (which starts the driver's query) once admitted; its connection failures mark the database down. */
    async run<T>(work: () => PromiseLike<T>): Promise<T> {
      await acquire();
      try {
        const result = await work();
        settled();
        return result;
      } catch (error) {
        settled(error);
        throw error;
      } finally {
        release();
      }
    },
    close() {
      closed = true;
    },
  };
}

export type Admission = ReturnType<typeof createAdmission>;
