import { expect } from "bun:test";
import { API, PASSWORD } from "../support";

/** A PDF's magic bytes, then `size` bytes of noise: binary content that must come back byte for byte. */
export function samplePdf(size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  crypto.getRandomValues(bytes.subarray(0, Math.min(size, 65_536)));
  for (let at = 65_536; at < size; at += 65_536) bytes.copyWithin(at, 0, Math.min(65_536, size - at));
  bytes.set(new TextEncoder().encode("%PDF-1.7\n"));
  return bytes;
}

/** Waits until the server at `base` is ready, or fails with what it printed when it exits first. */
export async function untilReady(
  base: string,
  proc: { exitCode: number | null; stderr: ReadableStream<Uint8Array> | number | null | undefined },
  ms = 90_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if ((await fetch(`${base}${API}/health/ready`).catch(() => undefined))?.ok) return;
    if (proc.exitCode !== null) break;
    await Bun.sleep(50);
  }
  const stderr = proc.stderr instanceof ReadableStream ? await new Response(proc.stderr).text() : "";
  throw new Error(`the server never became ready (exit ${proc.exitCode}): ${stderr}`);
}

export interface Tokens {
  access: string;
  refresh: string;
}

/** The API over a real socket, the way a client of a running binary uses it. */
export function clientOf(base: string) {
  const url = (path: string) => `${base}${API}${path}`;
  const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
  const postJson = (path: string, body: unknown) =>
    fetch(url(path), { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });

  async function login(username: string, password = PASSWORD): Promise<Tokens> {
    const res = await postJson("/auth/login", { username, password });
    expect({ username, status: res.status }).toEqual({ username, status: 200 });
    const tokens = (await res.json()) as { access_token: string; refresh_token: string };
    return { access: tokens.access_token, refresh: tokens.refresh_token };
  }

  return {
    login,
    async signUp(username: string, password = PASSWORD): Promise<Tokens & { id: string }> {
      const res = await postJson("/auth/register", { username, email: `${username}@example.com`, password });
      expect({ username, status: res.status }).toEqual({ username, status: 201 });
      const { id } = (await res.json()) as { id: string };
      return { id, ...(await login(username, password)) };
    },
    async upload(token: string, bytes: Uint8Array, filename: string, type: string) {
      const form = new FormData();
      form.append("file", new Blob([bytes], { type }), filename);
      const res = await fetch(url("/uploads"), { method: "POST", headers: bearer(token), body: form });
      expect({ filename, status: res.status }).toEqual({ filename, status: 201 });
      return (await res.json()) as { id: string; file_size: number; file_hash: string };
    },
    async download(token: string, id: string): Promise<ArrayBuffer> {
      const res = await fetch(url(`/uploads/${id}/download`), { headers: bearer(token) });
      expect({ id, status: res.status }).toEqual({ id, status: 200 });
      return res.arrayBuffer();
    },
    async list(token: string) {
      const res = await fetch(url("/uploads?limit=100"), { headers: bearer(token) });
      expect(res.status).toBe(200);
      return (await res.json()) as { items: { id: string; filename: string; file_hash: string }[]; total: number };
    },
  };
}

export type Client = ReturnType<typeof clientOf>;

/**
 * An upload whose body streams its first half, waits for `gate`, then sends the rest: an upload in flight
 * for as long as the test wants. Resolves to the server's answer.
 */
export async function gatedUpload(
  base: string,
  token: string,
  bytes: Uint8Array,
  gate: Promise<void>,
): Promise<{ status: number; body: any }> {
  const boundary = `----gated${crypto.randomUUID()}`;
  const head = new TextEncoder().encode(
    `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="gated.pdf"\r\nContent-Type: application/pdf\r\n\r\n`,
  );
  const tail = new TextEncoder().encode(`\r\n--${boundary}--\r\n`);
  const half = Math.floor(bytes.byteLength / 2);
  const parts: (() => Promise<Uint8Array>)[] = [
    async () => head,
    async () => bytes.subarray(0, half),
    async () => {
      await gate;
      return bytes.subarray(half);
    },
    async () => tail,
  ];
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = parts.shift();
      if (next) controller.enqueue(await next());
      else controller.close();
    },
  });
  const res = await fetch(`${base}${API}/uploads`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": `multipart/form-data; boundary=${boundary}` },
    body,
  });
  return { status: res.status, body: await res.json() };
}
