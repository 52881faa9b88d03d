/**
 * The event socket over real listening servers: authentication before the upgrade, the client's
 * messages, events reaching only their user, and two instances sharing one bus (Redis pub/sub in the
 * Postgres + Redis run, the in-process twin otherwise) where a logout on one closes sockets on the other.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { type AppDeps, listenOptions } from "../../../src/app";
import { MemoryStore } from "../../../src/platform/kv";
import { memoryPubSub, type PubSub, postgresPubSub, redisPubSub } from "../../../src/platform/pubsub";
import {
  type Account,
  API,
  call,
  eventually,
  expectError,
  login,
  makeApp,
  memoryLogger,
  promote,
  signUp,
  TEST_DATABASE_URL,
  TEST_REDIS_URL,
  type TestContext,
  testConfig,
  testStore,
} from "../../support";
import { SAMPLES, upload } from "../files/fixtures";

setDefaultTimeout(20_000);

interface Instance {
  ctx: TestContext;
  base: string;
  ws: string;
}

const running: Instance[] = [];
const buses: PubSub[] = [];

async function bus(): Promise<PubSub> {
  const created = TEST_REDIS_URL ? await redisPubSub(TEST_REDIS_URL, memoryLogger()) : memoryPubSub();
  buses.push(created);
  return created;
}

/** An app listening on a free port, on `pubsub` and whatever else of `deps` it shares with another instance. */
async function instance(pubsub: PubSub, deps: Partial<AppDeps> = {}): Promise<Instance> {
  const ctx = await makeApp({}, { pubsub, ...deps });
  ctx.app.listen({ ...listenOptions(ctx.deps.config), port: 0, hostname: "127.0.0.1" });
  const port = ctx.app.server?.port as number;
  const started = { ctx, base: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}${API}/ws` };
  running.push(started);
  return started;
}

afterAll(async () => {
  for (const { ctx } of running.splice(0)) await ctx.app.stop(true);
  await Promise.all(buses.splice(0).map((b) => b.close()));
});

interface Message {
  type: string;
  data: any;
  timestamp: string;
  id: string;
}

/** A client socket that keeps every message; `next(type)` waits for the first unread one of that type. */
class Client {
  readonly messages: Message[] = [];
  private read = 0;
  readonly closed: Promise<{ code: number; reason: string }>;
  readonly socket: WebSocket;

  constructor(url: string, protocols?: string[]) {
    this.socket = new WebSocket(url, protocols);
    this.socket.onmessage = (event) => this.messages.push(JSON.parse(String(event.data)));
    this.closed = new Promise((resolve) => {
      this.socket.onclose = (event) => resolve({ code: event.code, reason: event.reason });
    });
  }

  static async open(url: string, protocols?: string[]): Promise<Client> {
    const client = new Client(url, protocols);
    await client.next("connection.established");
    return client;
  }

  send(message: unknown) {
    this.socket.send(typeof message === "string" ? message : JSON.stringify(message));
  }

  async next(type: string, ms = 3000): Promise<Message> {
    const deadline = Date.now() + ms;
    for (;;) {
      const index = this.messages.findIndex((m, i) => i >= this.read && m.type === type);
      if (index >= 0) {
        this.read = index + 1;
        return this.messages[index] as Message;
      }
      if (Date.now() > deadline) throw new Error(`no ${type} message; got ${this.messages.map((m) => m.type)}`);
      await Bun.sleep(10);
    }
  }

  /** Round trip: every message the server sent before the pong has arrived. */
  async sync() {
    this.send({ type: "ping" });
    await this.next("pong");
  }

  received(type: string) {
    return this.messages.filter((m) => m.type === type);
  }

  close() {
    this.socket.close();
  }
}

const socketUrl = (server: Instance, account: Pick<Account, "access">) => `${server.ws}?token=${account.access}`;

describe("authentication before the upgrade", () => {
  test("a missing, malformed or revoked token is refused with 401 and the contract's body", async () => {
    const server = await instance(memoryPubSub());
    const user = await signUp(server.ctx.app);
    const upgrade = { connection: "Upgrade", upgrade: "websocket", "sec-websocket-version": "13" };
    const headers = { ...upgrade, "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==" };
    const refused = async (query: string) => {
      const res = await fetch(`${server.base}${API}/ws${query}`, { headers });
      return { status: res.status, headers: res.headers, json: await res.json() };
    };
    expectError(await refused(""), 401, "AUTHENTICATION_REQUIRED");
    expectError(await refused("?token=not.a.token"), 401, "INVALID_TOKEN");
    await call(server.ctx.app, "POST", `${API}/auth/logout`, { token: user.access });
    expectError(await refused(`?token=${user.access}`), 401, "INVALID_TOKEN");

    // A browser only sees the failed handshake (1006: closed without a close frame).
    const client = new Client(socketUrl(server, user));
    expect((await client.closed).code).toBe(1006);
    expect(client.messages).toEqual([]);
  });

  test("the token in Sec-WebSocket-Protocol works, and the other offered protocol is chosen", async () => {
    const server = await instance(memoryPubSub());
    const user = await signUp(server.ctx.app);
    const client = await Client.open(server.ws, ["bearer", user.access]);
    expect(client.socket.protocol).toBe("bearer");
    const [established] = client.received("connection.established");
    expect(established?.data.user_id).toBe(user.id);
    expect(established?.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(Number.isNaN(Date.parse(established?.timestamp ?? ""))).toBe(false);
    client.close();
  });
});

describe("the client's messages", () => {
  test("ping, subscribe and unsubscribe are answered; anything else gets an error and the socket stays", async () => {
    const server = await instance(memoryPubSub());
    const user = await signUp(server.ctx.app);
    const client = await Client.open(socketUrl(server, user));

    client.send({ type: "ping" });
    expect((await client.next("pong")).type).toBe("pong");
    client.send({ type: "unsubscribe", events: ["file.uploaded"] });
    expect((await client.next("subscription.acknowledged")).data).toEqual({
      action: "unsubscribe",
      events: ["file.uploaded"],
    });
    client.send({ type: "subscribe", events: ["file.uploaded", "no.such.event"] });
    expect((await client.next("error")).data.code).toBe("INVALID_MESSAGE");

    client.send("not json");
    expect((await client.next("error")).data.code).toBe("INVALID_MESSAGE");
    client.send("[1,2]");
    expect((await client.next("error")).data.code).toBe("INVALID_MESSAGE");
    client.send({ type: "dance" });
    expect((await client.next("error")).data.code).toBe("UNKNOWN_TYPE");
    // Values whose conversion to a string throws once killed the process.
    client.send({ type: { toString: null, valueOf: null } });
    expect((await client.next("error")).data.message).toBe("Unknown message type: (object)");
    client.send({ type: "subscribe", events: [{ toString: 1 }] });
    expect((await client.next("error")).data.code).toBe("INVALID_MESSAGE");
    client.send({ type: "ping", pad: "x".repeat(70 * 1024) });
    expect((await client.next("error")).data.code).toBe("MESSAGE_TOO_LARGE");

    await client.sync();
    expect(client.socket.readyState).toBe(WebSocket.OPEN);
    client.close();
  });

  test("a user holds at most 20 sockets on an instance; the 21st is refused with 429 before the upgrade", async () => {
    const server = await instance(memoryPubSub());
    const user = await signUp(server.ctx.app);
    const held = await Promise.all(Array.from({ length: 20 }, () => Client.open(socketUrl(server, user))));
    const headers = {
      connection: "Upgrade",
      upgrade: "websocket",
      "sec-websocket-version": "13",
      "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    };
    const refused = await fetch(socketUrl(server, user).replace("ws:", "http:"), { headers });
    expectError({ status: refused.status, json: await refused.json() }, 429, "RATE_LIMITED");
    held[0]?.close();
    await held[0]?.closed;
    const again = await Client.open(socketUrl(server, user));
    for (const client of [...held, again]) client.close();
  });

  test("a flood is told to slow down, then closed with 1008", async () => {
    const server = await instance(memoryPubSub());
    const user = await signUp(server.ctx.app);
    const client = await Client.open(socketUrl(server, user));
    for (let i = 0; i < 50; i++) client.send({ type: "ping" });
    const closed = await client.closed;
    expect(closed.code).toBe(1008);
    expect(client.received("error").some((m) => m.data.code === "RATE_LIMITED")).toBe(true);
  });
});

describe("idle sockets", () => {
  test("a peer that never answers Bun's pings is closed after WS_IDLE_TIMEOUT_SECONDS", async () => {
    const server = await instance(memoryPubSub(), { config: testConfig({ WS_IDLE_TIMEOUT_SECONDS: "1" }) });
    const user = await signUp(server.ctx.app);
    const { port } = new URL(server.base);
    // A raw TCP client: Bun's own WebSocket client would answer the pings.
    let received = "";
    let closed!: () => void;
    const ended = new Promise<void>((resolve) => {
      closed = resolve;
    });
    const socket = await Bun.connect({
      hostname: "127.0.0.1",
      port: Number(port),
      socket: {
        data(_, bytes) {
          received += Buffer.from(bytes).toString("latin1");
        },
        close: () => closed(),
      },
    });
    socket.write(
      `GET ${API}/ws?token=${user.access} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    await ended;
    expect(received).toStartWith("HTTP/1.1 101");
    expect(received).toContain("connection.established");
    // Bun checks idle sockets on a coarse timer: the close came after ~11 s here.
  }, 40_000);
});

describe("events", () => {
  test("uploads, deletions and profile changes reach only their user's sockets", async () => {
    const server = await instance(memoryPubSub());
    const [owner, other] = [await signUp(server.ctx.app), await signUp(server.ctx.app)];
    const [mine, theirs] = [await Client.open(socketUrl(server, owner)), await Client.open(socketUrl(server, other))];

    const uploaded = await upload(server.ctx, SAMPLES.text, { token: owner.access });
    expect(uploaded.status).toBe(201);
    const event = await mine.next("file.uploaded");
    expect(event.data).toEqual(uploaded.json);

    await call(server.ctx.app, "DELETE", `${API}/uploads/${uploaded.json.id}`, { token: owner.access });
    expect((await mine.next("file.deleted")).data).toEqual({ id: uploaded.json.id });

    await call(server.ctx.app, "PATCH", `${API}/users/me`, { token: owner.access, body: { name: "New Name" } });
    expect((await mine.next("user.updated")).data).toMatchObject({ id: owner.id, name: "New Name" });

    await theirs.sync();
    expect(theirs.messages.map((m) => m.type)).toEqual(["connection.established", "pong"]);
    mine.close();
    theirs.close();
  });

  test("an unsubscribed event is not sent; subscribing again brings it back", async () => {
    const server = await instance(memoryPubSub());
    const owner = await signUp(server.ctx.app);
    const client = await Client.open(socketUrl(server, owner));
    client.send({ type: "unsubscribe", events: ["file.uploaded"] });
    await client.next("subscription.acknowledged");
    expect((await upload(server.ctx, SAMPLES.text, { token: owner.access })).status).toBe(201);
    await client.sync();
    expect(client.received("file.uploaded")).toEqual([]);

    client.send({ type: "subscribe", events: ["file.uploaded"] });
    await client.next("subscription.acknowledged");
    expect((await upload(server.ctx, SAMPLES.text, { token: owner.access })).status).toBe(201);
    await client.next("file.uploaded");
    client.close();
  });

  test("an admin's notification reaches the named users, or everyone", async () => {
    const server = await instance(memoryPubSub());
    const admin = await signUp(server.ctx.app);
    await promote(server.ctx.deps.db, admin.id);
    const [alice, bob] = [await signUp(server.ctx.app), await signUp(server.ctx.app)];
    const [a, b] = [await Client.open(socketUrl(server, alice)), await Client.open(socketUrl(server, bob))];
    const notify = (token: string, body: unknown) =>
      call(server.ctx.app, "POST", `${API}/admin/notifications`, { token, body });

    const named = await notify(admin.access, { message: "Only Alice", user_ids: [alice.id] });
    expect(named.status).toBe(202);
    expect(named.json).toMatchObject({ type: "system.notification", recipients: 1 });
    const got = await a.next("system.notification");
    expect(got).toMatchObject({ id: named.json.id, data: { message: "Only Alice" } });

    const everyone = await notify(admin.access, { message: "Everyone" });
    expect(everyone.json.recipients).toBe("all");
    expect((await a.next("system.notification")).data.message).toBe("Everyone");
    expect((await b.next("system.notification")).data.message).toBe("Everyone");
    await b.sync();
    expect(b.received("system.notification").map((m) => m.data.message)).toEqual(["Everyone"]);

    expectError(await notify(alice.access, { message: "Not an admin" }), 403, "PERMISSION_DENIED");
    expectError(await notify(admin.access, { message: "" }), 422, "VALIDATION_ERROR", ["message"]);
    expectError(await notify(admin.access, { message: "x", user_ids: ["nope"] }), 422, "VALIDATION_ERROR");
    a.close();
    b.close();
  });
});

describe("a bus that is down", () => {
  test("this instance's sockets still get their events, and a logout still closes them", async () => {
    const down: PubSub = { ...memoryPubSub(), publish: () => Promise.reject(new Error("bus down")) };
    const server = await instance(down);
    const owner = await signUp(server.ctx.app);
    const client = await Client.open(socketUrl(server, owner));
    const uploaded = await upload(server.ctx, SAMPLES.text, { token: owner.access });
    expect((await client.next("file.uploaded")).data.id).toBe(uploaded.json.id);
    expect((await call(server.ctx.app, "POST", `${API}/auth/logout`, { token: owner.access })).status).toBe(204);
    expect((await client.closed).code).toBe(4401);
    expect(server.ctx.logs.some((line) => line.includes("publishing an event failed"))).toBe(true);
  });
});

describe("two instances on one bus", () => {
  async function pair() {
    const shared = await bus();
    const a = await instance(shared);
    // One secret; one store (each its own Redis connection, or, without Redis, the one in-process store
    // standing in for it: PGlite itself is one process).
    const b = await instance(shared, {
      config: a.ctx.deps.config,
      kv: TEST_REDIS_URL ? await testStore() : a.ctx.deps.kv,
    });
    return { a, b };
  }

  /** A user registered on `a` with two login sessions, each with a socket on `on`. */
  async function twoSessions(a: Instance, on: Instance) {
    const user = await signUp(a.ctx.app);
    const other = await login(a.ctx.app, user.username);
    const first = await Client.open(socketUrl(on, user));
    const second = await Client.open(socketUrl(on, { access: other.access_token }));
    return { user, first, second };
  }

  test("an upload on A reaches the owner's socket on B", async () => {
    const { a, b } = await pair();
    const owner = await signUp(a.ctx.app);
    const client = await Client.open(socketUrl(b, owner));
    const uploaded = await upload(a.ctx, SAMPLES.text, { token: owner.access });
    expect((await client.next("file.uploaded")).data.id).toBe(uploaded.json.id);
    client.close();
  });

  test("a logout on A closes that session's socket on B with 4401; another session's socket stays", async () => {
    const { a, b } = await pair();
    const { user, first: ended, second: kept } = await twoSessions(a, b);
    expect((await call(a.ctx.app, "POST", `${API}/auth/logout`, { token: user.access })).status).toBe(204);
    expect(await ended.closed).toEqual({ code: 4401, reason: "Session ended" });
    await kept.sync();
    expect(kept.socket.readyState).toBe(WebSocket.OPEN);
    kept.close();
  });

  test("deactivation on A closes every socket of the user on B", async () => {
    const { a, b } = await pair();
    const admin = await signUp(a.ctx.app);
    await promote(a.ctx.deps.db, admin.id);
    const user = await signUp(a.ctx.app);
    const sockets = [await Client.open(socketUrl(b, user)), await Client.open(socketUrl(a, user))];
    const res = await call(a.ctx.app, "PATCH", `${API}/users/${user.id}`, {
      token: admin.access,
      body: { is_active: false },
    });
    expect(res.status).toBe(200);
    for (const socket of sockets) expect((await socket.closed).code).toBe(4401);
  });

  test("a password change on A closes the other sessions' sockets on B, not the changing one's", async () => {
    const { a, b } = await pair();
    const { user, first: current, second: elsewhere } = await twoSessions(a, b);
    const res = await call(a.ctx.app, "POST", `${API}/users/me/password`, {
      token: user.access,
      body: { current_password: user.password, new_password: "another-secret-1" },
    });
    expect(res.status).toBe(204);
    expect((await elsewhere.closed).code).toBe(4401);
    expect(await eventually(() => current.socket.readyState === WebSocket.OPEN, 300)).toBe(true);
    await current.sync();
    current.close();
  });
});

describe.skipIf(!TEST_DATABASE_URL)("two instances on one Postgres, no Redis (LISTEN/NOTIFY)", () => {
  test("an upload on A reaches B's socket, and a logout on A closes it", async () => {
    const [busA, busB] = [
      await postgresPubSub(TEST_DATABASE_URL as string),
      await postgresPubSub(TEST_DATABASE_URL as string),
    ];
    buses.push(busA, busB);
    const a = await instance(busA, { kv: new MemoryStore() });
    const b = await instance(busB, { config: a.ctx.deps.config, kv: new MemoryStore() });
    const owner = await signUp(a.ctx.app);
    const client = await Client.open(socketUrl(b, owner));
    const uploaded = await upload(a.ctx, SAMPLES.text, { token: owner.access });
    expect((await client.next("file.uploaded")).data.id).toBe(uploaded.json.id);
    // 9,000 bytes of bio: more than one NOTIFY can carry, so it travels in parts.
    const bio = "ж".repeat(4500);
    await call(a.ctx.app, "PATCH", `${API}/users/me`, { token: owner.access, body: { bio } });
    expect((await client.next("user.updated")).data.bio).toBe(bio);
    expect((await call(a.ctx.app, "POST", `${API}/auth/logout`, { token: owner.access })).status).toBe(204);
    expect((await client.closed).code).toBe(4401);
  });
});
