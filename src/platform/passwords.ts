/** bcrypt through Bun.password, always async: hashing runs on a worker thread, never on the event loop. */
export function createPasswordHasher(rounds: number) {
  const options = { algorithm: "bcrypt", cost: rounds } as const;
  // Verified against when the user does not exist, so that case costs the same time as a wrong password.
  let dummy: Promise<string> | undefined;
  return {
    hash: (password: string) => Bun.password.hash(password, options),
    verify: (password: string, hash: string) => Bun.password.verify(password, hash, "bcrypt"),
    async burn(password: string): Promise<false> {
      dummy ??= Bun.password.hash(crypto.randomUUID(), options);
      await Bun.password.verify(password, await dummy, "bcrypt");
      return false;
    },
  };
}

export type PasswordHasher = ReturnType<typeof createPasswordHasher>;
