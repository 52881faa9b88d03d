/**
 * The pool's admission with stand-in work and probes (no database): who waits, who is refused, and that a
 * refused call's work never runs. Through a real Postgres: test/http/database-outage.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { type AdmissionOptions, createAdmission, DatabaseUnavailableError } from "../../src/db/admission";

/** Work the test finishes when it likes. */
function pending() {
  let finish!: (value?: unknown) => void;
  let fail!: (error: unknown) => void;
  const promise = new Promise((resolve, reject) => {
    finish = resolve;
    fail = reject;
  });
  return { promise, finish, fail };
}

const refusal = (promise: Promise<unknown>) =>
  promise.then(
    () => "ran",
    (error) => (error instanceof DatabaseUnavailableError ? "refused" : `failed: ${error}`),
  );

const options = (overrides: Partial<AdmissionOptions> = {}): AdmissionOptions => ({
  size: 1,
  poolTimeoutMs: 300,
  unavailableMs: 200,
  probe: async () => true,
  probeTimeoutMs: 100,
  probeIntervalMs: 20,
  ...overrides,
});

describe("database admission", () => {
  test("a call waits for a free connection, and past DB_POOL_TIMEOUT_MS is refused without running", async () => {
    let probed = false;
    const admission = createAdmission(
      options({
        poolTimeoutMs: 200,
        unavailableMs: 5000,
        probe: async () => {
          probed = true;
        },
      }),
    );
    const held = pending();
    void admission.run(() => held.promise);
    let ran = false;
    const waiting = admission.run(async () => {
      ran = true;
    });
    expect(admission.active).toBe(2);
    expect(await refusal(waiting)).toBe("refused");
    expect(ran).toBe(false);
    expect(admission.active).toBe(1);
    // A busy pool is not an outage.
    expect(probed).toBe(false);
    expect(admission.up).toBe(true);
    held.finish();
    expect(await refusal(admission.run(async () => "ok"))).toBe("ran");
    expect(admission.active).toBe(0);
  });

  test("a freed connection goes to the first waiter", async () => {
    const admission = createAdmission(options());
    const held = pending();
    const first = admission.run(() => held.promise);
    const order: string[] = [];
    const second = admission.run(async () => order.push("second"));
    const third = admission.run(async () => order.push("third"));
    expect(admission.active).toBe(3);
    held.finish();
    await Promise.all([first, second, third]);
    expect(order).toEqual(["second", "third"]);
  });

  test("a connection failure refuses every waiting and new call at once, until a probe answers", async () => {
    let probes = 0;
    let databaseBack = false;
    const changes: boolean[] = [];
    const admission = createAdmission(
      options({
        probe: async () => {
          probes++;
          if (!databaseBack) throw new Error("ECONNREFUSED");
        },
        onChange: (up) => changes.push(up),
      }),
    );
    const held = pending();
    const failing = admission.run(() => held.promise);
    let ran = false;
    const waiter = admission.run(async () => {
      ran = true;
    });
    held.fail(Object.assign(new Error("connection refused"), { code: "ECONNREFUSED" }));
    expect(await refusal(failing)).toBe("failed: Error: connection refused");
    expect(await refusal(waiter)).toBe("refused");
    expect(await refusal(admission.run(async () => "new"))).toBe("refused");
    expect(ran).toBe(false);
    expect(admission.up).toBe(false);

    await Bun.sleep(100);
    expect(probes).toBeGreaterThan(1);
    databaseBack = true;
    expect(await waitFor(() => admission.up)).toBe(true);
    expect(await refusal(admission.run(async () => "after"))).toBe("ran");
    expect(changes).toEqual([false, true]);
  });

  test("a query that fails on its own (a constraint, a syntax error) does not mark the database down", async () => {
    const admission = createAdmission(options());
    const unique = Object.assign(new Error("duplicate key"), { code: "23505" });
    expect(await refusal(admission.run(() => Promise.reject(unique)))).toBe("failed: Error: duplicate key");
    expect(admission.up).toBe(true);
    expect(await refusal(admission.run(async () => "next"))).toBe("ran");
  });

  test("a waiter that saw nothing answer for DB_UNAVAILABLE_MS is refused, and a failed probe marks the database down", async () => {
    let databaseBack = false;
    const admission = createAdmission(
      options({
        unavailableMs: 150,
        poolTimeoutMs: 5000,
        probe: async () => {
          if (!databaseBack) throw new Error("timeout");
        },
      }),
    );
    // A query hanging on a connection that went silent.
    const hung = pending();
    void admission.run(() => hung.promise);
    const started = performance.now();
    expect(await refusal(admission.run(async () => "never"))).toBe("refused");
    // Refused at DB_UNAVAILABLE_MS, long before the pool timeout.
    expect(performance.now() - started).toBeLessThan(2000);
    expect(await waitFor(() => !admission.up)).toBe(true);
    databaseBack = true;
    expect(await waitFor(() => admission.up)).toBe(true);
    hung.finish();
  });

  test("a waiter behind long queries of a database that answers the probe is refused, but nothing is marked down", async () => {
    const admission = createAdmission(options({ unavailableMs: 100, poolTimeoutMs: 5000 }));
    const long = pending();
    void admission.run(() => long.promise);
    expect(await refusal(admission.run(async () => "never"))).toBe("refused");
    await Bun.sleep(50);
    expect(admission.up).toBe(true);
    long.finish();
    expect(await refusal(admission.run(async () => "next"))).toBe("ran");
  });
});

async function waitFor(check: () => boolean, ms = 3000): Promise<boolean> {
  const deadline = performance.now() + ms;
  while (!check() && performance.now() < deadline) await Bun.sleep(10);
  return check();
}
