import { Elysia } from "elysia";

/** Handlers still running; a client that hung up does not stop its handler, so shutdown waits on this. */
export interface InFlight {
  count: number;
}

/**
 * Counts a request from its first hook to its last. Register it after every `onRequest` hook that can
 * answer early without throwing (the CORS preflight): such a request never reaches `onAfterResponse`,
 * so counting it would leave the counter high and make SIGTERM wait out its whole timeout.
 */
export function inFlightTracking(inFlight: InFlight) {
  return new Elysia({ name: "in-flight" })
    .onRequest(() => {
      inFlight.count++;
    })
    .onAfterResponse({ as: "global" }, () => {
      inFlight.count--;
    });
}
