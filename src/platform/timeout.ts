/** `work`, or a rejection with `late()` once `ms` have passed first. */
export function withTimeout<T>(
  work: Promise<T>,
  ms: number,
  late: () => Error = () => new Error(`timed out after ${ms} ms`),
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(late()), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}
