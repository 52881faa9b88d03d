import { afterAll, beforeEach, setDefaultTimeout } from "bun:test";
import Redis from "ioredis";
import { closeTestStores, removeScratchDirs, TEST_REDIS_URL, testDatabase, truncateAll } from "./support";

const redis = TEST_REDIS_URL ? new Redis(TEST_REDIS_URL) : undefined;

// Real servers, clamd and a first embedded-database start take seconds on 2 busy cores; bunfig.toml's
// [test] timeout is not read by Bun 1.4.5 (its default stays 5 s), so it is set here for every file.
setDefaultTimeout(30_000);

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
