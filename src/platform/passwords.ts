import { availableParallelism } from "node:os";

/**
 * At most one bcrypt job per core: more run on Bun's thread pool at once only add context switches
 * and starve the event loop (measured: 16 concurrent logins ran at 0.80 of the bcrypt ceiling, 2 at 0.93).
 */
function createSlots(size: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async function run<T>(work: () => Promise<T>): Promise<T> {
    if (active < size) active++;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await work();
    } finally {
      // Hand the slot straight to the next waiter, or give it back.
      const next = waiting.shift();
      if (next) next();
      else active--;
    }
  };
}

/** bcrypt through Bun.password, always async: hashing runs on a worker thread, never on the event loop. */
export function createPasswordHasher(rounds: number, parallelism = availableParallelism()) {
  const options = { algorithm: "bcrypt", cost: rounds } as const;
  const slot = createSlots(parallelism);
  const hash = (password: string) => slot(() => Bun.password.hash(password, options));
  const verify = (password: string, digest: string) => slot(() => Bun.password.verify(password, digest, "bcrypt"));
  // Verified against when the user does not exist, so that case costs the same time as a wrong password.
  let dummy: Promise<string> | undefined;
  const costOf = (digest: string) => Number(/^\$2[aby]?\$(\d\d)\$/.exec(digest)?.[1]);
  return {
    hash,
    verify,
    /** True when the hash was made at another cost than BCRYPT_ROUNDS. */
    needsRehash: (digest: string) => costOf(digest) !== rounds,
    async burn(password: string): Promise<false> {
      dummy ??= hash(crypto.randomUUID());
      await verify(password, await dummy);
      return false;
    },
  };
}

export type PasswordHasher = ReturnType<typeof createPasswordHasher>;
