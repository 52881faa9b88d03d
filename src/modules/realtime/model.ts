import { t } from "elysia";
import { SingleLine } from "../../http/text";
import type { FileInfo } from "../files/model";
import { type PublicUser, Uuid } from "../users/model";

/** What each event carries: the one place an event's name and shape are declared. */
export interface EventMap {
  "file.uploaded": FileInfo;
  "file.deleted": { id: string };
  "user.updated": PublicUser;
  "system.notification": { message: string };
}
export type EventType = keyof EventMap;
export const EVENT_TYPES = [
  "file.uploaded",
  "file.deleted",
  "user.updated",
  "system.notification",
] as const satisfies readonly EventType[];

/** Every server message: events, and the replies to the client's own messages. */
export interface ServerMessage<T extends string = string, D = unknown> {
  type: T;
  data: D;
  timestamp: string;
  id: string;
}

/** How services announce an event to a user's sockets, on every instance; never fails the caller. */
export type Notify = <T extends EventType>(userId: string, type: T, data: EventMap[T]) => void;

export function serverMessage<T extends string, D>(type: T, data: D): ServerMessage<T, D> {
  return { type, data, timestamp: new Date().toISOString(), id: crypto.randomUUID() };
}

export const NotificationBody = t.Object({
  message: SingleLine({ minLength: 1, maxLength: 2000 }),
  user_ids: t.Optional(t.Array(Uuid, { minItems: 1, maxItems: 1000, uniqueItems: true })),
});
export type NotificationBody = typeof NotificationBody.static;

export const NotificationSent = t.Object(
  {
    id: t.String({ format: "uuid" }),
    type: t.Literal("system.notification"),
    timestamp: t.String({ format: "date-time" }),
    recipients: t.Union([t.Literal("all"), t.Integer({ minimum: 1 })], {
      description: "`all`, or how many users were named",
    }),
  },
  { title: "NotificationSent" },
);
