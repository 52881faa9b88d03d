/**
 * postgres.js as patched by `bun install` (patches/postgres@3.4.9.patch), against a private cluster: the server
 * ending a connection must cost the query on it, not also the first query of the next connection.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import postgres from "postgres";
import { CAN_RUN_POSTGRES, PRIVATE_POSTGRES, type ThrowawayPostgres, throwawayPostgres } from "../postgres";

describe.skipIf(!CAN_RUN_POSTGRES)(`postgres.js on a private cluster (${PRIVATE_POSTGRES})`, () => {
  let cluster: ThrowawayPostgres;

  // initdb takes seconds on 2 cores.
  beforeAll(async () => {
    cluster = await throwawayPostgres();
  }, 30_000);

  afterAll(() => cluster.remove());

  test("a connection the server ends mid-query fails that query only; the next one, on a new connection, succeeds", async () => {
    // One connection, so the next query reuses the one that was ended.
    const client = postgres(cluster.url, { max: 1, onnotice: () => {} });
    const admin = postgres(cluster.url, { max: 1, onnotice: () => {} });
    try {
      const [backend] = await client`select pg_backend_pid() as pid`;
      const sleeping = client`select pg_sleep(5)`.then(
        () => "finished",
        (error) => `failed: ${error.code}`,
      );
      await Bun.sleep(100);
      await admin`select pg_terminate_backend(${backend?.pid})`;
      expect(await sleeping).toStartWith("failed");
      // Unpatched, 3.4.9 and 3.4.10 rejected this one with the ended connection's 57P01 (porsager/postgres#1223).
      const next = await client`select 1 as answer`.then(
        ([row]) => row?.answer,
        (error) => `failed: ${error.code} ${error.message}`,
      );
      expect(next).toBe(1);
    } finally {
      await Promise.all([client.end(), admin.end()]);
    }
  });
});
