import { Elysia } from "elysia";

const WELL_FORMED = /^[A-Za-z0-9._:-]{1,128}$/;

/** Generated ids: a random per-process prefix and a counter, unique across instances and far cheaper than a UUID each. */
function requestIds(): () => string {
  const prefix = crypto.randomUUID().replaceAll("-", "").slice(0, 12);
  let sequence = 0;
  return () => `${prefix}-${(sequence++).toString(36).padStart(6, "0")}`;
}

/** X-Request-ID on every response: a well-formed incoming one is echoed, otherwise one is generated. */
export function requestId() {
  const next = requestIds();
  return new Elysia({ name: "request-id" }).onRequest(({ request, set }) => {
    const incoming = request.headers.get("x-request-id");
    set.headers["x-request-id"] = incoming && WELL_FORMED.test(incoming) ? incoming : next();
  });
}
