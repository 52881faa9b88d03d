import type { Logger } from "../../platform/logger";
import type { PubSub } from "../../platform/pubsub";
import type { Claims } from "../auth/model";
import { EVENT_TYPES, type EventMap, type EventType, type Notify, type ServerMessage, serverMessage } from "./model";

/** One open socket, as the service sees it (the route adapts Bun's socket to this). */
export interface Connection {
  readonly userId: string;
  /** The access token's claims: rechecked whenever the user's access may have changed. */
  readonly claims: Claims;
  send(text: string): void;
  close(code: number, reason: string): void;
  subscribe(topic: string): void;
  unsubscribe(topic: string): void;
}

/** Bun's server: per-topic fan-out to this process's sockets. */
export interface TopicServer {
  publish(topic: string, text: string): number;
  subscriberCount(topic: string): number;
}

export interface RealtimeMetrics {
  socketOpened(): void;
  socketClosed(): void;
  eventPublished(type: string): void;
  eventDelivered(type: string, sockets: number): void;
}

/** What travels between instances; `from` is the publishing instance, which delivered it itself. */
type BusMessage = { from?: string } & (
  | { kind: "event"; to: string | null; message: ServerMessage<EventType> }
  | { kind: "access"; userId: string }
);

export const MAX_MESSAGE_BYTES = 64 * 1024;
/** Messages a socket may send per second; past that it is told, and past three times that it is closed. */
export const MESSAGES_PER_SECOND = 10;
/** Sockets one user may hold on one instance; more are refused before the upgrade (429). */
export const SOCKETS_PER_USER = 20;
/** Closed with this when the token's session ends, its user is deactivated or the password changes. */
export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_GOING_AWAY = 1001;
const CLOSE_POLICY = 1008;
/** Every socket is rechecked this often too: pub/sub can lose the message that should have closed it. */
const RECHECK_ALL_MS = 30_000;

const topicOf = (to: string | null, type: EventType) => (to ? `u:${to}:${type}` : `all:${type}`);

/** A client's value, fit to quote in an error: never `String()` on it (`{"toString": null}` throws). */
const quoted = (value: unknown) => (typeof value === "string" ? value.slice(0, 64) : `(${typeof value})`);

/** `{type: "subscribe", events: [...]}` (or inside `data`): the event names asked for, or an error text. */
function requestedEvents(message: Record<string, unknown>): EventType[] | string {
  const data = message.data as Record<string, unknown> | undefined;
  const events = message.events ?? data?.events;
  if (!Array.isArray(events) || events.length === 0) return "events must be a non-empty array of event names";
  const unknown = events.filter((name) => !EVENT_TYPES.includes(name as EventType));
  if (unknown.length > 0) return `Unknown events: ${unknown.slice(0, 5).map(quoted).join(", ")}`;
  return events as EventType[];
}

/**
 * Events for users' sockets, on every instance: services call `notify`, which publishes on the bus;
 * each instance hands what it hears to its own sockets through Bun's per-topic publish. A change to a
 * user's access is announced the same way, and each instance rechecks that user's sockets.
 */
export function createRealtime(deps: {
  pubsub: PubSub;
  logger: Logger;
  metrics?: RealtimeMetrics;
  /** Whether the socket's token still stands for an active user and a live session. */
  stillAllowed: (claims: Claims) => Promise<boolean>;
}) {
  const { pubsub, logger, metrics, stillAllowed } = deps;
  const instance = crypto.randomUUID();
  const connections = new Map<string, Set<Connection>>();
  const counters = new WeakMap<Connection, { second: number; count: number }>();
  let server: TopicServer | undefined;
  let recheckTimer: ReturnType<typeof setInterval> | undefined;

  /** Delivered here at once (so this instance's sockets never depend on the bus), and to the others by the bus. */
  function publish(message: BusMessage) {
    deliver(message);
    pubsub.publish(JSON.stringify({ ...message, from: instance })).catch((error: Error) => {
      logger.warn("publishing an event failed", { kind: message.kind, error: error.message });
    });
  }

  function deliver(bus: BusMessage) {
    if (bus.kind === "access") return void recheck(connections.get(bus.userId));
    if (!server) return;
    const { type } = bus.message;
    const topic = topicOf(bus.to, type);
    const sockets = server.subscriberCount(topic);
    if (sockets === 0) return;
    server.publish(topic, JSON.stringify(bus.message));
    metrics?.eventDelivered(type, sockets);
  }

  async function recheck(sockets: Iterable<Connection> | undefined) {
    for (const connection of sockets ?? []) {
      const allowed = await stillAllowed(connection.claims).catch((error: Error) => {
        // Unknown is not "revoked": a database hiccup must not drop every socket.
        logger.warn("socket access check failed", { user_id: connection.userId, error: error.message });
        return true;
      });
      if (!allowed) connection.close(CLOSE_UNAUTHORIZED, "Session ended");
    }
  }

  function reply(connection: Connection, type: string, data: unknown) {
    connection.send(JSON.stringify(serverMessage(type, data)));
  }
  const refuse = (connection: Connection, code: string, message: string) =>
    reply(connection, "error", { code, message });

  /** False when the socket has sent too much this second (it was told, or closed past three times the limit). */
  function withinRate(connection: Connection): boolean {
    const second = Math.floor(Date.now() / 1000);
    const counter = counters.get(connection) ?? { second, count: 0 };
    if (counter.second !== second) Object.assign(counter, { second, count: 0 });
    counter.count++;
    counters.set(connection, counter);
    if (counter.count <= MESSAGES_PER_SECOND) return true;
    if (counter.count > 3 * MESSAGES_PER_SECOND) connection.close(CLOSE_POLICY, "Too many messages");
    else refuse(connection, "RATE_LIMITED", `At most ${MESSAGES_PER_SECOND} messages per second`);
    return false;
  }

  function follow(connection: Connection, events: readonly EventType[], on: boolean) {
    for (const type of events) {
      const topics = [topicOf(connection.userId, type)];
      if (type === "system.notification") topics.push(topicOf(null, type));
      for (const topic of topics) on ? connection.subscribe(topic) : connection.unsubscribe(topic);
    }
  }

  const notify: Notify = (userId, type, data) => {
    metrics?.eventPublished(type);
    publish({ kind: "event", to: userId, message: serverMessage(type, data) });
  };

  return {
    notify,

    /** A system notification to the named users, or to every connected user. */
    notifyUsers(userIds: string[] | undefined, data: EventMap["system.notification"]) {
      const message = serverMessage("system.notification" as const, data);
      metrics?.eventPublished(message.type);
      if (!userIds) publish({ kind: "event", to: null, message });
      else for (const userId of userIds) publish({ kind: "event", to: userId, message });
      return message;
    },

    /** After any change that can end a user's sessions or access: every instance rechecks its sockets. */
    accessChanged(userId: string) {
      publish({ kind: "access", userId });
    },

    /** Starts hearing the bus; `topics` is the listening server. */
    async start(topics: TopicServer) {
      server = topics;
      await pubsub.subscribe((text) => {
        try {
          const message = JSON.parse(text) as BusMessage;
          if (message.from !== instance) deliver(message);
        } catch (error) {
          logger.warn("unreadable bus message", { error: (error as Error).message });
        }
      });
      recheckTimer = setInterval(() => {
        for (const sockets of connections.values()) void recheck(sockets);
      }, RECHECK_ALL_MS);
      recheckTimer.unref?.();
    },

    /** How many sockets the user holds on this instance. */
    socketsOf: (userId: string) => connections.get(userId)?.size ?? 0,

    opened(connection: Connection) {
      const sockets = connections.get(connection.userId) ?? new Set();
      connections.set(connection.userId, sockets.add(connection));
      metrics?.socketOpened();
      // Every event by default; `unsubscribe` narrows it.
      follow(connection, EVENT_TYPES, true);
      reply(connection, "connection.established", { user_id: connection.userId, events: EVENT_TYPES });
    },

    received(connection: Connection, raw: string | Buffer) {
      if (!withinRate(connection)) return;
      const size = typeof raw === "string" ? Buffer.byteLength(raw) : raw.byteLength;
      if (size > MAX_MESSAGE_BYTES) {
        return refuse(connection, "MESSAGE_TOO_LARGE", `Messages are limited to ${MAX_MESSAGE_BYTES} bytes`);
      }
      let message: unknown;
      try {
        message = JSON.parse(raw.toString());
      } catch {
        return refuse(connection, "INVALID_MESSAGE", "Messages must be JSON objects");
      }
      if (typeof message !== "object" || message === null || Array.isArray(message)) {
        return refuse(connection, "INVALID_MESSAGE", "Messages must be JSON objects");
      }
      const { type } = message as { type?: unknown };
      if (type === "ping") return reply(connection, "pong", {});
      if (type === "subscribe" || type === "unsubscribe") {
        const events = requestedEvents(message as Record<string, unknown>);
        if (typeof events === "string") return refuse(connection, "INVALID_MESSAGE", events);
        follow(connection, events, type === "subscribe");
        return reply(connection, "subscription.acknowledged", { action: type, events });
      }
      refuse(connection, "UNKNOWN_TYPE", `Unknown message type: ${quoted(type)}`);
    },

    closed(connection: Connection) {
      const sockets = connections.get(connection.userId);
      if (!sockets?.delete(connection)) return;
      if (sockets.size === 0) connections.delete(connection.userId);
      metrics?.socketClosed();
    },

    /** For shutdown: every socket of this instance. */
    closeAll(code: number, reason: string) {
      for (const sockets of connections.values()) for (const connection of sockets) connection.close(code, reason);
    },

    async stop() {
      clearInterval(recheckTimer);
      await pubsub.close();
    },
  };
}

export type Realtime = ReturnType<typeof createRealtime>;
