import Redis, { ReplyError } from "ioredis";
import type { Logger } from "./logger";

/** One conditional, atomic write: applied whole when every `expect`ed key holds its value, else not at all. */
export interface StoreWrite {
  /** Key → the value it must hold now (null: absent). */
  expect?: Record<string, string | null>;
  set?: { key: string; value: string; ttlSeconds: number }[];
  /** A counter that only grows: set to `value` when that is higher (no TTL). */
  raise?: { key: string; value: number };
}

/**
 * The small shared-state surface behind the cache, rate limits and token revocation:
 * Redis when REDIS_URL is set (shared by every instance), process memory otherwise.
 * Every call may throw when Redis is unreachable or refuses a write; callers decide how to degrade.
 */
export interface KeyValueStore {
  readonly backend: "redis" | "memory";
  /** Grows at every (re)connection: what the store holds may have changed behind our back (a restart). */
  readonly connections: number;
  getMany(keys: string[]): Promise<(string | null)[]>;
  set(key: string, value: string, ttlSeconds: number): Promise<void>;
  del(...keys: string[]): Promise<void>;
  /** True when applied; false when an `expect` did not hold. */
  commit(write: StoreWrite): Promise<boolean>;
  /** Counts one hit in a fixed window starting at the first hit; returns the count and ms left. */
  hit(key: string, windowMs: number): Promise<{ count: number; resetMs: number }>;
  /** Whether the store may drop keys by itself under memory pressure, and how many it has dropped so far. */
  evictions(): Promise<{ policy: string; evicted: number }>;
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

interface Entry {
  value: string;
  expiresAt: number;
}

export class MemoryStore implements KeyValueStore {
  readonly backend = "memory";
  readonly connections = 1;
  private readonly entries = new Map<string, Entry>();
  private readonly sweeper = setInterval(() => this.sweep(), 60_000);

  constructor() {
    this.sweeper.unref();
  }

  private live(key: string, now = Date.now()): Entry | undefined {
    const entry = this.entries.get(key);
    if (entry && entry.expiresAt <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  private sweep() {
    const now = Date.now();
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(key);
  }

  async getMany(keys: string[]) {
    return keys.map((key) => this.live(key)?.value ?? null);
  }

  async set(key: string, value: string, ttlSeconds: number) {
    this.entries.set(key, { value, expiresAt: Date.now() + ttlSeconds * 1000 });
  }

  async del(...keys: string[]) {
    for (const key of keys) this.entries.delete(key);
  }

  async commit(write: StoreWrite) {
    for (const [key, expected] of Object.entries(write.expect ?? {})) {
      if ((this.live(key)?.value ?? null) !== expected) return false;
    }
    for (const { key, value, ttlSeconds } of write.set ?? []) await this.set(key, value, ttlSeconds);
    if (write.raise && write.raise.value > Number(this.live(write.raise.key)?.value ?? 0)) {
      this.entries.set(write.raise.key, { value: String(write.raise.value), expiresAt: Number.POSITIVE_INFINITY });
    }
    return true;
  }

  async hit(key: string, windowMs: number) {
    const now = Date.now();
    const entry = this.live(key, now);
    if (!entry) {
      this.entries.set(key, { value: "1", expiresAt: now + windowMs });
      return { count: 1, resetMs: windowMs };
    }
    entry.value = String(Number(entry.value) + 1);
    return { count: Number(entry.value), resetMs: entry.expiresAt - now };
  }

  async evictions() {
    return { policy: "noeviction", evicted: 0 };
  }

  async ping() {
    return true;
  }

  async close() {
    clearInterval(this.sweeper);
    this.entries.clear();
  }
}

/** Parsed with the WHATWG URL API: handing ioredis the string makes it call the deprecated url.parse(). */
export function connectionOptions(url: string) {
  const parsed = new URL(url);
  return {
    host: parsed.hostname,
    port: Number(parsed.port || 6379),
    username: decodeURIComponent(parsed.username) || undefined,
    password: decodeURIComponent(parsed.password) || undefined,
    db: Number(parsed.pathname.slice(1) || 0),
    tls: parsed.protocol === "rediss:" ? {} : undefined,
    // CLIENT SETINFO's library version is read from ioredis's package.json at a path fixed at build time:
    // inside the binary that is the build machine's checkout.
    disableClientInfo: true,
  };
}

// INCR and set the window's expiry in one atomic step, so a crash cannot leave a counter without TTL.
const HIT_SCRIPT = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('PTTL', KEYS[1])}`;

// StoreWrite in one script. Keys travel as KEYS (so ioredis prefixes them); ARGV[1] refers to them by index.
// A script that writes is refused whole under maxmemory (OOM): nothing is half-applied.
const COMMIT_SCRIPT = `
local w = cjson.decode(ARGV[1])
for _, e in ipairs(w.expect) do
  local current = redis.call('GET', KEYS[e[1]])
  if e[2] == cjson.null then
    if current then return 0 end
  elseif current ~= e[2] then return 0 end
end
for _, s in ipairs(w.set) do redis.call('SET', KEYS[s[1]], s[2], 'EX', s[3]) end
for _, r in ipairs(w.raise) do
  local current = tonumber(redis.call('GET', KEYS[r[1]]) or '0')
  if r[2] > current then redis.call('SET', KEYS[r[1]], r[2]) end
end
return 1`;

/** The circuit is open: Redis timed out or dropped the connection, and no probe has succeeded since. */
class StoreUnavailableError extends Error {
  constructor() {
    super("redis unavailable (circuit open)");
  }
}

type ScriptRunner = {
  rateHit(key: string, windowMs: number): Promise<[number, number]>;
  commitWrite(numberOfKeys: number, ...args: (string | number)[]): Promise<number>;
};

const PROBE_INTERVAL_MS = 1000;

export class RedisStore implements KeyValueStore {
  readonly backend = "redis";
  private readonly redis: Redis;
  private readonly logger: Logger;
  /**
   * Circuit breaker: after one timeout or connection error every call fails at once (callers fall back
   * to the database or to this process) instead of each waiting out the 1 s command timeout; a probe,
   * at most once a second, closes it again.
   */
  private open = false;
  private lastProbe = 0;
  connections = 0;

  constructor(url: string, logger: Logger) {
    this.logger = logger;
    this.redis = new Redis({
      ...connectionOptions(url),
      keyPrefix: "rp:",
      lazyConnect: true,
      enableAutoPipelining: true,
      // Fail fast while Redis is away instead of queueing requests behind it.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: 1000,
      connectTimeout: 2000,
      retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
    });
    // Connection errors reach the callers (and trip the circuit); ioredis would otherwise print them.
    this.redis.on("error", () => {});
    this.redis.on("ready", () => {
      this.connections++;
    });
    this.redis.defineCommand("rateHit", { numberOfKeys: 1, lua: HIT_SCRIPT });
    this.redis.defineCommand("commitWrite", { lua: COMMIT_SCRIPT });
  }

  /** Closed while Redis answers; open after a timeout or connection error, until a probe succeeds. */
  get circuit(): "open" | "closed" {
    return this.open ? "open" : "closed";
  }

  /** Connects once at start; a failure is logged and retried in the background, not fatal. */
  async connect(): Promise<void> {
    await this.redis.connect().catch((error: Error) => this.trip(error));
  }

  private trip(error: Error) {
    if (this.open) return;
    this.open = true;
    this.lastProbe = Date.now();
    this.logger.warn("redis unreachable; serving degraded", { error: error.message });
  }

  private heal() {
    if (!this.open) return;
    this.open = false;
    this.logger.info("redis reachable again");
  }

  /** Runs one command through the circuit. A refusal (ReplyError, e.g. OOM) is Redis answering: no trip. */
  private async run<T>(command: () => Promise<T>): Promise<T> {
    if (this.open) {
      if (Date.now() - this.lastProbe >= PROBE_INTERVAL_MS) void this.ping();
      throw new StoreUnavailableError();
    }
    try {
      return await command();
    } catch (error) {
      if (!(error instanceof ReplyError)) this.trip(error as Error);
      throw error;
    }
  }

  async getMany(keys: string[]) {
    return this.run(() => this.redis.mget(...keys));
  }

  async set(key: string, value: string, ttlSeconds: number) {
    await this.run(() => this.redis.set(key, value, "EX", ttlSeconds));
  }

  async del(...keys: string[]) {
    await this.run(() => this.redis.del(...keys));
  }

  async commit(write: StoreWrite) {
    const keys: string[] = [];
    const ref = (key: string) => keys.push(key);
    const spec = {
      expect: Object.entries(write.expect ?? {}).map(([key, value]) => [ref(key), value]),
      set: (write.set ?? []).map((s) => [ref(s.key), s.value, Math.max(1, Math.ceil(s.ttlSeconds))]),
      raise: write.raise ? [[ref(write.raise.key), write.raise.value]] : [],
    };
    const runner = this.redis as unknown as ScriptRunner;
    return (await this.run(() => runner.commitWrite(keys.length, ...keys, JSON.stringify(spec)))) === 1;
  }

  async hit(key: string, windowMs: number) {
    const runner = this.redis as unknown as ScriptRunner;
    const [count, pttl] = await this.run(() => runner.rateHit(key, windowMs));
    return { count, resetMs: pttl > 0 ? pttl : windowMs };
  }

  async evictions() {
    const info = await this.run(() => this.redis.info());
    const field = (name: string) => new RegExp(`^${name}:(.*)$`, "m").exec(info)?.[1]?.trim();
    return { policy: field("maxmemory_policy") ?? "unknown", evicted: Number(field("evicted_keys") ?? 0) };
  }

  /** Always asks Redis (health checks and probes); an answer closes the circuit. */
  async ping() {
    this.lastProbe = Date.now();
    try {
      const ok = (await this.redis.ping()) === "PONG";
      if (ok) this.heal();
      return ok;
    } catch (error) {
      this.trip(error as Error);
      return false;
    }
  }

  async close() {
    this.redis.disconnect();
  }
}

export async function createStore(redisUrl: string | undefined, logger: Logger): Promise<KeyValueStore> {
  if (!redisUrl) return new MemoryStore();
  const store = new RedisStore(redisUrl, logger);
  await store.connect();
  return store;
}
