import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { eq } from "drizzle-orm";
import { SignJWT } from "jose";
import { usedPasswordResetTokens } from "../../../src/db/schema";
import type { MailMessage } from "../../../src/platform/mail";
import { type Inbox, startInbox } from "../../mail";
import { API, call, login, makeApp, signUp } from "../../support";

let inbox: Inbox;
let smtpUrl = "";

beforeAll(async () => {
  inbox = await startInbox();
  smtpUrl = inbox.url;
});
afterAll(() => inbox.close());

/** Waits for the reset mail to `to` and returns the token from its link. */
const resetTokenFor = (to: string) => inbox.tokenFor(to, "/reset-password?token=");

const requestReset = (app: Parameters<typeof call>[0], email: string) =>
  call(app, "POST", `${API}/auth/request-password-reset`, { body: { email } });

describe("password reset", () => {
  test("mail → reset → old password and refresh tokens dead, new password works; reuse → 400", async () => {
    const { app, deps } = await makeApp({ SMTP_URL: smtpUrl });
    const account = await signUp(app, { email: "reset.me@example.com" });
    const requested = await requestReset(app, "RESET.ME@example.com");
    expect(requested.status).toBe(202);
    const token = await resetTokenFor("reset.me@example.com");

    const reset = await call(app, "POST", `${API}/auth/reset-password`, {
      body: { token, new_password: "brandnew42" },
    });
    expect(reset.status).toBe(200);
    expect(typeof reset.json.message).toBe("string");
    const rows = await deps.db.orm
      .select()
      .from(usedPasswordResetTokens)
      .where(eq(usedPasswordResetTokens.userId, account.user.id));
    expect(rows).toHaveLength(1);

    const oldLogin = await call(app, "POST", `${API}/auth/login`, {
      body: { username: account.user.username, password: account.password },
    });
    expect(oldLogin.status).toBe(401);
    await login(app, account.user.username, "brandnew42");
    expect((await call(app, "POST", `${API}/auth/refresh`, { body: { refresh_token: account.refresh } })).status).toBe(
      401,
    );

    const reuse = await call(app, "POST", `${API}/auth/reset-password`, { body: { token, new_password: "another42" } });
    expect(reuse.status).toBe(400);
    expect(reuse.json.error.code).toBe("BAD_REQUEST");
    await login(app, account.user.username, "brandnew42");
  });

  test("unknown email → the same 202 and no mail", async () => {
    const { app } = await makeApp({ SMTP_URL: smtpUrl });
    await signUp(app, { email: "known.person@example.com" });
    const before = inbox.messages.length;
    const unknown = await requestReset(app, "nobody@example.com");
    const known = await requestReset(app, "known.person@example.com");
    expect(unknown.status).toBe(202);
    expect(unknown.json).toEqual(known.json);
    await resetTokenFor("known.person@example.com");
    expect(inbox.messages.slice(before).some((m) => m.includes("nobody@example.com"))).toBe(false);
  });

  test("expired, forged or non-reset tokens → 400; a weak new password → 422", async () => {
    const { app, deps } = await makeApp();
    const account = await signUp(app);
    const key = new TextEncoder().encode(deps.config.secretKey);
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({ type: "reset", username: account.user.username, role: "user" })
      .setProtectedHeader({ alg: "HS256" })
      .setSubject(account.user.id)
      .setJti(crypto.randomUUID())
      .setIssuedAt(now - 7200)
      .setExpirationTime(now - 3600)
      .sign(key);
    for (const token of [expired, "garbage", account.access, account.refresh]) {
      const res = await call(app, "POST", `${API}/auth/reset-password`, {
        body: { token, new_password: "brandnew42" },
      });
      expect(res.status).toBe(400);
    }
    const weak = await call(app, "POST", `${API}/auth/reset-password`, { body: { token: "x", new_password: "short" } });
    expect(weak.status).toBe(422);
  });

  test("without SMTP the link goes to the log outside production, never in production", async () => {
    const dev = await makeApp({ ENVIRONMENT: "development", SECRET_KEY: "d".repeat(40) });
    await signUp(dev.app, { email: "dev.user@example.com" });
    await requestReset(dev.app, "dev.user@example.com");
    await Bun.sleep(20);
    expect(dev.logs.some((line) => line.includes("dev.user@example.com") && line.includes("token="))).toBe(true);

    const prod = await makeApp({ ENVIRONMENT: "production", SECRET_KEY: "p".repeat(40) });
    await signUp(prod.app, { email: "prod.user@example.com" });
    await requestReset(prod.app, "prod.user@example.com");
    await Bun.sleep(20);
    expect(prod.logs.some((line) => line.includes("token="))).toBe(false);
  });
});

/** A mailer that keeps what it would send. */
function capturingMailer() {
  const sent: MailMessage[] = [];
  return {
    sent,
    mailer: { send: async (message: MailMessage) => void sent.push(message) },
    /** The link of the last mail to `to`. */
    linkTo: (to: string) =>
      sent
        .filter((m) => m.to === to)
        .at(-1)
        ?.text.match(/https?:\/\/\S+/)?.[0] as string,
  };
}

const tokenOf = (link: string) => new URL(link).searchParams.get("token") as string;

describe("reset links", () => {
  test("a successful reset or password change voids every link issued before it", async () => {
    const mail = capturingMailer();
    const { app } = await makeApp({}, { mailer: mail.mailer });
    const account = await signUp(app, { email: "many.links@example.com" });
    const links: string[] = [];
    for (let i = 0; i < 3; i++) {
      await requestReset(app, account.email);
      links.push(mail.linkTo(account.email));
    }
    const used = await call(app, "POST", `${API}/auth/reset-password`, {
      body: { token: tokenOf(links[1] as string), new_password: "brandnew42" },
    });
    expect(used.status).toBe(200);
    for (const link of [links[0], links[2]]) {
      const stale = await call(app, "POST", `${API}/auth/reset-password`, {
        body: { token: tokenOf(link as string), new_password: "hijacked42" },
      });
      expect(stale.status).toBe(400);
    }

    await requestReset(app, account.email);
    const beforeChange = mail.linkTo(account.email);
    const session = await login(app, account.username, "brandnew42");
    const changed = await call(app, "POST", `${API}/users/me/password`, {
      token: session.access_token,
      body: { current_password: "brandnew42", new_password: "changed4242" },
    });
    expect(changed.status).toBe(204);
    const afterChange = await call(app, "POST", `${API}/auth/reset-password`, {
      body: { token: tokenOf(beforeChange), new_password: "hijacked42" },
    });
    expect(afterChange.status).toBe(400);
    await login(app, account.username, "changed4242");
  });

  test("PASSWORD_RESET_URL keeps its query string, or has {token} replaced", async () => {
    const mail = capturingMailer();
    const withQuery = await makeApp(
      { PASSWORD_RESET_URL: "https://app.example.com/reset?lang=en" },
      { mailer: mail.mailer },
    );
    const first = await signUp(withQuery.app, { email: "query.link@example.com" });
    await requestReset(withQuery.app, first.email);
    const link = new URL(mail.linkTo(first.email));
    expect(link.origin + link.pathname).toBe("https://app.example.com/reset");
    expect(link.searchParams.get("lang")).toBe("en");
    expect(link.searchParams.get("token")?.split(".")).toHaveLength(3);

    const placeholder = await makeApp(
      { PASSWORD_RESET_URL: "https://app.example.com/reset/{token}?from=mail" },
      { mailer: mail.mailer },
    );
    const second = await signUp(placeholder.app, { email: "path.link@example.com" });
    await requestReset(placeholder.app, second.email);
    const pathLink = new URL(mail.linkTo(second.email));
    const token = decodeURIComponent(pathLink.pathname.split("/").at(-1) as string);
    expect(token.split(".")).toHaveLength(3);
    expect(pathLink.searchParams.get("from")).toBe("mail");
    const reset = await call(placeholder.app, "POST", `${API}/auth/reset-password`, {
      body: { token, new_password: "brandnew42" },
    });
    expect(reset.status).toBe(200);
  });
});
