import { afterAll, beforeEach } from "bun:test";
import Redis from "ioredis";
import { closeTestStores, removeScratchDirs, TEST_REDIS_URL, testDatabase, truncateAll } from "./support";

const redis = TEST_REDIS_URL ? new Redis(TEST_REDIS_URL) : undefined;

// Every test starts from empty tables (and an empty Redis database when one is used).
beforeEach(async () => {
  await truncateAll(await testDatabase());
  await redis?.flushdb();
});

afterAll(async () => {
  removeScratchDirs();
  redis?.disconnect();
  await closeTestStores();
});
