/**
 * Passkeys in a real browser: Debian's Chromium driven by playwright-core, with a DevTools virtual
 * authenticator. A page on its own origin uses @simplewebauthn/browser against the API on another port
 * (as a frontend would, through CORS): it registers a passkey, signs out, signs in with it and calls
 * /users/me with the tokens it got.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { eq } from "drizzle-orm";
import { type BrowserContext, chromium } from "playwright-core";
import { listenOptions } from "../../src/app";
import { auditEvents, passkeys } from "../../src/db/schema";
import { API, freePort, makeApp, PASSWORD, scratchDir, type TestContext } from "../support";

const CHROMIUM = "/usr/bin/chromium";
const HAS_CHROMIUM = existsSync(CHROMIUM);
const BROWSER_BUNDLE = join(import.meta.dir, "../../node_modules/@simplewebauthn/browser/dist/bundle/index.umd.min.js");

let context: BrowserContext | undefined;
let page: ReturnType<typeof Bun.serve> | undefined;
let api: TestContext | undefined;
afterAll(async () => {
  await context?.close();
  page?.stop(true);
  await api?.app.stop(true);
});

/** The frontend: one HTML page and the library's browser bundle, served from their own origin. */
function servePage(port: number) {
  const html = `<!doctype html><html><head><script src="/simplewebauthn.js"></script></head><body>test page</body></html>`;
  return Bun.serve({
    hostname: "127.0.0.1",
    port,
    fetch(request) {
      const path = new URL(request.url).pathname;
      if (path === "/simplewebauthn.js") return new Response(Bun.file(BROWSER_BUNDLE));
      return new Response(html, { headers: { "content-type": "text/html" } });
    },
  });
}

describe.skipIf(!HAS_CHROMIUM)("passkeys in Chromium (skipped where /usr/bin/chromium is missing)", () => {
  test("register a passkey, sign out, sign in with it, and call /users/me with the tokens", async () => {
    const pagePort = freePort();
    const origin = `http://localhost:${pagePort}`;
    api = await makeApp({ ALLOWED_ORIGINS: origin, WEBAUTHN_ORIGINS: origin, WEBAUTHN_RP_ID: "localhost" });
    api.app.listen({ ...listenOptions(api.deps.config), port: 0, hostname: "127.0.0.1" });
    const apiBase = `http://127.0.0.1:${api.app.server?.port}${API}`;
    page = servePage(pagePort);

    context = await chromium.launchPersistentContext(scratchDir("rp-chromium-"), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    const tab = context.pages()[0] ?? (await context.newPage());
    await tab.goto(`${origin}/`);
    const devtools = await context.newCDPSession(tab);
    await devtools.send("WebAuthn.enable");
    await devtools.send("WebAuthn.addVirtualAuthenticator", {
      options: {
        protocol: "ctap2",
        transport: "internal",
        hasResidentKey: true,
        hasUserVerification: true,
        isUserVerified: true,
        automaticPresenceSimulation: true,
      },
    });

    const outcome = await tab.evaluate(
      async ({ apiBase, password }) => {
        const { startRegistration, startAuthentication } = (
          globalThis as unknown as { SimpleWebAuthnBrowser: typeof import("@simplewebauthn/browser") }
        ).SimpleWebAuthnBrowser;
        const post = async (path: string, body: unknown, token?: string) => {
          const res = await fetch(`${apiBase}${path}`, {
            method: "POST",
            headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
            body: JSON.stringify(body),
          });
          const text = await res.text();
          return { status: res.status, json: text ? JSON.parse(text) : undefined };
        };
        const username = `browser_${Math.random().toString(36).slice(2, 8)}`;
        await post("/auth/register", { username, email: `${username}@example.com`, password });
        const session = await post("/auth/login", { username, password });
        const token = session.json.access_token as string;

        const creation = await post("/auth/passkeys/register/options", {}, token);
        const attestation = await startRegistration({ optionsJSON: creation.json });
        const added = await post("/auth/passkeys/register/verify?name=Chromium", attestation, token);
        const loggedOut = await post("/auth/logout", {}, token);

        const request = await post("/auth/passkeys/login/options", {});
        const assertion = await startAuthentication({ optionsJSON: request.json });
        const signedIn = await post("/auth/passkeys/login/verify", assertion);
        const me = await fetch(`${apiBase}/users/me`, {
          headers: { authorization: `Bearer ${signedIn.json.access_token}` },
        });
        return {
          username,
          added: { status: added.status, name: added.json.name },
          loggedOut: loggedOut.status,
          signedIn: signedIn.status,
          me: { status: me.status, username: ((await me.json()) as { username: string }).username },
        };
      },
      { apiBase, password: PASSWORD },
    );

    expect(outcome).toEqual({
      username: outcome.username,
      added: { status: 201, name: "Chromium" },
      loggedOut: 204,
      signedIn: 200,
      me: { status: 200, username: outcome.username },
    });
    const [stored] = await api.deps.db.orm.select().from(passkeys);
    expect(stored?.name).toBe("Chromium");
    const logins = await api.deps.db.orm.select().from(auditEvents).where(eq(auditEvents.action, "login.succeeded"));
    expect(logins.map((e) => e.details.method)).toEqual(["password", "passkey"]);
    expect(logins[1]?.userAgent).toContain("HeadlessChrome");
  }, 60_000);
});
