import Redis from "ioredis";
import postgres from "postgres";
import { connectionOptions } from "./kv";
import type { Logger } from "./logger";

export type MessageHandler = (message: string) => void;

/**
 * Fire-and-forget messages to every instance, this one included. Delivery is at most once: pub/sub
 * loses what is published while a subscriber reconnects, so nothing that must hold relies on it alone.
 */
export interface PubSub {
  readonly backend: "redis" | "postgres" | "memory";
  publish(message: string): Promise<void>;
  /** Calls `handler` with every message published from now on, by any instance. */
  subscribe(handler: MessageHandler): Promise<void>;
  close(): Promise<void>;
}

/** One process: every app built on this twin hears what any of them publishes (two "instances" in a test). */
export function memoryPubSub(): PubSub {
  const handlers = new Set<MessageHandler>();
  return {
    backend: "memory",
    async publish(message) {
      // Later, as Redis would: a publisher never runs subscribers inside its own call.
      for (const handler of handlers) queueMicrotask(() => handler(message));
    },
    async subscribe(handler) {
      handlers.add(handler);
    },
    async close() {
      handlers.clear();
    },
  };
}

/**
 * Redis pub/sub on one channel per database number (channels ignore SELECT, so two deployments or
 * test runs on one Redis would otherwise hear each other). ioredis resubscribes after a reconnect;
 * Bun's own client does not (PITFALLS). Nothing waits for Redis: an instance starts while it is down
 * (publishing fails and is logged meanwhile) and joins the bus once it is back.
 */
export function redisPubSub(url: string, logger: Logger): PubSub {
  const options = connectionOptions(url);
  const channel = `rp:${options.db}:events`;
  const common = {
    ...options,
    connectTimeout: 2000,
    retryStrategy: (attempt: number) => Math.min(attempt * 200, 2000),
  };
  // A subscribed connection can do nothing else: publishing needs its own.
  const publisher = new Redis({ ...common, enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 1000 });
  const subscriber = new Redis(common);
  const handlers = new Set<MessageHandler>();
  let warned = false;
  for (const [name, client] of [
    ["publisher", publisher],
    ["subscriber", subscriber],
  ] as const) {
    client.on("error", (error: Error) => {
      if (warned) return;
      warned = true;
      logger.warn("pub/sub connection failing; events between instances are lost meanwhile", {
        connection: name,
        error: error.message,
      });
    });
    client.on("ready", () => {
      warned = false;
    });
  }
  subscriber.on("message", (from: string, message: string) => {
    if (from !== channel) return;
    for (const handler of handlers) handler(message);
  });
  // Queued until the connection is ready (the subscriber keeps an offline queue), then kept across reconnects.
  subscriber
    .subscribe(channel)
    .catch((error: Error) => logger.warn("pub/sub subscribe failed", { error: error.message }));
  return {
    backend: "redis",
    async publish(message) {
      await publisher.publish(channel, message);
    },
    async subscribe(handler) {
      handlers.add(handler);
    },
    async close() {
      handlers.clear();
      publisher.disconnect();
      subscriber.disconnect();
    },
  };
}

/** NOTIFY refuses payloads of 8000 bytes or more; a longer message goes in parts of this many bytes. */
const NOTIFY_PART_BYTES = 7000;
/** A part's prefix: `~<message id> <index> <count> ` then base64 (ASCII, so byte counts are exact). */
const PART = /^~(\S+) (\d+) (\d+) (.*)$/s;
const PART_TTL_MS = 10_000;

/**
 * Postgres LISTEN/NOTIFY, for instances that share a Postgres but no Redis. postgres.js listens on a
 * connection of its own and listens again after a reconnect. A message too long for one NOTIFY (a bio of
 * 5000 non-Latin characters) is sent in parts inside one transaction, which Postgres delivers together
 * and in order, and put back together by each listener.
 */
export async function postgresPubSub(url: string): Promise<PubSub> {
  const channel = "reviewpoint_events";
  const client = postgres(url, { max: 1, connect_timeout: 5, onnotice: () => {} });
  const handlers = new Set<MessageHandler>();
  const partial = new Map<string, string[]>();
  const dispatch = (message: string) => {
    for (const handler of handlers) handler(message);
  };
  await client.listen(channel, (payload) => {
    const part = PART.exec(payload);
    if (!part) return dispatch(payload);
    const [, id = "", index, count, data = ""] = part;
    const parts = partial.get(id) ?? [];
    if (!partial.has(id)) {
      partial.set(id, parts);
      // A part lost with a dropped connection must not keep the rest forever.
      setTimeout(() => partial.delete(id), PART_TTL_MS).unref?.();
    }
    parts[Number(index)] = data;
    if (parts.filter((p) => p !== undefined).length < Number(count)) return;
    partial.delete(id);
    dispatch(Buffer.from(parts.join(""), "base64").toString("utf8"));
  });
  return {
    backend: "postgres",
    async publish(message) {
      if (Buffer.byteLength(message) < NOTIFY_PART_BYTES) return void (await client.notify(channel, message));
      const encoded = Buffer.from(message).toString("base64");
      const id = crypto.randomUUID();
      const count = Math.ceil(encoded.length / NOTIFY_PART_BYTES);
      await client.begin(async (tx) => {
        for (let index = 0; index < count; index++) {
          const data = encoded.slice(index * NOTIFY_PART_BYTES, (index + 1) * NOTIFY_PART_BYTES);
          await tx`select pg_notify(${channel}, ${`~${id} ${index} ${count} ${data}`})`;
        }
      });
    },
    async subscribe(handler) {
      handlers.add(handler);
    },
    async close() {
      handlers.clear();
      await client.end({ timeout: 1 });
    },
  };
}

/** Redis when there is one; else the shared Postgres; else (the embedded database: one process) in-process. */
export function createPubSub(
  urls: { redis: string | undefined; postgres: string | undefined },
  logger: Logger,
): Promise<PubSub> {
  if (urls.redis) return Promise.resolve(redisPubSub(urls.redis, logger));
  if (urls.postgres) return postgresPubSub(urls.postgres);
  return Promise.resolve(memoryPubSub());
}
