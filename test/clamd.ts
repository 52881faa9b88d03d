/** A real ClamAV daemon for tests: clamd on a free port, with a signature database written here (no download). */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./support";

/** The EICAR test string: harmless, and every scanner's agreed stand-in for malware. */
export const EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/** How clamd names a match of our own (unofficial) signature. */
export const EICAR_SIGNATURE = "Eicar-Test-Signature.UNOFFICIAL";

export const CLAMD = Bun.which("clamd") ?? (Bun.file("/usr/sbin/clamd").size > 0 ? "/usr/sbin/clamd" : null);

export interface TestClamd {
  url: string;
  /** Stops it (by PID); `start()` runs it again on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Freezes (SIGSTOP) or thaws (SIGCONT) it: a scanner that accepts connections and never answers. */
  signal(signal: "SIGSTOP" | "SIGCONT"): void;
  /** Stops it for good and removes its folder. */
  dispose(): Promise<void>;
}

/** TCP on a free port, or with `unixSocket` a socket file in its folder (`unix://` URL). */
export async function startClamd(options: { streamMaxLength?: string; unixSocket?: boolean } = {}): Promise<TestClamd> {
  const dir = mkdtempSync(join(tmpdir(), "rp-clamd-"));
  const port = freePort();
  // A body signature matching EICAR anywhere in a file (`*`), so it is found inside a PDF too.
  writeFileSync(join(dir, "test.ndb"), `Eicar-Test-Signature:0:*:${Buffer.from(EICAR).toString("hex")}\n`);
  const config = join(dir, "clamd.conf");
  const socketPath = join(dir, "clamd.ctl");
  writeFileSync(
    config,
    [
      ...(options.unixSocket ? [`LocalSocket ${socketPath}`] : [`TCPSocket ${port}`, "TCPAddr 127.0.0.1"]),
      `DatabaseDirectory ${dir}`,
      "Foreground yes",
      `LogFile ${join(dir, "clamd.log")}`,
      `StreamMaxLength ${options.streamMaxLength ?? "64M"}`,
    ].join("\n"),
  );
  let server: ReturnType<typeof Bun.spawn> | undefined;
  const kill = () => server?.kill("SIGKILL");
  process.once("exit", kill);

  const pong = async () => {
    try {
      const socket = options.unixSocket
        ? await Bun.connect({ unix: socketPath, socket: { data() {} } })
        : await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
      socket.end();
      return true;
    } catch {
      return false;
    }
  };
  const clamd: TestClamd = {
    url: options.unixSocket ? `unix://${socketPath}` : `tcp://127.0.0.1:${port}`,
    async start() {
      server = Bun.spawn([CLAMD as string, "-c", config], { stdout: "ignore", stderr: "ignore" });
      for (let i = 0; i < 300 && !(await pong()); i++) await Bun.sleep(20);
      if (!(await pong())) throw new Error(`clamd did not start: ${await Bun.file(join(dir, "clamd.log")).text()}`);
    },
    signal: (signal) => server?.kill(signal),
    async stop() {
      server?.kill("SIGCONT");
      server?.kill("SIGKILL");
      await server?.exited;
    },
    async dispose() {
      process.off("exit", kill);
      await clamd.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await clamd.start();
  return clamd;
}
