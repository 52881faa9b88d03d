/** The Redis twin of the bus: an instance starts while Redis is down, and joins the bus when it is back. */
import { expect, test } from "bun:test";
import { memoryPubSub, redisPubSub } from "../../src/platform/pubsub";
import { eventually, HAS_REDIS_SERVER, memoryLogger, throwawayRedis } from "../support";

test("the in-process twin: every subscriber hears every message, later, never inside publish", async () => {
  const bus = memoryPubSub();
  const heard: string[] = [];
  await bus.subscribe((message) => heard.push(`a:${message}`));
  await bus.subscribe((message) => heard.push(`b:${message}`));
  const published = bus.publish("hello");
  expect(heard).toEqual([]);
  await published;
  await Bun.sleep(0);
  expect(heard).toEqual(["a:hello", "b:hello"]);
});

test.skipIf(!HAS_REDIS_SERVER)(
  "Redis down at start: publishing fails, nothing throws; once up, messages flow",
  async () => {
    const redis = await throwawayRedis();
    await redis.stop();
    const logger = memoryLogger();
    const [a, b] = [redisPubSub(redis.url, logger), redisPubSub(redis.url, logger)];
    try {
      const heard: string[] = [];
      await b.subscribe((message) => heard.push(message));
      expect(await a.publish("lost").catch((error: Error) => error.message)).not.toBe(undefined);

      await redis.start();
      // Until B's subscription is back, a publish reaches nobody: keep publishing until one arrives.
      const arrived = await eventually(async () => {
        await a.publish("back").catch(() => {});
        return heard.includes("back");
      }, 10_000);
      expect(arrived).toBe(true);
      expect(heard).not.toContain("lost");
    } finally {
      await Promise.all([a.close(), b.close()]);
      await redis.stop();
    }
  },
  20_000,
);
