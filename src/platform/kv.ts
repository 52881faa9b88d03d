import Redis from "ioredis";
import type { Logger } from "./logger";

/**
 * The small shared-state surface behind the cache, rate limits and token revocation:
 * Redis when REDIS_URL is set (shared by every instance), process memory otherwise.
 * Every call may throw when Redis is unreachable; callers decide how to degrade.
 */
export interface KeyValueStore {
  readonly backend: "redis" | "memory";
  getMany(keys: string[]): Promise<(string | null)[]>;
  set(key: string, value: string, ttlSeconds: number): Promise<void>;
  del(...keys: string[]): Promise<void>;
  /** Counts one hit in a fixed window starting at the first hit; returns the count and ms left. */
  hit(key: string, windowMs: number): Promise<{ count: number; resetMs: number }>;
  ping(): Promise<boolean>;
  close(): Promise<void>;
}

interface Entry {
  value: string;
  expiresAt: number;
}

export class MemoryStore implements KeyValueStore {
  readonly backend = "memory";
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

  async ping() {
    return true;
  }

  async close() {
    clearInterval(this.sweeper);
    this.entries.clear();
  }
}

/** Parsed with the WHATWG URL API: handing ioredis the string makes it call the deprecated url.parse(). */
function connectionOptions(url: string) {
  const parsed = new URL(url);
  return {
    host: parsed.hostname,
    port: Number(parsed.port || 6379),
    username: decodeURIComponent(parsed.username) || undefined,
    password: decodeURIComponent(parsed.password) || undefined,
    db: Number(parsed.pathname.slice(1) || 0),
    tls: parsed.protocol === "rediss:" ? {} : undefined,
  };
}

// INCR and set the window's expiry in one atomic step, so a crash cannot leave a counter without TTL.
const HIT_SCRIPT = `
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('PTTL', KEYS[1])}`;

export class RedisStore implements KeyValueStore {
  readonly backend = "redis";
  private readonly redis: Redis;

  constructor(url: string, logger: Logger) {
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
    let down = false;
    this.redis.on("error", (error: Error) => {
      if (down) return;
      down = true;
      logger.warn("redis unreachable; serving degraded", { error: error.message });
    });
    this.redis.on("ready", () => {
      if (down) logger.info("redis reachable again");
      down = false;
    });
    this.redis.defineCommand("rateHit", { numberOfKeys: 1, lua: HIT_SCRIPT });
  }

  /** Connects once at start; a failure is logged and retried in the background, not fatal. */
  async connect(): Promise<void> {
    await this.redis.connect().catch(() => {});
  }

  async getMany(keys: string[]) {
    return this.redis.mget(...keys);
  }

  async set(key: string, value: string, ttlSeconds: number) {
    await this.redis.set(key, value, "EX", ttlSeconds);
  }

  async del(...keys: string[]) {
    await this.redis.del(...keys);
  }

  async hit(key: string, windowMs: number) {
    const runner = this.redis as unknown as {
      rateHit(key: string, windowMs: number): Promise<[number, number]>;
    };
    const [count, pttl] = await runner.rateHit(key, windowMs);
    return { count, resetMs: pttl > 0 ? pttl : windowMs };
  }

  async ping() {
    try {
      return (await this.redis.ping()) === "PONG";
    } catch {
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
