import { SMTPServer } from "smtp-server";

/** A real SMTP server in this process; every message it accepts is kept, decoded from quoted-printable. */
export interface Inbox {
  url: string;
  messages: string[];
  /** Waits for a mail to `to` whose text contains `marker` and returns its `token` link parameter. */
  tokenFor(to: string, marker: string): Promise<string>;
  /** Waits for a mail to `to` whose text contains `marker` and returns it. */
  mailTo(to: string, marker: string): Promise<string>;
  close(): Promise<void>;
}

const decode = (message: string) =>
  message.replace(/=\r?\n/g, "").replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(Number.parseInt(hex, 16)));

export async function startInbox(): Promise<Inbox> {
  const messages: string[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    onData(stream, _session, done) {
      let data = "";
      stream.on("data", (chunk: Buffer) => {
        data += chunk.toString();
      });
      stream.on("end", () => {
        messages.push(decode(data));
        done();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const url = `smtp://127.0.0.1:${(server.server.address() as { port: number }).port}`;

  async function mailTo(to: string, marker: string): Promise<string> {
    for (let i = 0; i < 250; i++) {
      const message = messages.find((m) => m.includes(`To: ${to}`) && m.includes(marker));
      if (message) return message;
      await Bun.sleep(20);
    }
    throw new Error(`no mail to ${to} with ${marker}`);
  }

  return {
    url,
    messages,
    mailTo,
    async tokenFor(to, marker) {
      const token = (await mailTo(to, marker)).match(/[?&]token=([A-Za-z0-9._%-]+)/)?.[1];
      if (!token) throw new Error(`the mail to ${to} has no token link`);
      return decodeURIComponent(token);
    },
    close: () => new Promise<void>((resolve) => server.close(resolve)),
  };
}
