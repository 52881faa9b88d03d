/** Debian's `oathtool` (RFC 6238), the authenticator the TOTP tests use: an implementation we did not write. */
export const HAS_OATHTOOL = Bun.which("oathtool") !== null;

/** The code `oathtool --totp -b SECRET` shows at `atMs` (milliseconds since the epoch). */
export async function oathtool(secret: string, atMs: number): Promise<string> {
  const proc = Bun.spawn(["oathtool", "--totp", "-b", "-N", `@${Math.floor(atMs / 1000)}`, secret], {
    stdout: "pipe",
    stderr: "pipe",
  });
  const out = (await new Response(proc.stdout).text()).trim();
  if ((await proc.exited) !== 0) throw new Error(`oathtool failed: ${await new Response(proc.stderr).text()}`);
  return out;
}

/** A clock the app's TOTP checks read, which a test moves by hand (codes are per 30 s step). */
export function testClock(start = Date.UTC(2026, 0, 1, 12, 0, 0)) {
  let now = start;
  return {
    now: () => now,
    advance(ms: number) {
      now += ms;
    },
  };
}
